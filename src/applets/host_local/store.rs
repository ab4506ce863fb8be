//! The on-disk store, laid out exactly as the reference's so both can share
//! a data dir: `<dataDir>/<network>/` holds one file per reserved IP (named
//! by the IP, containing `<containerID>\r\n<ifname>`), `last_reserved_ip.<set>`
//! and the `lock` file that every operation holds with flock.
//!
//! The format has no way to find a container's reservations but reading
//! every file, and every ADD and DEL needs that (a second ADD of an
//! attachment is refused; DEL finds its files): three syscalls per
//! reservation, ~1 ms per call at 200 containers, all under the lock. So
//! cnibox also keeps `.cnibox-owners`: each reservation file's name, stamp
//! (inode number, size, ctime) and owner as last read. A listing stats each
//! file (one syscall) and reads only those whose stamp the cache does not
//! vouch for (`OwnersCache::owner`): new files, and files another writer
//! (such as the reference plugin, which never touches the cache) replaced
//! or rewrote, even on a reused inode number. The reference ignores the
//! file (its name is no IP, its content no owner). It is a hint: rewritten
//! in place behind a hash of its content (a torn write reads as no cache),
//! rebuilt when missing, unreadable or of another version, and every
//! decision to release a file or to refuse an ADD re-reads the file it is
//! about (`Store::confirm`).

use std::collections::HashMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::allocator::{Owner, Reservation, Store};
use super::config::validate_network_name;
use crate::cni::error::IO_FAILURE;
use crate::cni::{CniContext, CniError};
use crate::util::lock::FileLock;

const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const TEMP_PREFIX: &str = ".cnibox-tmp.";
const OWNERS_FILE: &str = ".cnibox-owners";

/// The owners cache's format, first on its header line. 2: each line
/// carries its file's whole stamp. Lines of version 1 carried the inode
/// number alone, which a file the reference creates on a released inode
/// shares with the file it replaced: such a cache is ignored (every file
/// is read once, and the cache rewritten in this version).
const OWNERS_VERSION: u32 = 2;

/// A time as the filesystem keeps it: (seconds, nanoseconds).
type FsTime = (i64, i64);

/// One version of a file, as stat sees it. Every change to a file, in
/// place or by replacing it (even on an inode number the filesystem hands
/// out again, as ext4 does at once), sets its ctime to the time of the
/// change, and no writer can set it otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    size: i64,
    ctime: FsTime,
}

impl FileStamp {
    fn of(st: &FileStat) -> FileStamp {
        FileStamp { ino: st.st_ino, size: st.st_size, ctime: (st.st_ctime, st.st_ctime_nsec) }
    }
}

/// `.cnibox-owners` as read: the stamp and owner of each reservation file
/// (by name) when it was last read, and when the cache was written.
#[derive(Debug, Default)]
struct OwnersCache {
    files: HashMap<String, (FileStamp, Owner)>,
    /// The cache file's own ctime.
    written: FsTime,
}

impl OwnersCache {
    /// The owner of file `name`, now stamped `now`, when the cache may stand
    /// in for reading it: only for the very version it read. That is the
    /// same stamp, and one older than the cache itself: timestamps come
    /// from a coarse clock (a tick is up to 10 ms), so a change within the
    /// tick a file was stamped in may leave its stamp as it was. Any change
    /// made after the cache was written (other writers wait for the lock
    /// until then) is stamped no earlier than `written`, so it shows on a
    /// file stamped before. A file stamped in the tick the cache was
    /// written in is read, until a later rewrite of the cache is newer.
    /// (Left: a wall clock stepped back could repeat a stamp to the
    /// nanosecond, on the same inode number with the same size.)
    fn owner(&self, name: &str, now: &FileStamp) -> Option<&Owner> {
        let (stamp, owner) = self.files.get(name)?;
        (stamp == now && stamp.ctime < self.written).then_some(owner)
    }
}

/// What a listing found: a reservation file, its stamp, and its owner.
struct Listed {
    name: String,
    ip: IpAddr,
    stamp: FileStamp,
    owner: Owner,
    /// Whether the owner was read from the file rather than the cache.
    read: bool,
}

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
fn read_reservation(dir: impl AsFd, name: &str) -> std::io::Result<Vec<u8>> {
    let fd = nix::fcntl::openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut file = fs::File::from(fd);
    let mut buf = [0u8; 512];
    let n = file.read(&mut buf)?;
    let mut content = buf[..n].to_vec();
    if n == buf.len() {
        file.read_to_end(&mut content)?;
    }
    Ok(content)
}

