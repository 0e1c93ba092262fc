//! `config_invalid`: any other `[emerg]` of `nginx -t` or a reload — `unknown directive`,
//! `unexpected "}"`, `invalid port`, `duplicate location`, `unexpected end of file`, ...
//! `config` is the ` in FILE:LINE` nginx appends.
//!
//! Not this: `bind() to 0.0.0.0:80 failed (98: Address already in use)` and `still could not
//! bind()`, also `[emerg]`, are a port held by another process at start (DESIGN.md lists bind
//! retries under `none`).

use super::entry::{Entry, Source};
use super::{Extra, Level, config_location};

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    if e.source != Source::Nginx || e.level != Level::Emerg {
        return None;
    }
    if e.head_starts(b"bind() to ") || e.head_starts(b"still could not bind()") {
        return None;
    }
    Some(Extra {
        config: config_location(e.head),
        ..Extra::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn emerg_lines_with_and_without_timestamp() {
        let c = classify(b"2026/11/21 01:02:46 [emerg] 568#568: unknown directive \"gatemend_nonsense\" in /etc/nginx/conf.d/broken.conf:1");
        assert_eq!(c.cause, Cause::ConfigInvalid);
        assert_eq!(c.config.as_deref(), Some("/etc/nginx/conf.d/broken.conf:1"));
        let c = classify(b"nginx: [emerg] unexpected \"}\" in /etc/nginx/conf.d/broken.conf:1");
        assert_eq!(c.cause, Cause::ConfigInvalid);
    }

    #[test]
    fn bind_failures_are_not_this() {
        for line in [
            &b"2026/11/21 01:02:54 [emerg] 603#603: bind() to 0.0.0.0:80 failed (98: Address already in use)"[..],
            b"2026/11/21 01:02:54 [emerg] 603#603: still could not bind()",
        ] {
            assert_eq!(classify(line).cause, Cause::None);
        }
    }
}
