//! Persistent tap devices. The kernel creates tun/tap devices only through
//! the TUNSETIFF ioctl on /dev/net/tun (not over rtnetlink), in the netns of
//! the calling thread: call `create_tap` (or `create_tap_labelled`) inside
//! `NetNs::run`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

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

    /// The arguments of `cnibox tap make-device` that recreate this spec.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![self.name.to_string()];
        if self.multi_queue {
            args.push("--multi-queue".into());
        }
        if self.vnet_hdr {
            args.push("--vnet-hdr".into());
        }
        if let Some(uid) = self.owner {
            args.extend(["--owner".into(), uid.to_string()]);
        }
        if let Some(gid) = self.group {
            args.extend(["--group".into(), gid.to_string()]);
        }
        args
    }

    /// Reads the arguments `to_args` wrote.
    pub fn from_args(args: &[String]) -> std::result::Result<TapSpec<'_>, String> {
        let (name, mut rest) = args.split_first().ok_or("missing the tap name")?;
        let mut spec = TapSpec { name, ..Default::default() };
        while let Some((flag, tail)) = rest.split_first() {
            rest = tail;
            match flag.as_str() {
                "--multi-queue" => spec.multi_queue = true,
                "--vnet-hdr" => spec.vnet_hdr = true,
                "--owner" => spec.owner = Some(take_id(&mut rest, flag)?),
                "--group" => spec.group = Some(take_id(&mut rest, flag)?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(spec)
    }
}

/// The number after `flag`, taken off the front of `rest`.
fn take_id(rest: &mut &[String], flag: &str) -> std::result::Result<u32, String> {
    let (value, tail) = rest.split_first().ok_or(format!("{flag} needs a number"))?;
    *rest = tail;
    value.parse().map_err(|_| format!("{flag}: {value:?} is not a number"))
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

/// The SELinux context this thread's next exec runs under; dropping it
/// resets that, so that later children (IPAM plugins) keep our context.
struct ExecLabel;

fn write_exec_label(value: &[u8]) -> std::io::Result<()> {
    OpenOptions::new().write(true).open("/proc/thread-self/attr/exec")?.write_all(value)
}

impl ExecLabel {
    fn set(label: &str) -> Result<ExecLabel> {
        write_exec_label(label.as_bytes()).map_err(|e| {
            let why = format!("cannot run under the SELinux context {label:?}: {e} (is SELinux enabled?)");
            Error::new(e.raw_os_error().unwrap_or(0), why)
        })?;
        Ok(ExecLabel)
    }
}

impl Drop for ExecLabel {
    fn drop(&mut self) {
        // A lone newline clears the exec context.
        if let Err(e) = write_exec_label(b"\n") {
            log::error!("cannot clear the SELinux exec context: {e}");
        }
    }
}

/// Creates the tap as `create_tap` does, labelled with the SELinux context
/// `label`. SELinux labels a tun device with the context of the process that
/// creates it, and a process takes on another context only by exec'ing; so
/// a child exec'd under that context makes the device: this binary, as
/// `cnibox tap make-device`. The child is forked from the calling thread and
/// so starts in its netns: call this inside `NetNs::run`.
pub fn create_tap_labelled(spec: &TapSpec, label: &str) -> Result<()> {
    let _exec_label = ExecLabel::set(label)?;
    let output = Command::new("/proc/self/exe")
        .arg0("cnibox")
        .args(["tap", "make-device"])
        .args(spec.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::new(e.raw_os_error().unwrap_or(0), format!("cannot run cnibox tap make-device: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why =
        format!("creating tap {} under SELinux context {label:?}: {}, {}", spec.name, output.status, stderr.trim());
    Err(Error::new(libc::EIO, why))
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

    #[test]
    fn make_device_arguments_round_trip() {
        let specs = [
            TapSpec { name: "tap0", ..Default::default() },
            TapSpec { name: "t1", multi_queue: true, vnet_hdr: true, owner: Some(1000), group: Some(0) },
        ];
        for spec in specs {
            let args = spec.to_args();
            let back = TapSpec::from_args(&args).unwrap();
            assert_eq!(format!("{back:?}"), format!("{spec:?}"));
        }
        let bad = |args: &[&str]| TapSpec::from_args(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>()).is_err();
        assert!(bad(&[]));
        assert!(bad(&["t0", "--owner"]));
        assert!(bad(&["t0", "--group", "x"]));
        assert!(bad(&["t0", "--fast"]));
    }
}
