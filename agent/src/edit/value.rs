//! The values an edit may write, each checked by its type before anything is located: a
//! target, an nginx time, an nginx size, `N size`, a count, a resolver's addresses. What passes
//! is written back in canonical form (tokens joined by one space), so no text of the request
//! reaches a file except tokens made only of the characters its type allows.
//!
//! The parsers are public because bounds (the largest timeout, buffer size, `pm.max_children`)
//! are checked against the numbers they return.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// What kind of value a directive takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `fastcgi_pass`: `unix:/path` or `host:port`.
    FastcgiTarget,
    /// `proxy_pass`: `http(s)://` then `host[:port]` or `unix:/path:`, an optional plain URI
    /// path, and optionally the one variable form allowed, a final `$request_uri` (a variable
    /// makes nginx resolve the name per request, through `resolver`).
    ProxyTarget,
    /// An nginx time: `60s`, `2m`, `1m30s`, `500ms`, `75` (seconds); never 0.
    Time,
    /// An nginx size: `16k`, `1m`, `4096`; never 0.
    Size,
    /// `N size`: a count of buffers and their size (`*_buffers`).
    Buffers,
    /// A positive integer: `worker_connections`, `worker_rlimit_nofile`, `pm.max_children`.
    Count,
    /// `resolver`: one or more addresses, then `valid=TIME`, `ipv4=on|off`, `ipv6=on|off`.
    Resolver,
}

/// Longest value accepted, whatever its kind: no directive of the closed set needs more.
const MAX_VALUE_LEN: usize = 512;

/// The longest unix socket path (`sun_path` holds 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The only variable a value may hold: at the end of a `proxy_pass`.
const PROXY_VARIABLE: &str = "$request_uri";

/// Checks `text` as a value of `kind` and returns its tokens in canonical form; `Err` says
/// why it is refused. Tokens are separated by whitespace in `text`; a token must be printable
/// ASCII without `;`, `{`, `}`, quotes, `#`, `\` (nginx's syntax) and without `$` except where
/// the kind allows a variable.
pub fn check(kind: ValueKind, text: &str) -> Result<Vec<String>, String> {
    if text.len() > MAX_VALUE_LEN {
        return Err(format!("longer than {MAX_VALUE_LEN} bytes"));
    }
    if let Some(c) = text.chars().find(|&c| !(c.is_ascii_graphic() || c == ' ')) {
        return Err(format!(
            "holds {c:?}: only printable ASCII and single spaces are written"
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, ';' | '{' | '}' | '"' | '\'' | '#' | '\\' | '`'))
    {
        return Err(format!("holds `{c}`, which is nginx syntax, not a value"));
    }
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.is_empty() {
        return Err("is empty".to_owned());
    }
    let allows_variable = kind == ValueKind::ProxyTarget;
    if tokens.iter().any(|t| t.contains('$')) && !allows_variable {
        return Err("holds `$`: this directive takes no variable".to_owned());
    }
    match kind {
        ValueKind::FastcgiTarget => fastcgi_target(one(&tokens)?)?,
        ValueKind::ProxyTarget => proxy_target(one(&tokens)?)?,
        ValueKind::Time => {
            time(one(&tokens)?).ok_or("is not an nginx time above 0 (60s, 2m, 500ms)")?;
        }
        ValueKind::Size => {
            size(one(&tokens)?).ok_or("is not an nginx size above 0 (16k, 1m, 4096)")?;
        }
        ValueKind::Count => {
            count(one(&tokens)?).ok_or("is not a whole number from 1 to 4294967295")?;
        }
        ValueKind::Buffers => {
            buffers(text).ok_or("is not `N size` with N from 1 and size above 0 (8 16k)")?;
        }
        ValueKind::Resolver => resolver(&tokens)?,
    }
    Ok(tokens.into_iter().map(str::to_owned).collect())
}

/// An nginx time as a duration: one or more `NUMBER[UNIT]` in decreasing units (`ms`, `s`,
/// `m`, `h`, `d`), a bare number being seconds and only alone. `None` when it is not one, is 0,
/// or is longer than a year.
pub fn time(text: &str) -> Option<Duration> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return number(text)
            .filter(|&n| n > 0 && n <= 365 * 86_400)
            .map(Duration::from_secs);
    }
    const UNITS: [(&str, u64); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = text;
    let mut total: u64 = 0;
    // Units must come in this order, each once: `1m30s`, not `30s1m`.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n = number(rest.get(..digits)?)?;
        rest = rest.get(digits..)?;
        // `ms` before `m`: the longest unit that matches.
        let unit_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        let unit = rest.get(..unit_len)?;
        let index = UNITS.iter().position(|(u, _)| *u == unit)?;
        if index < next_unit {
            return None;
        }
        next_unit = index + 1;
        total = total.checked_add(n.checked_mul(UNITS.get(index)?.1)?)?;
        rest = rest.get(unit_len..)?;
    }
    (total > 0 && total <= 365 * 86_400_000).then(|| Duration::from_millis(total))
}

