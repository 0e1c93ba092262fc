//! `upstream_connect_timeout`: the upstream did not accept within `proxy_connect_timeout`
//! (`upstream timed out (110: Connection timed out) while connecting to upstream`), or the
//! kernel gave up first (`connect() failed (110: Connection timed out)`).

use super::entry::Entry;
use super::{Extra, Phase};

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    let timed_out =
        e.head_starts(b"upstream timed out") || (e.is_connect() && e.code() == Some(110));
    (timed_out && e.phase == Some(Phase::Connecting)).then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn a_timeout_while_connecting() {
        let c = classify(b"2026/11/21 01:01:24 [error] 110#110: *33 upstream timed out (110: Connection timed out) while connecting to upstream, client: 127.0.0.1");
        assert_eq!(c.cause, Cause::UpstreamConnectTimeout);
        assert_eq!(c.errno, Some(110));
    }
}
