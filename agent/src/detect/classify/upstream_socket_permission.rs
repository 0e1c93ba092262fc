//! `upstream_socket_permission`: nginx's worker may not connect —
//! `connect() to unix:/run/php/php8.2-fpm.sock failed (13: Permission denied)`. Over TCP the
//! same errno comes from a security module (SELinux's `httpd_can_network_connect`), which is
//! also a permission to grant, not a service to restart.

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    (e.is_connect() && e.code() == Some(13)).then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn permission_denied_at_connect() {
        let c = classify(b"2026/11/21 01:02:04 [crit] 317#317: *117 connect() to unix:/run/php/php8.2-fpm.sock failed (13: Permission denied) while connecting to upstream");
        assert_eq!(c.cause, Cause::UpstreamSocketPermission);
        let c = classify(b"2026/11/21 01:02:04 [error] 1#1: *1 open() \"/var/www/x\" failed (13: Permission denied), client: 1.2.3.4");
        assert_eq!(c.cause, Cause::None);
    }
}
