//! Persistent tap devices. The kernel creates tun/tap devices only through
//! the TUNSETIFF ioctl on /dev/net/tun (not over rtnetlink), in the netns of
//! the calling thread: call `create_tap` inside `NetNs::run`.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use nix::libc;

use super::{Error, Result};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;

pub const IFF_TAP: i16 = 0x0002;
pub const IFF_MULTI_QUEUE: i16 = 0x0100;
pub const IFF_NO_PI: i16 = 0x1000;
pub const IFF_VNET_HDR: i16 = 0x4000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

#[derive(Debug, Clone, Default)]
pub struct TapSpec<'a> {
    pub name: &'a str,
    pub multi_queue: bool,
    /// Ask for the virtio-net header (IFF_VNET_HDR).
    pub vnet_hdr: bool,
    /// Users other than root allowed to attach (None: root only).
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl TapSpec<'_> {
    pub fn flags(&self) -> i16 {
        let mut flags = IFF_TAP | IFF_NO_PI;
        if self.vnet_hdr {
            flags |= IFF_VNET_HDR;
        }
        if self.multi_queue {
            flags |= IFF_MULTI_QUEUE;
        }
        flags
    }
}

fn ioctl(fd: i32, request: libc::c_ulong, arg: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: `fd` is an open /dev/net/tun; `arg` is a value or a pointer to
    // a live IfReq, as each request expects.
    let rc = unsafe { libc::ioctl(fd, request, arg) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::new(e.raw_os_error().unwrap_or(0), format!("{what}: {e}")));
    }
    Ok(())
}

/// Creates the persistent tap `spec.name` in the calling thread's netns. The
/// device only outlives this call once everything else succeeded (it is made
/// persistent last), so a failure leaves nothing behind.
pub fn create_tap(spec: &TapSpec) -> Result<()> {
    if spec.name.is_empty() || spec.name.len() > 15 {
        return Err(Error::new(libc::EINVAL, format!("invalid tap name {:?}", spec.name)));
    }
    let tun = OpenOptions::new().read(true).write(true).open("/dev/net/tun").map_err(|e| {
        Error::new(e.raw_os_error().unwrap_or(0), format!("opening /dev/net/tun: {e} (is the tun module loaded?)"))
    })?;
    let fd = tun.as_raw_fd();
    let mut req = IfReq { name: [0; 16], flags: spec.flags(), _pad: [0; 22] };
    req.name[..spec.name.len()].copy_from_slice(spec.name.as_bytes());
    let what = format!("creating tap {}", spec.name);
    ioctl(fd, TUNSETIFF, &mut req as *mut IfReq as libc::c_ulong, &what)?;
    if let Some(uid) = spec.owner {
        ioctl(fd, TUNSETOWNER, uid as libc::c_ulong, &format!("setting owner {uid} on tap {}", spec.name))?;
    }
    if let Some(gid) = spec.group {
        ioctl(fd, TUNSETGROUP, gid as libc::c_ulong, &format!("setting group {gid} on tap {}", spec.name))?;
    }
    ioctl(fd, TUNSETPERSIST, 1, &format!("making tap {} persistent", spec.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_and_flags() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        let spec = TapSpec { name: "tap0", multi_queue: true, vnet_hdr: true, ..Default::default() };
        assert_eq!(spec.flags(), 0x5102);
        assert_eq!(TapSpec::default().flags(), 0x1002);
    }
}