/// One cache line: `<inode> <size> <ctime s>.<ctime ns> <ip> <container
/// ID> <ifname>`, the ifname empty for a legacy file. None for an owner the
/// line could not carry.
fn owners_line(name: &str, stamp: &FileStamp, owner: &Owner) -> Option<String> {
    let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    let ifname = owner.ifname.as_deref().unwrap_or("");
    let FileStamp { ino, size, ctime: (secs, nanos) } = stamp;
    (plain(&owner.container_id) && (ifname.is_empty() || plain(ifname)))
        .then(|| format!("{ino} {size} {secs}.{nanos:09} {name} {} {ifname}\n", owner.container_id))
}

/// Reads one cache line back; None when it is not one `owners_line` writes.
fn parse_owners_line(line: &str) -> Option<(String, (FileStamp, Owner))> {
    let mut fields = line.split(' ');
    let ino = fields.next()?.parse().ok()?;
    let size = fields.next()?.parse().ok()?;
    let (secs, nanos) = fields.next()?.split_once('.')?;
    let ctime = (secs.parse().ok()?, nanos.parse().ok()?);
    let name = fields.next()?.to_string();
    let id = fields.next().filter(|id| !id.is_empty())?.to_string();
    let ifname = fields.next()?;
    let ifname = (!ifname.is_empty()).then(|| ifname.to_string());
    let entry = (FileStamp { ino, size, ctime }, Owner { container_id: id, ifname });
    fields.next().is_none().then_some((name, entry))
}

/// The cache's first line: the version and a hash of the rest, so that a
/// write torn by a crash (the file is rewritten in place) reads as no cache.
fn owners_header(body: &str) -> String {
    format!("cnibox-owners {OWNERS_VERSION} {:016x}", crate::util::hash::fnv1a(&[body]))
}

/// Reads the cache (`text`, written at `written`); empty when it is not
/// entirely readable or of another version.
fn parse_owners(text: &str, written: FsTime) -> OwnersCache {
    let Some((header, body)) = text.split_once('\n') else { return OwnersCache::default() };
    if header != owners_header(body) {
        return OwnersCache::default();
    }
    match body.lines().map(parse_owners_line).collect::<Option<_>>() {
        Some(files) => OwnersCache { files, written },
        None => OwnersCache::default(),
    }
}

/// The reservation files in `dir`: entries named by an IP ("lock" and
/// "last_reserved_ip.N" are not).
fn reservation_names(dir: &Path) -> std::io::Result<Vec<(String, IpAddr)>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let Ok(name) = entry?.file_name().into_string() else { continue };
        if let Ok(ip) = name.parse::<IpAddr>() {
            names.push((name, ip));
        }
    }
    Ok(names)
}

impl DiskStore {
    fn read_owners(&self) -> OwnersCache {
        let read = || -> std::io::Result<OwnersCache> {
            let mut file = fs::File::open(self.dir.join(OWNERS_FILE))?;
            let written = FileStamp::of(&nix::sys::stat::fstat(&file)?).ctime;
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            Ok(parse_owners(&text, written))
        };
        read().unwrap_or_default()
    }

    /// Rewrites the cache (best effort: it is only a hint) in place, like
    /// `last_reserved_ip`: a new file per call would make every call
    /// allocate an inode, and on ext4 without a journal that scans past
    /// every recently deleted one.
    fn write_owners(&self, listed: &[Listed]) {
        let body: String = listed.iter().filter_map(|l| owners_line(&l.name, &l.stamp, &l.owner)).collect();
        let text = format!("{}\n{body}", owners_header(&body));
        let path = self.dir.join(OWNERS_FILE);
        if rewrite_in_place(&path, text.as_bytes()).is_err() {
            let _ = fs::remove_file(&path);
        }
    }

