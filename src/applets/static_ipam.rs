//! static: an IPAM plugin that hands out the addresses written in its
//! configuration (or passed by the runtime). Nothing is stored, so DEL has
//! nothing to undo.
//!
//! Where addresses come from, as in the reference, each step overriding or
//! extending the previous one:
//! 1. `ipam.addresses`;
//! 2. CNI_ARGS `IP=` (comma-separated CIDRs) appended, then `GATEWAY=`
//!    (comma-separated) set on every address whose subnet holds it;
//! 3. `args.cni.ips` replaces them all;
//! 4. `runtimeConfig.ips` (capability "ips") replaces them all.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::cni::{version, Applet, CniError, CniResult, Command, Dns, IpConfig, Route};

pub struct Static;

/// The part of the network configuration static reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct NetConfig {
    ipam: Option<IpamSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IpamSection {
    addresses: Vec<RawAddress>,
    routes: Vec<Route>,
    dns: Dns,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RawAddress {
    address: String,
    gateway: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticConfig {
    pub addresses: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

fn parse_cidr(text: &str, what: &str) -> Result<IpNet, CniError> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(canonical_net)
        .map_err(|_| CniError::invalid_config(format!("{what} is expected to be in CIDR notation, got: {text:?}")))
}

/// IPv4-mapped IPv6 addresses count as IPv4, as in the reference.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) => match n.addr().to_ipv4_mapped() {
            Some(v4) if n.prefix_len() >= 96 => IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).unwrap_or(net),
            _ => net,
        },
        v4 => v4,
    }
}

fn parse_ip(text: &str, what: &str) -> Result<IpAddr, CniError> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| CniError::invalid_config(format!("invalid {what}: {text:?}")))
}

fn from_cidrs(list: &[String], what: &str) -> Result<Vec<IpConfig>, CniError> {
    list.iter().map(|s| Ok(IpConfig { address: parse_cidr(s, what)?, gateway: None, interface: None })).collect()
}

/// Builds the configuration from the command, in the reference's precedence.
pub fn load(cmd: &Command) -> Result<StaticConfig, CniError> {
    let net: NetConfig = cmd.parse_config()?;
    let ipam = net.ipam.ok_or_else(|| CniError::invalid_config("IPAM config missing 'ipam' key"))?;

    let mut addresses = Vec::new();
    for (i, raw) in ipam.addresses.iter().enumerate() {
        let address = parse_cidr(&raw.address, &format!("ipam.addresses[{i}].address"))?;
        let gateway = match raw.gateway.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(gw) => Some(parse_ip(gw, &format!("gateway in ipam.addresses[{i}]"))?),
        };
        addresses.push(IpConfig { address, gateway, interface: None });
    }

    let cni_args = cmd.args()?;
    cni_args.check_known(&["IP", "GATEWAY"])?;
    if let Some(ips) = cni_args.get("IP").filter(|v| !v.is_empty()) {
        for item in ips.split(',') {
            addresses.push(IpConfig { address: parse_cidr(item, "CNI_ARGS IP")?, gateway: None, interface: None });
        }
    }
    if let Some(gateways) = cni_args.get("GATEWAY").filter(|v| !v.is_empty()) {
        for item in gateways.split(',') {
            let gw = parse_ip(item, "CNI_ARGS GATEWAY address")?;
            let mut used = false;
            for a in addresses.iter_mut().filter(|a| a.address.contains(&gw)) {
                a.gateway = Some(gw);
                used = true;
            }
            if !used {
                log::warn!("CNI_ARGS GATEWAY {gw} is in none of the addresses' subnets; ignored");
            }
        }
    }

    if let Some(ips) = cmd.args_cni::<Vec<String>>("ips")?.filter(|v| !v.is_empty()) {
        addresses = from_cidrs(&ips, "an entry of args.cni.ips")?;
    }
    if let Some(ips) = cmd.runtime_config::<Vec<String>>("ips")?.filter(|v| !v.is_empty()) {
        addresses = from_cidrs(&ips, "an entry of runtimeConfig.ips")?;
    }

    validate(&addresses, &cmd.version)?;
    Ok(StaticConfig { addresses, routes: ipam.routes, dns: ipam.dns })
}

fn validate(addresses: &[IpConfig], cni_version: &str) -> Result<(), CniError> {
    for a in addresses {
        if let Some(gw) = a.gateway {
            if gw.is_ipv4() != a.address.addr().is_ipv4() {
                return Err(CniError::invalid_config(format!(
                    "gateway {gw} is not of the same address family as address {}",
                    a.address
                )));
            }
        }
    }
    let v4 = addresses.iter().filter(|a| a.address.addr().is_ipv4()).count();
    let v6 = addresses.len() - v4;
    if (v4 > 1 || v6 > 1) && !version::at_least(cni_version, "0.3.0") {
        return Err(CniError::invalid_config(format!(
            "CNI version {cni_version} does not support more than 1 address per family"
        )));
    }
    Ok(())
}

