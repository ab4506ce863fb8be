//! resolv.conf parsing for the `resolvConf` key.

use std::path::Path;

use crate::cni::error::IO_FAILURE;
use crate::cni::{CniContext, CniError, Dns};

/// Reads nameserver, domain, search and options lines, as the reference does.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [keyword, values @ ..] = fields.as_slice() else { continue };
        let Some(first) = values.first() else { continue };
        let owned = || values.iter().map(|v| v.to_string());
        match *keyword {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => dns.search.extend(owned()),
            "options" => dns.options.extend(owned()),
            _ => {}
        }
    }
    dns
}

pub fn read_resolv_conf(path: &Path) -> Result<Dns, CniError> {
    let text =
        std::fs::read_to_string(path).cni(IO_FAILURE, format!("failed to read resolvConf {}", path.display()))?;
    Ok(parse_resolv_conf(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_lines() {
        let dns = parse_resolv_conf(
            "# a comment\n; another\n\nnameserver 10.0.0.10\nnameserver  fd00::53 \ndomain example.com\n\
             search a.example.com b.example.com\nsearch c.example.com\noptions ndots:5 edns0\n\
             nameserver\nsortlist 10.0.0.0/8\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.10", "fd00::53"]);
        assert_eq!(dns.domain, "example.com");
        assert_eq!(dns.search, ["a.example.com", "b.example.com", "c.example.com"]);
        assert_eq!(dns.options, ["ndots:5", "edns0"]);
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        assert_eq!(read_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err().code, 5);
    }
}
