//! CNI errors: the spec's `{"cniVersion","code","msg","details"}` object.

use std::fmt;

/// Error codes reserved by the CNI spec.
pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNSUPPORTED_FIELD: u32 = 2;
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENV: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODE_FAILURE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN_LATER: u32 = 11;
pub const NOT_AVAILABLE: u32 = 50;
pub const LIMITED_CONNECTIVITY: u32 = 51;
/// Anything that is not one of the spec's well-known failures (the Go
/// reference uses the same number for its "internal" errors).
pub const INTERNAL: u32 = 999;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(INTERNAL, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(INVALID_CONFIG, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(INVALID_ENV, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(DECODE_FAILURE, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(IO_FAILURE, msg)
    }
    pub fn unsupported_field(msg: impl Into<String>) -> Self {
        Self::new(UNSUPPORTED_FIELD, msg)
    }

    /// The JSON object the spec asks for, in the given spec version.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut obj = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            obj["details"] = self.details.clone().into();
        }
        obj
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

impl From<anyhow::Error> for CniError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<CniError>() {
            Ok(cni) => cni,
            Err(other) => CniError::internal(format!("{other:#}")),
        }
    }
}

impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> Self {
        CniError::io(e.to_string())
    }
}

/// `result.cni(code, "what failed")?` turns any displayable error into a
/// CniError whose details carry the original message.
pub trait CniContext<T> {
    fn cni(self, code: u32, msg: impl Into<String>) -> Result<T, CniError>;
    fn cni_internal(self, msg: impl Into<String>) -> Result<T, CniError>;
}

impl<T, E: fmt::Display> CniContext<T> for Result<T, E> {
    fn cni(self, code: u32, msg: impl Into<String>) -> Result<T, CniError> {
        self.map_err(|e| CniError::new(code, msg).with_details(e.to_string()))
    }
    fn cni_internal(self, msg: impl Into<String>) -> Result<T, CniError> {
        self.cni(INTERNAL, msg)
    }
}

// The lower layers' errors, as CNI errors. They live here so that netlink/,
// nft/ and util/ know nothing of CNI.

impl From<crate::netlink::Error> for CniError {
    fn from(e: crate::netlink::Error) -> Self {
        CniError::internal(e.msg)
    }
}

/// CNI_NETNS names no namespace this plugin can use: an invalid
/// environment, whichever way it failed (the cause goes in the details).
impl From<crate::netlink::NetNsError> for CniError {
    fn from(e: crate::netlink::NetNsError) -> Self {
        CniError::invalid_env(format!("failed to open netns {:?}", e.path())).with_details(e.to_string())
    }
}

impl From<crate::nft::Error> for CniError {
    fn from(e: crate::nft::Error) -> Self {
        CniError::internal(e.msg).with_details(e.details.trim().to_string())
    }
}

/// firewalld not running is "not available" (STATUS); the firewall plugin
/// says otherwise where the config's backend is at stake.
impl From<crate::nft::firewalld::Error> for CniError {
    fn from(e: crate::nft::firewalld::Error) -> Self {
        use crate::nft::firewalld::Error;
        match e {
            Error::NotRunning(m) => CniError::new(NOT_AVAILABLE, m),
            Error::Refused { message, .. } => CniError::internal(message),
            Error::Bus(m) => CniError::io(format!("talking to firewalld: {m}")),
        }
    }
}

impl From<crate::util::fault::Injected> for CniError {
    fn from(e: crate::util::fault::Injected) -> Self {
        CniError::internal(e.msg)
    }
}

impl From<crate::util::lock::LockError> for CniError {
    fn from(e: crate::util::lock::LockError) -> Self {
        CniError::io(e.msg).with_details(e.details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_spec_shape() {
        let e = CniError::invalid_config("bad").with_details("why");
        let v = e.to_json("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "bad");
        assert_eq!(v["details"], "why");
        let v = CniError::io("x").to_json("0.4.0");
        assert!(v.get("details").is_none());
    }

    #[test]
    fn a_netns_that_cannot_be_opened_is_an_invalid_environment() {
        let e: CniError = crate::netlink::NetNs::open("/nonexistent/ns").unwrap_err().into();
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.contains("/nonexistent/ns"), "{}", e.msg);
        assert!(e.details.contains("does not exist"), "{}", e.details);
    }

    #[test]
    fn context_keeps_the_cause() {
        let r: Result<(), std::fmt::Error> = Err(std::fmt::Error);
        let e = r.cni(IO_FAILURE, "writing").unwrap_err();
        assert_eq!(e.code, 5);
        assert_eq!(e.msg, "writing");
        assert!(!e.details.is_empty());
    }
}