/// An nginx size in bytes: `NUMBER` with an optional `k`/`K`, `m`/`M` or `g`/`G`. `None`
/// when it is not one, is 0, or is 1 TiB or more.
pub fn size(text: &str) -> Option<u64> {
    let (digits, factor) = match text.as_bytes().last()? {
        b'k' | b'K' => (text.get(..text.len() - 1)?, 1u64 << 10),
        b'm' | b'M' => (text.get(..text.len() - 1)?, 1 << 20),
        b'g' | b'G' => (text.get(..text.len() - 1)?, 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = number(digits)?.checked_mul(factor)?;
    (bytes > 0 && bytes < 1 << 40).then_some(bytes)
}

/// `N size` of a `*_buffers` directive: how many buffers and the size of each.
pub fn buffers(text: &str) -> Option<(u32, u64)> {
    let mut words = text.split_whitespace();
    let (Some(n), Some(each), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    Some((count(n)?, size(each)?))
}

/// A positive whole number that fits in 32 bits.
pub fn count(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number(text)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
}

/// Digits as a number; `None` on overflow (and on more than 12 digits: no value needs them).
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    digits.parse().ok()
}

/// The one word of a one-word value.
fn one<'a>(tokens: &[&'a str]) -> Result<&'a str, String> {
    match tokens {
        [one] => Ok(one),
        _ => Err(format!("is {} words, one was expected", tokens.len())),
    }
}

/// `unix:/path` or `host:port`.
fn fastcgi_target(text: &str) -> Result<(), String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return socket_path(path);
    }
    match host_port(text)? {
        (_, Some(_)) => Ok(()),
        (_, None) => Err(format!("`{text}` has no port (unix:/path or host:port)")),
    }
}

/// `http(s)://` + `host[:port]` or `unix:/path:`, an optional URI path, an optional final
/// `$request_uri`.
fn proxy_target(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or("does not start with http:// or https://")?;
    let rest = match rest.find('$') {
        Some(at) => {
            if rest.get(at..) != Some(PROXY_VARIABLE) {
                return Err(format!(
                    "holds a variable other than a final {PROXY_VARIABLE}"
                ));
            }
            rest.get(..at).unwrap_or_default()
        }
        None => rest,
    };
    let uri = if let Some(unix) = rest.strip_prefix("unix:") {
        // `unix:/path.sock:/uri`: the path ends at the colon nginx requires after it.
        let (path, uri) = unix
            .split_once(':')
            .ok_or("a unix: target must end its path with `:` (http://unix:/run/app.sock:)")?;
        socket_path(path)?;
        uri
    } else {
        let (host, uri) = match rest.find('/') {
            Some(at) => (
                rest.get(..at).unwrap_or_default(),
                rest.get(at..).unwrap_or_default(),
            ),
            None => (rest, ""),
        };
        host_port(host)?;
        uri
    };
    if !uri.is_empty() && !uri.starts_with('/') {
        return Err(format!("the URI `{uri}` does not start with `/`"));
    }
    if let Some(c) = uri
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "/._~-%".contains(c)))
    {
        return Err(format!("the URI holds `{c}`: only a plain path is written"));
    }
    Ok(())
}

