//! MAC addresses as the CNI configs write them ("aa:bb:cc:dd:ee:ff").

pub fn parse(s: &str) -> Option<Vec<u8>> {
    let bytes: Option<Vec<u8>> = s
        .split([':', '-'])
        .map(|p| (p.len() == 2).then(|| u8::from_str_radix(p, 16).ok()).flatten())
        .collect();
    bytes.filter(|b| b.len() == 6 || b.len() == 8 || b.len() == 20)
}

pub fn format(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
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
}
