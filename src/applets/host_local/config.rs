//! host-local's configuration: range sets with the reference's defaults and
//! validation, requested IPs, and where the store lives.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::cni::{version, CniError, Command, Route};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// One range of a range set, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The network (no host bits set).
    pub subnet: IpNet,
    /// First address handed out, inclusive.
    pub start: IpAddr,
    /// Last address handed out, inclusive.
    pub end: IpAddr,
    /// Never handed out; returned as the gateway of every address of the range.
    pub gateway: IpAddr,
}

/// Addresses of a range set: one of them is handed out per ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

/// The configuration of one ADD/CHECK/STATUS.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub ranges: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub resolv_conf: String,
    /// IPs the runtime asks for (CNI_ARGS IP, args.cni.ips, runtimeConfig.ips).
    pub requested: Vec<IpAddr>,
}

/// A range as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawRange {
    pub subnet: String,
    pub range_start: String,
    pub range_end: String,
    pub gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawIpam {
    // The legacy single range at the top of the ipam section.
    subnet: String,
    range_start: String,
    range_end: String,
    gateway: String,
    ranges: Vec<Vec<RawRange>>,
    routes: Vec<Route>,
    data_dir: String,
    resolv_conf: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Net {
    name: String,
    ipam: Option<RawIpam>,
}

/// The IP as a number, for arithmetic and ordering within a family.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The IP `n` in the family of `like`.
pub fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

impl Range {
    /// True when `ip` is between start and end (inclusive), in the same family.
    pub fn contains(&self, ip: IpAddr) -> bool {
        same_family(ip, self.start) && self.start <= ip && ip <= self.end
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start) && self.start <= other.end && other.start <= self.end
    }

    /// How many addresses the range hands out (the gateway excluded).
    pub fn size(&self) -> u128 {
        let all = (to_u128(self.end) - to_u128(self.start)).saturating_add(1);
        all - u128::from(self.contains(self.gateway))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl RangeSet {
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn is_ipv4(&self) -> bool {
        self.0[0].start.is_ipv4()
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Parses an IP; IPv4-mapped IPv6 addresses count as IPv4, as in the reference.
fn parse_ip(text: &str, what: &str) -> Result<IpAddr, CniError> {
    text.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| CniError::invalid_config(format!("invalid {what} {text:?}")))
}

/// A requested IP: an address, or an address with a prefix (the prefix is ignored).
fn parse_requested_ip(text: &str) -> Result<IpAddr, CniError> {
    let text = text.trim();
    let parsed = match text.contains('/') {
        true => text.parse::<IpNet>().map(|net| net.addr()).ok(),
        false => text.parse::<IpAddr>().ok(),
    };
    parsed
        .map(|ip| ip.to_canonical())
        .ok_or_else(|| CniError::invalid_config(format!("cannot understand requested ip {text:?}")))
}

/// The last address of a subnet that can be handed out: the one before the
/// broadcast address for IPv4, the very last one for IPv6.
fn last_usable(subnet: &IpNet) -> IpAddr {
    let last = subnet.broadcast();
    match last {
        IpAddr::V4(_) => from_u128(to_u128(last) - 1, last),
        IpAddr::V6(_) => last,
    }
}

impl RawRange {
    /// Fills in the defaults and validates, as the reference's Canonicalize does.
    pub fn resolve(&self) -> Result<Range, CniError> {
        if self.subnet.trim().is_empty() {
            return Err(CniError::invalid_config("a range needs a subnet"));
        }
        let subnet: IpNet = self
            .subnet
            .trim()
            .parse()
            .map_err(|_| CniError::invalid_config(format!("invalid subnet {:?}", self.subnet)))?;
        // The reference refuses these too ("IPNet IP and Mask version mismatch"):
        // an IPv4 network must be written as one.
        if let IpNet::V6(n) = subnet {
            if let Some(v4) = n.addr().to_ipv4_mapped() {
                let hint = match n.prefix_len().checked_sub(96) {
                    Some(len) => format!(" (write it as {}/{len})", v4),
                    None => String::new(),
                };
                return Err(CniError::invalid_config(format!(
                    "subnet {:?} is an IPv4-mapped IPv6 network{hint}",
                    self.subnet
                )));
            }
        }
        // No room for anything but the network and broadcast addresses.
        if subnet.prefix_len() > subnet.max_prefix_len() - 2 {
            return Err(CniError::invalid_config(format!("Network {subnet} too small to allocate from")));
        }
        if subnet.addr() != subnet.network() {
            return Err(CniError::invalid_config(format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {}",
                subnet.prefix_len(),
                subnet.network()
            )));
        }
        let network = subnet.network();
        let after_network = from_u128(to_u128(network) + 1, network);
        let in_subnet = |ip: IpAddr, what: &str| -> Result<IpAddr, CniError> {
            if same_family(ip, network) && subnet.contains(&ip) {
                Ok(ip)
            } else {
                Err(CniError::invalid_config(format!("{what} {ip} not in network {subnet}")))
            }
        };
        let gateway = match self.gateway.trim() {
            "" => after_network,
            text => {
                let gw = parse_ip(text, "gateway")?;
                if !same_family(gw, network) {
                    return Err(CniError::invalid_config(format!(
                        "gateway {gw} is not of the same address family as subnet {subnet}"
                    )));
                }
                gw
            }
        };
        let start = match self.range_start.trim() {
            "" => after_network,
            text => in_subnet(parse_ip(text, "rangeStart")?, "RangeStart")?,
        };
        let end = match self.range_end.trim() {
            "" => last_usable(&subnet),
            text => in_subnet(parse_ip(text, "rangeEnd")?, "RangeEnd")?,
        };
        if start > end {
            return Err(CniError::invalid_config(format!("RangeStart {start} is after RangeEnd {end}")));
        }
        Ok(Range { subnet, start, end, gateway })
    }
}

/// Resolves and validates one range set.
pub fn resolve_set(raw: &[RawRange]) -> Result<RangeSet, CniError> {
    if raw.is_empty() {
        return Err(CniError::invalid_config("empty range set"));
    }
    let ranges = raw.iter().map(RawRange::resolve).collect::<Result<Vec<_>, _>>()?;
    if ranges.iter().any(|r| !same_family(r.start, ranges[0].start)) {
        return Err(CniError::invalid_config("mixed address families"));
    }
    for (i, a) in ranges.iter().enumerate() {
        if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
            return Err(CniError::invalid_config(format!("subnets {a} and {b} overlap")));
        }
    }
    Ok(RangeSet(ranges))
}

/// Resolves every range set and checks them against each other.
pub fn resolve_sets(raw: &[Vec<RawRange>], cni_version: &str) -> Result<Vec<RangeSet>, CniError> {
    let mut sets = Vec::with_capacity(raw.len());
    for (i, set) in raw.iter().enumerate() {
        let set =
            resolve_set(set).map_err(|e| CniError::invalid_config(format!("invalid range set {i}: {}", e.msg)))?;
        sets.push(set);
    }
    let v4 = sets.iter().filter(|s| s.is_ipv4()).count();
    let v6 = sets.len() - v4;
    if (v4 > 1 || v6 > 1) && !version::at_least(cni_version, "0.3.0") {
        return Err(CniError::invalid_config(format!(
            "CNI version {cni_version} does not support more than 1 address per family"
        )));
    }
    for (i, a) in sets.iter().enumerate() {
        if let Some(j) = sets[i + 1..].iter().position(|b| a.overlaps(b)) {
            return Err(CniError::invalid_config(format!("range set {i} overlaps with {}", i + 1 + j)));
        }
    }
    Ok(sets)
}

/// Refuses network names that would not stay one directory below dataDir.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(CniError::invalid_config(format!(
            "network name {name:?} cannot be used as a directory name in the host-local data dir"
        )));
    }
    Ok(())
}

