//! One line taken apart once: the prefix nginx or php-fpm writes, the message, the phase and
//! the request context. Every detector reads an [`Entry`] instead of scanning the line again,
//! which is what keeps the common `none` line cheap.
//!
//! The shapes recognised, as the real programs write them:
//!
//! ```text
//! 2026/11/21 01:01:15 [error] 110#110: *5 connect() failed (111: ...) while connecting to upstream, client: ...
//! 2026/11/21 01:02:46 [emerg] 568#568: unknown directive "x" in /etc/nginx/conf.d/broken.conf:1
//! nginx: [emerg] unknown directive "x" in /etc/nginx/conf.d/broken.conf:1
//! [21-Nov-2026 01:02:27] WARNING: [pool www] server reached pm.max_children setting (1), consider raising it
//! ```
//!
//! Anything else (a continuation line of a multi-line FastCGI stderr entry, an access log line,
//! journal text) has no entry and is `none`.

use std::sync::LazyLock;

use memchr::memmem;

use super::{Level, Phase};

/// Which program wrote the line; detectors of one program ignore the other's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Nginx,
    Fpm,
}

/// A line split into the parts the detectors look at. All slices borrow the line.
#[derive(Debug, Clone)]
pub(super) struct Entry<'a> {
    pub source: Source,
    /// The raw timestamp: `2026/11/21 01:01:15` (nginx) or `21-Nov-2026 01:02:27` (php-fpm).
    /// Its digits are only checked when a cause matched, as most lines never need them.
    pub time: Option<&'a [u8]>,
    pub level: Level,
    pub pid: Option<u32>,
    /// nginx's connection number, the `*5` of `*5 connect() failed`.
    pub connection: Option<u64>,
    /// The message itself, before ` while <phase>` and the request context.
    pub head: &'a [u8],
    pub phase: Option<Phase<'a>>,
    /// `, client: ..., server: ..., request: "...", upstream: "...", host: "..."` or
    /// `, resolver: ...`, from its leading comma to the end of the line; empty when absent.
    pub context: &'a [u8],
}

static CLIENT: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b", client: "));
static RESOLVER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b", resolver: "));
static WHILE: LazyLock<memmem::FinderRev<'static>> =
    LazyLock::new(|| memmem::FinderRev::new(b" while "));

impl<'a> Entry<'a> {
    /// Takes a line apart; `None` when it has neither nginx's nor php-fpm's prefix.
    pub fn parse(line: &'a [u8]) -> Option<Entry<'a>> {
        // Lines end at `\n`; a file written with CRLF would leave a `\r` that no field wants.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.first()? {
            b'0'..=b'9' => parse_nginx(line),
            b'n' => parse_nginx_stderr(line),
            b'[' => parse_fpm(line),
            _ => None,
        }
    }

    /// `true` when the head starts with `prefix`.
    pub fn head_starts(&self, prefix: &[u8]) -> bool {
        self.head.starts_with(prefix)
    }

    /// The head with `prefix` removed, when it starts with it.
    pub fn head_after(&self, prefix: &[u8]) -> Option<&'a [u8]> {
        self.head.strip_prefix(prefix)
    }

    /// The number of the first `(N: text)` in the head: the errno of `connect() failed (111:
    /// Connection refused)`, or the resolver code of `could not be resolved (3: Host not found)`.
    /// The colon must be followed by a space, so `verify error: (18:self-signed certificate)`,
    /// an X.509 code, is not taken for an errno.
    pub fn code(&self) -> Option<u32> {
        memchr::memchr_iter(b'(', self.head).find_map(|open| {
            let after = self.head.get(open + 1..)?;
            let (value, rest) = leading_number(after)?;
            rest.starts_with(b": ")
                .then(|| u32::try_from(value).ok())
                .flatten()
        })
    }

    /// `true` for nginx's `connect()` failures, which carry the errno of the connect itself.
    pub fn is_connect(&self) -> bool {
        self.source == Source::Nginx && self.head_starts(b"connect()")
    }

    /// `true` when nginx was talking to an upstream (connecting, sending, reading, handshaking).
    pub fn upstream_phase(&self) -> bool {
        self.phase.as_ref().is_some_and(Phase::is_upstream)
    }
}

/// `2026/11/21 01:01:15 [error] 110#110: *5 message`
fn parse_nginx(line: &[u8]) -> Option<Entry<'_>> {
    let (time, rest) = line.split_at_checked(19)?;
    if time.get(4) != Some(&b'/') || time.get(10) != Some(&b' ') || time.get(13) != Some(&b':') {
        return None;
    }
    let rest = rest.strip_prefix(b" [")?;
    let (level, rest) = split_once(rest, b']')?;
    let level = Level::from_nginx(level)?;
    let rest = rest.strip_prefix(b" ")?;
    // `pid#tid: `; the master's own lines and `nginx -t` have it too.
    let (pid, rest) = match leading_number(rest) {
        Some((pid, after)) => {
            let after = after.strip_prefix(b"#")?;
            let (_tid, after) = leading_number(after)?;
            (u32::try_from(pid).ok(), after.strip_prefix(b": ")?)
        }
        None => (None, rest),
    };
    Some(message(Source::Nginx, Some(time), level, pid, rest))
}

/// `nginx: [emerg] message`: what `nginx -t` prints when it cannot open its error log yet.
fn parse_nginx_stderr(line: &[u8]) -> Option<Entry<'_>> {
    let rest = line.strip_prefix(b"nginx: [")?;
    let (level, rest) = split_once(rest, b']')?;
    let level = Level::from_nginx(level)?;
    let rest = rest.strip_prefix(b" ")?;
    Some(message(Source::Nginx, None, level, None, rest))
}

