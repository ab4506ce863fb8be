//! The on-disk store, laid out exactly as the reference's so both can share
//! a data dir: `<dataDir>/<network>/` holds one file per reserved IP (named
//! by the IP, containing `<containerID>\r\n<ifname>`), `last_reserved_ip.<set>`
//! and the `lock` file that every operation holds with flock.
//!
//! The format has no way to find a container's reservations but reading
//! every file, and every ADD and DEL needs that (a second ADD of an
//! attachment is refused; DEL finds its files): three syscalls per
//! reservation, ~1 ms per call at 200 containers, all under the lock. So
//! cnibox also keeps `.cnibox-owners`: each reservation file's name, inode
//! number and owner as last read. Listing the directory yields names and
//! inode numbers without opening anything; only files the list does not
//! know (new, or replaced by another writer such as the reference plugin)
//! are read. The reference ignores the file (its name is no IP, its content
//! no owner). It is a hint: rewritten in place behind a hash of its
//! content (a torn write reads as no cache), rebuilt when missing or
//! unreadable, and every decision to release a file or to refuse an ADD
//! re-reads the file it is about (`Store::confirm`).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::allocator::{Owner, Reservation, Store};
use super::config::validate_network_name;
use crate::cni::error::IO_FAILURE;
use crate::cni::{CniContext, CniError};
use crate::util::lock::FileLock;

const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const TEMP_PREFIX: &str = ".cnibox-tmp.";
const OWNERS_FILE: &str = ".cnibox-owners";

/// The owners cache: (file name, inode number) → owner.
type Owners = std::collections::HashMap<(String, u64), Owner>;

/// The store of one network, locked for as long as it lives.
pub struct DiskStore {
    dir: PathBuf,
    _lock: FileLock,
}

/// `<data_dir>/<network>`, refusing names that would leave data_dir.
pub fn network_dir(data_dir: &Path, network: &str) -> Result<PathBuf, CniError> {
    validate_network_name(network)?;
    Ok(data_dir.join(network))
}

impl DiskStore {
    /// Opens (creating it if needed) and locks the store of `network`.
    pub fn open(data_dir: &Path, network: &str) -> Result<DiskStore, CniError> {
        let dir = network_dir(data_dir, network)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .cni(IO_FAILURE, format!("failed to create the host-local store {}", dir.display()))?;
        let lock = FileLock::exclusive(&dir.join("lock"))?;
        Ok(DiskStore { dir, _lock: lock })
    }

    /// Like `open`, but None when the store was never created (nothing to release).
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<DiskStore>, CniError> {
        let dir = network_dir(data_dir, network)?;
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(CniError::io(format!("{} is not a directory", dir.display()))),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CniError::io(format!("cannot access {}", dir.display())).with_details(e.to_string())),
        }
        Self::open(data_dir, network).map(Some)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn last_reserved_path(&self, set: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"))
    }

    /// A file written before being moved to its name (never an IP, so no
    /// reader takes it for a reservation).
    fn temp_path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{TEMP_PREFIX}{what}.{}", std::process::id()))
    }

    /// Removes temporary files a killed process left. Only called with the
    /// lock held, so no live writer owns them.
    pub fn remove_leftovers(&self) -> Result<usize, CniError> {
        let entries = fs::read_dir(&self.dir).cni(IO_FAILURE, format!("failed to list {}", self.dir.display()))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Creates `path` (replacing a leftover of a killed process) with `content`.
fn write_new_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let _ = fs::remove_file(path);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        // Never write through a link planted in the store.
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .and_then(|mut f| f.write_all(content))
}

/// Writes `content` over the file at `path` (creating it), then cuts it to
/// length: for the store's hint files, which a torn write cannot harm.
/// Neither a new file (an inode to allocate) nor truncated first (see
/// `reserve`).
fn rewrite_in_place(path: &Path, content: &[u8]) -> std::io::Result<()> {
    #[allow(clippy::suspicious_open_options)] // no truncate on purpose: set_len below
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        // Never write through a link planted in the store.
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    file.write_all(content)?;
    file.set_len(content.len() as u64)
}

