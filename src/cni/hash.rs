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

/// `len` lowercase hex characters (at most 16) of the parts' hash.
pub fn short_hex(parts: &[&str], len: usize) -> String {
    let s = format!("{:016x}", fnv1a(parts));
    s[..len.min(16)].to_string()
}

/// 32 random bits from the kernel, for names that must not collide.
pub fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf)).is_err() {
        // Without /dev/urandom: time and pid still vary between callers.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return (t.as_nanos() as u32) ^ std::process::id().rotate_left(16);
    }
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
}
