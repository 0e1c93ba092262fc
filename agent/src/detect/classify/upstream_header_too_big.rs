//! `upstream_header_too_big`: the response header did not fit `proxy_buffer_size` /
//! `fastcgi_buffer_size` — `upstream sent too big header while reading response header from
//! upstream`.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    e.head_starts(b"upstream sent too big header")
        .then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn too_big_header() {
        let c = classify(b"2026/11/21 01:01:18 [error] 110#110: *19 upstream sent too big header while reading response header from upstream, client: 127.0.0.1");
        assert_eq!(c.cause, Cause::UpstreamHeaderTooBig);
    }
}
