//! `upstream_invalid_response`: the upstream answered something nginx cannot use. nginx
//! words all of these `upstream sent ...` (`no valid HTTP/1.0 header`, `invalid header`,
//! `invalid chunked response`, `data after final chunk`, `more data than specified in
//! "Content-Length" header`, `unsupported FastCGI protocol version`, `too large http2 frame`,
//! ...) or, for gRPC, `upstream rejected request`. `too big header` has its own cause and is
//! asked first.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    let invalid = e.source == super::entry::Source::Nginx
        && (e.head_starts(b"upstream sent ") || e.head_starts(b"upstream rejected request"));
    invalid.then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn every_upstream_sent_wording() {
        for head in [
            "upstream sent no valid HTTP/1.0 header while reading response header from upstream",
            "upstream sent invalid header: \"Bad\\x20...\" while reading response header from upstream",
            "upstream sent invalid chunked response while reading upstream",
            "upstream sent data after final chunk while reading upstream",
            "upstream sent more data than specified in \"Content-Length\" header while reading upstream",
            "upstream sent unsupported FastCGI protocol version: 72 while reading response header from upstream",
            "upstream sent too large http2 frame: 4740180 while reading response header from upstream",
        ] {
            let line =
                format!("2026/11/21 01:01:18 [error] 110#110: *21 {head}, client: 127.0.0.1");
            assert_eq!(
                classify(line.as_bytes()).cause,
                Cause::UpstreamInvalidResponse,
                "{head}"
            );
        }
    }
}
