//! Sets `cfg(built_without_root)` when the build runs without root.
//!
//! The integration tests that need root (network namespaces, links,
//! nftables) carry `#[cfg_attr(built_without_root, ignore = "needs root")]`:
//! run without root they are listed as ignored, not passed. libtest cannot
//! skip a test at run time, so the decision is made here, at build time,
//! by the user who builds (cargo runs this script as that user).
//!
//! Limits: cargo reruns this script only when one of the variables below
//! changes, which is what sudo, su, runuser and a login do. A user switch
//! that changes none of them (USER unset in a container, a setuid wrapper)
//! keeps the old answer; tests/common/mod.rs then fails the run with what
//! to do (`touch build.rs` rebuilds). Nothing in src/ reads this cfg.
use std::fs;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(built_without_root)");
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["USER", "LOGNAME", "HOME", "SUDO_UID"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if effective_uid() != 0 {
        println!("cargo:rustc-cfg=built_without_root");
    }
}

/// The effective UID from /proc/self/status ("Uid: real effective saved
/// fs"), which needs no libc binding in a build script.
fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("no Uid: line in /proc/self/status");
    uids.split_whitespace().nth(1).and_then(|u| u.parse().ok()).expect("bad Uid: line in /proc/self/status")
}
