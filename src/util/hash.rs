//! Short stable names derived from identifiers (interface names, nft object
//! names): FNV-1a, which is tiny and good enough to spread names apart.

/// 64-bit FNV-1a over the parts, each followed by a NUL separator so that
/// ("ab","c") and ("a","bc") differ.
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// 128-bit FNV-1a of `s` (no separator) as 32 hex characters: for names
/// that must practically never collide (nft comments of long attachments).
/// Stored in nft state: the output must never change.
pub fn fnv1a_128_hex(s: &str) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in s.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    format!("{h:032x}")
}

/// `len` lowercase hex characters (at most 16) of the parts' hash.
pub fn short_hex(parts: &[&str], len: usize) -> String {
    let s = format!("{:016x}", fnv1a(parts));
    s[..len.min(16)].to_string()
}

/// Fills `buf` with random bytes from the kernel (getrandom: no file to
/// open).
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the kernel writes at most rest.len() bytes into rest.
        let n = unsafe { nix::libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // No getrandom (before Linux 3.17): time and pid still vary between callers.
            let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
            for (i, b) in rest.iter_mut().enumerate() {
                *b = (fnv1a(&[&seed, &i.to_string()]) >> 8) as u8;
            }
            return;
        }
    }
}

/// 32 random bits from the kernel, for names that must not collide.
pub fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    random_bytes(&mut buf);
    u32::from_ne_bytes(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stable_and_separated() {
        assert_eq!(super::short_hex(&["a", "bc"], 8), super::short_hex(&["a", "bc"], 8));
        assert_ne!(super::short_hex(&["ab", "c"], 8), super::short_hex(&["a", "bc"], 8));
        assert_eq!(super::short_hex(&["x"], 8).len(), 8);
    }

    #[test]
    fn fnv1a_128_is_pinned() {
        // Existing nft comments carry this value: it must not change.
        assert_eq!(super::fnv1a_128_hex("net c1 eth0"), "2a15564a4771f51d852fb78dcec2fbd9");
    }
}
