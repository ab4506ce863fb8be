//! The fuzz targets' bodies (fuzz/ calls them; a unit test replays the
//! committed seed corpus through them, so `make test` keeps every input that
//! once crashed). Each takes arbitrary bytes and must never panic, loop or
//! touch the system.
//!
//! To add a target: a function here, a line in `TARGETS`, a file in
//! fuzz/fuzz_targets/ calling it, an entry in fuzz/Cargo.toml and a seed
//! directory fuzz/corpus/<name>/.

use serde::Deserialize;
use serde_json::Value;

use crate::applets::{Entry, APPLETS};
use crate::cni::args::CniArgs;
use crate::cni::skel::Command;
use crate::cni::{lenient, version, CniResult, NetConf};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target: its name (as in fuzz/) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("applet_configs", applet_configs),
    ("cni_args", cni_args),
    ("dhcp_packet", dhcp_packet),
    ("dhcp6_packet", dhcp6_packet),
    ("lenient", lenient_config),
    ("prev_result", prev_result),
];

/// The environment of a fuzzed plugin call. The input's first line, when it
/// starts with `CNI_ARGS=`, is the CNI_ARGS value; the rest is stdin.
fn split_args(data: &[u8]) -> (String, &[u8]) {
    if let Some(rest) = data.strip_prefix(b"CNI_ARGS=") {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let args = String::from_utf8_lossy(&rest[..end]).into_owned();
        return (args, rest.get(end + 1..).unwrap_or_default());
    }
    (String::new(), data)
}

/// The environment a fuzzed plugin call sees: fixed CNI variables, the
/// fuzzed CNI_ARGS.
fn fuzz_env(key: &str, verb: &str, args: &str) -> Option<String> {
    Some(match key {
        "CNI_COMMAND" => verb.into(),
        "CNI_CONTAINERID" => "fuzz-container".into(),
        "CNI_NETNS" => "/run/netns/fuzz".into(),
        "CNI_IFNAME" => "eth0".into(),
        "CNI_PATH" => "/opt/cni/bin".into(),
        "CNI_ARGS" => args.into(),
        _ => return None,
    })
}

/// A config (and CNI_ARGS) through `Command::from_env` and every plugin
/// applet's `validate`, for each verb that parses configs.
pub fn applet_configs(data: &[u8]) {
    // IPAM sections are validated by the IPAM applet's own parser.
    crate::applets::register_with_invoker();
    let (args, stdin) = split_args(data);
    for verb in ["ADD", "CHECK", "DEL"] {
        let Ok(cmd) = Command::from_env(|k| fuzz_env(k, verb, &args), stdin.to_vec()) else { return };
        for info in APPLETS {
            if let Entry::Plugin(applet) = info.entry {
                let _ = applet.validate(&cmd);
            }
        }
    }
}

/// A DHCP message off the wire, as the dhcp daemon receives it: either the
/// UDP payload alone or a whole IPv4 + UDP frame from the packet socket.
/// Every option accessor runs on what decodes, and a decoded message must
/// encode and decode back to itself.
pub fn dhcp_packet(data: &[u8]) {
    use crate::applets::dhcp::packet::{self, Packet};
    let mut payloads = vec![data];
    if let Some((_src, payload)) = packet::parse_udp_frame(data, packet::CLIENT_PORT) {
        payloads.push(payload);
    }
    for payload in payloads {
        let Some(p) = Packet::decode(payload) else { continue };
        let _ = (p.message_type(), p.server_id(), p.subnet_mask(), p.lease_time(), p.renewal_time());
        let _ = (p.rebinding_time(), p.routers(), p.dns_servers(), p.domain_name(), p.hostname());
        let _ = (p.search_list(), p.classless_routes(), p.static_routes());
        let again = Packet::decode(&p.encode());
        assert_eq!(again.as_ref(), Some(&p), "a decoded DHCP message does not survive encoding");
    }
    let _ = packet::decode_classless_routes(data);
    let _ = packet::decode_search_list(data);
}

/// A DHCPv6 message off the wire (the UDP payload the daemon's socket
/// reads): every accessor runs on what decodes, a decoded message encodes
/// back to the same bytes, and the option values parse on their own.
pub fn dhcp6_packet(data: &[u8]) {
    use crate::applets::dhcp::packet6::{decode_options, IaNa, Message};
    if let Some(m) = Message::decode(data) {
        let _ = (m.message_type(), m.client_id(), m.server_id(), m.preference(), m.rapid_commit(), m.status());
        let _ = (m.dns_servers(), m.domain_list());
        for (_, value) in &m.options {
            if let Some(ia) = IaNa::decode(value) {
                let _ = (ia.granted(), m.ia_na(ia.iaid));
            }
        }
        assert_eq!(m.encode(), data, "a decoded DHCPv6 message does not encode back to its bytes");
    }
    let _ = IaNa::decode(data);
    let _ = decode_options(data);
}