    /// The reservation file `name` in `dir` as it is now, its owner from the
    /// cache when the cache vouches for this version, else from its content.
    /// None when it is no reservation (a directory) or was just removed (by
    /// someone not honouring the lock).
    fn list_one(
        &self,
        dir: &fs::File,
        (name, ip): (String, IpAddr),
        cache: &OwnersCache,
    ) -> Result<Option<Listed>, CniError> {
        let failed = |e: std::io::Error| {
            CniError::io(format!("failed to read reservation {}", self.dir.join(&name).display()))
                .with_details(e.to_string())
        };
        // Stamped before the read: a change after the stat then shows as a
        // different stamp at the next listing.
        let st = match nix::sys::stat::fstatat(dir, name.as_str(), AtFlags::empty()) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(failed(e.into())),
        };
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            return Ok(None);
        }
        let stamp = FileStamp::of(&st);
        if let Some(owner) = cache.owner(&name, &stamp) {
            return Ok(Some(Listed { owner: owner.clone(), name, ip, stamp, read: false }));
        }
        match read_reservation(dir, &name) {
            Ok(content) => {
                let owner = Owner::parse(&String::from_utf8_lossy(&content));
                Ok(Some(Listed { name, ip, stamp, owner, read: true }))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }
}

impl Store for DiskStore {
    fn reservations(&self) -> Result<Vec<Reservation>, CniError> {
        let names = reservation_names(&self.dir).cni(IO_FAILURE, format!("failed to list {}", self.dir.display()))?;
        // Each file is stamped, and read if need be, relative to the
        // directory: one path component to look up.
        let dir = fs::File::open(&self.dir).cni(IO_FAILURE, format!("failed to open {}", self.dir.display()))?;
        let cache = self.read_owners();
        let mut listed = Vec::with_capacity(names.len());
        for name in names {
            listed.extend(self.list_one(&dir, name, &cache)?);
        }
        // Unchanged when every file was the version the cache vouched for
        // and none is gone.
        if listed.iter().any(|l| l.read) || listed.len() != cache.files.len() {
            self.write_owners(&listed);
        }
        Ok(listed.into_iter().map(|l| Reservation { ip: l.ip, owner: l.owner }).collect())
    }

    /// Reads the file. When it no longer names the owner the cache gave,
    /// the cache is dropped: the next listing reads every file again.
    fn confirm(&self, r: &Reservation) -> bool {
        let Ok(dir) = fs::File::open(&self.dir) else { return false };
        let now = read_reservation(&dir, &r.ip.to_string());
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
    use crate::cni::gc::Attachment;

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
        let stamp = FileStamp { ino: 77, size: 8, ctime: (1_700_000_000, 5) };
        let line = |id: &str, ifname: Option<&str>| {
            owners_line("10.1.0.2", &stamp, &Owner { container_id: id.into(), ifname: ifname.map(String::from) })
        };
        let written = (1_700_000_001, 0);
        let cache = |body: &str| parse_owners(&format!("{}\n{body}", owners_header(body)), written).files;
        let good = line("c1", Some("eth0")).unwrap();
        assert_eq!(good, "77 8 1700000000.000000005 10.1.0.2 c1 eth0\n");
        let owners = cache(&(good.clone() + &line("legacy", None).unwrap()));
        assert_eq!(owners.len(), 1, "same key: the later line wins");
        assert_eq!(owners["10.1.0.2"], (stamp, Owner { container_id: "legacy".into(), ifname: None }));
        assert_eq!(cache(&good)["10.1.0.2"], (stamp, Owner::new("c1", "eth0")));
        // Owners a line cannot carry are not cached (their files are read).
        assert_eq!(line("a b", Some("eth0")), None);
        assert_eq!(line("c1", Some("et\th0")), None);
        // One bad line, or a body that does not match the header's hash
        // (a torn write), and the whole cache is ignored.
        assert!(cache(&format!("{good}nonsense\n")).is_empty());
        assert!(cache("77 8 1700000000.000000005 10.1.0.2 c1 eth0 extra\n").is_empty());
        let torn = format!("{}\n{good}", owners_header(&good)) + "78 8 1700000000.000000005 10.1.0.3 c2 eth0\n";
        assert!(parse_owners(&torn, written).files.is_empty());
        assert!(parse_owners(&good, written).files.is_empty());
    }

