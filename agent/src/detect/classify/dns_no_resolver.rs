//! `dns_no_resolver`: `proxy_pass` with a variable needs a `resolver`, and there is none —
//! `no resolver defined to resolve backend.example`. `name` is the name.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    let name = e.head_after(b"no resolver defined to resolve ")?;
    Some(Extra {
        name: Some(name),
        ..Extra::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn the_name_is_kept() {
        let c = classify(b"2026/11/21 01:01:29 [error] 111#111: *58 no resolver defined to resolve backend.example, client: 127.0.0.1, server: fx.test, request: \"GET /no_resolver HTTP/1.1\", host: \"fx.test\"");
        assert_eq!(c.cause, Cause::DnsNoResolver);
        assert_eq!(c.name.as_deref(), Some("backend.example"));
        assert_eq!(c.upstream, None);
    }
}
