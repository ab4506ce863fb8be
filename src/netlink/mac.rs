//! MAC addresses as the CNI configs write them ("aa:bb:cc:dd:ee:ff").

pub fn parse(s: &str) -> Option<Vec<u8>> {
    let bytes: Option<Vec<u8>> =
        s.split([':', '-']).map(|p| (p.len() == 2).then(|| u8::from_str_radix(p, 16).ok()).flatten()).collect();
    bytes.filter(|b| b.len() == 6 || b.len() == 8 || b.len() == 20)
}

pub fn format(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A random MAC as the kernel gives a new veth: locally administered
/// (bit 1 of the first octet set), unicast (bit 0 clear).
pub fn random_local() -> Vec<u8> {
    let mut m = vec![0u8; 6];
    crate::util::hash::random_bytes(&mut m);
    m[0] = (m[0] & 0xfe) | 0x02;
    m
}

/// A random MAC for a bridge port's host end: fe:xx:xx:xx:xx:xx. A bridge
/// without a MAC of its own takes its lowest port's, so a port whose MAC
/// sorts above every vendor's never changes the bridge's (as libvirt does
/// for its tap devices).
pub fn random_host_port() -> Vec<u8> {
    let mut m = random_local();
    m[0] = 0xfe;
    m
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let b = super::parse("0A:58:0a:f4:00:01").unwrap();
        assert_eq!(super::format(&b), "0a:58:0a:f4:00:01");
        assert!(super::parse("0a:58:0a").is_none());
        assert!(super::parse("zz:58:0a:f4:00:01").is_none());
        assert!(super::parse("0a:58:0a:f4:00:1").is_none());
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..32 {
            let m = super::random_local();
            assert_eq!((m.len(), m[0] & 0x03), (6, 0x02));
            assert_eq!(super::random_host_port()[0], 0xfe);
        }
        assert_ne!(super::random_local(), super::random_local());
    }
}
