//! loopback: brings `lo` up inside the container.

use super::shared::link_plugin::{open_container, open_container_for_del};
use crate::cni::{Applet, CniError, CniResult, Command, Interface, IpConfig};

pub struct Loopback;

impl Applet for Loopback {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        cmd.prev_result().map(|_| ())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let (_ns, nl) = open_container(cmd)?;
        // Before anything changed: lets tests tell whether fault injection is built in.
        crate::cni::fault::step("loopback: container opened")?;
        let lo = nl.require_link("lo")?;
        nl.set_up(lo.index)?;
        if let Some(prev) = cmd.prev_result()? {
            return Ok(prev);
        }
        let ips = nl
            .addrs(Some(lo.index))?
            .into_iter()
            .map(|a| IpConfig { address: a.net, gateway: None, interface: Some(0) })
            .collect();
        Ok(CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: cmd.netns.clone(),
                ..Default::default()
            }],
            ips,
            ..Default::default()
        })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        // The container may be gone already; nothing then remains to undo.
        let Some((_ns, nl)) = open_container_for_del(cmd)? else { return Ok(()) };
        if let Some(lo) = nl.link("lo")? {
            nl.set_down(lo.index)?;
        }
        Ok(())
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let (_ns, nl) = open_container(cmd)?;
        let lo = nl.require_link("lo")?;
        if !lo.up {
            return Err(CniError::internal("loopback interface is down"));
        }
        Ok(())
    }
}
