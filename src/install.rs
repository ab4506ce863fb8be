//! `cnibox install`: copies cnibox into a plugin directory and links every
//! applet name to it. The one implementation of installing: install.sh,
//! `make install`, the container image's entry point and the tests run it.
//! A front-door subcommand, never installed as a plugin link.
//!
//! The binary is written beside the installed one and renamed over it, so
//! a plugin call in flight keeps running the old inode and a new call
//! execs the whole new file: never a half-written one, never ETXTBSY.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::applets;
use crate::cni::runtime::{self, NetworkList};
use crate::util::atomic_file;

const USAGE: &str = "\
usage: cnibox install [--force] [--bin PATH] [--conflist FILE [--conf-dir DIR]] [DIR]

Copies cnibox into DIR (default /opt/cni/bin) and links every applet name to
it (`NAME -> cnibox`). Idempotent. A plugin file that is not already a link
to cnibox is kept and reported, and the exit status is 1, unless --force.
  --force          also replace plugin files that are not links to cnibox
  --bin PATH       the binary to install (default: the running one)
  --conflist FILE  also write FILE into the config directory, unless that
                   already holds a network config (*.conflist, *.conf, *.json)
  --conf-dir DIR   the config directory for --conflist (default /etc/cni/net.d)
";

const DEFAULT_DIR: &str = "/opt/cni/bin";
/// What every applet link points to: relative, so the directory can be
/// mounted elsewhere (a container's /host/opt/cni/bin) and still resolve.
const BINARY: &str = "cnibox";

#[derive(Debug, PartialEq)]
struct Options {
    force: bool,
    bin: PathBuf,
    dir: PathBuf,
    conflist: Option<PathBuf>,
    conf_dir: PathBuf,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        force: false,
        // The running executable's inode, even when its path was replaced.
        bin: "/proc/self/exe".into(),
        dir: DEFAULT_DIR.into(),
        conflist: None,
        conf_dir: runtime::DEFAULT_CONF_DIR.into(),
    };
    let mut dir = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned()).ok_or(format!("{flag} needs a path"));
        match flag {
            "--force" if inline.is_none() => o.force = true,
            "--bin" => o.bin = value()?.into(),
            "--conflist" => o.conflist = Some(value()?.into()),
            "--conf-dir" => o.conf_dir = value()?.into(),
            _ if flag.starts_with('-') => return Err(format!("unknown argument {arg:?}")),
            _ if dir.is_some() => return Err(format!("one directory only (got {arg:?} too)")),
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    if let Some(d) = dir {
        o.dir = d;
    }
    Ok(o)
}

pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return 0;
    }
    let o = match parse_options(args) {
        Ok(o) => o,
        Err(e) => {
            eprint!("cnibox install: {e}\n{USAGE}");
            return 2;
        }
    };
    match install(&o) {
        Ok(links) => i32::from(links.skipped > 0),
        Err(e) => {
            eprintln!("cnibox install: {e}");
            1
        }
    }
}

fn install(o: &Options) -> Result<Links, String> {
    // Checked first: a bad config file must not leave a half-done install.
    let conflist = o.conflist.as_deref().map(read_conflist).transpose()?;
    fs::create_dir_all(&o.dir).map_err(|e| format!("cannot create {}: {e}", o.dir.display()))?;
    install_binary(&o.bin, &o.dir)?;
    let links = link_applets(&o.dir, o.force)?;
    println!(
        "cnibox: {} links created, {} already in place, {} skipped, in {}",
        links.created,
        links.kept,
        links.skipped,
        o.dir.display()
    );
    if let Some((name, bytes)) = conflist {
        install_conflist(&name, &bytes, &o.conf_dir)?;
    }
    Ok(links)
}

/// Copies `bin` to DIR/cnibox unless that already is the same file, mode 0755.
fn install_binary(bin: &Path, dir: &Path) -> Result<(), String> {
    let bytes = fs::read(bin).map_err(|e| format!("cannot read {}: {e}", bin.display()))?;
    let dest = dir.join(BINARY);
    if is_installed(&dest, &bytes) {
        println!("cnibox: {} is up to date", dest.display());
        return Ok(());
    }
    atomic_file::replace_file(&dest, &bytes, 0o755).map_err(|e| format!("cannot install {}: {e}", dest.display()))?;
    println!("cnibox: installed {}", dest.display());
    Ok(())
}

/// Whether `path` is a regular file, mode 0755, holding exactly `bytes`.
fn is_installed(path: &Path, bytes: &[u8]) -> bool {
    let Ok(meta) = path.symlink_metadata() else { return false };
    meta.is_file()
        && meta.permissions().mode() & 0o7777 == 0o755
        && meta.len() == bytes.len() as u64
        && fs::read(path).is_ok_and(|installed| installed == bytes)
}