/// The content of reservation file `name` in `dir`. Without the owners
/// cache (a first call, another writer's files) this is the per-file cost a
/// node's population multiplies: opened relative to the directory (one path
/// component to look up) and read with one call, three syscalls where
/// `fs::read` makes five.
fn read_reservation(dir: &fs::File, name: &std::ffi::OsStr) -> std::io::Result<Vec<u8>> {
    use nix::fcntl::{openat, OFlag};
    use std::io::Read;
    let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?;
    let mut file = fs::File::from(fd);
    let mut buf = [0u8; 512];
    let n = file.read(&mut buf)?;
    let mut content = buf[..n].to_vec();
    if n == buf.len() {
        file.read_to_end(&mut content)?;
    }
    Ok(content)
}

/// One cache line: `<inode> <ip> <container ID> <ifname>`, the ifname empty
/// for a legacy file. None for an owner the line could not carry.
fn owners_line(name: &str, ino: u64, owner: &Owner) -> Option<String> {
    let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    let ifname = owner.ifname.as_deref().unwrap_or("");
    (plain(&owner.container_id) && (ifname.is_empty() || plain(ifname)))
        .then(|| format!("{ino} {name} {} {ifname}\n", owner.container_id))
}

/// The cache's first line: a version and a hash of the rest, so that a
/// write torn by a crash (the file is rewritten in place) reads as no cache.
fn owners_header(body: &str) -> String {
    format!("cnibox-owners 1 {:016x}", crate::util::hash::fnv1a(&[body]))
}

/// Reads the cache; empty when it is missing or not entirely readable.
fn parse_owners(text: &str) -> Owners {
    let Some((header, body)) = text.split_once('\n') else { return Owners::default() };
    if header != owners_header(body) {
        return Owners::default();
    }
    let parse_line = |line: &str| {
        let mut fields = line.split(' ');
        let ino = fields.next()?.parse::<u64>().ok()?;
        let name = fields.next()?.to_string();
        let id = fields.next().filter(|id| !id.is_empty())?.to_string();
        let ifname = fields.next()?;
        let ifname = (!ifname.is_empty()).then(|| ifname.to_string());
        fields.next().is_none().then_some(((name, ino), Owner { container_id: id, ifname }))
    };
    body.lines().map(parse_line).collect::<Option<Owners>>().unwrap_or_default()
}

impl DiskStore {
    fn read_owners(&self) -> Owners {
        fs::read_to_string(self.dir.join(OWNERS_FILE)).map(|t| parse_owners(&t)).unwrap_or_default()
    }

    /// Rewrites the cache (best effort: it is only a hint) in place, like
    /// `last_reserved_ip`: a new file per call would make every call
    /// allocate an inode, and on ext4 without a journal that scans past
    /// every recently deleted one.
    fn write_owners(&self, owners: &[(String, u64, Owner)]) {
        let body: String = owners.iter().filter_map(|(name, ino, owner)| owners_line(name, *ino, owner)).collect();
        let text = format!("{}\n{body}", owners_header(&body));
        let path = self.dir.join(OWNERS_FILE);
        if rewrite_in_place(&path, text.as_bytes()).is_err() {
            let _ = fs::remove_file(&path);
        }
    }
}

