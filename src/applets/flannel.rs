//! flannel: a meta plugin. It reads the node's subnet lease that flanneld
//! writes (subnet.env), turns it into a `delegate` config (bridge +
//! host-local by default) and runs the delegate. The rendered delegate config
//! is saved per container so DEL works even after the lease changed.

use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::cni::error::{DECODE_FAILURE, NOT_AVAILABLE, UNKNOWN_CONTAINER};
use crate::cni::{gc, invoke, Applet, CniError, CniResult, Command, Verb};

pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

pub struct Flannel;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct FlannelConf {
    subnet_file: String,
    data_dir: String,
    delegate: Option<Map<String, Value>>,
    ipam: Option<Map<String, Value>>,
    runtime_config: Option<Value>,
}

impl FlannelConf {
    fn parse(cmd: &Command) -> Result<FlannelConf, CniError> {
        let mut conf: FlannelConf = cmd.parse_config()?;
        if conf.subnet_file.is_empty() {
            conf.subnet_file = DEFAULT_SUBNET_FILE.into();
        }
        if conf.data_dir.is_empty() {
            conf.data_dir = DEFAULT_DATA_DIR.into();
        }
        Ok(conf)
    }

    fn saved_path(&self, container_id: &str) -> PathBuf {
        Path::new(&self.data_dir).join(container_id)
    }
}

/// What flanneld wrote about this node's lease.
#[derive(Debug, Default, PartialEq)]
pub struct SubnetEnv {
    pub networks: Vec<IpNet>,
    pub subnet: Option<IpNet>,
    pub ip6_networks: Vec<IpNet>,
    pub ip6_subnet: Option<IpNet>,
    pub mtu: Option<u32>,
    pub ipmasq: Option<bool>,
}

fn parse_cidr(key: &str, value: &str) -> Result<IpNet, String> {
    value.parse::<IpNet>().map(|n| n.trunc()).map_err(|e| format!("{key}={value:?}: {e}"))
}

impl SubnetEnv {
    /// Parses subnet.env (`KEY=VALUE` lines; FLANNEL_NETWORK may list
    /// several networks separated by commas).
    pub fn parse(text: &str) -> Result<SubnetEnv, String> {
        let mut env = SubnetEnv::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            let list = |key: &str| -> Result<Vec<IpNet>, String> {
                value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(|v| parse_cidr(key, v)).collect()
            };
            match key.trim() {
                "FLANNEL_NETWORK" => env.networks = list("FLANNEL_NETWORK")?,
                "FLANNEL_SUBNET" => env.subnet = Some(parse_cidr(key, value)?),
                "FLANNEL_IPV6_NETWORK" => env.ip6_networks = list("FLANNEL_IPV6_NETWORK")?,
                "FLANNEL_IPV6_SUBNET" => env.ip6_subnet = Some(parse_cidr(key, value)?),
                "FLANNEL_MTU" => env.mtu = Some(value.parse().map_err(|e| format!("FLANNEL_MTU={value:?}: {e}"))?),
                "FLANNEL_IPMASQ" => env.ipmasq = Some(value == "true"),
                _ => {}
            }
        }
        let mut missing = Vec::new();
        if env.networks.is_empty() && env.ip6_networks.is_empty() {
            missing.push("FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK");
        }
        if env.subnet.is_none() && env.ip6_subnet.is_none() {
            missing.push("FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET");
        }
        if env.mtu.is_none() {
            missing.push("FLANNEL_MTU");
        }
        if env.ipmasq.is_none() {
            missing.push("FLANNEL_IPMASQ");
        }
        if !missing.is_empty() {
            return Err(format!("missing {}", missing.join(", ")));
        }
        Ok(env)
    }

    pub fn load(path: &str) -> Result<SubnetEnv, CniError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CniError::io(format!("cannot read flannel subnet file {path} (is flanneld running?)"))
                .with_details(e.to_string())
        })?;
        SubnetEnv::parse(&text)
            .map_err(|e| CniError::invalid_config(format!("bad flannel subnet file {path}")).with_details(e))
    }
}