    /// Version 1 lines named a file by inode number alone: such a cache,
    /// even intact, is ignored rather than read.
    #[test]
    fn a_cache_of_the_previous_version_is_ignored() {
        let v1 = |body: &str| format!("cnibox-owners 1 {:016x}\n{body}", crate::util::hash::fnv1a(&[body]));
        let written = (1_700_000_001, 0);
        assert!(parse_owners(&v1("77 10.1.0.2 c1 eth0\n"), written).files.is_empty());
        // The version decides, not whether the lines happen to parse.
        let v2_line = "77 8 1700000000.000000005 10.1.0.2 c1 eth0\n";
        assert!(parse_owners(&v1(v2_line), written).files.is_empty());

        // On disk: a version 1 cache naming someone else for a file's inode
        // is not believed, and the listing rewrites the cache in version 2.
        let data = temp_dir();
        let store = reserved(&data, &["10.0.0.2 c1"]);
        let ino = stamp_of(&store, "10.0.0.2").ino;
        fs::write(store.dir().join(OWNERS_FILE), v1(&format!("{ino} 10.0.0.2 z9 eth0\n"))).unwrap();
        assert_eq!(owners(&store), ["10.0.0.2 c1"]);
        let rewritten = fs::read_to_string(store.dir().join(OWNERS_FILE)).unwrap();
        assert!(rewritten.starts_with("cnibox-owners 2 "), "{rewritten}");
        drop(store);
        fs::remove_dir_all(&data).unwrap();
    }

    /// The trust rule alone: the cache stands in for a file only while the
    /// file is the very version it read, stamped before the cache itself.
    #[test]
    fn the_cache_vouches_only_for_the_version_it_read() {
        let recorded = FileStamp { ino: 7, size: 9, ctime: (100, 250) };
        let cache = |written: FsTime| OwnersCache {
            files: HashMap::from([("10.0.0.2".to_string(), (recorded, Owner::new("a", "eth0")))]),
            written,
        };
        let later = cache((100, 900));
        assert_eq!(later.owner("10.0.0.2", &recorded), Some(&Owner::new("a", "eth0")));
        assert_eq!(later.owner("10.0.0.3", &recorded), None);
        // Another owner's file on the reused inode number, of the same size:
        // created later, so stamped later.
        assert_eq!(later.owner("10.0.0.2", &FileStamp { ctime: (100, 901), ..recorded }), None);
        assert_eq!(later.owner("10.0.0.2", &FileStamp { ctime: (101, 0), ..recorded }), None);
        assert_eq!(later.owner("10.0.0.2", &FileStamp { ino: 8, ..recorded }), None);
        assert_eq!(later.owner("10.0.0.2", &FileStamp { size: 10, ..recorded }), None);
        // Recorded in the clock tick the cache was written in: a change
        // later in that tick could keep the stamp, so the file is read.
        assert_eq!(cache((100, 250)).owner("10.0.0.2", &recorded), None);
        assert_eq!(OwnersCache::default().owner("10.0.0.2", &recorded), None);
    }

    /// Sleeps past a tick of the coarse clock file timestamps come from
    /// (10 ms at HZ=100), so that later changes are stamped later.
    fn let_the_clock_tick() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    /// A store of network "net1" under `data` with `files` ("<ip> <container
    /// ID>", on eth0) reserved, listed once a clock tick later: the cache
    /// then vouches for every file.
    fn reserved(data: &Path, files: &[&str]) -> DiskStore {
        let mut store = DiskStore::open(data, "net1").unwrap();
        for (ip, id) in files.iter().filter_map(|f| f.split_once(' ')) {
            assert!(store.reserve(ip.parse().unwrap(), &Owner::new(id, "eth0"), 0).unwrap());
        }
        let_the_clock_tick();
        store.reservations().unwrap();
        store
    }

    fn stamp_of(store: &DiskStore, name: &str) -> FileStamp {
        FileStamp::of(&nix::sys::stat::stat(&store.dir().join(name)).unwrap())
    }

    /// "<ip> <container ID>" of every reservation, as the store lists them.
    fn owners(store: &DiskStore) -> Vec<String> {
        let mut all: Vec<String> =
            store.reservations().unwrap().iter().map(|r| format!("{} {}", r.ip, r.owner.container_id)).collect();
        all.sort();
        all
    }

    /// Rewrites the cache as cnibox would, with `lines` (ip, stamp, owner).
    fn forge_cache(store: &DiskStore, lines: &[(&str, FileStamp, &str)]) {
        let listed: Vec<Listed> = lines
            .iter()
            .map(|&(ip, stamp, id)| Listed {
                name: ip.to_string(),
                ip: ip.parse().unwrap(),
                stamp,
                owner: Owner::new(id, "eth0"),
                read: true,
            })
            .collect();
        store.write_owners(&listed);
    }