/// What linking the applet names did.
#[derive(Debug, Default)]
struct Links {
    created: usize,
    kept: usize,
    skipped: usize,
}

fn link_applets(dir: &Path, force: bool) -> Result<Links, String> {
    let mut links = Links::default();
    for name in applets::APPLETS.iter().map(|a| a.name) {
        let path = dir.join(name);
        if fs::read_link(&path).is_ok_and(|target| target == Path::new(BINARY)) {
            links.kept += 1;
            continue;
        }
        // symlink_metadata: a dangling link is a file someone put there too.
        if path.symlink_metadata().is_ok() {
            if !force {
                eprintln!("cnibox: kept existing {} (not cnibox; use --force to replace it)", path.display());
                links.skipped += 1;
                continue;
            }
            println!("cnibox: replacing {}", path.display());
        }
        atomic_file::replace_symlink(&path, Path::new(BINARY))
            .map_err(|e| format!("cannot link {}: {e}", path.display()))?;
        links.created += 1;
    }
    Ok(links)
}

/// The config's file name and bytes, once it is known to be a network
/// config that runtimes will load (by its extension) and that parses.
fn read_conflist(file: &Path) -> Result<(String, Vec<u8>), String> {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let loaded = runtime::CONF_EXTENSIONS.concat();
    if !file.extension().and_then(|e| e.to_str()).is_some_and(|e| loaded.contains(&e)) {
        return Err(format!("{}: runtimes load only *.conflist, *.conf and *.json files", file.display()));
    }
    NetworkList::from_file(file).map_err(|e| format!("{}: {} {}", file.display(), e.msg, e.details))?;
    let bytes = fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok((name, bytes))
}

/// Writes the config into `conf_dir` only when it holds none yet: the
/// node's own (or another network add-on's) config always wins.
fn install_conflist(name: &str, bytes: &[u8], conf_dir: &Path) -> Result<(), String> {
    if let Some(existing) = existing_config(conf_dir) {
        println!("cnibox: {} already holds {}: {name} not written", conf_dir.display(), existing.display());
        return Ok(());
    }
    let write = || -> io::Result<()> {
        fs::create_dir_all(conf_dir)?;
        atomic_file::replace_file(&conf_dir.join(name), bytes, 0o644)
    };
    write().map_err(|e| format!("cannot write {name} into {}: {e}", conf_dir.display()))?;
    println!("cnibox: wrote {}", conf_dir.join(name).display());
    Ok(())
}

/// The first file of `dir` a runtime would load, if any.
fn existing_config(dir: &Path) -> Option<PathBuf> {
    runtime::CONF_EXTENSIONS.iter().find_map(|extensions| runtime::files_with(dir, extensions).into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = parse_options(&[]).unwrap();
        assert_eq!(o.dir, Path::new(DEFAULT_DIR));
        assert_eq!(o.bin, Path::new("/proc/self/exe"));
        assert!(!o.force && o.conflist.is_none());
        let o = parse_options(&strings(&[
            "--force",
            "--bin",
            "/b/cnibox",
            "--conflist=/c/10-x.conflist",
            "--conf-dir",
            "/etc/x",
            "/d",
        ]))
        .unwrap();
        assert!(o.force);
        assert_eq!(o.bin, Path::new("/b/cnibox"));
        assert_eq!(o.conflist.as_deref(), Some(Path::new("/c/10-x.conflist")));
        assert_eq!(o.conf_dir, Path::new("/etc/x"));
        assert_eq!(o.dir, Path::new("/d"));
        for bad in [&["--bin"][..], &["--frce"], &["--force=yes"], &["/a", "/b"]] {
            assert!(parse_options(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_conflist_runtimes_would_not_load_is_refused() {
        let dir = std::env::temp_dir().join(format!("cnibox-install-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("10-x.conflist");
        fs::write(&good, r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"loopback"}]}"#).unwrap();
        assert_eq!(read_conflist(&good).unwrap().0, "10-x.conflist");
        let wrong_name = dir.join("10-x.yaml");
        fs::copy(&good, &wrong_name).unwrap();
        assert!(read_conflist(&wrong_name).is_err());
        let no_name = dir.join("11-y.conf");
        fs::write(&no_name, r#"{"cniVersion":"1.0.0","type":"loopback"}"#).unwrap();
        assert!(read_conflist(&no_name).unwrap_err().contains("name"));
        assert!(read_conflist(&dir.join("missing.conf")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
