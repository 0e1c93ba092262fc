//! `fpm_max_children`: php-fpm ran out of children — `[pool www] server reached
//! pm.max_children setting (5), consider raising it` (`pm = dynamic`) and `server reached
//! max_children setting (5)` (`pm = ondemand`). `pool` and `limit` come from the line.

use super::Extra;
use super::entry::{Entry, Source, leading_number, split_once};

pub(super) fn detect<'a>(e: &Entry<'a>) -> Option<Extra<'a>> {
    if e.source != Source::Fpm {
        return None;
    }
    let (pool, rest) = split_once(e.head_after(b"[pool ")?, b']')?;
    let rest = rest.strip_prefix(b" server reached ")?;
    let rest = rest
        .strip_prefix(b"pm.max_children setting (")
        .or_else(|| rest.strip_prefix(b"max_children setting ("))?;
    Some(Extra {
        pool: Some(pool),
        limit: leading_number(rest).and_then(|(n, _)| u32::try_from(n).ok()),
        ..Extra::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::classify;
    use gatemend_proto::v1::Cause;

    #[test]
    fn dynamic_and_ondemand_wordings_with_pool_and_limit() {
        for line in [
            &b"[21-Nov-2026 01:02:27] WARNING: [pool www] server reached pm.max_children setting (1), consider raising it"[..],
            b"[21-Nov-2026 01:02:19] WARNING: [pool www] server reached max_children setting (1), consider raising it",
        ] {
            let c = classify(line);
            assert_eq!(c.cause, Cause::FpmMaxChildren);
            assert_eq!((c.pool.as_deref(), c.limit), (Some("www"), Some(1)));
        }
    }

    #[test]
    fn the_start_up_check_naming_max_children_is_not_this() {
        let c = classify(b"[21-Nov-2026 01:02:13] ALERT: [pool www] pm.min_spare_servers(1) and pm.max_spare_servers(3) cannot be greater than pm.max_children(1)");
        assert_eq!(c.cause, Cause::None);
    }
}
