//! `worker_connections_exhausted`: `N worker_connections are not enough`, in every variant nginx
//! writes — at accept (`[alert]`, no request), with `, reusing connections` (`[warn]`), and
//! `while connecting to upstream`. `limit` is N.

use super::Extra;
use super::entry::{Entry, leading_number};

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    let (limit, rest) = leading_number(e.head)?;
    rest.starts_with(b" worker_connections are not enough")
        .then(|| Extra {
            limit: u32::try_from(limit).ok(),
            ..Extra::default()
        })
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn every_variant_with_its_limit() {
        for line in [
            &b"2026/11/21 01:02:40 [alert] 532#532: 8 worker_connections are not enough"[..],
            b"2026/11/21 01:03:05 [warn] 614#614: 8 worker_connections are not enough, reusing connections",
            b"2026/11/21 01:03:05 [alert] 614#614: *9 8 worker_connections are not enough while connecting to upstream, client: 127.0.0.1",
        ] {
            let c = classify(line);
            assert_eq!((c.cause, c.limit), (Cause::WorkerConnectionsExhausted, Some(8)));
        }
    }
}
