//! `cnibox cnitool`: drives a network's plugin chain by hand, as the
//! reference cnitool does (same environment, same container IDs, same
//! cache), with readable errors.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::cni::error;
use crate::cni::runtime::{self, Attachment, NetworkList, Runtime};
use crate::cni::CniError;

const USAGE: &str = "\
usage: cnibox cnitool [--conflist FILE] [-i|--ifname NAME] add|check|del NETWORK NETNS
       cnibox cnitool [--conflist FILE] gc|status NETWORK
       (with --conflist, NETWORK may be left out)

Runs the plugin chain of NETWORK (looked up in NETCONFPATH, default
/etc/cni/net.d, as libcni does: .conflist files in name order, then .conf
and .json files; the first with that name wins) for the container whose
network namespace is NETNS, on interface NAME (default: CNI_IFNAME, or eth0
when that is unset or empty).

Environment: CNI_PATH (plugin directories), CNI_IFNAME,
CNI_ARGS (K=V;K=V), CAP_ARGS (capability args as JSON), CNI_CACHE_DIR
(default /var/lib/cni), CNI_TIMEOUT (seconds per plugin, default 120).
The container ID is derived from NETNS as the reference cnitool does.
";

#[derive(Debug, PartialEq)]
struct Cli {
    verb: String,
    network: Option<String>,
    netns: Option<String>,
    conflist: Option<PathBuf>,
    ifname: Option<String>,
}

fn parse_cli(args: &[String]) -> Result<Cli, String> {
    let mut conflist = None;
    let mut ifname = None;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--conflist" {
            conflist = Some(PathBuf::from(it.next().ok_or("--conflist needs a file")?));
        } else if let Some(file) = arg.strip_prefix("--conflist=") {
            conflist = Some(PathBuf::from(file));
        } else if arg == "-i" || arg == "--ifname" {
            ifname = Some(it.next().ok_or(format!("{arg} needs an interface name"))?.clone());
        } else if let Some(name) = arg.strip_prefix("--ifname=") {
            ifname = Some(name.to_string());
        } else if arg.starts_with('-') && arg.len() > 1 {
            return Err(format!("unknown option {arg}"));
        } else {
            positional.push(arg.clone());
        }
    }
    let Some((verb, rest)) = positional.split_first() else {
        return Err("missing command".into());
    };
    let needs_netns = matches!(verb.as_str(), "add" | "check" | "del");
    if !needs_netns && !matches!(verb.as_str(), "gc" | "status") {
        return Err(format!("unknown command {verb:?}"));
    }
    let (network, netns) = match (rest, needs_netns, conflist.is_some()) {
        ([net, ns], true, _) => (Some(net.clone()), Some(ns.clone())),
        ([ns], true, true) => (None, Some(ns.clone())),
        // The reference cnitool takes a netns for gc/status too; it is unused.
        ([net] | [net, _], false, _) => (Some(net.clone()), None),
        ([], false, true) => (None, None),
        _ => return Err(format!("wrong number of arguments for {verb}")),
    };
    Ok(Cli { verb: verb.clone(), network, netns, conflist, ifname: ifname.filter(|n| !n.is_empty()) })
}

