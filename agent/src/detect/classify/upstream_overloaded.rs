//! `upstream_overloaded`: the upstream's listen backlog is full because every worker is busy —
//! `connect() to unix:/run/php/php8.2-fpm.sock failed (11: Resource temporarily unavailable)`.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    (e.is_connect() && e.code() == Some(11)).then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn a_full_backlog_is_overload() {
        let c = classify(b"2026/11/21 01:02:26 [error] 318#318: *171 connect() to unix:/run/php/php8.2-fpm.sock failed (11: Resource temporarily unavailable) while connecting to upstream");
        assert_eq!(c.cause, Cause::UpstreamOverloaded);
        assert_eq!(c.errno, Some(11));
    }
}
