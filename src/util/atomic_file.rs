//! Replacing a file or a symlink in one step, durably: the new one is made
//! beside it under a temporary name (fsync'ed) and renamed over it, then the
//! directory is fsync'ed so the rename itself survives a power cut. A reader
//! (or an exec) sees either the old inode or the whole new one, never a
//! half-written file, and a running binary is never opened for writing (no
//! ETXTBSY).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of the temporary files a writer leaves behind if it dies midway;
/// whoever owns the directory may remove them.
pub const TMP_SUFFIX: &str = ".tmp";

/// A name beside `path` that no reader looks for: dot-prefixed, with an
/// extension that no CNI config or plugin lookup matches, and unique per
/// process and call, so concurrent writers (the dhcp daemon's threads)
/// never share one.
fn temporary_beside(path: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{seq}{TMP_SUFFIX}", std::process::id()))
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Runs `make` on a temporary path beside `path`, then renames it over
/// `path`; the temporary is removed when either step fails.
fn replace_with(path: &Path, make: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let tmp = temporary_beside(path);
    let _ = fs::remove_file(&tmp); // a leftover of a killed run with our PID
    let result = make(&tmp).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // The rename is durable once the directory is.
    sync_dir(parent(path))
}

/// Makes `path` a regular file holding `bytes` with permissions `mode`.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace_with(path, |tmp| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(tmp)?;
        file.write_all(bytes)?;
        // The umask may have narrowed `mode`.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        file.sync_all()
    })
}

/// Makes `path` a symlink to `target`, whatever file `path` was.
pub fn replace_symlink(path: &Path, target: &Path) -> io::Result<()> {
    replace_with(path, |tmp| std::os::unix::fs::symlink(target, tmp))
}

/// Removes `path` durably; a file already gone is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the directory's entries (renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cnibox-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_is_replaced_by_a_new_inode() {
        let dir = scratch("file");
        let path = dir.join("bin");
        fs::write(&path, b"old").unwrap();
        let before = fs::metadata(&path).unwrap().ino();
        replace_file(&path, b"new", 0o755).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_ne!(meta.ino(), before);
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_replaces_a_file_and_a_failure_leaves_nothing() {
        let dir = scratch("link");
        let path = dir.join("bridge");
        fs::write(&path, b"foreign").unwrap();
        replace_symlink(&path, Path::new("cnibox")).unwrap();
        assert_eq!(fs::read_link(&path).unwrap(), Path::new("cnibox"));
        // A directory cannot be renamed over: the error comes back, the
        // directory stays and no temporary is left.
        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("x"), b"").unwrap();
        assert!(replace_symlink(&sub, Path::new("cnibox")).is_err());
        assert!(sub.join("x").exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn removal_is_idempotent_and_a_missing_directory_fails() {
        let dir = scratch("remove");
        let path = dir.join("f.json");
        replace_file(&path, b"one", 0o600).unwrap();
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(replace_file(&dir.join("missing/f"), b"x", 0o600).is_err());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
