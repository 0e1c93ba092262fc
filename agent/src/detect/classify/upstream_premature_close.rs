//! `upstream_premature_close`: the upstream closed before a whole response —
//! `upstream prematurely closed connection`, `upstream prematurely closed FastCGI stdout`,
//! `upstream prematurely closed FastCGI request` (and nginx's older `upstream closed
//! prematurely FastCGI stdout`).

use super::Extra;
use super::entry::Entry;

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    let closed = e.head_starts(b"upstream prematurely closed")
        || e.head_starts(b"upstream closed prematurely");
    closed.then(Extra::default)
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn every_premature_close_wording() {
        for head in [
            "upstream prematurely closed connection while reading response header from upstream",
            "upstream prematurely closed FastCGI stdout while reading response header from upstream",
            "upstream prematurely closed FastCGI request while reading upstream",
            "upstream closed prematurely FastCGI stdout while reading response header from upstream",
        ] {
            let line =
                format!("2026/11/21 01:01:17 [error] 110#110: *13 {head}, client: 127.0.0.1");
            assert_eq!(
                classify(line.as_bytes()).cause,
                Cause::UpstreamPrematureClose,
                "{head}"
            );
        }
    }

    #[test]
    fn a_client_closing_early_is_not_this() {
        let c = classify(b"2026/11/21 01:03:11 [info] 636#636: *203 epoll_wait() reported that client prematurely closed connection, so upstream connection is closed too while sending request to upstream, client: 127.0.0.1");
        assert_eq!(c.cause, Cause::None);
    }
}
