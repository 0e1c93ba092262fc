//! `upstream_refused`: nothing accepts connections at the upstream's address.
//!
//! `connect() failed (111: Connection refused) while connecting to upstream` (TCP),
//! `connect() to unix:/run/php/php8.2-fpm.sock failed (111: Connection refused)` (a socket file
//! left behind by a killed php-fpm), and `recv() failed (111: ...)` when the refusal only
//! surfaces at the first read. Other `connect()` failures while connecting (113: No route to
//! host, 101: Network is unreachable) also mean the address does not take connections, and
//! land here rather than in `none`.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    if !e.upstream_phase() {
        return None;
    }
    let refused = match e.code()? {
        111 => true,
        // The errnos with a cause of their own (missing, permission, overloaded, timeout).
        2 | 11 | 13 | 110 => false,
        _ => e.is_connect(),
    };
    refused.then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn refused_over_tcp_unix_and_at_first_read() {
        for line in [
            &b"2026/11/21 01:01:15 [error] 110#110: *5 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1"[..],
            b"2026/11/21 01:02:12 [error] 317#317: *121 connect() to unix:/run/php/php8.2-fpm.sock failed (111: Connection refused) while connecting to upstream",
            b"2026/11/21 01:02:12 [error] 317#317: *121 recv() failed (111: Connection refused) while reading response header from upstream",
            b"2026/11/21 01:02:12 [error] 317#317: *121 connect() failed (113: No route to host) while connecting to upstream",
        ] {
            assert_eq!(classify(line).cause, Cause::UpstreamRefused);
        }
    }

    #[test]
    fn a_refusal_outside_an_upstream_phase_is_not_this() {
        let line = b"2026/11/21 01:02:12 [error] 317#317: *121 connect() failed (111: Connection refused), client: 127.0.0.1";
        assert_eq!(classify(line).cause, Cause::None);
    }
}
