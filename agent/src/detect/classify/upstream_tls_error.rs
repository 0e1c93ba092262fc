//! `upstream_tls_error`: anything while `SSL handshaking to upstream` (`SSL_do_handshake()
//! failed (SSL: ... wrong version number)`, `peer closed connection in SSL handshake`, a
//! timeout), and `upstream SSL certificate verify error` / `does not match`. Asked before the
//! timeout and reset detectors: the phase is what says TLS.

use super::entry::Entry;
use super::{Extra, Phase};

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    let tls = e.phase == Some(Phase::SslHandshaking) || e.head_starts(b"upstream SSL certificate ");
    tls.then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn handshake_failures_timeouts_and_certificates() {
        for head in [
            "SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong version number) while SSL handshaking to upstream",
            "peer closed connection in SSL handshake (104: Connection reset by peer) while SSL handshaking to upstream",
            "upstream timed out (110: Connection timed out) while SSL handshaking to upstream",
            "upstream SSL certificate verify error: (18:self-signed certificate) while SSL handshaking to upstream",
            "upstream SSL certificate does not match \"backend.example\" while SSL handshaking to upstream",
        ] {
            let line =
                format!("2026/11/21 01:01:59 [error] 317#317: *99 {head}, client: 127.0.0.1");
            assert_eq!(
                classify(line.as_bytes()).cause,
                Cause::UpstreamTlsError,
                "{head}"
            );
        }
    }

    #[test]
    fn a_client_handshake_failing_is_not_this() {
        let c = classify(b"2026/11/21 01:01:59 [info] 317#317: *99 SSL_do_handshake() failed (SSL: error:0A000126:SSL routines::unexpected eof while reading) while SSL handshaking, client: 127.0.0.1, server: 0.0.0.0:443");
        assert_eq!(c.cause, Cause::None);
    }
}
