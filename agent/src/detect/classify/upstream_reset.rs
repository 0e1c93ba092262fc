//! `upstream_reset`: the upstream reset or broke the connection mid-exchange —
//! `recv() failed (104: Connection reset by peer) while reading response header from upstream`
//! (a killed php-fpm worker shows up this way), `sendfile() failed (32: Broken pipe) while
//! sending request to upstream`, `readv()`/`writev()` alike.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    (e.upstream_phase() && matches!(e.code(), Some(104 | 32))).then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn resets_and_broken_pipes_towards_the_upstream() {
        for line in [
            &b"2026/11/21 01:01:17 [error] 110#110: *11 recv() failed (104: Connection reset by peer) while reading response header from upstream, client: 127.0.0.1"[..],
            b"2026/11/21 01:01:20 [error] 110#110: *29 sendfile() failed (32: Broken pipe) while sending request to upstream, client: 127.0.0.1",
        ] {
            assert_eq!(classify(line).cause, Cause::UpstreamReset);
        }
    }

    #[test]
    fn a_client_resetting_is_not_this() {
        let c = classify(b"2026/11/21 01:01:17 [info] 110#110: *11 recv() failed (104: Connection reset by peer) while reading client request line, client: 127.0.0.1");
        assert_eq!(c.cause, Cause::None);
        let c = classify(b"2026/11/21 01:01:17 [info] 110#110: *11 writev() failed (32: Broken pipe) while sending to client, client: 127.0.0.1");
        assert_eq!(c.cause, Cause::None);
    }
}