/// An absolute socket path of plain characters, without `.` or `..` components.
fn socket_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.len() < 2 {
        return Err(format!("`{path}` is not an absolute socket path"));
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "`{path}` is longer than a socket path may be ({MAX_SOCKET_PATH} bytes)"
        ));
    }
    if let Some(c) = path
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "/._-+@".contains(c)))
    {
        return Err(format!("`{path}` holds `{c}`"));
    }
    if path
        .split('/')
        .skip(1)
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!("`{path}` is not a plain path (`//`, `.` or `..`)"));
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; the host an IP address or a DNS name. Returns the
/// host and the port when one is written.
fn host_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{text}` opens `[` without `]`"))?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
        match after {
            "" => (v6, None),
            _ => (
                v6,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("`{text}`: text after `]`"))?,
                ),
            ),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if !text.starts_with('[') && host.parse::<Ipv4Addr>().is_err() && !dns_name(host) {
        return Err(format!("`{host}` is not an IP address or a host name"));
    }
    let port = match port {
        None => None,
        // Written as nginx prints it: `80`, not `+80` or `080`.
        Some(written) => Some(
            written
                .parse::<u16>()
                .ok()
                .filter(|&n| n > 0 && n.to_string() == written)
                .ok_or_else(|| format!("`{written}` is not a port (1-65535)"))?,
        ),
    };
    Ok((host, port))
}

/// Labels of letters, digits and `-` (not at either end) separated by dots, at most 253 bytes.
fn dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `resolver ADDRESS ... [valid=TIME] [ipv4=on|off] [ipv6=on|off]`: addresses first.
fn resolver(tokens: &[&str]) -> Result<(), String> {
    let mut addresses = 0;
    let mut params = false;
    for token in tokens {
        if let Some((name, value)) = token.split_once('=') {
            params = true;
            match name {
                "valid" => {
                    time(value).ok_or_else(|| format!("`{token}`: not an nginx time"))?;
                }
                "ipv4" | "ipv6" if matches!(value, "on" | "off") => {}
                _ => return Err(format!("`{token}` is not valid=, ipv4= or ipv6=")),
            }
        } else if params {
            return Err(format!("the address `{token}` comes after a parameter"));
        } else {
            host_port(token)?;
            addresses += 1;
        }
    }
    if addresses == 0 {
        return Err("names no address".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn times_are_nginx_times() {
        assert_eq!(time("60s"), Some(Duration::from_secs(60)));
        assert_eq!(time("75"), Some(Duration::from_secs(75)));
        assert_eq!(time("2m"), Some(Duration::from_secs(120)));
        assert_eq!(time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(time("1h"), Some(Duration::from_secs(3600)));
        for bad in [
            "",
            "0",
            "0s",
            "s",
            "60x",
            "30s1m",
            "1m1m",
            "-5s",
            "1.5s",
            "60 s",
            "99999999999999",
            "400d",
        ] {
            assert_eq!(time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_buffers() {
        assert_eq!(size("16k"), Some(16 * 1024));
        assert_eq!(size("1M"), Some(1 << 20));
        assert_eq!(size("4096"), Some(4096));
        for bad in ["", "k", "0", "0k", "16kb", "1.5k", "-1", "2048g"] {
            assert_eq!(size(bad), None, "{bad:?}");
        }
        assert_eq!(buffers("8 16k"), Some((8, 16 * 1024)));
        assert_eq!(buffers("8"), None);
        assert_eq!(buffers("8 16k 1"), None);
        assert_eq!(buffers("0 16k"), None);
    }

    #[test]
    fn targets() {
        use ValueKind::{FastcgiTarget, ProxyTarget};
        for ok in [
            "unix:/run/php/php8.2-fpm.sock",
            "127.0.0.1:9000",
            "[::1]:9000",
            "php.internal:9000",
        ] {
            assert_eq!(check(FastcgiTarget, ok).unwrap(), [ok], "{ok}");
        }
        for bad in [
            "unix:run/php.sock",
            "unix:/run/../etc/shadow",
            "unix:/run//x",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:080",
            "host_name:9000",
            "-x:9000",
            "$backend:9000",
            "http://127.0.0.1:9000",
            "[::1:9000",
        ] {
            assert!(check(FastcgiTarget, bad).is_err(), "{bad}");
        }
        for ok in [
            "http://127.0.0.1:3000",
            "http://app",
            "https://backend.example/v1/",
            "http://unix:/run/app.sock:",
            "http://unix:/run/app.sock:/api",
            "http://backend.example:8080$request_uri",
            "http://[::1]:3000/x",
        ] {
            assert_eq!(check(ProxyTarget, ok).unwrap(), [ok], "{ok}");
        }
        for bad in [
            "127.0.0.1:3000",
            "ftp://x",
            "http://",
            "http://$host",
            "http://x$request_uri$args",
            "http://x/a?b=c",
            "http://x/a b",
            "http://unix:/run/app.sock",
            "http://x:y",
        ] {
            assert!(check(ProxyTarget, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolvers() {
        assert_eq!(
            check(
                ValueKind::Resolver,
                "127.0.0.53 [::1]:5353 valid=30s ipv6=off"
            )
            .unwrap(),
            ["127.0.0.53", "[::1]:5353", "valid=30s", "ipv6=off"]
        );
        for bad in [
            "",
            "valid=30s",
            "1.1.1.1 valid=x",
            "1.1.1.1 ttl=3",
            "valid=3s 1.1.1.1",
        ] {
            assert!(check(ValueKind::Resolver, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nginx_syntax_never_passes() {
        for kind in [
            ValueKind::FastcgiTarget,
            ValueKind::ProxyTarget,
            ValueKind::Time,
            ValueKind::Size,
            ValueKind::Buffers,
            ValueKind::Count,
            ValueKind::Resolver,
        ] {
            for hostile in [
                "60s; include /etc/shadow",
                "60s }",
                "{",
                "\"60s\"",
                "'60s'",
                "60s # comment",
                "60s\nserver {",
                "60s\r",
                "60\\s",
                "$x",
                "60s\u{0}",
                "6é0s",
            ] {
                assert!(check(kind, hostile).is_err(), "{kind:?} took {hostile:?}");
            }
        }
    }

    #[test]
    fn tokens_come_back_canonical() {
        assert_eq!(
            check(ValueKind::Buffers, " 8   16k ").unwrap(),
            ["8", "16k"]
        );
        assert!(check(ValueKind::Count, "1 2").is_err());
        assert!(check(ValueKind::Count, "0").is_err());
        assert_eq!(check(ValueKind::Count, "4096").unwrap(), ["4096"]);
    }
}