/// An absolute, lexically cleaned path, as Go's filepath.Abs makes it (the
/// container ID is a hash of this string).
fn absolute(path: &str) -> String {
    let joined = match Path::new(path).is_absolute() {
        true => PathBuf::from(path),
        false => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(path),
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn attachment(netns: &str, ifname: Option<&str>) -> Result<Attachment, CniError> {
    let netns = absolute(netns);
    let capability_args: Map<String, Value> = match env("CAP_ARGS") {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| CniError::invalid_env("CAP_ARGS is not a JSON object").with_details(e.to_string()))?,
        None => Map::new(),
    };
    let args = match env("CNI_ARGS") {
        Some(a) => runtime::parse_cni_args(&a)?,
        None => Vec::new(),
    };
    Ok(Attachment {
        container_id: Attachment::cnitool_container_id(&netns),
        // As the reference: --ifname, else CNI_IFNAME, else (unset or empty) eth0.
        ifname: ifname.map(str::to_string).or_else(|| env("CNI_IFNAME")).unwrap_or_else(|| "eth0".into()),
        netns,
        args,
        capability_args,
    })
}

/// The network to run: the --conflist file or the named one from NETCONFPATH.
fn load(cli: &Cli) -> Result<NetworkList, CniError> {
    let list = match &cli.conflist {
        Some(file) => NetworkList::from_file(file)?,
        None => {
            let dir = env("NETCONFPATH").unwrap_or_else(|| runtime::DEFAULT_CONF_DIR.into());
            runtime::load_network(Path::new(&dir), cli.network.as_deref().unwrap_or_default())?
        }
    };
    match &cli.network {
        Some(name) if *name != list.name => Err(CniError::invalid_config(format!(
            "{} holds network {:?}, not {name:?}",
            cli.conflist.as_deref().unwrap_or(Path::new("?")).display(),
            list.name
        ))),
        _ => Ok(list),
    }
}

/// DEL and CHECK run the config ADD used, from the cache, when there is one.
fn load_for_existing(rt: &Runtime, cli: &Cli, att: &Attachment) -> Result<NetworkList, CniError> {
    let name = match (&cli.network, &cli.conflist) {
        (Some(name), _) => name.clone(),
        (None, Some(_)) => load(cli)?.name,
        (None, None) => return Err(CniError::invalid_config("no network given")),
    };
    if let Some(list) = rt.cache.read(&name, att).and_then(|c| c.network()) {
        log::info!("using the configuration cached at ADD time for {name}");
        return Ok(list);
    }
    load(cli)
}

fn run(cli: &Cli) -> Result<Option<Value>, CniError> {
    let rt = Runtime::from_env();
    match cli.verb.as_str() {
        "add" => {
            let att = attachment(cli.netns.as_deref().unwrap_or_default(), cli.ifname.as_deref())?;
            rt.add(&load(cli)?, &att).map(Some)
        }
        "check" => {
            let att = attachment(cli.netns.as_deref().unwrap_or_default(), cli.ifname.as_deref())?;
            rt.check(&load_for_existing(&rt, cli, &att)?, &att).map(|_| None)
        }
        "del" => {
            let att = attachment(cli.netns.as_deref().unwrap_or_default(), cli.ifname.as_deref())?;
            rt.del(&load_for_existing(&rt, cli, &att)?, &att).map(|_| None)
        }
        "gc" => {
            let report = rt.gc(&load(cli)?)?;
            for gone in &report.stale_deleted {
                eprintln!("cnitool: deleted stale attachment {gone} (its netns is gone)");
            }
            Ok(None)
        }
        "status" => rt.status(&load(cli)?).map(|_| None),
        other => Err(CniError::invalid_env(format!("unknown command {other:?}"))),
    }
}

fn code_name(code: u32) -> &'static str {
    match code {
        error::INCOMPATIBLE_VERSION => "incompatible CNI version",
        error::UNSUPPORTED_FIELD => "unsupported field",
        error::UNKNOWN_CONTAINER => "unknown container",
        error::INVALID_ENV => "invalid environment",
        error::IO_FAILURE => "I/O failure",
        error::DECODE_FAILURE => "decode failure",
        error::INVALID_CONFIG => "invalid configuration",
        error::TRY_AGAIN_LATER => "try again later",
        error::NOT_AVAILABLE => "not available",
        error::LIMITED_CONNECTIVITY => "limited connectivity",
        _ => "plugin-specific error",
    }
}

/// The error as a person reads it: what failed, the code, the details.
pub fn describe_error(verb: &str, network: &str, e: &CniError) -> String {
    let mut s = format!("cnitool: {verb} on network {network:?} failed: {}\n", e.msg);
    s += &format!("  code: {} ({})\n", e.code, code_name(e.code));
    if !e.details.is_empty() {
        s += &format!("  details: {}\n", e.details);
    }
    s
}

pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return 0;
    }
    let cli = match parse_cli(args) {
        Ok(cli) => cli,
        Err(e) => {
            eprint!("cnitool: {e}\n{USAGE}");
            return 1;
        }
    };
    match run(&cli) {
        Ok(Some(result)) => {
            println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let network = cli.network.clone().unwrap_or_else(|| "?".into());
            eprint!("{}", describe_error(&cli.verb, &network, &e));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_lines() {
        let cli = parse_cli(&args("add mynet /run/netns/x")).unwrap();
        assert_eq!((cli.network.as_deref(), cli.netns.as_deref()), (Some("mynet"), Some("/run/netns/x")));
        let cli = parse_cli(&args("--conflist f.conflist del /run/netns/x")).unwrap();
        assert_eq!((cli.network, cli.netns.as_deref()), (None, Some("/run/netns/x")));
        assert_eq!(parse_cli(&args("gc mynet /run/netns/x")).unwrap().netns, None);
        assert!(parse_cli(&args("status --conflist=f")).is_ok());
        assert!(parse_cli(&args("add mynet")).is_err());
        assert!(parse_cli(&args("frob mynet x")).is_err());
        assert!(parse_cli(&args("add --bogus a b")).is_err());
        assert!(parse_cli(&[]).is_err());
        assert_eq!(parse_cli(&args("-i net1 add mynet /x")).unwrap().ifname.as_deref(), Some("net1"));
        assert_eq!(parse_cli(&args("add --ifname=net2 mynet /x")).unwrap().ifname.as_deref(), Some("net2"));
        assert_eq!(parse_cli(&args("add mynet /x")).unwrap().ifname, None);
        assert!(parse_cli(&args("add mynet /x -i")).is_err());
    }

    #[test]
    fn absolute_paths_are_cleaned() {
        assert_eq!(absolute("/run/netns/../netns/./x/"), "/run/netns/x");
        assert!(absolute("x").ends_with("/x"));
    }

    #[test]
    fn errors_read_well() {
        let e = CniError::invalid_config("plugin type=\"bridge\" failed (add): bad").with_details("why");
        let text = describe_error("add", "n", &e);
        assert!(text.contains("code: 7 (invalid configuration)") && text.contains("details: why"), "{text}");
    }
}