/// What the reference refuses in a flannel config: the delegate's name and
/// IPAM are flannel's to set.
fn check_conf(conf: &FlannelConf) -> Result<(), CniError> {
    let delegate = conf.delegate.clone().unwrap_or_default();
    if delegate.get("type").is_some_and(|t| !t.is_string()) {
        return Err(CniError::invalid_config("'delegate' dictionary, if present, must have (string) 'type' field"));
    }
    for key in ["name", "ipam"] {
        if delegate.contains_key(key) {
            return Err(CniError::invalid_config(format!(
                "'delegate' dictionary must not have '{key}' field, it'll be set by flannel"
            )));
        }
    }
    match conf.ipam.as_ref().and_then(|i| i.get("routes")) {
        None | Some(Value::Null) | Some(Value::Array(_)) => Ok(()),
        Some(_) => Err(CniError::invalid_config("failed to read IPAM routes: ipam.routes is not a list")),
    }
}

/// The delegate config for this node's lease, following the reference's
/// rules: the delegate's own keys win; flannel fills name, type (bridge),
/// ipMasq (the opposite of FLANNEL_IPMASQ: when flannel does not masquerade,
/// the delegate must), mtu, isGateway (bridge) and the IPAM section.
fn render_delegate(cmd: &Command, conf: &FlannelConf, env: &SubnetEnv) -> Result<Value, CniError> {
    check_conf(conf)?;
    let mut delegate = conf.delegate.clone().unwrap_or_default();
    if let Some(rc) = &conf.runtime_config {
        delegate.insert("runtimeConfig".into(), rc.clone());
    }
    delegate.insert("name".into(), cmd.conf.name.clone().into());
    delegate.entry("type").or_insert_with(|| "bridge".into());
    if let Some(ipmasq) = env.ipmasq {
        delegate.entry("ipMasq").or_insert((!ipmasq).into());
    }
    if let Some(mtu) = env.mtu {
        delegate.entry("mtu").or_insert(mtu.into());
    }
    if delegate.get("type").and_then(Value::as_str) == Some("bridge") {
        delegate.entry("isGateway").or_insert(true.into());
    }
    if !cmd.conf.cni_version.is_empty() {
        delegate.insert("cniVersion".into(), cmd.conf.cni_version.clone().into());
    }

    let mut ipam = conf.ipam.clone().unwrap_or_default();
    ipam.entry("type").or_insert_with(|| "host-local".into());
    let ranges: Vec<Value> = [env.subnet, env.ip6_subnet].iter().flatten().map(|s| json!([{ "subnet": s }])).collect();
    ipam.insert("ranges".into(), ranges.into());
    let mut routes = match ipam.get("routes") {
        Some(Value::Array(r)) => r.clone(),
        _ => Vec::new(),
    };
    routes.extend(env.networks.iter().chain(&env.ip6_networks).map(|n| json!({ "dst": n })));
    ipam.insert("routes".into(), routes.into());
    delegate.insert("ipam".into(), Value::Object(ipam));
    Ok(Value::Object(delegate))
}

fn delegate_type(delegate: &Value) -> Result<String, CniError> {
    delegate
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .ok_or_else(|| CniError::invalid_config("the delegate config has no 'type'"))
}

/// Written beside the target and renamed: a crash never leaves half a file.
fn save(path: &Path, bytes: &[u8]) -> Result<(), CniError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |e: std::io::Error| CniError::io(format!("cannot save {}", path.display())).with_details(e.to_string());
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    }
    // Dot-prefixed: container IDs never start with a dot, so GC skips it.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

/// The delegate config saved at ADD, if any.
fn load_saved(path: &Path) -> Result<Option<Value>, CniError> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.is_object() => Ok(Some(v)),
            _ => Err(CniError::new(DECODE_FAILURE, format!("saved delegate config {} is unreadable", path.display()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::io(format!("cannot read {}", path.display())).with_details(e.to_string())),
    }
}

