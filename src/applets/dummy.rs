//! dummy: a dummy interface in the container carrying the IPAM addresses
//! (an address the container owns without any link to the outside).

use rtnetlink::LinkDummy;

use super::stacked;
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
    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        require_ipam(cmd)?;
        let (ns, nl) = stacked::open_container(cmd)?;
        nl.add_link_message(LinkDummy::new(&cmd.ifname).build(), &format!("creating dummy {}", cmd.ifname)).map_err(
            |e| {
                let why = if e.is_exists() { format!("an interface {:?} already exists", cmd.ifname) } else { e.msg };
                CniError::internal(format!("failed to create dummy: {why}"))
            },
        )?;
        let link = nl.require_link(&cmd.ifname)?;
        stacked::configure(cmd, &ns, &nl, &link, None, false).inspect_err(|_| {
            let _ = nl.del_link(link.index);
        })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        stacked::del(cmd)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        require_ipam(cmd)?;
        let (_prev, _ns, _nl, link) = stacked::check(cmd, "dummy")?;
        if !link.up {
            return Err(CniError::internal(format!("interface {} is down", link.name)));
        }
        Ok(())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        stacked::gc(cmd)
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        stacked::status(cmd)
    }
}