/// CNI_ARGS parsing and lookups.
pub fn cni_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(args) = CniArgs::parse(&text) {
        let _ = args.get("IP");
        let _ = args.check_known(&["IP", "MAC", "GATEWAY", "K8S_POD_NAME"]);
        for (k, _) in args.pairs() {
            let _ = args.get(k);
        }
    }
}

/// A prevResult / delegate result in every version: parsed, rendered in
/// every version, and the rendering parsed again.
pub fn prev_result(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    for v in version::SUPPORTED {
        let Ok(result) = version::parse_result(&value, v) else { continue };
        for out in version::SUPPORTED {
            let rendered = version::render(&result, out);
            let _ = version::parse_result(&rendered, out);
        }
    }
}

/// Shapes the lenient deserializer meets in configs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[allow(dead_code)]
struct Shapes {
    name: String,
    flag: bool,
    count: u32,
    signed: i64,
    ratio: f64,
    maybe: Option<String>,
    list: Vec<u16>,
    nested: Vec<Vec<Shapes>>,
    map: std::collections::BTreeMap<String, Value>,
    tuple: (u8, String),
    #[serde(rename = "pciBusID")]
    pci: String,
    net: Option<ipnet::IpNet>,
    ip: Option<std::net::IpAddr>,
    choice: Option<Choice>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Choice {
    One,
    Two(u8),
    Three { x: u8 },
}

/// The lenient deserializer into the common config, a result, and a
/// struct with every shape applets use.
pub fn lenient_config(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let _ = lenient::from_value::<NetConf>(&value);
    let _ = lenient::from_value::<CniResult>(&value);
    let _ = lenient::from_value::<Shapes>(&value);
    let _ = lenient::from_value::<Vec<Shapes>>(&value);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every committed seed (and every input that once crashed) goes through
    /// its target on each `cargo test`.
    #[test]
    fn seed_corpus_replays() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut total = 0;
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).unwrap();
                target(&data);
                total += 1;
            }
        }
        assert!(total > 0, "no seed corpus under {}", root.display());
    }

    /// `validate` of the applet a config names (with the fuzzer's environment).
    fn validate(data: &[u8]) -> Result<(), crate::cni::CniError> {
        let (args, stdin) = super::split_args(data);
        let cmd = crate::cni::skel::Command::from_env(|k| super::fuzz_env(k, "ADD", &args), stdin.to_vec())
            .map_err(|(e, _)| e)?;
        crate::applets::register_with_invoker();
        let applet = crate::applets::plugin(&cmd.conf.plugin_type).expect("a cnibox applet");
        applet.validate(&cmd)
    }

    /// The seeds of these applets are valid configs: `validate` accepts them.
    #[test]
    fn valid_seeds_validate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/applet_configs");
        for name in ["tuning", "bandwidth", "portmap", "firewall", "vrf", "vlan", "ipvlan", "dummy", "dhcp", "sbr"] {
            let data = std::fs::read(root.join(name)).unwrap();
            if let Err(e) = validate(&data) {
                panic!("{name}: {} ({})", e.msg, e.details);
            }
        }
    }

    /// Chained plugins validate without a prevResult (doctor has none).
    #[test]
    fn chained_plugins_validate_without_prev_result() {
        for plugin in ["tuning", "bandwidth", "portmap", "firewall", "vrf", "sbr"] {
            let extra = if plugin == "vrf" { r#","vrfname":"blue""# } else { "" };
            let conf = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"{plugin}"{extra}}}"#);
            if let Err(e) = validate(conf.as_bytes()) {
                panic!("{plugin}: {}", e.msg);
            }
        }
    }

    /// What each applet's `validate` refuses, without touching anything.
    #[test]
    fn bad_configs_are_invalid() {
        let bad = [
            r#"{"cniVersion":"1.0.0","name":"n","type":"tuning","sysctl":{"kernel.panic":"1"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"tuning","mac":"nonsense"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"bandwidth","ingressRate":1000}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"portmap","markMasqBit":40}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"portmap","backend":"pf"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"firewall","ingressPolicy":"closed"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"vrf"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"vlan","master":"eth0","vlanId":5000,"ipam":{"type":"dhcp"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"vlan","master":"eth0","vlanId":5}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"ipvlan","mode":"l4","ipam":{"type":"dhcp"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"dummy"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"dummy","ipam":{"type":"host-local"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"dhcp","ipam":{"type":"dhcp","request":[{"option":"no-such-option"}]}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"sbr","gateways":["10.0.0.1","10.0.0.2"]}"#,
        ];
        for conf in bad {
            match validate(conf.as_bytes()) {
                Ok(()) => panic!("accepted: {conf}"),
                Err(e) => assert!([2, 7].contains(&e.code), "{conf}: code {} ({})", e.code, e.msg),
            }
        }
    }
}
