//! `cnibox install` (and install.sh, which runs it) on temporary
//! directories: links that work, idempotence, foreign files, --conflist.
//! No root needed.

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

fn install(args: &[&str]) -> Output {
    Command::new(BIN).arg("install").args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn applet_names() -> Vec<String> {
    let out = Command::new(BIN).arg("--list").output().unwrap();
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

/// Every entry of `dir`: name, inode, mode, link target, size, mtime.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let target = std::fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
            format!(
                "{:?} {} {:o} {target} {} {}.{}",
                e.file_name(),
                m.ino(),
                m.mode(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            )
        })
        .collect();
    entries.sort();
    entries
}

fn version_through(link: &Path) -> String {
    use std::io::Write;
    let mut child = Command::new(link)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

#[test]
fn installs_working_links_and_a_second_run_changes_nothing() {
    let dir = TempDir::new("install");
    let bin_dir = dir.path().join("opt/cni/bin");
    let out = install(&[bin_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let installed = bin_dir.join("cnibox");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(BIN).unwrap());
    assert_eq!(installed.metadata().unwrap().permissions().mode() & 0o7777, 0o755);
    for name in applet_names() {
        assert_eq!(std::fs::read_link(bin_dir.join(&name)).unwrap(), Path::new("cnibox"), "{name}");
    }
    assert!(version_through(&bin_dir.join("loopback")).contains("supportedVersions"));

    // Relative links: the directory works wherever it is (a container
    // mounts the host's at /host/opt/cni/bin).
    let moved = dir.path().join("moved");
    std::fs::rename(&bin_dir, &moved).unwrap();
    assert!(version_through(&moved.join("bridge")).contains("supportedVersions"));

    let before = snapshot(&moved);
    let out = install(&[moved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is up to date"), "{}", text(&out));
    assert!(text(&out).contains("0 links created"), "{}", text(&out));
    assert_eq!(snapshot(&moved), before);
}

#[test]
fn a_different_or_damaged_binary_is_replaced() {
    let dir = TempDir::new("install");
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let installed = bin_dir.join("cnibox");
    std::fs::write(&installed, b"an older cnibox").unwrap();
    let out = install(&[bin_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(BIN).unwrap());
    // The right bytes without the execute bits are not an installation.
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = install(&[bin_dir.to_str().unwrap()]);
    assert!(text(&out).contains("installed"), "{}", text(&out));
    assert_eq!(installed.metadata().unwrap().permissions().mode() & 0o7777, 0o755);
    // --bin names the source; the running binary is the default.
    let other = dir.path().join("other-cnibox");
    let mut bytes = std::fs::read(BIN).unwrap();
    bytes.push(0);
    std::fs::write(&other, &bytes).unwrap();
    let out = install(&["--bin", other.to_str().unwrap(), bin_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&installed).unwrap(), bytes);
}

#[test]
fn foreign_plugin_files_are_kept_unless_forced() {
    let dir = TempDir::new("install");
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(bin_dir.join("bridge"), b"#!/bin/sh\necho reference\n").unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/ptp", bin_dir.join("ptp")).unwrap();
    std::os::unix::fs::symlink("does-not-exist", bin_dir.join("tap")).unwrap();
    // Not an applet: never touched, even with --force.
    std::fs::write(bin_dir.join("calico"), b"other").unwrap();

    let out = install(&[bin_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for name in ["bridge", "ptp", "tap"] {
        assert!(text(&out).contains(&format!("kept existing {}", bin_dir.join(name).display())), "{}", text(&out));
    }
    assert!(text(&out).contains("3 skipped"), "{}", text(&out));
    assert_eq!(std::fs::read(bin_dir.join("bridge")).unwrap(), b"#!/bin/sh\necho reference\n");
    assert_eq!(std::fs::read_link(bin_dir.join("ptp")).unwrap(), Path::new("/usr/lib/cni/ptp"));
    assert_eq!(std::fs::read_link(bin_dir.join("tap")).unwrap(), Path::new("does-not-exist"));
    assert_eq!(std::fs::read_link(bin_dir.join("macvlan")).unwrap(), Path::new("cnibox"));

    let out = install(&["--force", bin_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for name in applet_names() {
        assert_eq!(std::fs::read_link(bin_dir.join(&name)).unwrap(), Path::new("cnibox"), "{name}");
    }
    assert_eq!(std::fs::read(bin_dir.join("calico")).unwrap(), b"other");
}

#[test]
fn a_conflist_goes_only_into_a_config_dir_without_one() {
    let dir = TempDir::new("install");
    let bin_dir = dir.path().join("bin");
    let conf_dir = dir.path().join("net.d");
    let conflist = dir.path().join("10-cnibox.conflist");
    let conf = r#"{"cniVersion":"1.0.0","name":"cnibox","plugins":[{"type":"loopback"}]}"#;
    std::fs::write(&conflist, conf).unwrap();
    let args =
        ["--conflist", conflist.to_str().unwrap(), "--conf-dir", conf_dir.to_str().unwrap(), bin_dir.to_str().unwrap()];

    let out = install(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(conf_dir.join("10-cnibox.conflist")).unwrap(), conf);

    // Another network's config (or our own, changed by the node) wins.
    std::fs::remove_file(conf_dir.join("10-cnibox.conflist")).unwrap();
    std::fs::write(conf_dir.join("05-flannel.conf"), r#"{"name":"cbr0","type":"flannel"}"#).unwrap();
    std::fs::write(conf_dir.join("README"), "not a config").unwrap();
    let out = install(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not written"), "{}", text(&out));
    assert!(!conf_dir.join("10-cnibox.conflist").exists());
    let names: Vec<_> = std::fs::read_dir(&conf_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A file runtimes would not load, or would refuse, fails the whole
    // install before anything is written.
    let broken = dir.path().join("20-broken.conflist");
    std::fs::write(&broken, r#"{"cniVersion":"1.0.0","plugins":[]}"#).unwrap();
    let fresh = dir.path().join("fresh-bin");
    let out = install(&["--conflist", broken.to_str().unwrap(), fresh.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!fresh.exists());
}

#[test]
fn usage_errors() {
    for args in [&["--bin"][..], &["--nope"], &["/a", "/b"]] {
        let out = install(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: cnibox install"));
    }
    let out = install(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--conflist"));
}

#[test]
fn install_sh_runs_the_same_install() {
    let dir = TempDir::new("install");
    let bin_dir = dir.path().join("bin");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/install.sh");
    let out = Command::new(script).args(["--bin", BIN]).arg(&bin_dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(bin_dir.join("cnibox")).unwrap(), std::fs::read(BIN).unwrap());
    let before = snapshot(&bin_dir);
    let out = Command::new(script).arg(format!("--bin={BIN}")).arg(&bin_dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(snapshot(&bin_dir), before);
}
