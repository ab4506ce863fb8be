//! The chain names of an iptables-legacy (x_tables) table, read from the
//! kernel as iptables-legacy-save reads them (two getsockopts on a raw
//! socket: IPT_SO_GET_INFO for the table's size and hooks, then
//! IPT_SO_GET_ENTRIES for its rules), without exec'ing anything: a DEL on
//! a node whose legacy nat table dockerd loaded learns that no chain of the
//! reference is there for a fraction of a millisecond, not an exec.
//!
//! The table's rules are one blob of entries (struct ipt_entry or
//! ip6t_entry, then its matches, then its target), each giving the offset
//! of the next. A user-defined chain begins with an entry whose target is
//! "ERROR" with the chain's name as data; the table ends with an "ERROR"
//! whose data is "ERROR". Built-in chains have no such head: they are the
//! table's hooks.
//!
//! Asking the kernel for a table it does not have makes it load (or create
//! in this netns) that table, so a table is read only when
//! /proc/thread-self/net/ip*_tables_names lists it.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};

/// IPT_SO_GET_INFO and IP6T_SO_GET_INFO (the same number at SOL_IP and SOL_IPV6).
const SO_GET_INFO: libc::c_int = 64;
/// IPT_SO_GET_ENTRIES and IP6T_SO_GET_ENTRIES.
const SO_GET_ENTRIES: libc::c_int = 65;

/// XT_TABLE_MAXNAMELEN: a table's name and its NUL.
const TABLE_NAME_LEN: usize = 32;
/// struct ipt_getinfo (ip6t_getinfo is the same): name[32], valid_hooks,
/// hook_entry[5], underflow[5], num_entries, size.
const INFO_LEN: usize = 84;
const INFO_VALID_HOOKS: usize = 32;
const INFO_SIZE: usize = 80;
/// struct ipt_get_entries up to its entries: name[32], size, and padding
/// to the entries' 8-byte alignment.
const ENTRIES_HEADER: usize = 40;
const ENTRIES_SIZE: usize = 32;
/// struct xt_entry_target: u16 target_size, char name[29], u8 revision;
/// the target's data follows.
const TARGET_HEADER: usize = 32;
const TARGET_NAME: std::ops::Range<usize> = 2..31;
const ERROR_TARGET: &[u8] = b"ERROR";

/// The built-in chains by hook number (NF_INET_PRE_ROUTING = 0, ...).
const HOOKS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Where struct ipt_entry or ip6t_entry keeps what the walk reads: its
/// size, and the offsets of its u16 target_offset and next_offset.
#[derive(Debug, Clone, Copy)]
struct Layout {
    entry_len: usize,
    target_offset: usize,
    next_offset: usize,
}

const IPT_ENTRY: Layout = Layout { entry_len: 112, target_offset: 88, next_offset: 90 };
const IP6T_ENTRY: Layout = Layout { entry_len: 168, target_offset: 140, next_offset: 142 };

/// Whether the kernel has legacy `table` (IPv6's when `v6`) in the calling
/// thread's netns (the one a raw socket and an exec'd iptables would see).
fn listed(v6: bool, table: &str) -> bool {
    let names = if v6 { "ip6_tables_names" } else { "ip_tables_names" };
    std::fs::read_to_string(format!("/proc/thread-self/net/{names}")).is_ok_and(|s| s.lines().any(|l| l == table))
}

/// The chains of legacy `table`, built-in and user-defined; None when the
/// kernel does not have the table (then it is not asked for it).
pub fn chains(v6: bool, table: &str) -> io::Result<Option<BTreeSet<String>>> {
    if !listed(v6, table) {
        return Ok(None);
    }
    let name = table_name(table)?;
    let (family, level, layout) = if v6 {
        (AddressFamily::Inet6, libc::SOL_IPV6, IP6T_ENTRY)
    } else {
        (AddressFamily::Inet, libc::SOL_IP, IPT_ENTRY)
    };
    let sock = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Raw)?;
    // A rule changed between the two calls makes the size asked for stale.
    let (hooks, entries) = match read_table(&sock, level, &name) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => read_table(&sock, level, &name)?,
        read => read?,
    };
    let mut names = parse_chains(&entries, layout)?;
    names.extend(hook_chains(hooks));
    Ok(Some(names))
}

