//! Spec versions: which we speak, and converting results between the
//! 0.1/0.2 (`ip4`/`ip6`), 0.3/0.4 (`ips` with `version`) and 1.x shapes.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION};
use super::lenient;
use super::types::{CniResult, Dns, IpConfig, Route};

/// Every spec version cnibox speaks, oldest first.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const CURRENT: &str = "1.1.0";

/// (major, minor, patch) of a version string, if it is one.
pub fn parse(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// true when `version` is at least `min` (both valid versions).
pub fn at_least(version: &str, min: &str) -> bool {
    matches!((parse(version), parse(min)), (Some(a), Some(b)) if a >= b)
}

/// The version a config asks for: the highest supported entry of
/// `cniVersions` when present, else `cniVersion` (empty means 0.1.0, as in libcni).
pub fn negotiate(cni_version: &str, cni_versions: &[String]) -> Result<String, CniError> {
    if !cni_versions.is_empty() {
        let mut supported: Vec<&String> = cni_versions.iter().filter(|v| is_supported(v)).collect();
        supported.sort_by_key(|v| parse(v));
        return supported.last().map(|v| v.to_string()).ok_or_else(|| {
            CniError::new(INCOMPATIBLE_VERSION, "no supported version in cniVersions")
                .with_details(format!("asked for {cni_versions:?}, cnibox supports {SUPPORTED:?}"))
        });
    }
    let version = if cni_version.is_empty() { "0.1.0" } else { cni_version };
    if is_supported(version) {
        Ok(version.to_string())
    } else {
        Err(CniError::new(INCOMPATIBLE_VERSION, format!("incompatible CNI versions: config is {version:?}"))
            .with_details(format!("cnibox supports {SUPPORTED:?}")))
    }
}

/// The reply to VERSION.
pub fn version_reply(cni_version: &str) -> Value {
    json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED })
}

fn family_tag(addr: &IpNet) -> &'static str {
    match addr {
        IpNet::V4(_) => "4",
        IpNet::V6(_) => "6",
    }
}

/// Renders `result` in the shape of spec `version`.
pub fn render(result: &CniResult, version: &str) -> Value {
    let mut out = if at_least(version, "1.0.0") {
        serde_json::to_value(result).unwrap_or_default()
    } else if at_least(version, "0.3.0") {
        render_03(result)
    } else {
        render_02(result)
    };
    out["cniVersion"] = version.into();
    out
}

fn render_03(result: &CniResult) -> Value {
    let mut out = Map::new();
    if !result.interfaces.is_empty() {
        out.insert("interfaces".into(), serde_json::to_value(&result.interfaces).unwrap_or_default());
    }
    if !result.ips.is_empty() {
        let ips: Vec<Value> = result
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({ "version": family_tag(&ip.address), "address": ip.address.to_string() });
                if let Some(gw) = ip.gateway {
                    v["gateway"] = gw.to_string().into();
                }
                if let Some(i) = ip.interface {
                    v["interface"] = i.into();
                }
                v
            })
            .collect();
        out.insert("ips".into(), ips.into());
    }
    if !result.routes.is_empty() {
        out.insert("routes".into(), result.routes.iter().map(route_dst_gw).collect::<Vec<_>>().into());
    }
    if !result.dns.is_empty() {
        out.insert("dns".into(), serde_json::to_value(&result.dns).unwrap_or_default());
    }
    Value::Object(out)
}

fn route_dst_gw(r: &Route) -> Value {
    let mut v = json!({ "dst": r.dst.to_string() });
    if let Some(gw) = r.gw {
        v["gw"] = gw.to_string().into();
    }
    v
}

