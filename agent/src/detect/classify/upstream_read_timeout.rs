//! `upstream_read_timeout`: connected, then the upstream was too slow — `upstream timed out
//! (110: Connection timed out)` while sending the request, reading the response header or
//! reading the body. nginx writes the unix upstream of these lines without its trailing colon.

use super::entry::Entry;
use super::{Extra, Phase};

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    if !e.upstream_phase() || e.phase == Some(Phase::Connecting) {
        return None;
    }
    let timed_out = e.head_starts(b"upstream timed out") || e.code() == Some(110);
    timed_out.then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::{Phase, classify};
    use gatemend_proto::v1::Cause;

    #[test]
    fn timeouts_after_connecting() {
        let c = classify(b"2026/11/21 01:02:02 [error] 317#317: *109 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: fx.test, request: \"GET /slow.php?s=3 HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock\", host: \"fx.test\"");
        assert_eq!(c.cause, Cause::UpstreamReadTimeout);
        assert_eq!(c.phase, Some(Phase::ReadingResponseHeader));
        assert_eq!(c.upstream.as_deref(), Some("unix:/run/php/php8.2-fpm.sock"));
        let c = classify(b"2026/11/21 01:01:22 [error] 110#110: *31 upstream timed out (110: Connection timed out) while reading upstream, client: 127.0.0.1");
        assert_eq!(
            (c.cause, c.phase),
            (Cause::UpstreamReadTimeout, Some(Phase::ReadingUpstream))
        );
    }

    #[test]
    fn a_client_timing_out_is_not_this() {
        let c = classify(b"2026/11/21 01:01:22 [info] 110#110: *31 client timed out (110: Connection timed out) while reading client request headers, client: 127.0.0.1");
        assert_eq!(c.cause, Cause::None);
    }
}
