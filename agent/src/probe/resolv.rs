//! The host's name servers, from `/etc/resolv.conf`: what nginx's `resolver` can be told to
//! ask when a name must be resolved per request and none is configured.
//!
//! [`parse`] is pure and total; [`read`] reads the file under a root.

use std::net::IpAddr;
use std::path::Path;

use super::ProbeError;

/// The most `nameserver` lines the C library reads (`MAXNS`); later ones are ignored by every
/// program on the host, so they are here too.
const MAXNS: usize = 3;

/// The `nameserver` addresses of a resolv.conf text, in order, as the C library reads them:
/// at most three, each an IP address (IPv6 possibly with a `%zone`). Anything else is skipped.
pub fn parse(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr = words.next()?;
            let bare = addr.split_once('%').map_or(addr, |(ip, _)| ip);
            bare.parse::<IpAddr>().ok()?;
            Some(addr.to_owned())
        })
        .take(MAXNS)
        .collect()
}

/// The name servers of `etc/resolv.conf` under `root` (`/` on a host). A missing file is no
/// name server (the C library then asks 127.0.0.1; nginx is not told to guess).
pub fn read(root: &Path) -> Result<Vec<String>, ProbeError> {
    let path = root.join("etc/resolv.conf");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(parse(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(ProbeError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_as_the_c_library_reads_them() {
        // systemd-resolved's stub file, as Debian writes it.
        let stub = "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n\
                    nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n";
        assert_eq!(parse(stub), ["127.0.0.53"]);
        let several = "search example.com\nnameserver 10.0.0.2\n  nameserver\t::1\n\
                       nameserver fe80::1%eth0\nnameserver 10.0.0.9\n;nameserver 10.0.0.3\n\
                       nameserver not-an-address\n";
        assert_eq!(parse(several), ["10.0.0.2", "::1", "fe80::1%eth0"]);
        assert!(parse("").is_empty());
    }

    #[test]
    fn a_missing_file_is_no_nameserver() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        assert_eq!(read(dir.path()).unwrap(), ["127.0.0.1"]);
    }
}
