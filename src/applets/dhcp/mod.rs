//! dhcp: IPAM from a DHCP server on the container's network, through the
//! `dhcp daemon` that holds and renews the leases (see daemon.rs for the
//! socket protocol, client.rs for the DHCP exchanges, packet.rs for the
//! wire format; client6.rs and packet6.rs for DHCPv6, family.rs for what
//! both look like to the daemon, duid.rs for the node's DHCPv6 identity,
//! state.rs for the leases on disk).

mod client;
mod client6;
mod daemon;
mod duid;
mod family;
pub(crate) mod packet;
pub(crate) mod packet6;
mod state;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use crate::cni::args::CniArgs;
use crate::cni::error::{NOT_AVAILABLE, TRY_AGAIN_LATER};
use crate::cni::{Applet, CniError, CniResult, Command, Dns, IpConfig, Route};
use crate::netlink::route::SCOPE_LINK;

pub use daemon::run as daemon_main;
use daemon::{Request, Response};
use family::Family;
use packet::opt;

/// `dhcp daemon ...`: the applet's command line.
pub fn args_main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("daemon") => daemon_main(&args[1..]),
        _ => {
            eprintln!("usage: dhcp daemon [FLAGS] (see `dhcp daemon -h`); as a plugin, dhcp takes no arguments");
            2
        }
    }
}