/// `[21-Nov-2026 01:02:27] WARNING: message`
fn parse_fpm(line: &[u8]) -> Option<Entry<'_>> {
    let rest = line.strip_prefix(b"[")?;
    let (time, rest) = rest.split_at_checked(20)?;
    if time.get(2) != Some(&b'-') || time.get(11) != Some(&b' ') {
        return None;
    }
    let rest = rest.strip_prefix(b"] ")?;
    let (level, rest) = split_once(rest, b':')?;
    let level = Level::from_fpm(level)?;
    let head = rest.strip_prefix(b" ").unwrap_or(rest);
    Some(Entry {
        source: Source::Fpm,
        time: Some(time),
        level,
        pid: None,
        connection: None,
        head,
        phase: None,
        context: b"",
    })
}

/// The part after the prefix: an optional `*N ` connection, then the message, the phase and
/// the context.
fn message<'a>(
    source: Source,
    time: Option<&'a [u8]>,
    level: Level,
    pid: Option<u32>,
    rest: &'a [u8],
) -> Entry<'a> {
    let (connection, rest) = match rest.strip_prefix(b"*").and_then(leading_number) {
        Some((n, after)) => (Some(n), after.strip_prefix(b" ").unwrap_or(after)),
        None => (None, rest),
    };
    // nginx appends the request context after the message (ngx_http_log_error); the first
    // `, client: ` is nginx's own, since the message before it is nginx's text. The resolver
    // writes `, resolver: ADDR` instead.
    let context_at = CLIENT
        .find(rest)
        .or_else(|| RESOLVER.find(rest))
        .unwrap_or(rest.len());
    let (text, context) = rest.split_at(context_at);
    // The phase is nginx's `log->action`, appended as ` while <action>` just before the
    // context, so the last ` while ` is it.
    let (head, phase) = match WHILE.rfind(text) {
        Some(at) => {
            let (head, action) = text.split_at(at);
            (head, action.get(7..).map(Phase::from_action))
        }
        None => (text, None),
    };
    Entry {
        source,
        time,
        level,
        pid,
        connection,
        head,
        phase,
        context,
    }
}

/// Splits at the first `byte`, which belongs to neither part.
pub(super) fn split_once(s: &[u8], byte: u8) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr(byte, s)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// A leading decimal number and what follows it; `None` without digits or on overflow.
pub(super) fn leading_number(s: &[u8]) -> Option<(u64, &[u8])> {
    // At most 20 digits are looked at, so a line of digits costs no more than a short one.
    let digits = s.iter().take(20).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let (number, rest) = s.split_at(digits);
    let value = number
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some((value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nginx_line_is_split_into_prefix_head_phase_and_context() {
        let line = b"2026/11/21 01:01:15 [error] 110#110: *5 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: fx.test";
        let e = Entry::parse(line).unwrap();
        assert_eq!(e.source, Source::Nginx);
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.pid, Some(110));
        assert_eq!(e.connection, Some(5));
        assert_eq!(e.head, b"connect() failed (111: Connection refused)");
        assert_eq!(e.phase, Some(Phase::Connecting));
        assert_eq!(e.context, b", client: 127.0.0.1, server: fx.test");
        assert_eq!(e.code(), Some(111));
        assert!(e.is_connect() && e.upstream_phase());
    }

    #[test]
    fn a_line_without_connection_or_phase_keeps_its_whole_message_as_head() {
        let e = Entry::parse(
            b"2026/11/21 01:02:40 [alert] 532#532: 8 worker_connections are not enough",
        )
        .unwrap();
        assert_eq!(e.connection, None);
        assert_eq!(e.head, b"8 worker_connections are not enough");
        assert_eq!(e.phase, None);
        assert!(e.context.is_empty());
    }

    #[test]
    fn the_stderr_form_of_nginx_t_and_php_fpm_lines_are_recognised() {
        let e =
            Entry::parse(b"nginx: [emerg] unexpected \"}\" in /etc/nginx/nginx.conf:9").unwrap();
        assert_eq!((e.level, e.time, e.pid), (Level::Emerg, None, None));
        let e = Entry::parse(b"[21-Nov-2026 01:02:27] WARNING: [pool www] server reached pm.max_children setting (1), consider raising it").unwrap();
        assert_eq!((e.source, e.level), (Source::Fpm, Level::Warn));
        assert!(e.head_starts(b"[pool www] server reached"));
    }

    #[test]
    fn continuation_lines_and_foreign_text_have_no_entry() {
        for line in [
            &b"#0 /var/www/html/trace.php(3): inner()"[..],
            b"  thrown in /var/www/html/trace.php\" while reading response header from upstream, client: 127.0.0.1",
            b"127.0.0.1 - - [21/Nov/2026:01:01:15 +0000] \"GET / HTTP/1.1\" 502 157 \"-\" \"fx\"",
            b"nginx: configuration file /etc/nginx/nginx.conf test failed",
            b"2026/11/21 01:01:15 [bogus] 1#1: x",
            b"",
        ] {
            assert!(Entry::parse(line).is_none(), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn the_code_needs_a_number_a_colon_and_a_space() {
        let e = Entry::parse(b"2026/11/21 01:02:00 [error] 1#1: *1 upstream SSL certificate verify error: (18:self-signed certificate) while SSL handshaking to upstream").unwrap();
        assert_eq!(e.code(), None);
        let e = Entry::parse(b"2026/11/21 01:02:00 [error] 1#1: *1 x (abc) then (32: Broken pipe)")
            .unwrap();
        assert_eq!(e.code(), Some(32));
    }

    #[test]
    fn leading_number_refuses_overflow_and_empty() {
        assert_eq!(leading_number(b"12ab"), Some((12, &b"ab"[..])));
        assert_eq!(leading_number(b"ab"), None);
        assert_eq!(leading_number(b"99999999999999999999999"), None);
    }
}
