//! `dns_resolution_failed`: the resolver did not give an address —
//! `backend.example could not be resolved (3: Host not found)` (also `2: Server failure`,
//! `5: Operation refused`, `110: Operation timed out`), nginx's resolver failing to reach its
//! server (`send() failed (111: Connection refused) while resolving, resolver: 127.0.0.1:53`),
//! and the resolver's `DNS error (...)` lines.

use memchr::memmem;

use super::entry::{Entry, leading_number};
use super::{Extra, Phase};

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    if e.phase == Some(Phase::Resolving) {
        return Some(Extra::default());
    }
    if let Some(rest) = e.head_after(b"DNS error (") {
        return Some(Extra {
            rcode: leading_number(rest).and_then(|(n, _)| u32::try_from(n).ok()),
            ..Extra::default()
        });
    }
    const FAILED: &[u8] = b" could not be resolved (";
    let at = memmem::find(e.head, FAILED)?;
    let (name, rest) = e.head.split_at(at);
    let code = rest.get(FAILED.len()..).and_then(leading_number);
    Some(Extra {
        name: Some(name),
        rcode: code.and_then(|(n, _)| u32::try_from(n).ok()),
        ..Extra::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Phase, classify};
    use gatemend_proto::v1::Cause;

    #[test]
    fn could_not_be_resolved_gives_the_name_and_the_resolver_code() {
        let c = classify(b"2026/11/21 01:01:29 [error] 111#111: *59 nx.example could not be resolved (3: Host not found), client: 127.0.0.1, server: fx.test, request: \"GET /dns_nx HTTP/1.1\", host: \"fx.test\"");
        assert_eq!(c.cause, Cause::DnsResolutionFailed);
        assert_eq!(c.name.as_deref(), Some("nx.example"));
        assert_eq!((c.rcode, c.errno), (Some(3), None));
    }

    #[test]
    fn the_resolver_failing_to_reach_its_server() {
        let c = classify(b"2026/11/21 01:01:31 [error] 111#111: send() failed (111: Connection refused) while resolving, resolver: 127.0.0.1:5399");
        assert_eq!(c.cause, Cause::DnsResolutionFailed);
        assert_eq!((c.errno, c.phase), (Some(111), Some(Phase::Resolving)));
        assert_eq!(c.resolver.as_deref(), Some("127.0.0.1:5399"));
    }

    #[test]
    fn dns_error_lines() {
        let c = classify(b"2026/11/21 01:01:31 [error] 111#111: DNS error (2: Server failure), query id:4242, name:\"sf.example\"");
        assert_eq!((c.cause, c.rcode), (Cause::DnsResolutionFailed, Some(2)));
    }
}