/// The parts of the network configuration the dhcp IPAM reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Conf {
    pub name: String,
    pub ipam: IpamConf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpamConf {
    pub daemon_socket_path: String,
    /// The daemon's -statedir: where DEL finds the lease to release while
    /// the daemon is down.
    pub daemon_state_dir: String,
    /// Options sent to the server (e.g. a host name from CNI_ARGS).
    pub provide: Vec<ProvideOption>,
    /// Options asked of the server (the parameter request list).
    pub request: Vec<RequestOption>,
    /// The metric of the routes the lease provides (0: the kernel's default);
    /// for DHCPv6, of the default route the kernel takes from RAs.
    pub priority: u32,
    /// "ipv4" (the default), "ipv6", or both.
    pub families: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProvideOption {
    pub option: String,
    pub value: String,
    pub from_arg: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestOption {
    pub skip_default: bool,
    pub option: String,
}

/// Option names the reference accepts besides numbers (dhcp-options(5) spelling).
fn option_code(name: &str) -> Result<u8, CniError> {
    let code = match name {
        "dhcp-client-identifier" => opt::CLIENT_ID,
        "subnet-mask" => opt::SUBNET_MASK,
        "routers" => opt::ROUTER,
        "host-name" => opt::HOSTNAME,
        "user-class" => opt::USER_CLASS,
        "vendor-class-identifier" => opt::VENDOR_CLASS,
        "domain-name-servers" => opt::DNS,
        "domain-name" => opt::DOMAIN_NAME,
        "domain-search" => opt::SEARCH_LIST,
        "static-routes" => opt::STATIC_ROUTES,
        "classless-static-routes" => opt::CLASSLESS_ROUTES,
        n => n.parse::<u8>().map_err(|_| CniError::invalid_config(format!("unknown DHCP option {name:?}")))?,
    };
    if code == opt::PAD || code == opt::END {
        return Err(CniError::invalid_config(format!("DHCP option {name:?} cannot be sent")));
    }
    Ok(code)
}

/// What we ask for unless a `request` entry says skipDefault: the reference's
/// router and subnet mask, plus what we put in the result (DNS, routes).
const DEFAULT_REQUEST: &[u8] = &[
    opt::SUBNET_MASK,
    opt::ROUTER,
    opt::DNS,
    opt::DOMAIN_NAME,
    opt::STATIC_ROUTES,
    opt::SEARCH_LIST,
    opt::CLASSLESS_ROUTES,
];

/// The options every DISCOVER/REQUEST carries: `provide` values (a later
/// entry for the same option wins) and the parameter request list.
pub fn prepare_options(args: &CniArgs, ipam: &IpamConf) -> Result<Vec<(u8, Vec<u8>)>, CniError> {
    let mut opts: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut put = |code: u8, value: &str, from: &str| {
        if value.len() > 255 {
            return Err(CniError::invalid_config(format!(
                "value for DHCP option {code}{from} is longer than 255 bytes"
            )));
        }
        opts.retain(|(c, _)| *c != code);
        opts.push((code, value.as_bytes().to_vec()));
        Ok(())
    };
    for p in &ipam.provide {
        let code = option_code(&p.option)?;
        if !p.value.is_empty() {
            put(code, &p.value, "")?;
        }
        if !p.from_arg.is_empty() {
            if let Some(v) = args.get(&p.from_arg) {
                put(code, v, &format!(" (from CNI_ARGS {})", p.from_arg))?;
            }
        }
    }
    let mut wanted: Vec<u8> = Vec::new();
    let skip_default = ipam.request.iter().any(|r| r.skip_default);
    for r in ipam.request.iter().filter(|r| !r.option.is_empty()) {
        wanted.push(option_code(&r.option)?);
    }
    if !skip_default {
        wanted.extend_from_slice(DEFAULT_REQUEST);
    }
    let mut seen = [false; 256];
    wanted.retain(|&c| !std::mem::replace(&mut seen[c as usize], true));
    if !wanted.is_empty() {
        opts.push((opt::PARAM_REQUEST_LIST, wanted));
    }
    Ok(opts)
}

/// The CNI result a lease gives: address, gateway, routes, DNS.
pub(crate) fn lease_result(lease: &client::Lease) -> Result<CniResult, CniError> {
    let ack = &lease.ack;
    let mask = ack.subnet_mask().ok_or_else(|| CniError::internal("the DHCPACK has no subnet mask (option 1)"))?;
    let prefix = ipnet::ipv4_mask_to_prefix(mask)
        .map_err(|_| CniError::internal(format!("the DHCPACK has an invalid subnet mask {mask}")))?;
    let address = Ipv4Net::new(ack.yiaddr, prefix).map_err(|e| CniError::internal(e.to_string()))?;
    let gateway = ack.routers().first().copied();
    Ok(CniResult {
        ips: vec![IpConfig { address: IpNet::V4(address), gateway: gateway.map(IpAddr::V4), interface: None }],
        routes: routes(ack),
        dns: Dns {
            nameservers: ack.dns_servers().iter().map(|a| a.to_string()).collect(),
            domain: ack.domain_name().unwrap_or_default(),
            search: ack.search_list(),
            options: Vec::new(),
        },
        ..Default::default()
    })
}

/// `ipam.priority`, when set, is the metric of every route of the lease (as
/// the reference sets it).
fn with_route_priority(mut result: CniResult, priority: u32) -> CniResult {
    if priority != 0 {
        for route in &mut result.routes {
            route.priority = Some(priority);
        }
    }
    result
}

/// RFC 3442: classless static routes, when present, replace both the static
/// routes (33) and the router option; otherwise static routes plus a default
/// route through the first router.
fn routes(ack: &packet::Packet) -> Vec<Route> {
    let v4 = |r: &packet::StaticRoute| {
        let mut route = Route::new(IpNet::V4(r.dst), None);
        if r.gw.is_unspecified() {
            route.scope = Some(SCOPE_LINK);
        } else {
            route.gw = Some(IpAddr::V4(r.gw));
        }
        route
    };
    if let Some(classless) = ack.classless_routes().filter(|r| !r.is_empty()) {
        return classless.iter().map(v4).collect();
    }
    let mut out: Vec<Route> = ack.static_routes().iter().filter(|r| r.dst.prefix_len() > 0).map(v4).collect();
    if let Some(gw) = ack.routers().first() {
        out.push(Route::new(IpNet::V4(Ipv4Net::default()), Some(IpAddr::V4(*gw))));
    }
    out
}

fn state_dir(conf: &Conf) -> &str {
    if conf.ipam.daemon_state_dir.is_empty() {
        state::DEFAULT_STATE_DIR
    } else {
        &conf.ipam.daemon_state_dir
    }
}

/// Releases a recorded lease from the container's interface, as the
/// daemon's maintenance would have: a DHCPRELEASE, or a DHCPv6 Release
/// (which waits a bounded time for the server's Reply).
fn release_recorded(record: &state::Record) -> Result<(), String> {
    let (now, now_mono) = (SystemTime::now(), Instant::now());
    let timing = client::Timing::default();
    // The plugin runs in the host's root: the netns path is as it gave it.
    match &record.lease {
        state::StoredLease::V4(stored) => {
            let id = record.attachment.identity("").map_err(|e| e.msg)?;
            family::V4 { id, timing }.release(&stored.lease(now, now_mono)?)
        }
        state::StoredLease::V6(stored) => {
            let id = record.attachment.identity6("", stored.duid()?, stored.iaid);
            family::V6 { id, timing, ra_timeout: Duration::ZERO }.release(&stored.lease(now, now_mono)?)
        }
    }
    .map_err(|e| e.to_string())
}

/// DEL while the daemon is down. Its records of the leases say what to
/// release: the DHCPRELEASE or DHCPv6 Release goes out from the container's
/// interface now (IPAM DEL comes before the interface is deleted; later it
/// cannot be sent from the leased address) and the records go, so that a
/// restarted daemon does not resume a lease the runtime let go. If the
/// daemon came up meanwhile, it may have read a record first: it is asked
/// to DEL too.
fn release_without_daemon(cmd: &Command, conf: &Conf) {
    let store = state::Store::new(state_dir(conf));
    let key = daemon::client_id(&cmd.container_id, &conf.name, &cmd.ifname);
    let records = match store.load(&key) {
        Ok(records) if records.is_empty() => {
            return log::info!("DEL: {key}: no lease recorded in {}", store.dir().display())
        }
        Ok(records) => records,
        Err(why) => return log::warn!("DEL: {key}: cannot read its records ({why}); the leases will expire"),
    };
    for record in &records {
        let address = record.lease.address();
        match release_recorded(record) {
            Ok(()) => log::info!("DEL: {key}: released {address} without the daemon"),
            Err(why) => log::warn!("DEL: {key}: cannot release {address} ({why}); it will expire"),
        }
    }
    if let Err(e) = store.remove_all(&key) {
        log::warn!("DEL: {key}: cannot remove its records ({e}); a restarted daemon would resume the leases");
    }
    if let Err(CallError::Failed(e)) = call(cmd, conf, "DEL") {
        log::warn!("DEL: {key}: the daemon, now up: {}", e.msg);
    }
}

fn socket_path(conf: &Conf) -> &str {
    if conf.ipam.daemon_socket_path.is_empty() {
        daemon::DEFAULT_SOCKET
    } else {
        &conf.ipam.daemon_socket_path
    }
}

/// Why a daemon call failed.
enum CallError {
    /// The daemon is not there (no socket, nobody listening).
    Unreachable(String),
    Failed(CniError),
}

/// One request to the daemon.
fn call(cmd: &Command, conf: &Conf, verb: &str) -> Result<Option<CniResult>, CallError> {
    let path = socket_path(conf);
    let mut conn = UnixStream::connect(path).map_err(|e| CallError::Unreachable(format!("{path}: {e}")))?;
    // The daemon's own deadlines bound an acquisition; this only guards
    // against a daemon that hangs.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(600)));
    let netns = if cmd.netns.is_empty() {
        String::new()
    } else {
        // The daemon may run in another directory.
        std::path::absolute(&cmd.netns).map(|p| p.display().to_string()).unwrap_or_else(|_| cmd.netns.clone())
    };
    let req = Request {
        verb: verb.into(),
        container_id: cmd.container_id.clone(),
        netns,
        ifname: cmd.ifname.clone(),
        args: cmd.raw_args.clone(),
        config: cmd.config.clone(),
    };
    let io =
        |e: std::io::Error| CallError::Failed(CniError::io("talking to the DHCP daemon").with_details(e.to_string()));
    let body = serde_json::to_vec(&req).map_err(|e| CallError::Failed(CniError::internal(e.to_string())))?;
    conn.write_all(&body).map_err(io)?;
    conn.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).map_err(io)?;
    let resp: Response = serde_json::from_slice(&reply).map_err(|e| {
        CallError::Failed(CniError::decode("bad answer from the DHCP daemon").with_details(e.to_string()))
    })?;
    match resp.error {
        Some(e) => Err(CallError::Failed(e.into())),
        None => Ok(resp.result),
    }
}

fn conf(cmd: &Command) -> Result<Conf, CniError> {
    let conf: Conf = cmd.parse_config()?;
    // Refuse bad options and families here, before the daemon is involved.
    prepare_options(&cmd.args()?, &conf.ipam)?;
    family::kinds(&conf.ipam.families)?;
    Ok(conf)
}

pub struct Dhcp;

impl Applet for Dhcp {
    /// The config and the options asked for in CNI_ARGS; the daemon is not asked.
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        conf(cmd).map(|_| ())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = conf(cmd)?;
        match call(cmd, &conf, "ADD") {
            Ok(Some(result)) => Ok(with_route_priority(result, conf.ipam.priority)),
            Ok(None) => Err(CniError::internal("the DHCP daemon returned no result")),
            Err(CallError::Unreachable(why)) => {
                Err(CniError::new(TRY_AGAIN_LATER, "the DHCP daemon is not running").with_details(why))
            }
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        match call(cmd, &conf, "DEL") {
            Ok(_) => Ok(()),
            // DEL is best effort: what the daemon recorded is released here.
            Err(CallError::Unreachable(why)) => {
                log::warn!("DEL: the DHCP daemon is not reachable ({why})");
                release_without_daemon(cmd, &conf);
                Ok(())
            }
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = conf(cmd)?;
        let lease = match call(cmd, &conf, "CHECK") {
            Ok(Some(r)) => r,
            Ok(None) => return Err(CniError::internal("the DHCP daemon returned no lease")),
            Err(CallError::Unreachable(why)) => {
                return Err(CniError::new(TRY_AGAIN_LATER, "the DHCP daemon is not running").with_details(why))
            }
            Err(CallError::Failed(e)) => return Err(e),
        };
        if let Some(prev) = cmd.prev_result()? {
            for ip in &lease.ips {
                if !prev.ips.iter().any(|p| p.address.addr() == ip.address.addr()) {
                    return Err(CniError::internal(format!(
                        "the DHCP lease is for {}, which prevResult does not list",
                        ip.address
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        match call(cmd, &conf, "GC") {
            Ok(_) => Ok(()),
            Err(CallError::Unreachable(why)) => {
                log::warn!("GC: the DHCP daemon is not reachable ({why})");
                Ok(())
            }
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        match call(cmd, &conf, "STATUS") {
            Ok(_) => Ok(()),
            Err(CallError::Unreachable(why)) => {
                Err(CniError::new(NOT_AVAILABLE, "the DHCP daemon is not running").with_details(why))
            }
            Err(CallError::Failed(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::packet::{encode_classless_routes, MessageType, Packet, StaticRoute};
    use super::*;
    use std::net::Ipv4Addr;

    fn ipam(json: serde_json::Value) -> IpamConf {
        crate::cni::lenient::parse_config(&json, "ipam").unwrap()
    }

    #[test]
    fn provide_and_request_options() {
        let conf = ipam(serde_json::json!({
            "provide": [
                {"option": "host-name", "value": "static"},
                {"option": "host-name", "fromArg": "K8S_POD_NAME"},
                {"option": "60", "value": "cnibox"},
            ],
            "request": [{"option": "42"}],
        }));
        let args = CniArgs::parse("K8S_POD_NAME=web-0").unwrap();
        let opts = prepare_options(&args, &conf).unwrap();
        assert!(opts.contains(&(opt::HOSTNAME, b"web-0".to_vec())));
        assert!(opts.contains(&(60, b"cnibox".to_vec())));
        let prl = &opts.iter().find(|(c, _)| *c == opt::PARAM_REQUEST_LIST).unwrap().1;
        assert_eq!(prl[0], 42);
        assert!(prl.contains(&opt::ROUTER) && prl.contains(&opt::CLASSLESS_ROUTES));
        // Without the arg, the static value stays.
        let opts = prepare_options(&CniArgs::default(), &conf).unwrap();
        assert!(opts.contains(&(opt::HOSTNAME, b"static".to_vec())));

        let conf = ipam(serde_json::json!({"request": [{"skipDefault": true, "option": "subnet-mask"}]}));
        let opts = prepare_options(&CniArgs::default(), &conf).unwrap();
        assert_eq!(opts, vec![(opt::PARAM_REQUEST_LIST, vec![opt::SUBNET_MASK])]);

        for bad in ["bogus", "256", "0", "255"] {
            let conf = ipam(serde_json::json!({"request": [{"option": bad}]}));
            assert_eq!(prepare_options(&CniArgs::default(), &conf).unwrap_err().code, 7, "{bad}");
        }
        let conf = ipam(serde_json::json!({"provide": [{"option": "12", "value": "x".repeat(256)}]}));
        assert_eq!(prepare_options(&CniArgs::default(), &conf).unwrap_err().code, 7);
    }

    fn ack() -> client::Lease {
        let mut p = Packet::request(MessageType::Ack, 1, &[2, 0, 0, 0, 0, 1]);
        p.yiaddr = Ipv4Addr::new(192, 168, 7, 20);
        p.set(opt::SUBNET_MASK, vec![255, 255, 255, 0]);
        p.set(opt::ROUTER, vec![192, 168, 7, 1]);
        p.set(opt::DNS, vec![192, 168, 7, 1, 1, 1, 1, 1]);
        p.set(opt::DOMAIN_NAME, b"lan".to_vec());
        p.set(opt::SEARCH_LIST, packet::encode_search_list(&["lan", "corp.example"]));
        p.set(opt::STATIC_ROUTES, vec![10, 0, 0, 0, 192, 168, 7, 2]);
        client::Lease {
            ack: p,
            server_id: Ipv4Addr::new(192, 168, 7, 1),
            server_mac: [0; 6],
            obtained: std::time::Instant::now(),
        }
    }

    #[test]
    fn result_from_a_lease() {
        let lease = ack();
        let r = lease_result(&lease).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "192.168.7.20/24");
        assert_eq!(r.ips[0].gateway.unwrap().to_string(), "192.168.7.1");
        let routes: Vec<String> = r.routes.iter().map(|r| format!("{} {:?}", r.dst, r.gw)).collect();
        assert_eq!(routes, ["10.0.0.0/8 Some(192.168.7.2)", "0.0.0.0/0 Some(192.168.7.1)"]);
        assert_eq!(r.dns.nameservers, ["192.168.7.1", "1.1.1.1"]);
        assert_eq!(r.dns.domain, "lan");
        assert_eq!(r.dns.search, ["lan", "corp.example"]);
    }

    #[test]
    fn classless_routes_replace_router_and_static_routes() {
        let mut lease = ack();
        let routes = [
            StaticRoute { dst: "192.168.7.0/24".parse().unwrap(), gw: Ipv4Addr::UNSPECIFIED },
            StaticRoute { dst: "0.0.0.0/0".parse().unwrap(), gw: Ipv4Addr::new(192, 168, 7, 254) },
        ];
        lease.ack.set(opt::CLASSLESS_ROUTES, encode_classless_routes(&routes));
        let r = lease_result(&lease).unwrap();
        assert_eq!(r.routes.len(), 2);
        assert_eq!((r.routes[0].gw, r.routes[0].scope), (None, Some(SCOPE_LINK)));
        assert_eq!(r.routes[1].gw.unwrap().to_string(), "192.168.7.254");
        lease.ack.options.retain(|(c, _)| *c != opt::SUBNET_MASK);
        assert!(lease_result(&lease).is_err());
    }

    #[test]
    fn priority_is_the_metric_of_every_route() {
        let routes =
            vec![Route::new("0.0.0.0/0".parse().unwrap(), None), Route::new("10.9.0.0/16".parse().unwrap(), None)];
        let result = CniResult { routes, ..Default::default() };
        let unchanged = with_route_priority(result.clone(), 0);
        assert!(unchanged.routes.iter().all(|r| r.priority.is_none()));
        let ranked = with_route_priority(result, 200);
        assert!(ranked.routes.iter().all(|r| r.priority == Some(200)));
    }
}