    /// Without any change the cache is what a listing believes: the tests
    /// below show it is also all it believes.
    #[test]
    fn the_cache_stands_in_for_unchanged_files() {
        let data = temp_dir();
        let store = reserved(&data, &["10.0.0.2 c1"]);
        forge_cache(&store, &[("10.0.0.2", stamp_of(&store, "10.0.0.2"), "z9")]);
        assert_eq!(owners(&store), ["10.0.0.2 z9"], "the file was read after all");
        drop(store);
        fs::remove_dir_all(&data).unwrap();
    }

    /// The reproduction of the bug: cnibox releases A's file, another
    /// writer (the reference) creates B's in its place, and the filesystem
    /// hands the new file A's inode number back (ext4 does; where it did
    /// not, the cache is made to hold A's line on B's inode number).
    #[test]
    fn a_line_whose_inode_another_owners_file_reused() {
        let data = temp_dir();
        let mut store = reserved(&data, &["10.0.0.2 cA"]);
        let a = stamp_of(&store, "10.0.0.2");
        store.release("10.0.0.2".parse().unwrap()).unwrap();
        let b_file = store.dir().join("10.0.0.2");
        fs::write(&b_file, "cB\r\neth0").unwrap();
        let b = stamp_of(&store, "10.0.0.2");
        if b.ino != a.ino {
            forge_cache(&store, &[("10.0.0.2", FileStamp { ino: b.ino, ..a }, "cA")]);
        }
        assert_eq!((b.ino, b.size), (stamp_of(&store, "10.0.0.2").ino, a.size));
        assert_eq!(owners(&store), ["10.0.0.2 cB"]);
        assert_eq!(
            super::super::allocator::release(&mut store, "cB", "eth0").unwrap(),
            ["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert!(!b_file.exists());
        drop(store);
        fs::remove_dir_all(&data).unwrap();
    }

    /// Another owner's content written over the file, same inode, same
    /// size, right after the cache recorded it (in the same clock tick).
    #[test]
    fn a_file_rewritten_in_place_by_another_owner() {
        let data = temp_dir();
        let mut store = reserved(&data, &["10.0.0.2 c1"]);
        let before = stamp_of(&store, "10.0.0.2");
        OpenOptions::new().write(true).open(store.dir().join("10.0.0.2")).unwrap().write_all(b"c2\r\neth0").unwrap();
        let after = stamp_of(&store, "10.0.0.2");
        assert_eq!((after.ino, after.size), (before.ino, before.size));
        assert_eq!(owners(&store), ["10.0.0.2 c2"]);
        use super::super::allocator::{held_by, release};
        assert!(release(&mut store, "c1", "eth0").unwrap().is_empty());
        assert_eq!(held_by(&store, "c2", "eth0").unwrap(), ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        drop(store);
        fs::remove_dir_all(&data).unwrap();
    }

    /// GC decides from the files, not from what the cache last saw: a
    /// valid attachment's address taken over by a stale owner is released,
    /// a stale attachment's address now held by a valid one is kept.
    #[test]
    fn gc_with_valid_attachments_after_other_writers() {
        let data = temp_dir();
        let ips = ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
        let mut store = reserved(&data, &["10.0.0.2 ca", "10.0.0.3 cb", "10.0.0.4 cc", "10.0.0.5 cd"]);
        // cb's file now holds cz's reservation, written in place.
        OpenOptions::new().write(true).open(store.dir().join(ips[1])).unwrap().write_all(b"cz\r\neth0").unwrap();
        // cc's file was released and made again for cy (perhaps on the same inode).
        fs::remove_file(store.dir().join(ips[2])).unwrap();
        fs::write(store.dir().join(ips[2]), "cy\r\neth0").unwrap();
        let valid =
            ["ca", "cb", "cy"].map(|id| Attachment { container_id: id.to_string(), ifname: "eth0".to_string() });
        let mut released = super::super::allocator::gc(&mut store, &valid).unwrap();
        released.sort();
        assert_eq!(released, [ips[1], ips[3]].map(|ip| ip.parse::<IpAddr>().unwrap()));
        assert_eq!(owners(&store), ["10.0.0.2 ca", "10.0.0.4 cy"]);
        drop(store);
        fs::remove_dir_all(&data).unwrap();
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
