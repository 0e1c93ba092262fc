//! Durations as operators write them in policies: `30s`, `5m`, `1h`, `1h30m`, `250ms`, `1d`.
//!
//! Hand-written rather than taken from a crate so the grammar is exactly what the policy
//! documentation promises: one or more `<number><unit>` groups, units from the largest to the
//! smallest, each at most once, no spaces. `5m1h` is refused because it is almost always a typo.

use std::time::Duration;

/// The units, largest first, with their length in milliseconds.
const UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a policy duration; the error says what is wrong with the text.
pub fn parse(text: &str) -> Result<Duration, &'static str> {
    if text.is_empty() {
        return Err("it is empty");
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen; the next must be strictly smaller.
    let mut last_unit: Option<usize> = None;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err("expected a number");
        }
        let number: u64 = text[start..i]
            .parse()
            .map_err(|_| "the number is too large")?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        if unit.is_empty() {
            return Err(match bytes.get(i) {
                None => "a number without a unit",
                Some(b' ') => "no spaces allowed",
                Some(b'.' | b',') => "no fractions (write 1h30m, not 1.5h)",
                Some(_) => "unexpected character after the number",
            });
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err("unknown unit");
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err("units must go from the largest to the smallest, each once");
        }
        last_unit = Some(index);
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or("the duration is too long")?;
    }
    Ok(Duration::from_millis(total))
}

/// Writes a duration back in the policy grammar (`1h30m`, `250ms`, `0s`), for `explain`.
pub fn format(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, len) in UNITS {
        if ms >= *len {
            out.push_str(&(ms / len).to_string());
            out.push_str(name);
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1d2h3m4s5ms"), Ok(Duration::from_millis(93_784_005)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_an_operator_might_mean_but_did_not_write() {
        assert_eq!(parse("5 minutes"), Err("no spaces allowed"));
        assert_eq!(parse("5min"), Err("unknown unit"));
        assert_eq!(parse("30"), Err("a number without a unit"));
        assert_eq!(parse(""), Err("it is empty"));
        assert_eq!(parse("m"), Err("expected a number"));
        assert_eq!(parse("1.5h"), Err("no fractions (write 1h30m, not 1.5h)"));
        assert_eq!(parse("5m!"), Err("expected a number"));
        assert_eq!(parse("5_m"), Err("unexpected character after the number"));
        assert_eq!(
            parse("5m1h"),
            Err("units must go from the largest to the smallest, each once")
        );
        assert_eq!(
            parse("1m1m"),
            Err("units must go from the largest to the smallest, each once")
        );
        assert_eq!(parse("-5s"), Err("expected a number"));
        assert_eq!(
            parse("99999999999999999999s"),
            Err("the number is too large")
        );
        assert_eq!(parse("999999999999999d"), Err("the duration is too long"));
    }

    #[test]
    fn formats_back_in_the_same_grammar() {
        for text in ["30s", "5m", "1h30m", "250ms", "1d2h3m4s5ms", "0s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
