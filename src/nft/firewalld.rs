//! firewalld, for the firewall plugin: where firewalld runs, its own
//! nftables tables (`inet firewalld`) decide what is forwarded, and an
//! accept in cnibox's table does not get a packet past them. As the
//! reference does, each container address becomes a source of a firewalld
//! zone (`trusted` unless the config names another), in the runtime
//! configuration only: firewalld forgets it on restart or reload, as it
//! forgets everything not in its permanent configuration.
//!
//! firewalld is reached over the system bus (util/dbus.rs). Finding out
//! whether it runs costs one failed connect() when there is no system bus
//! socket, and one connection plus NameHasOwner otherwise. Calls to
//! firewalld never auto-start it: a plugin call should not start a
//! firewall on a node that does not run one.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::util::dbus::{self, Call, Connection};

pub const SERVICE: &str = "org.fedoraproject.FirewallD1";
const PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE_INTERFACE: &str = "org.fedoraproject.FirewallD1.zone";
/// The zone of container addresses unless the config says `firewalldZone`.
pub const DEFAULT_ZONE: &str = "trusted";

/// How long the bus may take to answer while we find firewalld.
const BUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long firewalld may take for one change (the first source of a zone
/// makes it apply the zone: many nftables rules). libdbus's default.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// firewalld's error codes we act on (the first word of its D-Bus error
/// message, e.g. `ZONE_ALREADY_SET: '10.0.0.5/32' already bound to 'trusted'`).
const ZONE_ALREADY_SET: &str = "ZONE_ALREADY_SET";
const UNKNOWN_SOURCE: &str = "UNKNOWN_SOURCE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No system bus, or nobody owns org.fedoraproject.FirewallD1 on it.
    NotRunning(String),
    /// firewalld refused a request: its error code (ZONE_CONFLICT,
    /// INVALID_ZONE, ...) and message.
    Refused { code: String, message: String },
    /// The bus failed us: I/O, a timeout, something unreadable.
    Bus(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotRunning(m) | Error::Bus(m) => f.write_str(m),
            Error::Refused { message, .. } => write!(f, "firewalld: {message}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

impl From<dbus::Error> for Error {
    fn from(e: dbus::Error) -> Error {
        match e {
            dbus::Error::NoBus(m) => Error::NotRunning(m),
            // firewalld stopped between our check and the call.
            dbus::Error::Remote { name, message } if name.starts_with("org.freedesktop.DBus.Error.") => {
                Error::NotRunning(format!("{name}: {message}"))
            }
            dbus::Error::Remote { message, .. } => {
                let code = message.split(':').next().unwrap_or_default().trim().to_string();
                Error::Refused { code, message }
            }
            other => Error::Bus(other.to_string()),
        }
    }
}

/// A source as firewalld and the reference name it: the address as a /32
/// or /128 network.
pub fn source(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// A connection to a running firewalld.
pub struct Firewalld {
    conn: Connection,
}

/// firewalld if it runs on the system bus (DBUS_SYSTEM_BUS_ADDRESS or the
/// standard socket); None when there is no bus or firewalld is not on it.
pub fn find() -> Result<Option<Firewalld>> {
    let address = dbus::system_bus_address();
    let mut conn = match Connection::open(&address, BUS_TIMEOUT) {
        Ok(conn) => conn,
        Err(dbus::Error::NoBus(m)) => {
            log::debug!("firewalld: {m}");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if !conn.name_has_owner(SERVICE)? {
        log::debug!("firewalld: {SERVICE} has no owner on {address}");
        return Ok(None);
    }
    conn.set_timeout(CALL_TIMEOUT)?;
    Ok(Some(Firewalld { conn }))
}

/// When the firewall plugin uses firewalld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// The config names another backend.
    Never,
    /// No backend named: firewalld when it runs, as the reference decides.
    IfRunning,
    /// `backend: "firewalld"`.
    Required,
}

/// firewalld as `usage` asks: None when it is not to be used or (IfRunning)
/// does not run. With IfRunning, a bus that fails us is logged and taken as
/// no firewalld: a node without firewalld must not fail for its bus.
pub fn connect(usage: Use) -> Result<Option<Firewalld>> {
    match usage {
        Use::Never => Ok(None),
        Use::Required => require().map(Some),
        Use::IfRunning => find().or_else(|e| {
            log::warn!("firewalld: cannot tell whether it runs ({e}); not using it");
            Ok(None)
        }),
    }
}

/// firewalld, which the config asks for: NotRunning when it does not run.
pub fn require() -> Result<Firewalld> {
    find()?.ok_or_else(|| {
        Error::NotRunning(format!("firewalld is not running ({SERVICE} has no owner on the system bus)"))
    })
}

fn zone_call(member: &str) -> Call<'_> {
    Call { destination: SERVICE, path: PATH, interface: ZONE_INTERFACE, member, auto_start: false }
}

impl Firewalld {
    /// Binds each address to `zone`. One bound to it already is fine (a
    /// retried ADD); on any other refusal the sources this call added are
    /// removed again and the error returned.
    pub fn add_sources(&mut self, zone: &str, addrs: &[IpAddr]) -> Result<()> {
        let mut added = Vec::new();
        for addr in addrs {
            match self.add_source(zone, *addr) {
                Ok(true) => added.push(*addr),
                Ok(false) => {}
                Err(e) => {
                    for undo in self.remove_sources(zone, &added) {
                        log::warn!("firewalld: undoing a failed ADD: {undo}");
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether the source was added (false: it was bound to `zone` already).
    fn add_source(&mut self, zone: &str, addr: IpAddr) -> Result<bool> {
        let src = source(addr);
        match self.conn.call(&zone_call("addSource"), &[zone, &src]).map_err(Error::from) {
            Ok(_) => {
                log::debug!("firewalld: {src} added to zone {zone}");
                Ok(true)
            }
            Err(Error::Refused { code, .. }) if code == ZONE_ALREADY_SET => Ok(false),
            Err(Error::Refused { code, message }) => {
                Err(Error::Refused { code, message: format!("adding {src} to zone {zone}: {message}") })
            }
            Err(e) => Err(e),
        }
    }

    /// Unbinds each address from `zone`, every one tried; a source bound
    /// to no zone is fine (DEL is idempotent). Returns what failed.
    pub fn remove_sources(&mut self, zone: &str, addrs: &[IpAddr]) -> Vec<Error> {
        let mut failed = Vec::new();
        for addr in addrs {
            let src = source(*addr);
            match self.conn.call(&zone_call("removeSource"), &[zone, &src]).map_err(Error::from) {
                Ok(_) => log::debug!("firewalld: {src} removed from zone {zone}"),
                Err(Error::Refused { code, .. }) if code == UNKNOWN_SOURCE => {}
                Err(e) => failed.push(e),
            }
        }
        failed
    }

    /// The sources of `addrs` not bound to `zone`.
    pub fn missing_sources(&mut self, zone: &str, addrs: &[IpAddr]) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for addr in addrs {
            let src = source(*addr);
            if !self.conn.call(&zone_call("querySource"), &[zone, &src])?.boolean()? {
                missing.push(src);
            }
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_host_networks() {
        assert_eq!(source("10.1.0.5".parse().unwrap()), "10.1.0.5/32");
        assert_eq!(source("fd01::5".parse().unwrap()), "fd01::5/128");
    }

    #[test]
    fn firewalld_errors_by_code() {
        let refused = Error::from(dbus::Error::Remote {
            name: "org.fedoraproject.FirewallD1.Exception".into(),
            message: "ZONE_ALREADY_SET: '10.0.0.5/32' already bound to 'trusted'".into(),
        });
        assert!(matches!(&refused, Error::Refused { code, .. } if code == ZONE_ALREADY_SET), "{refused:?}");
        let gone = Error::from(dbus::Error::Remote {
            name: "org.freedesktop.DBus.Error.ServiceUnknown".into(),
            message: "The name is not activatable".into(),
        });
        assert!(matches!(gone, Error::NotRunning(_)));
        assert!(matches!(Error::from(dbus::Error::NoBus("x".into())), Error::NotRunning(_)));
        assert!(matches!(Error::from(dbus::Error::Io("timeout".into())), Error::Bus(_)));
    }
}