/// 0.1.0/0.2.0 carry one address per family, with that family's routes.
fn render_02(result: &CniResult) -> Value {
    let mut out = Map::new();
    for (key, want_v4) in [("ip4", true), ("ip6", false)] {
        let Some(ip) = result.ips.iter().find(|ip| matches!(ip.address, IpNet::V4(_)) == want_v4) else {
            continue;
        };
        let mut v = json!({ "ip": ip.address.to_string() });
        if let Some(gw) = ip.gateway {
            v["gateway"] = gw.to_string().into();
        }
        let routes: Vec<Value> =
            result.routes.iter().filter(|r| matches!(r.dst, IpNet::V4(_)) == want_v4).map(route_dst_gw).collect();
        if !routes.is_empty() {
            v["routes"] = routes.into();
        }
        out.insert(key.into(), v);
    }
    if !result.dns.is_empty() {
        out.insert("dns".into(), serde_json::to_value(&result.dns).unwrap_or_default());
    }
    Value::Object(out)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LegacyIp {
    ip: Option<IpNet>,
    gateway: Option<IpAddr>,
    routes: Vec<Route>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LegacyResult {
    ip4: Option<LegacyIp>,
    ip6: Option<LegacyIp>,
    dns: Dns,
}

/// Reads a result (a prevResult or a delegate's output) written in any
/// supported version. The version is taken from the object itself, falling
/// back to `default_version`.
pub fn parse_result(value: &Value, default_version: &str) -> Result<CniResult, CniError> {
    let decode =
        |e: lenient::Error| CniError::new(DECODE_FAILURE, "failed to decode result").with_details(e.to_string());
    let version = value.get("cniVersion").and_then(Value::as_str).unwrap_or(default_version);
    let legacy = !at_least(version, "0.3.0") || value.get("ip4").is_some() || value.get("ip6").is_some();
    if !legacy {
        // 0.3.x/0.4.0 differ from 1.x only by the ips' "version", which serde ignores.
        return lenient::from_value::<CniResult>(value).map_err(decode);
    }
    let old: LegacyResult = lenient::from_value(value).map_err(decode)?;
    let mut result = CniResult { dns: old.dns, ..Default::default() };
    for ip in [old.ip4, old.ip6].into_iter().flatten() {
        if let Some(address) = ip.ip {
            result.ips.push(IpConfig { address, gateway: ip.gateway, interface: None });
        }
        result.routes.extend(ip.routes);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        serde_json::from_value(json!({
            "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"}],
            "ips": [
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400}, {"dst": "::/0"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        }))
        .unwrap()
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate("0.4.0", &[]).unwrap(), "0.4.0");
        assert_eq!(negotiate("", &[]).unwrap(), "0.1.0");
        assert_eq!(negotiate("9.9.9", &[]).unwrap_err().code, 1);
        assert_eq!(negotiate("0.4.0", &["1.0.0".into(), "2.0.0".into(), "0.3.1".into()]).unwrap(), "1.0.0");
        assert_eq!(negotiate("", &["2.0.0".into()]).unwrap_err().code, 1);
        assert!(at_least("1.1.0", "1.1.0") && !at_least("1.0.0", "1.1.0") && at_least("0.10.0", "0.4.0"));
    }

    #[test]
    fn every_version_pair_round_trips_what_it_can_carry() {
        for from in SUPPORTED {
            let rendered = render(&sample(), from);
            assert_eq!(rendered["cniVersion"], *from);
            let parsed = parse_result(&rendered, from).unwrap();
            for to in SUPPORTED {
                let again = parse_result(&render(&parsed, to), to).unwrap();
                assert_eq!(again.ips.len(), 2, "{from}->{to}");
                assert_eq!(again.ips[0].address.to_string(), "10.1.0.5/24");
                assert_eq!(again.ips[1].gateway.unwrap().to_string(), "fd00::1");
                assert_eq!(again.routes.len(), 2);
                assert_eq!(again.dns.nameservers, vec!["10.1.0.1"]);
                let keeps_interfaces = at_least(from, "0.3.0") && at_least(to, "0.3.0");
                assert_eq!(again.interfaces.len(), keeps_interfaces as usize, "{from}->{to}");
            }
        }
    }

    #[test]
    fn shapes_per_version() {
        let r = render(&sample(), "0.2.0");
        assert_eq!(r["ip4"]["ip"], "10.1.0.5/24");
        assert_eq!(r["ip6"]["gateway"], "fd00::1");
        assert_eq!(r["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
        assert!(r.get("interfaces").is_none());
        let r = render(&sample(), "0.4.0");
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["ips"][1]["version"], "6");
        assert!(r["routes"][0].get("mtu").is_none());
        let r = render(&sample(), "1.1.0");
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["routes"][0]["mtu"], 1400);
    }

    #[test]
    fn a_bad_result_is_a_decode_error() {
        let e = parse_result(&json!({"cniVersion": "1.0.0", "ips": [{"address": "nope"}]}), "1.0.0").unwrap_err();
        assert_eq!(e.code, 6);
    }
}
