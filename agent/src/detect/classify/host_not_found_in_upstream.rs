//! `host_not_found_in_upstream`: at `nginx -t` or a reload, a name in `proxy_pass` or an
//! `upstream {}` server does not resolve — `[emerg] host not found in upstream
//! "backend.example" in /etc/nginx/conf.d/app.conf:3`. `name` is the name as written (with its
//! port, if any), `config` the file and line.

use super::entry::{Entry, split_once};
use super::{Extra, config_location};

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    let rest = e.head_after(b"host not found in upstream \"")?;
    let name = split_once(rest, b'"').map(|(name, _)| name);
    Some(Extra {
        name,
        config: config_location(e.head),
        ..Extra::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn the_name_and_where_it_is() {
        let c = classify(b"2026/11/21 01:02:46 [emerg] 578#578: host not found in upstream \"nothere.invalid:80\" in /etc/nginx/conf.d/broken.conf:1");
        assert_eq!(c.cause, Cause::HostNotFoundInUpstream);
        assert_eq!(c.name.as_deref(), Some("nothere.invalid:80"));
        assert_eq!(c.config.as_deref(), Some("/etc/nginx/conf.d/broken.conf:1"));
    }
}
