//! `no_live_upstreams`: every server of an `upstream {}` group is marked down by `max_fails`
//! (`no live upstreams while connecting to upstream`, `upstream: "http://GROUP/..."`), and
//! the `[warn] upstream server temporarily disabled` that marks one down.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    let down = e.head_starts(b"no live upstreams")
        || e.head_starts(b"upstream server temporarily disabled");
    down.then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn no_live_upstreams_names_the_group() {
        let c = classify(b"2026/11/21 01:01:58 [error] 317#317: *91 no live upstreams while connecting to upstream, client: 127.0.0.1, server: fx.test, request: \"GET /no_live HTTP/1.1\", upstream: \"http://flaky/no_live\", host: \"fx.test\"");
        assert_eq!(c.cause, Cause::NoLiveUpstreams);
        assert_eq!(c.upstream.as_deref(), Some("flaky"));
        let c = classify(b"2026/11/21 01:01:58 [warn] 317#317: *85 upstream server temporarily disabled while connecting to upstream, client: 127.0.0.1");
        assert_eq!(c.cause, Cause::NoLiveUpstreams);
    }
}