/// The delegate config built from the current lease, for GC and STATUS.
fn current_delegate(cmd: &Command, conf: &FlannelConf) -> Result<Value, CniError> {
    let env = SubnetEnv::load(&conf.subnet_file)?;
    render_delegate(cmd, conf, &env)
}

fn run_delegate(cmd: &Command, verb: Verb, delegate: &Value) -> Result<Option<CniResult>, CniError> {
    let kind = delegate_type(delegate)?;
    invoke::delegate(cmd, &kind, verb, delegate.to_string().as_bytes())
}

impl Applet for Flannel {
    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = FlannelConf::parse(cmd)?;
        let env = SubnetEnv::load(&conf.subnet_file)?;
        let delegate = render_delegate(cmd, &conf, &env)?;
        let saved = conf.saved_path(&cmd.container_id);
        // Saved first, and kept when the delegate fails (as the reference's
        // delegateAdd does): the runtime's DEL after a failed ADD must still
        // reach the delegate, which may not have undone all of its ADD. GC
        // drops the configs of containers that never came back.
        save(&saved, delegate.to_string().as_bytes())?;
        run_delegate(cmd, Verb::Add, &delegate)
            .map(Option::unwrap_or_default)
            .map_err(|e| CniError { msg: format!("failed to delegate add: {}", e.msg), ..e })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = FlannelConf::parse(cmd)?;
        let saved = conf.saved_path(&cmd.container_id);
        let mut delegate = match load_saved(&saved) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            Err(e) => {
                // Nothing can be done with it; the interface goes with the netns.
                log::warn!("{e}; removing it");
                let _ = std::fs::remove_file(&saved);
                return Ok(());
            }
        };
        if let Some(rc) = &conf.runtime_config {
            delegate["runtimeConfig"] = rc.clone();
        }
        run_delegate(cmd, Verb::Del, &delegate)?;
        let _ = std::fs::remove_file(&saved);
        Ok(())
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = FlannelConf::parse(cmd)?;
        let saved = conf.saved_path(&cmd.container_id);
        let mut delegate = load_saved(&saved)?.ok_or_else(|| {
            CniError::new(UNKNOWN_CONTAINER, format!("no saved delegate config for container {}", cmd.container_id))
        })?;
        if let Some(prev) = &cmd.conf.prev_result {
            delegate["prevResult"] = prev.clone();
        }
        if let Some(rc) = &conf.runtime_config {
            delegate["runtimeConfig"] = rc.clone();
        }
        run_delegate(cmd, Verb::Check, &delegate).map(|_| ())
    }

    /// Forwards GC to the delegate (its IPAM releases what no valid
    /// attachment holds) and drops saved configs of containers that are not
    /// valid attachments any more.
    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = FlannelConf::parse(cmd)?;
        let valid = gc::valid_attachments(cmd)?;
        let mut delegate = current_delegate(cmd, &conf)?;
        if let Some(v) = &valid {
            let v = serde_json::to_value(v).map_err(|e| CniError::internal(e.to_string()))?;
            delegate["cni.dev/valid-attachments"] = v.clone();
            delegate["cni.dev/attachments"] = v;
        }
        run_delegate(cmd, Verb::Gc, &delegate)?;
        let Some(valid) = valid else { return Ok(()) };
        for entry in std::fs::read_dir(&conf.data_dir).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if gc::is_valid_container(&valid, &id) || id.starts_with('.') {
                continue;
            }
            // The data dir may be shared by several flannel networks: only
            // this network's configs are ours to prune.
            let ours = load_saved(&entry.path())
                .ok()
                .flatten()
                .is_some_and(|d| d.get("name").and_then(Value::as_str) == Some(cmd.conf.name.as_str()));
            if ours {
                log::info!("gc: removing the saved delegate config of {id}");
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        check_conf(&FlannelConf::parse(cmd)?)
    }

    /// Not ready until flanneld has written the lease; then the delegate's answer.
    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = FlannelConf::parse(cmd)?;
        let delegate = current_delegate(cmd, &conf).map_err(|e| CniError {
            code: NOT_AVAILABLE,
            msg: format!("flannel is not ready: {}", e.msg),
            details: e.details,
        })?;
        run_delegate(cmd, Verb::Status, &delegate).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::skel::test_command;

    const ENV: &str =
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn subnet_env_parsing() {
        let env = SubnetEnv::parse(ENV).unwrap();
        assert_eq!(env.networks, vec!["10.244.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(env.subnet, Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!((env.mtu, env.ipmasq), (Some(1450), Some(true)));
        let dual = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.42.0.0/16,10.43.0.0/16\nFLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\n\
             FLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\nOTHER=x\n",
        )
        .unwrap();
        assert_eq!(dual.networks.len(), 2);
        assert_eq!(dual.ip6_subnet, Some("fd00:0:0:1::/64".parse().unwrap()));
        assert_eq!(dual.subnet, None);
        let e = SubnetEnv::parse("FLANNEL_NETWORK=10.0.0.0/8\n").unwrap_err();
        assert!(e.contains("FLANNEL_SUBNET") && e.contains("FLANNEL_MTU") && e.contains("FLANNEL_IPMASQ"), "{e}");
        assert!(SubnetEnv::parse("FLANNEL_SUBNET=nope\n").is_err());
        assert!(SubnetEnv::parse("FLANNEL_MTU=big\n").is_err());
    }

    #[test]
    fn delegate_rendering() {
        let env = SubnetEnv::parse(ENV).unwrap();
        let cmd = test_command(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true},
                "ipam":{"dataDir":"/tmp/x","routes":[{"dst":"192.168.0.0/16"}]},
                "runtimeConfig":{"portMappings":[]}}"#,
            "",
        );
        let conf = FlannelConf::parse(&cmd).unwrap();
        assert_eq!((conf.subnet_file.as_str(), conf.data_dir.as_str()), (DEFAULT_SUBNET_FILE, DEFAULT_DATA_DIR));
        let d = render_delegate(&cmd, &conf, &env).unwrap();
        assert_eq!(
            d,
            json!({
                "cniVersion": "1.0.0", "name": "cbr0", "type": "bridge", "hairpinMode": true,
                "ipMasq": false, "mtu": 1450, "isGateway": true,
                "runtimeConfig": {"portMappings": []},
                "ipam": {"type": "host-local", "dataDir": "/tmp/x",
                         "ranges": [[{"subnet": "10.244.1.0/24"}]],
                         "routes": [{"dst": "192.168.0.0/16"}, {"dst": "10.244.0.0/16"}]}
            })
        );
        // The delegate's own values win; no isGateway for other types.
        let cmd = test_command(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":{"type":"ipvlan","mtu":9000,"ipMasq":true}}"#,
            "",
        );
        let d = render_delegate(&cmd, &FlannelConf::parse(&cmd).unwrap(), &env).unwrap();
        assert_eq!((d["mtu"].as_u64(), d["ipMasq"].as_bool(), d.get("isGateway")), (Some(9000), Some(true), None));
        // Dual stack: one range set per family, routes to every network.
        let dual = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\nFLANNEL_IPV6_NETWORK=fd42::/56\n\
             FLANNEL_IPV6_SUBNET=fd42:0:0:3::1/64\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        let d = render_delegate(&cmd, &FlannelConf::parse(&cmd).unwrap(), &dual).unwrap();
        assert_eq!(d["ipam"]["ranges"], json!([[{"subnet": "10.42.3.0/24"}], [{"subnet": "fd42:0:0:3::/64"}]]));
        assert_eq!(d["ipam"]["routes"], json!([{"dst": "10.42.0.0/16"}, {"dst": "fd42::/56"}]));
        for bad in [r#"{"name":"x"}"#, r#"{"ipam":{}}"#, r#"{"type":5}"#] {
            let cmd = test_command(
                "ADD",
                &format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":{bad}}}"#),
                "",
            );
            assert_eq!(render_delegate(&cmd, &FlannelConf::parse(&cmd).unwrap(), &env).unwrap_err().code, 7, "{bad}");
        }
    }
}