impl Store for DiskStore {
    fn reservations(&self) -> Result<Vec<Reservation>, CniError> {
        use std::os::unix::fs::DirEntryExt;
        let entries = fs::read_dir(&self.dir).cni(IO_FAILURE, format!("failed to list {}", self.dir.display()))?;
        // Opened for the first file the cache does not know: usually none.
        let mut dir: Option<fs::File> = None;
        let known = self.read_owners();
        let mut seen = Vec::with_capacity(known.len() + 1);
        let mut read_any = false;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.cni(IO_FAILURE, format!("failed to list {}", self.dir.display()))?;
            // Only files named by an IP are reservations ("lock" and
            // "last_reserved_ip.N" are not).
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Ok(ip) = name.parse::<IpAddr>() else { continue };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // The inode number comes with the listing (no stat).
            let key = (name, entry.ino());
            let owner = match known.get(&key) {
                Some(owner) => owner.clone(),
                None => {
                    let dir = match &mut dir {
                        Some(dir) => dir,
                        None => dir.insert(
                            fs::File::open(&self.dir)
                                .cni(IO_FAILURE, format!("failed to open {}", self.dir.display()))?,
                        ),
                    };
                    match read_reservation(dir, &entry.file_name()) {
                        Ok(content) => {
                            read_any = true;
                            Owner::parse(&String::from_utf8_lossy(&content))
                        }
                        // Released meanwhile by someone not honouring the lock.
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => {
                            return Err(CniError::io(format!("failed to read reservation {}", entry.path().display()))
                                .with_details(e.to_string()))
                        }
                    }
                }
            };
            out.push(Reservation { ip, owner: owner.clone() });
            seen.push((key.0, key.1, owner));
        }
        if read_any || seen.len() != known.len() {
            self.write_owners(&seen);
        }
        Ok(out)
    }

    /// Reads the file. When it no longer names the owner the cache gave,
    /// the cache is dropped: the next listing reads every file again.
    fn confirm(&self, r: &Reservation) -> bool {
        let Ok(dir) = fs::File::open(&self.dir) else { return false };
        let now = read_reservation(&dir, std::ffi::OsStr::new(&r.ip.to_string()));
        let held = now.is_ok_and(|content| Owner::parse(&String::from_utf8_lossy(&content)) == r.owner);
        if !held {
            let _ = fs::remove_file(self.dir.join(OWNERS_FILE));
        }
        held
    }

    fn reserve(&mut self, ip: IpAddr, owner: &Owner, set: usize) -> Result<bool, CniError> {
        let path = self.dir.join(ip.to_string());
        if fs::symlink_metadata(&path).is_ok() {
            return Ok(false);
        }
        // The file appears with its content or not at all, even when the
        // process is killed half-way: written aside, then hard-linked into
        // place (which, like create_new, never replaces an existing
        // reservation, stale or not).
        let tmp = self.temp_path(&ip.to_string());
        write_new_file(&tmp, owner.file_content().as_bytes())
            .map_err(|e| CniError::io(format!("failed to reserve {ip}")).with_details(e.to_string()))?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(CniError::io(format!("failed to reserve {ip}")).with_details(e.to_string())),
        }
        if let Err(e) = crate::cni::fault::step("host-local: reservation file written") {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let last = self.last_reserved_path(set);
        // Rewritten in place, then cut to length. Not replaced by rename and
        // not truncated first: dropping the old block (unlinked inode or
        // truncate to zero) can wait for the disk (ext4 with `discard`, or a
        // block under writeback) while this store's lock is held, stalling
        // every parallel ADD. The file is only a round-robin hint: a torn
        // value after a SIGKILL between the two calls is either unparsable
        // (read as no hint) or another valid address (a different start).
        if let Err(e) = rewrite_in_place(&last, ip.to_string().as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(CniError::io(format!("failed to write {}", last.display())).with_details(e.to_string()));
        }
        Ok(true)
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), CniError> {
        match fs::remove_file(self.dir.join(ip.to_string())) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(CniError::io(format!("failed to release {ip}")).with_details(e.to_string()))
            }
            _ => Ok(()),
        }
    }

    fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let text = fs::read_to_string(self.last_reserved_path(set)).ok()?;
        text.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cnibox-store-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn last_reserved_is_rewritten_in_place() {
        let data = temp_dir();
        let mut store = DiskStore::open(&data, "net1").unwrap();
        let owner = Owner::new("abc", "eth0");
        assert!(store.reserve("10.0.0.200".parse().unwrap(), &owner, 0).unwrap());
        // A shorter address leaves no tail of the longer one.
        assert!(store.reserve("10.0.0.3".parse().unwrap(), &owner, 0).unwrap());
        assert_eq!(fs::read_to_string(data.join("net1/last_reserved_ip.0")).unwrap(), "10.0.0.3");
        assert!(store.reserve("10.0.0.40".parse().unwrap(), &owner, 0).unwrap());
        assert_eq!(fs::read_to_string(data.join("net1/last_reserved_ip.0")).unwrap(), "10.0.0.40");
        drop(store);
        fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn owners_cache_lines() {
        let line = |id: &str, ifname: Option<&str>| {
            owners_line("10.1.0.2", 77, &Owner { container_id: id.into(), ifname: ifname.map(String::from) })
        };
        let cache = |body: &str| format!("{}\n{body}", owners_header(body));
        let owners = parse_owners(&cache(&(line("c1", Some("eth0")).unwrap() + &line("legacy", None).unwrap())));
        assert_eq!(owners.len(), 1, "same key: the later line wins");
        assert_eq!(owners[&("10.1.0.2".to_string(), 77)], Owner { container_id: "legacy".into(), ifname: None });
        assert_eq!(
            parse_owners(&cache(&line("c1", Some("eth0")).unwrap()))[&("10.1.0.2".into(), 77)],
            Owner::new("c1", "eth0")
        );
        // Owners a line cannot carry are not cached (their files are read).
        assert_eq!(line("a b", Some("eth0")), None);
        assert_eq!(line("c1", Some("et\th0")), None);
        // One bad line, or a body that does not match the header's hash
        // (a torn write), and the whole cache is ignored.
        assert!(parse_owners(&cache("77 10.1.0.2 c1 eth0\nnonsense\n")).is_empty());
        assert!(parse_owners(&cache("77 10.1.0.2 c1 eth0 extra\n")).is_empty());
        assert!(parse_owners(&(cache("77 10.1.0.2 c1 eth0\n") + "78 10.1.0.3 c2 eth0\n")).is_empty());
        assert!(parse_owners("77 10.1.0.2 c1 eth0\n").is_empty());
    }

    #[test]
    fn files_as_the_reference_writes_them() {
        let data = temp_dir();
        let mut store = DiskStore::open(&data, "net1").unwrap();
        let owner = Owner::new("abc", "eth0");
        assert!(store.reserve("10.0.0.2".parse().unwrap(), &owner, 0).unwrap());
        assert!(store.reserve("fd00::2".parse().unwrap(), &owner, 1).unwrap());
        assert!(!store.reserve("10.0.0.2".parse().unwrap(), &Owner::new("x", "eth0"), 0).unwrap());
        let dir = data.join("net1");
        assert_eq!(fs::read_to_string(dir.join("10.0.0.2")).unwrap(), "abc\r\neth0");
        assert_eq!(fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(), "10.0.0.2");
        assert_eq!(fs::read_to_string(dir.join("last_reserved_ip.1")).unwrap(), "fd00::2");
        assert!(dir.join("lock").exists());
        assert_eq!(store.last_reserved(1), Some("fd00::2".parse().unwrap()));
        assert_eq!(store.last_reserved(2), None);

        fs::write(dir.join("10.0.0.9"), "legacy-id").unwrap();
        fs::create_dir(dir.join("10.0.0.10")).unwrap();
        let mut all = store.reservations().unwrap();
        all.sort_by_key(|r| r.ip);
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].owner, Owner::parse("legacy-id"));

        store.release("10.0.0.2".parse().unwrap()).unwrap();
        store.release("10.0.0.2".parse().unwrap()).unwrap();
        assert!(!dir.join("10.0.0.2").exists());
        drop(store);
        assert!(DiskStore::open_existing(&data, "other").unwrap().is_none());
        assert!(!data.join("other").exists());
        assert!(DiskStore::open_existing(&data, "net1").unwrap().is_some());
        assert_eq!(DiskStore::open(&data, "..").err().unwrap().code, 7);
        fs::remove_dir_all(&data).unwrap();
    }
}
