//! Kernel work that must finish but need not hold up the runtime, handed to
//! a detached process.
//!
//! Some requests make the kernel wait for RCU grace periods after the
//! change itself is done and visible: closing an nfnetlink socket after a
//! deleting transaction (nfnetlink.rs), deleting a link (link_events.rs).
//! The runtime waits for the plugin process and for EOF on its stdout, so
//! that wait is moved into a detached child the runtime never waits for.

use std::os::fd::RawFd;

use nix::libc;

/// Runs `work` in a detached child process; returns false when it could
/// not be started (fork failed), true once it has been.
///
/// The child first closes every descriptor it inherited except `keep`:
/// stdout and stderr (so the runtime reading ours sees EOF when we exit),
/// lock files (so no lock outlives us). It then runs `work` and `_exit`s.
/// Nobody waits for it: the runtime waits for this process only, and once
/// this process exits (soon: it is a plugin call) the child is handed to
/// init, which reaps it. After fork the child must call nothing but raw
/// syscalls (no allocation, no locks): `work` may only do that too.
pub fn spawn(keep: &[RawFd], work: impl FnOnce()) -> bool {
    let mut kept = [-1 as RawFd; 4];
    assert!(keep.len() <= kept.len(), "detached::spawn keeps at most 4 descriptors");
    kept[..keep.len()].copy_from_slice(keep);
    let kept = &mut kept[..keep.len()];
    kept.sort_unstable();
    // SAFETY: the child only makes raw syscalls and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => unsafe {
            close_all_but(kept);
            work();
            libc::_exit(0)
        },
        -1 => false,
        _ => true,
    }
}

/// Closes every descriptor except `kept` (sorted, non-negative).
unsafe fn close_all_but(kept: &[RawFd]) {
    let mut first = 0u32;
    for &fd in kept {
        let fd = fd as u32;
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd.saturating_add(1);
    }
    close_range(first, u32::MAX);
}

/// Closes descriptors `first..=last` (nothing when the range is empty).
unsafe fn close_range(first: u32, last: u32) {
    if first > last || first == u32::MAX {
        return;
    }
    if libc::syscall(libc::SYS_close_range, first, last, 0) < 0 {
        // Before Linux 5.9: one by one, up to a sane limit.
        for fd in first..=last.min(4096) {
            libc::close(fd as RawFd);
        }
    }
}
