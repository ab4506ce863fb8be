//! The nftables elements of bridge (ipMasq, macspoofchk), portmap and
//! firewall written through nfnetlink and deleted by key: they look to nft
//! exactly like the ones nft writes, DEL with the previous result deletes
//! them without listing, DEL without it still finds them all, and CHECK
//! notices one removed by hand.

mod common;
mod l2l3;

use common::*;
use l2l3::*;
use serde_json::{json, Value};

/// A fake host with one network of three chained plugins.
struct Chain {
    host: Netns,
    data: TempDir,
    name: String,
    br: String,
    /// In every call's environment, to find the processes a call left.
    mark: String,
}

const PLUGINS: [&str; 3] = ["bridge", "portmap", "firewall"];

impl Chain {
    fn new() -> Chain {
        Chain {
            host: Netns::new("kh"),
            data: TempDir::new("bykey"),
            name: unique("kn"),
            br: unique("kbr"),
            mark: format!("CNIBOX_TEST_MARK={}", unique("mark")),
        }
    }

    /// The config plugin `i` gets, with `prev` and the container's port mapping.
    fn conf(&self, i: usize, prev: Option<&Value>, port: Option<u16>) -> String {
        let mut c = match PLUGINS[i] {
            "bridge" => net_conf(
                "bridge",
                &self.name,
                host_local(&self.data, &["10.41.0.0/24"], json!([])),
                json!({"bridge": self.br, "isGateway": true, "ipMasq": true, "macspoofchk": true}),
            ),
            "portmap" => {
                json!({"cniVersion": "1.0.0", "name": self.name, "type": "portmap", "capabilities": {"portMappings": true}})
            }
            _ => json!({"cniVersion": "1.0.0", "name": self.name, "type": "firewall"}),
        };
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        if let (Some(port), "portmap") = (port, PLUGINS[i]) {
            c["runtimeConfig"] = json!({"portMappings": [
                {"hostPort": port, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": port, "containerPort": 53, "protocol": "udp"}]});
        }
        c.to_string()
    }

    fn call(&self, i: usize, id: &str, netns: &str) -> Call {
        let mark = self.mark.split_once('=').unwrap();
        call(PLUGINS[i], &self.host, id, netns, "eth0").env("CNIBOX_LOG", "debug").env(mark.0, mark.1)
    }

    /// ADD through the chain; returns the result and each plugin's log.
    fn add(&self, id: &str, ns: &Netns, port: u16) -> (Value, Vec<String>) {
        let mut prev: Option<Value> = None;
        let mut logs = Vec::new();
        for i in 0..PLUGINS.len() {
            let reply = self.call(i, id, &ns.path()).run("ADD", &self.conf(i, prev.as_ref(), Some(port)));
            logs.push(reply.stderr.clone());
            prev = Some(reply.ok());
        }
        (prev.unwrap(), logs)
    }

    /// DEL through the chain in reverse; returns each plugin's log (in chain order).
    fn del(&self, id: &str, netns: &str, prev: Option<&Value>, port: Option<u16>) -> Vec<String> {
        let mut logs = vec![String::new(); PLUGINS.len()];
        for i in (0..PLUGINS.len()).rev() {
            let reply = self.call(i, id, netns).run("DEL", &self.conf(i, prev, port));
            logs[i] = reply.stderr.clone();
            reply.ok();
        }
        logs
    }

    fn check(&self, i: usize, id: &str, ns: &Netns, prev: &Value, port: u16) -> Reply {
        self.call(i, id, &ns.path()).run("CHECK", &self.conf(i, Some(prev), Some(port)))
    }
}

/// Every element of the node's nftables ruleset whose comment names `id`,
/// as `table set element-json`, with the container's own values (ID,
/// addresses, port, veth, MAC) replaced by placeholders, sorted: two
/// containers of one network must give the same list.
fn owned_elements(host: &Netns, id: &str, result: &Value, port: u16) -> Vec<String> {
    let rs: Value = serde_json::from_str(&ruleset(host)).unwrap();
    let mut subst: Vec<(String, &str)> = vec![(id.to_string(), "<ID>"), (port.to_string(), "<PORT>")];
    for ip in result["ips"].as_array().unwrap() {
        subst.push((ip["address"].as_str().unwrap().split('/').next().unwrap().to_string(), "<IP>"));
    }
    for (n, i) in result["interfaces"].as_array().unwrap().iter().enumerate().skip(1) {
        subst.push((i["name"].as_str().unwrap().to_string(), if n == 1 { "<VETH>" } else { "<IF>" }));
        subst.push((i["mac"].as_str().unwrap().to_string(), "<MAC>"));
    }
    let mut out = Vec::new();
    for obj in rs["nftables"].as_array().unwrap() {
        let Some(set) = obj.get("set").or_else(|| obj.get("map")) else { continue };
        for e in set["elem"].as_array().into_iter().flatten() {
            let mut text = e.to_string();
            if !text.contains(&format!(" {id} ")) {
                continue;
            }
            for (from, to) in &subst {
                text = text.replace(&format!("\"{from}\""), &format!("\"{to}\"")).replace(from.as_str(), to);
            }
            out.push(format!("{} {} {text}", set["table"].as_str().unwrap(), set["name"].as_str().unwrap()));
        }
    }
    out.sort();
    out
}

/// Processes whose environment holds `mark`.
fn processes_with(mark: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
        if env.split(|b| *b == 0).any(|v| v == mark.as_bytes()) {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// The detached closes of the DELs' sockets end on their own (they wait for
/// a grace period, not for anything of ours).
fn assert_no_process_left(chain: &Chain) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_with(&chain.mark).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(processes_with(&chain.mark), Vec::<String>::new());
}

fn mentions(host: &Netns, id: &str) -> bool {
    ruleset(host).contains(&format!(" {id} "))
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn elements_by_nfnetlink_look_like_nfts_and_del_by_key_leaves_nothing() {
    require_root();
    let chain = Chain::new();
    let (n1, n2, n3) = (Netns::new("kc"), Netns::new("kc"), Netns::new("kc"));
    let (id1, id2, id3) = (unique("ka"), unique("kb"), unique("kc"));
    // The first ADD builds the tables through nft (elements included).
    let (r1, logs) = chain.add(&id1, &n1, 18081);
    for log in &logs[1..] {
        assert_eq!(nft_execs(log).0, 1, "{log}");
    }
    // Later ADDs: nfnetlink batches only (bridge: masquerade and spoof tables).
    let (r2, logs) = chain.add(&id2, &n2, 18082);
    for (i, log) in logs.iter().enumerate() {
        assert_eq!(nft_execs(log), (0, 0, 0), "{}: {log}", PLUGINS[i]);
        assert_eq!(nfnl_calls(log), (if i == 0 { 2 } else { 1 }, 0), "{}: {log}", PLUGINS[i]);
    }
    let (r3, _) = chain.add(&id3, &n3, 18083);

    // nft lists what nfnetlink wrote exactly like what it wrote itself.
    let by_nft = owned_elements(&chain.host, &id1, &r1, 18081);
    let by_nfnl = owned_elements(&chain.host, &id2, &r2, 18082);
    // masquerade 1, spoof check 2, portmap 2 mappings x 2 maps + 2 masquerade pairs, firewall 1.
    assert_eq!(by_nft.len(), 10, "{by_nft:#?}");
    assert_eq!(by_nft, by_nfnl);
    for i in 0..PLUGINS.len() {
        chain.check(i, &id2, &n2, &r2, 18082).ok();
    }

    // DEL with prevResult (and portMappings): by key, no nft listing.
    let logs = chain.del(&id2, &n2.path(), Some(&r2), Some(18082));
    for (i, log) in logs.iter().enumerate() {
        assert_eq!(nft_execs(log), (0, 0, 0), "{}: {log}", PLUGINS[i]);
        assert!(nfnl_calls(log).1 >= 1, "{}: {log}", PLUGINS[i]);
    }
    assert!(!mentions(&chain.host, &id2), "{}", ruleset(&chain.host));
    assert!(mentions(&chain.host, &id1) && mentions(&chain.host, &id3));
    for i in 0..PLUGINS.len() {
        chain.check(i, &id2, &n2, &r2, 18082).err_code();
        chain.check(i, &id1, &n1, &r1, 18081).ok();
    }
    // DEL twice is fine.
    chain.del(&id2, &n2.path(), Some(&r2), Some(18082));

    // CHECK fails once an element is removed by hand.
    let ip3 = result_ip(&r3, 0);
    chain.host.exec(&format!("nft delete element inet cnibox-firewall containers-v4 '{{ {ip3} }}'"));
    chain.check(2, &id3, &n3, &r3, 18083).err_code();
    chain.host.exec("nft delete element inet cnibox-portmap hostports-v4-port '{ udp . 18083 }'");
    chain.check(1, &id3, &n3, &r3, 18083).err_code();
    let masq_set = chain.host.exec("nft -j list table inet cnibox-masq");
    let masq_set: Value = serde_json::from_str(&masq_set).unwrap();
    let set = masq_set["nftables"].as_array().unwrap().iter().find_map(|o| o.pointer("/set/name")).unwrap();
    chain.host.exec(&format!("nft delete element inet cnibox-masq {} '{{ {ip3} }}'", set.as_str().unwrap()));
    chain.check(0, &id3, &n3, &r3, 18083).err_code();
    // DEL by key of a container whose elements are partly gone removes the rest.
    chain.del(&id3, &n3.path(), Some(&r3), Some(18083));
    assert!(!mentions(&chain.host, &id3), "{}", ruleset(&chain.host));

    chain.del(&id1, &n1.path(), Some(&r1), Some(18081));
    assert!(!mentions(&chain.host, &id1), "{}", ruleset(&chain.host));
    assert_no_process_left(&chain);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_without_prev_result_or_runtime_config_removes_everything() {
    require_root();
    let chain = Chain::new();
    let (n1, n2) = (Netns::new("kd"), Netns::new("kd"));
    let (id1, id2) = (unique("kd"), unique("ke"));
    chain.add(&id1, &n1, 18091);
    // The second container's elements come from nfnetlink.
    let (r2, _) = chain.add(&id2, &n2, 18092);
    assert!(mentions(&chain.host, &id2));
    // The netns is gone and the runtime passes nothing but the IDs.
    drop(n2);
    let logs = chain.del(&id2, "", None, None);
    // Found by their comment in one listing per table.
    assert!(nft_execs(&logs[1]).2 >= 1 && nft_execs(&logs[2]).2 >= 1, "{logs:#?}");
    assert!(!mentions(&chain.host, &id2), "{}", ruleset(&chain.host));
    assert!(mentions(&chain.host, &id1));
    // Again, and with the prevResult this time: nothing left to do.
    chain.del(&id2, "", None, None);
    chain.del(&id2, "", Some(&r2), Some(18092));
    let n1_path = n1.path();
    chain.del(&id1, &n1_path, None, None);
    assert!(!mentions(&chain.host, &id1), "{}", ruleset(&chain.host));
    assert_no_process_left(&chain);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_when_the_tables_do_not_exist() {
    require_root();
    let chain = Chain::new();
    let ns = Netns::new("kf");
    let id = unique("kf");
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": chain.br, "mac": "02:00:00:00:00:01"}, {"name": "vethdeadbeef", "mac": "02:00:00:00:00:02"},
                       {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": ns.path()}],
        "ips": [{"address": "10.41.0.9/24", "gateway": "10.41.0.1", "interface": 2}]
    });
    chain.del(&id, &ns.path(), Some(&prev), Some(18099));
    chain.del(&id, &ns.path(), None, None);
    chain.del(&id, "", None, None);
    assert_eq!(chain.host.exec("nft list tables").trim(), "");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn gc_reclaims_what_del_by_key_leaves_and_stale_elements() {
    require_root();
    let chain = Chain::new();
    let (n1, n2) = (Netns::new("kg"), Netns::new("kg"));
    let (id1, id2) = (unique("kg"), unique("kh"));
    let (r1, _) = chain.add(&id1, &n1, 18071);
    chain.add(&id2, &n2, 18072);
    // DEL by key leaves the network's masquerade set (empty once both are gone) and chain.
    chain.del(&id1, &n1.path(), Some(&r1), Some(18071));
    assert!(mentions(&chain.host, &id2));
    // c2 is gone without a DEL: GC with no valid attachment reclaims its
    // elements, and the network's empty masquerade set and chain.
    for plugin in PLUGINS {
        let mut gc =
            json!({"cniVersion": "1.1.0", "name": chain.name, "type": plugin, "cni.dev/valid-attachments": []});
        if plugin == "bridge" {
            gc = serde_json::from_str(&chain.conf(0, None, None)).unwrap();
            gc["cniVersion"] = json!("1.1.0");
            gc["cni.dev/valid-attachments"] = json!([]);
        }
        Call::new(plugin).in_netns(&chain.host).env("CNI_PATH", &cni_path()).run("GC", &gc.to_string()).ok();
    }
    assert!(!mentions(&chain.host, &id2), "{}", ruleset(&chain.host));
    let masq = chain.host.exec("nft -j list table inet cnibox-masq");
    assert!(!masq.contains("\"set\"") && !masq.contains("masquerade"), "{masq}");
    assert_no_process_left(&chain);
}

/// The names of the sets, maps and chains of `table` in the fake host.
fn objects_of(host: &Netns, table: &str) -> Vec<String> {
    let listing: Value = serde_json::from_str(&host.exec(&format!("nft -j list table inet {table}"))).unwrap();
    let mut out = Vec::new();
    for obj in listing["nftables"].as_array().unwrap() {
        for kind in ["set", "map", "chain"] {
            if let Some(name) = obj.get(kind).and_then(|o| o["name"].as_str()) {
                out.push(format!("{kind} {name}"));
            }
        }
    }
    out.sort();
    out
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn a_networks_objects_stay_for_its_next_container_and_go_with_gc() {
    require_root();
    let chain = Chain::new();
    let n1 = Netns::new("kc");
    let id1 = unique("ka");
    let (r1, _) = chain.add(&id1, &n1, 18091);
    let masq_with_one = objects_of(&chain.host, "cnibox-masq");
    let portmap_with_one = objects_of(&chain.host, "cnibox-portmap");
    assert!(masq_with_one.iter().any(|o| o.starts_with("set m_")), "{masq_with_one:?}");
    assert!(portmap_with_one.iter().any(|o| o.starts_with("chain hairpin-")), "{portmap_with_one:?}");
    // The network's last container goes (DEL by key): its set, chain and
    // hairpin chain stay, so that the next container's ADD is one batch.
    chain.del(&id1, &n1.path(), Some(&r1), Some(18091));
    assert_eq!(objects_of(&chain.host, "cnibox-masq"), masq_with_one);
    assert_eq!(objects_of(&chain.host, "cnibox-portmap"), portmap_with_one);
    let (r2, logs) = chain.add(&id1, &n1, 18091);
    for (i, log) in logs.iter().enumerate() {
        assert_eq!(nft_execs(log), (0, 0, 0), "{}: {log}", PLUGINS[i]);
    }
    chain.del(&id1, &n1.path(), Some(&r2), Some(18091));
    // GC with no valid attachment removes what no container uses.
    for plugin in ["bridge", "portmap"] {
        let mut gc = match plugin {
            "bridge" => serde_json::from_str(&chain.conf(0, None, None)).unwrap(),
            _ => json!({"name": chain.name, "type": plugin}),
        };
        gc["cniVersion"] = json!("1.1.0");
        gc["cni.dev/valid-attachments"] = json!([]);
        Call::new(plugin).in_netns(&chain.host).env("CNI_PATH", &cni_path()).run("GC", &gc.to_string()).ok();
    }
    assert!(!objects_of(&chain.host, "cnibox-masq").iter().any(|o| o.contains("m_")));
    assert!(!objects_of(&chain.host, "cnibox-portmap").iter().any(|o| o.contains("hairpin-")));
}