/// `table` as the kernel's structs hold it: NUL-padded.
fn table_name(table: &str) -> io::Result<[u8; TABLE_NAME_LEN]> {
    if table.is_empty() || table.len() >= TABLE_NAME_LEN || table.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no table is named {table:?}")));
    }
    let mut name = [0; TABLE_NAME_LEN];
    name[..table.len()].copy_from_slice(table.as_bytes());
    Ok(name)
}

/// (valid_hooks, the entries' blob) of the table `name`.
fn read_table(sock: &OwnedFd, level: libc::c_int, name: &[u8; TABLE_NAME_LEN]) -> io::Result<(u32, Vec<u8>)> {
    let mut info = [0; INFO_LEN];
    info[..TABLE_NAME_LEN].copy_from_slice(name);
    getsockopt(sock, level, SO_GET_INFO, &mut info)?;
    let size = u32_at(&info, INFO_SIZE);
    let mut buf = vec![0; ENTRIES_HEADER + size as usize];
    buf[..TABLE_NAME_LEN].copy_from_slice(name);
    buf[ENTRIES_SIZE..ENTRIES_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
    // The kernel answers EAGAIN when the table's size is no longer `size`.
    getsockopt(sock, level, SO_GET_ENTRIES, &mut buf)?;
    buf.drain(..ENTRIES_HEADER);
    Ok((u32_at(&info, INFO_VALID_HOOKS), buf))
}

/// getsockopt into all of `buf`; a shorter answer is taken for a table
/// that changed meanwhile (EAGAIN).
fn getsockopt(sock: &OwnedFd, level: libc::c_int, option: libc::c_int, buf: &mut [u8]) -> io::Result<()> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `len` bytes, the most the kernel
    // writes; `len` lives through the call; the descriptor is open (owned).
    let rc = unsafe { libc::getsockopt(sock.as_raw_fd(), level, option, buf.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != buf.len() {
        return Err(io::Error::from_raw_os_error(libc::EAGAIN));
    }
    Ok(())
}

/// The built-in chains of a table's valid_hooks.
fn hook_chains(valid_hooks: u32) -> impl Iterator<Item = String> {
    HOOKS.into_iter().enumerate().filter(move |(bit, _)| valid_hooks & (1 << bit) != 0).map(|(_, h)| h.to_string())
}

/// The user-defined chains of a table's entries.
fn parse_chains(entries: &[u8], layout: Layout) -> io::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let mut at = 0;
    while at < entries.len() {
        let entry = &entries[at..];
        if entry.len() < layout.entry_len {
            return Err(malformed("an entry runs past the table's end"));
        }
        let target = usize::from(u16_at(entry, layout.target_offset));
        let next = usize::from(u16_at(entry, layout.next_offset));
        // Each check also keeps the walk moving forward.
        if next > entry.len() || target < layout.entry_len || target + TARGET_HEADER > next {
            return Err(malformed("an entry's offsets are out of bounds"));
        }
        names.extend(user_chain(&entry[target..next]));
        at += next;
    }
    Ok(names)
}

/// The chain an entry's target begins: an ERROR target's data, but for
/// the table's final "ERROR".
fn user_chain(target: &[u8]) -> Option<String> {
    if until_nul(&target[TARGET_NAME]) != ERROR_TARGET {
        return None;
    }
    let size = usize::from(u16_at(target, 0)).clamp(TARGET_HEADER, target.len());
    let name = until_nul(&target[TARGET_HEADER..size]);
    (!name.is_empty() && name != ERROR_TARGET).then(|| String::from_utf8_lossy(name).into_owned())
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or(bytes)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("x_tables blob: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry as the kernel lays it out: no matches, then a target named
    /// `target` with `data` (NUL-padded to 8 bytes, as XT_ALIGN pads it).
    fn entry(layout: Layout, target: &str, data: &[u8]) -> Vec<u8> {
        let data_len = (data.len() + 1).div_ceil(8) * 8;
        let target_size = TARGET_HEADER + data_len;
        let next = layout.entry_len + target_size;
        let mut e = vec![0; next];
        e[layout.target_offset..layout.target_offset + 2].copy_from_slice(&(layout.entry_len as u16).to_ne_bytes());
        e[layout.next_offset..layout.next_offset + 2].copy_from_slice(&(next as u16).to_ne_bytes());
        let t = &mut e[layout.entry_len..];
        t[..2].copy_from_slice(&(target_size as u16).to_ne_bytes());
        t[2..2 + target.len()].copy_from_slice(target.as_bytes());
        t[TARGET_HEADER..TARGET_HEADER + data.len()].copy_from_slice(data);
        e
    }

    /// A nat table as iptables-legacy -t nat -N CNI-TEST-1 leaves it: the
    /// built-in chains' policies (standard targets: an empty name, a
    /// verdict), the user chain's head and its policy, the final ERROR.
    fn nat_table(layout: Layout) -> Vec<u8> {
        let accept = (-2i32).to_ne_bytes();
        let mut blob = Vec::new();
        for _ in 0..4 {
            blob.extend(entry(layout, "", &accept));
        }
        blob.extend(entry(layout, "ERROR", b"CNI-TEST-1"));
        blob.extend(entry(layout, "", &accept));
        blob.extend(entry(layout, "MASQUERADE", &[0; 16]));
        blob.extend(entry(layout, "ERROR", b"ERROR"));
        blob
    }

    #[test]
    fn finds_the_user_chains_of_both_families() {
        for layout in [IPT_ENTRY, IP6T_ENTRY] {
            let chains = parse_chains(&nat_table(layout), layout).unwrap();
            assert_eq!(chains.into_iter().collect::<Vec<_>>(), ["CNI-TEST-1"], "{layout:?}");
        }
        let mut blob = nat_table(IPT_ENTRY);
        // A chain name of the longest kind, its data filling the target.
        blob.extend(entry(IPT_ENTRY, "ERROR", b"CNI-DN-0123456789abcdef01234"));
        assert!(parse_chains(&blob, IPT_ENTRY).unwrap().contains("CNI-DN-0123456789abcdef01234"));
        assert!(parse_chains(&[], IPT_ENTRY).unwrap().is_empty());
    }

    #[test]
    fn refuses_a_malformed_blob() {
        let blob = nat_table(IPT_ENTRY);
        // Cut inside the last entry.
        assert!(parse_chains(&blob[..blob.len() - 8], IPT_ENTRY).is_err());
        // A next_offset of 0 would never move on.
        let mut stuck = entry(IPT_ENTRY, "ERROR", b"X");
        stuck[IPT_ENTRY.next_offset..IPT_ENTRY.next_offset + 2].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse_chains(&stuck, IPT_ENTRY).is_err());
        // A target before the end of its entry's header.
        let mut early = entry(IPT_ENTRY, "ERROR", b"X");
        early[IPT_ENTRY.target_offset..IPT_ENTRY.target_offset + 2].copy_from_slice(&8u16.to_ne_bytes());
        assert!(parse_chains(&early, IPT_ENTRY).is_err());
        // The v4 blob read with the v6 layout does not parse.
        assert!(parse_chains(&blob, IP6T_ENTRY).is_err());
        // No byte changed makes the walk panic or loop.
        for at in 0..blob.len() {
            for byte in [0x00, 0x01, 0x7f, 0xff] {
                let mut changed = blob.clone();
                changed[at] = byte;
                let _ = parse_chains(&changed, IPT_ENTRY);
            }
        }
    }

    #[test]
    fn built_in_chains_are_the_hooks() {
        // nat: every hook but FORWARD.
        let nat: Vec<String> = hook_chains(0b11011).collect();
        assert_eq!(nat, ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]);
        let filter: Vec<String> = hook_chains(0b01110).collect();
        assert_eq!(filter, ["INPUT", "FORWARD", "OUTPUT"]);
    }

    #[test]
    fn table_names_fit_the_kernels_field() {
        assert_eq!(&table_name("nat").unwrap()[..4], b"nat\0");
        assert!(table_name("").is_err() && table_name(&"x".repeat(32)).is_err() && table_name("a\0b").is_err());
        assert!(table_name(&"x".repeat(31)).is_ok());
    }
}