impl Applet for Static {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        load(cmd)?;
        cmd.prev_result().map(|_| ())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = load(cmd)?;
        Ok(CniResult { ips: conf.addresses, routes: conf.routes, dns: conf.dns, ..Default::default() })
    }

    fn del(&self, _cmd: &Command) -> Result<(), CniError> {
        // Nothing was reserved, so nothing is released.
        Ok(())
    }

    /// The configuration must still be valid, and every configured address
    /// must be in the previous result (with its gateway, when one is set).
    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = load(cmd)?;
        let Some(prev) = cmd.prev_result()? else { return Ok(()) };
        for want in &conf.addresses {
            let found = prev.ips.iter().find(|ip| ip.address.addr() == want.address.addr());
            match found {
                None => {
                    return Err(CniError::internal(format!(
                        "static: address {} on interface {} is missing from prevResult",
                        want.address, cmd.ifname
                    )))
                }
                Some(got) if want.gateway.is_some() && got.gateway != want.gateway => {
                    return Err(CniError::internal(format!(
                        "static: failed to match addr {} on interface {}: gateway is {:?}, expected {:?}",
                        want.address.addr(),
                        cmd.ifname,
                        got.gateway,
                        want.gateway
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::skel::test_command;

    fn addrs(conf: &StaticConfig) -> Vec<String> {
        conf.addresses
            .iter()
            .map(|a| match a.gateway {
                Some(gw) => format!("{} via {gw}", a.address),
                None => a.address.to_string(),
            })
            .collect()
    }

    const BASE: &str = r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"static",
        "addresses":[{"address":"10.10.0.5/24","gateway":"10.10.0.1"},{"address":"3ffe:ffff:0:1::5/64"}],
        "routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.10.0.254"}],
        "dns":{"nameservers":["8.8.8.8"],"domain":"example.com","search":["example.com"]}}}"#;

    #[test]
    fn config_addresses_routes_dns() {
        let conf = load(&test_command("ADD", BASE, "")).unwrap();
        assert_eq!(addrs(&conf), ["10.10.0.5/24 via 10.10.0.1", "3ffe:ffff:0:1::5/64"]);
        assert_eq!(conf.routes.len(), 2);
        assert_eq!(conf.routes[1].gw, Some("10.10.0.254".parse().unwrap()));
        assert_eq!(conf.dns.nameservers, ["8.8.8.8"]);
        assert_eq!(conf.dns.domain, "example.com");
    }

    #[test]
    fn cni_args_append_and_set_gateways() {
        let conf =
            load(&test_command("ADD", BASE, "IP=10.20.0.7/16, 10.30.0.7/24;GATEWAY=10.20.0.1,10.30.0.1")).unwrap();
        assert_eq!(
            addrs(&conf),
            [
                "10.10.0.5/24 via 10.10.0.1",
                "3ffe:ffff:0:1::5/64",
                "10.20.0.7/16 via 10.20.0.1",
                "10.30.0.7/24 via 10.30.0.1"
            ]
        );
        // A gateway replaces the configured one when its subnet holds it.
        let conf = load(&test_command("ADD", BASE, "GATEWAY=10.10.0.254")).unwrap();
        assert_eq!(addrs(&conf)[0], "10.10.0.5/24 via 10.10.0.254");
    }

    #[test]
    fn args_then_runtime_config_replace() {
        let with_args =
            BASE.replacen(r#""type":"bridge","#, r#""type":"bridge","args":{"cni":{"ips":["10.1.0.2/24"]}},"#, 1);
        let conf = load(&test_command("ADD", &with_args, "IP=10.20.0.7/16")).unwrap();
        assert_eq!(addrs(&conf), ["10.1.0.2/24"]);
        let with_rc = with_args.replacen(
            r#""type":"bridge","#,
            r#""type":"bridge","runtimeConfig":{"ips":["10.2.0.2/24","fd00::2/64"]},"#,
            1,
        );
        let conf = load(&test_command("ADD", &with_rc, "IP=10.20.0.7/16")).unwrap();
        assert_eq!(addrs(&conf), ["10.2.0.2/24", "fd00::2/64"]);
        // Empty lists replace nothing.
        let empty = BASE.replacen(r#""type":"bridge","#, r#""type":"bridge","runtimeConfig":{"ips":[]},"#, 1);
        assert_eq!(load(&test_command("ADD", &empty, "")).unwrap().addresses.len(), 2);
    }

    #[test]
    fn invalid_configs_are_code_7() {
        let bad = [
            r#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":{"addresses":[{"address":"10.0.0.5"}]}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":{"addresses":[{"address":"10.0.0.5/33"}]}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":{"addresses":[{"address":"10.0.0.5/24","gateway":"fd00::1"}]}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":{"addresses":[{"address":"10.0.0.5/24","gateway":"nope"}]}}"#,
            r#"{"cniVersion":"0.2.0","name":"n","type":"x","ipam":{"addresses":[{"address":"10.0.0.5/24"},{"address":"10.0.1.5/24"}]}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"x"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":{},"runtimeConfig":{"ips":["10.0.0.1"]}}"#,
        ];
        for conf in bad {
            assert_eq!(load(&test_command("ADD", conf, "")).unwrap_err().code, 7, "{conf}");
        }
        assert_eq!(load(&test_command("ADD", BASE, "IP=10.0.0.1")).unwrap_err().code, 7);
        assert_eq!(load(&test_command("ADD", BASE, "GATEWAY=x")).unwrap_err().code, 7);
        assert_eq!(load(&test_command("ADD", BASE, "FOO=1")).unwrap_err().code, 7);
        load(&test_command("ADD", BASE, "FOO=1;IgnoreUnknown=1")).unwrap();
    }

    #[test]
    fn keys_match_case_insensitively() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"x","IPAM":{"Addresses":[{"Address":"10.0.0.5/24","Gateway":"10.0.0.1"}]}}"#;
        assert_eq!(addrs(&load(&test_command("ADD", conf, "")).unwrap()), ["10.0.0.5/24 via 10.0.0.1"]);
    }
}
