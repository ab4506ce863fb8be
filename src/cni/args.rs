//! CNI_ARGS: `K=V;K2=V2`, with the `IgnoreUnknown` convention.

use super::error::{CniError, INVALID_CONFIG};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for item in raw.split(';').filter(|s| !s.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(CniError::new(INVALID_CONFIG, format!("ARGS: invalid pair {item:?}")));
            };
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The last value given for `key` (keys are case-sensitive, as in the reference).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// `IgnoreUnknown=1` (or true) tells plugins to accept keys they do not know.
    pub fn ignore_unknown(&self) -> bool {
        matches!(self.get("IgnoreUnknown").map(|v| v.to_ascii_lowercase()).as_deref(), Some("1") | Some("true"))
    }

    /// Refuses keys outside `known` unless IgnoreUnknown is set, as the
    /// reference plugins do. The Kubernetes keys are known to every applet.
    pub fn check_known(&self, known: &[&str]) -> Result<(), CniError> {
        if self.ignore_unknown() {
            return Ok(());
        }
        const COMMON: &[&str] =
            &["IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"];
        for (k, _) in &self.pairs {
            if !known.contains(&k.as_str()) && !COMMON.contains(&k.as_str()) {
                return Err(CniError::new(INVALID_CONFIG, format!("ARGS: unknown args {k:?}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let a = CniArgs::parse("IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=web;;").unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("K8S_POD_NAME"), Some("web"));
        assert!(a.ignore_unknown());
        assert_eq!(a.get("ip"), None);
    }

    #[test]
    fn values_may_contain_equals() {
        let a = CniArgs::parse("X=a=b").unwrap();
        assert_eq!(a.get("X"), Some("a=b"));
    }

    #[test]
    fn rejects_a_pair_without_equals() {
        assert_eq!(CniArgs::parse("IP").unwrap_err().code, 7);
    }

    #[test]
    fn unknown_keys() {
        let a = CniArgs::parse("FOO=1;IP=1.2.3.4").unwrap();
        assert!(a.check_known(&["IP"]).is_err());
        assert!(a.check_known(&["IP", "FOO"]).is_ok());
        let a = CniArgs::parse("FOO=1;IgnoreUnknown=true").unwrap();
        assert!(a.check_known(&["IP"]).is_ok());
        let a = CniArgs::parse("K8S_POD_NAME=x").unwrap();
        assert!(a.check_known(&[]).is_ok());
    }
}
