//! `upstream_socket_missing`: the unix socket nginx connects to does not exist —
//! `connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory)`, logged
//! at `[crit]`. php-fpm is stopped, or nginx points at another version's socket.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    (e.is_connect() && e.code() == Some(2)).then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn a_missing_socket_is_this_and_a_missing_file_is_not() {
        let c = classify(b"2026/11/21 01:02:03 [crit] 317#317: *113 connect() to unix:/run/php/php7.4-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: fx.test, request: \"GET /x HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php7.4-fpm.sock:\", host: \"fx.test\"");
        assert_eq!(c.cause, Cause::UpstreamSocketMissing);
        assert_eq!(c.upstream.as_deref(), Some("unix:/run/php/php7.4-fpm.sock"));
        assert_eq!(c.errno, Some(2));
        let c = classify(b"2026/11/21 01:01:35 [error] 110#110: *80 open() \"/var/www/html/missing.html\" failed (2: No such file or directory), client: 127.0.0.1");
        assert_eq!(c.cause, Cause::None);
    }
}