/// Where the store of this network lives: all DEL and GC need.
pub fn load_location(cmd: &Command) -> Result<(String, PathBuf), CniError> {
    let net: Net = cmd.parse_config()?;
    let ipam = net.ipam.ok_or_else(|| CniError::invalid_config("IPAM config missing 'ipam' key"))?;
    validate_network_name(&net.name)?;
    Ok((net.name, data_dir(&ipam)))
}

fn data_dir(ipam: &RawIpam) -> PathBuf {
    PathBuf::from(if ipam.data_dir.is_empty() { DEFAULT_DATA_DIR } else { &ipam.data_dir })
}

/// The full configuration. Without `require_ranges`, a config naming no
/// range at all is accepted (STATUS cannot know the runtime's ipRanges).
pub fn load(cmd: &Command, require_ranges: bool) -> Result<Config, CniError> {
    let net: Net = cmd.parse_config()?;
    let ipam = net.ipam.ok_or_else(|| CniError::invalid_config("IPAM config missing 'ipam' key"))?;
    validate_network_name(&net.name)?;

    let mut requested = Vec::new();
    let cni_args = cmd.args()?;
    cni_args.check_known(&["IP"])?;
    if let Some(ips) = cni_args.get("IP").filter(|v| !v.trim().is_empty()) {
        for ip in ips.split(',') {
            requested.push(parse_requested_ip(ip)?);
        }
    }
    for ip in cmd.args_cni::<Vec<String>>("ips")?.unwrap_or_default() {
        requested.push(parse_requested_ip(&ip)?);
    }
    for ip in cmd.runtime_config::<Vec<String>>("ips")?.unwrap_or_default() {
        requested.push(parse_requested_ip(&ip)?);
    }

    // Runtime ranges first, then the legacy single range, then `ranges`, as in the reference.
    let mut raw_sets: Vec<Vec<RawRange>> = cmd.runtime_config("ipRanges")?.unwrap_or_default();
    if !ipam.subnet.trim().is_empty() {
        raw_sets.push(vec![RawRange {
            subnet: ipam.subnet.clone(),
            range_start: ipam.range_start.clone(),
            range_end: ipam.range_end.clone(),
            gateway: ipam.gateway.clone(),
        }]);
    }
    raw_sets.extend(ipam.ranges.iter().cloned());
    if raw_sets.is_empty() && require_ranges {
        return Err(CniError::invalid_config("no IP ranges specified"));
    }
    let ranges = resolve_sets(&raw_sets, &cmd.version)?;

    Ok(Config {
        name: net.name,
        data_dir: data_dir(&ipam),
        ranges,
        routes: ipam.routes,
        resolv_conf: ipam.resolv_conf,
        requested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::skel::test_command;

    fn conf(ipam: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"net1","type":"bridge","ipam":{ipam}}}"#)
    }

    fn load_ok(ipam: &str) -> Config {
        load(&test_command("ADD", &conf(ipam), ""), true).unwrap()
    }

    fn load_err(ipam: &str) -> CniError {
        load(&test_command("ADD", &conf(ipam), ""), true).unwrap_err()
    }

    #[test]
    fn legacy_range_with_defaults() {
        let c = load_ok(r#"{"type":"host-local","subnet":"10.1.2.0/24"}"#);
        assert_eq!(c.name, "net1");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let r = &c.ranges[0].0[0];
        assert_eq!(r.to_string(), "10.1.2.1-10.1.2.254");
        assert_eq!(r.gateway.to_string(), "10.1.2.1");
        assert_eq!(r.size(), 253);
    }

    #[test]
    fn ranges_after_the_legacy_range() {
        let c = load_ok(
            r#"{"type":"host-local","subnet":"10.1.2.0/24","rangeStart":"10.1.2.9","rangeEnd":"10.1.2.20",
                "gateway":"10.1.2.30","dataDir":"/tmp/x","resolvConf":"/etc/resolv.conf",
                "routes":[{"dst":"0.0.0.0/0"}],
                "ranges":[[{"subnet":"2001:db8:1::/64"}],[{"subnet":"10.2.0.0/16","rangeStart":"10.2.1.0"},{"subnet":"10.3.0.0/30"}]]}"#,
        );
        let sets: Vec<String> = c.ranges.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            sets,
            [
                "10.1.2.9-10.1.2.20",
                "2001:db8:1::1-2001:db8:1:0:ffff:ffff:ffff:ffff",
                "10.2.1.0-10.2.255.254,10.3.0.1-10.3.0.2"
            ]
        );
        assert_eq!(c.ranges[0].0[0].gateway.to_string(), "10.1.2.30");
        assert_eq!(c.ranges[0].0[0].size(), 12);
        assert_eq!(c.ranges[1].0[0].gateway.to_string(), "2001:db8:1::1");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.resolv_conf, "/etc/resolv.conf");
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn runtime_ranges_come_first() {
        let config = r#"{"cniVersion":"1.0.0","name":"net1","type":"bridge","ipam":{"type":"host-local",
            "ranges":[[{"subnet":"10.1.0.0/16"}]]},
            "runtimeConfig":{"ipRanges":[[{"subnet":"10.2.0.0/16"}]]}}"#;
        let c = load(&test_command("ADD", config, ""), true).unwrap();
        assert_eq!(c.ranges.len(), 2);
        assert_eq!(c.ranges[0].0[0].subnet.to_string(), "10.2.0.0/16");
        // A config with only the capability works.
        let config = r#"{"cniVersion":"1.0.0","name":"net1","type":"bridge","ipam":{"type":"host-local"},
            "runtimeConfig":{"ipRanges":[[{"subnet":"10.2.0.0/16"}]]}}"#;
        assert_eq!(load(&test_command("ADD", config, ""), true).unwrap().ranges.len(), 1);
    }

    #[test]
    fn requested_ips_from_everywhere() {
        let config = r#"{"cniVersion":"1.0.0","name":"net1","type":"bridge","ipam":{"type":"host-local",
            "subnet":"10.1.0.0/16"},"args":{"cni":{"ips":["10.1.0.8"]}},"runtimeConfig":{"ips":["10.1.0.9/16"]}}"#;
        let c = load(&test_command("ADD", config, "IP=10.1.0.5,10.1.0.6/16"), true).unwrap();
        let ips: Vec<String> = c.requested.iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["10.1.0.5", "10.1.0.6", "10.1.0.8", "10.1.0.9"]);
        assert_eq!(load(&test_command("ADD", config, "IP=10.1.0.500"), true).unwrap_err().code, 7);
        assert_eq!(load(&test_command("ADD", config, "IP=10.1.0.5/"), true).unwrap_err().code, 7);
        assert_eq!(load(&test_command("ADD", config, "FOO=bar"), true).unwrap_err().code, 7);
        assert!(load(&test_command("ADD", config, "IP=;IgnoreUnknown=1;FOO=bar"), true).is_ok());
    }

    #[test]
    fn small_subnets_and_ipv6() {
        assert_eq!(
            load_err(r#"{"subnet":"10.0.0.0/31"}"#).msg,
            "invalid range set 0: Network 10.0.0.0/31 too small to allocate from"
        );
        assert_eq!(load_err(r#"{"subnet":"10.0.0.1/32"}"#).code, 7);
        assert_eq!(load_err(r#"{"subnet":"fd00::/127"}"#).code, 7);
        let c = load_ok(r#"{"subnet":"10.0.0.0/30"}"#);
        assert_eq!(c.ranges[0].to_string(), "10.0.0.1-10.0.0.2");
        assert_eq!(c.ranges[0].0[0].size(), 1);
        let c = load_ok(r#"{"subnet":"fd00::/126"}"#);
        assert_eq!(c.ranges[0].to_string(), "fd00::1-fd00::3");
        assert_eq!(c.ranges[0].0[0].size(), 2);
    }

    #[test]
    fn validation_errors_are_code_7() {
        let cases = [
            (r#"{"type":"host-local"}"#, "no IP ranges specified"),
            (r#"{"subnet":"10.0.0.0/33"}"#, "invalid range set 0: invalid subnet \"10.0.0.0/33\""),
            (r#"{"subnet":"10.0.0.5/24"}"#, "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0"),
            (r#"{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.5"}"#, "invalid range set 0: RangeStart 10.0.1.5 not in network 10.0.0.0/24"),
            (r#"{"subnet":"10.0.0.0/24","rangeEnd":"10.0.1.5"}"#, "invalid range set 0: RangeEnd 10.0.1.5 not in network 10.0.0.0/24"),
            (r#"{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.50","rangeEnd":"10.0.0.40"}"#, "invalid range set 0: RangeStart 10.0.0.50 is after RangeEnd 10.0.0.40"),
            (r#"{"subnet":"10.0.0.0/24","rangeStart":"fd00::5"}"#, "invalid range set 0: RangeStart fd00::5 not in network 10.0.0.0/24"),
            (r#"{"subnet":"10.0.0.0/24","gateway":"fd00::1"}"#, "invalid range set 0: gateway fd00::1 is not of the same address family as subnet 10.0.0.0/24"),
            (r#"{"subnet":"10.0.0.0/24","gateway":"x"}"#, "invalid range set 0: invalid gateway \"x\""),
            (r#"{"ranges":[[]]}"#, "invalid range set 0: empty range set"),
            (r#"{"ranges":[[{"gateway":"10.0.0.1"}]]}"#, "invalid range set 0: a range needs a subnet"),
            (r#"{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}"#, "invalid range set 0: mixed address families"),
            (r#"{"ranges":[[{"subnet":"10.1.0.0/22"},{"subnet":"10.1.2.0/24"}]]}"#, "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap"),
            (r#"{"ranges":[[{"subnet":"10.1.0.0/22"}],[{"subnet":"fd00::/64"}],[{"subnet":"10.1.2.0/24"}]]}"#, "range set 0 overlaps with 2"),
        ];
        for (ipam, msg) in cases {
            let e = load_err(ipam);
            assert_eq!((e.code, e.msg.as_str()), (7, msg), "{ipam}");
        }
        // Ranges next to each other do not overlap.
        load_ok(
            r#"{"ranges":[[{"subnet":"10.1.0.0/24","rangeEnd":"10.1.0.100"},{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.101"}]]}"#,
        );
    }

    #[test]
    fn old_versions_take_one_address_per_family() {
        let config = r#"{"cniVersion":"0.2.0","name":"net1","type":"bridge","ipam":{"type":"host-local",
            "ranges":[[{"subnet":"10.1.0.0/16"}],[{"subnet":"10.2.0.0/16"}]]}}"#;
        let e = load(&test_command("ADD", config, ""), true).unwrap_err();
        assert_eq!(e.msg, "CNI version 0.2.0 does not support more than 1 address per family");
        let config = config.replace("10.2.0.0/16", "fd00::/64");
        load(&test_command("ADD", &config, ""), true).unwrap();
    }

    #[test]
    fn ipv4_mapped_addresses() {
        // A mapped subnet is refused, as the reference does; mapped addresses
        // in a range or a request count as IPv4.
        let e = load_err(r#"{"subnet":"::ffff:10.0.0.0/120"}"#);
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("write it as 10.0.0.0/24"), "{}", e.msg);
        let c = load_ok(r#"{"subnet":"10.0.0.0/24","rangeStart":"::ffff:10.0.0.5","gateway":"::ffff:10.0.0.1"}"#);
        assert_eq!(c.ranges[0].to_string(), "10.0.0.5-10.0.0.254");
        assert_eq!(c.ranges[0].0[0].gateway.to_string(), "10.0.0.1");
        let config = conf(r#"{"type":"host-local","subnet":"10.0.0.0/24"}"#);
        let c = load(&test_command("ADD", &config, "IP=::ffff:10.0.0.9"), true).unwrap();
        assert_eq!(c.requested[0].to_string(), "10.0.0.9");
    }

    #[test]
    fn network_names_stay_below_the_data_dir() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert_eq!(validate_network_name(bad).unwrap_err().code, 7, "{bad:?}");
        }
        validate_network_name("my-net.v1_2").unwrap();
        let config = r#"{"cniVersion":"1.0.0","name":"../etc","type":"bridge","ipam":{"subnet":"10.0.0.0/24"}}"#;
        assert_eq!(load(&test_command("ADD", config, ""), true).unwrap_err().code, 7);
        assert_eq!(load_location(&test_command("DEL", config, "")).unwrap_err().code, 7);
    }

    #[test]
    fn status_without_ranges() {
        let c = load(&test_command("ADD", &conf(r#"{"type":"host-local"}"#), ""), false).unwrap();
        assert!(c.ranges.is_empty());
    }
}
