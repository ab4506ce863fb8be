//! dummy: a dummy interface in the container carrying the IPAM addresses
//! (an address the container owns without any link to the outside).

use rtnetlink::LinkDummy;

use super::shared::link_plugin::{self, open_container};
use super::shared::result_check;
use crate::cni::fault;
use crate::cni::{ipam, Applet, CniError, CniResult, Command};

pub struct Dummy;

fn require_ipam(cmd: &Command) -> Result<(), CniError> {
    if ipam::has_ipam(cmd) {
        Ok(())
    } else {
        Err(CniError::invalid_config("dummy interface requires an IPAM configuration"))
    }
}

impl Applet for Dummy {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        require_ipam(cmd)?;
        ipam::validate(cmd)
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        require_ipam(cmd)?;
        let (ns, nl) = open_container(cmd)?;
        nl.add_link_message(LinkDummy::new(&cmd.ifname).build(), &format!("creating dummy {}", cmd.ifname)).map_err(
            |e| {
                let why = if e.is_exists() { format!("an interface {:?} already exists", cmd.ifname) } else { e.msg };
                CniError::internal(format!("failed to create dummy: {why}"))
            },
        )?;
        let link = nl.require_link(&cmd.ifname)?;
        fault::step("dummy: created").and_then(|_| link_plugin::address_or_up(cmd, &ns, &nl, &link)).inspect_err(|_| {
            let _ = nl.del_link(link.index);
        })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::del_link_and_ipam(cmd)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        require_ipam(cmd)?;
        let (_nl, link) = link_plugin::check_interface(cmd)?;
        result_check::expect_kind(&link, "dummy")?;
        if !link.up {
            return Err(CniError::internal(format!("interface {} is down", link.name)));
        }
        Ok(())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_gc(cmd)
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_status(cmd)
    }
}
