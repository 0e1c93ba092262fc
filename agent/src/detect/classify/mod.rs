//! The line classifier: one line of nginx's error log, php-fpm's log or `nginx -t` output in,
//! one [`Cause`] of DESIGN.md's taxonomy and the line's fields out.
//!
//! The line is taken apart once ([`entry`]); then the detectors, one file per cause named after
//! its id, are asked in [`ORDER`] and the first that recognises the line wins. [`detector`] is
//! an exhaustive `match` on [`Cause`], so a cause added to the protocol does not compile until
//! it has a detector (or is stated to have none).
//!
//! Total and pure: any bytes (invalid UTF-8, a truncated or huge line, an empty one) give a
//! result, no I/O, no allocation unless a field is not valid UTF-8.
//!
//! Decisions worth knowing (all from what nginx 1.22 and php-fpm 8.2 were seen to write, see
//! `agent/tests/fixtures/README.md`):
//! - `upstream` is the address nginx connected to, without scheme and URI: `127.0.0.1:3000`,
//!   `[::1]:3000`, an `upstream {}` group name (`flaky`), or `unix:/run/php/php8.2-fpm.sock`.
//!   nginx writes unix upstreams as `fastcgi://unix:/path.sock:` (the colon separates the path
//!   from a URI) except on timeout lines; the colon is dropped so both give the same address.
//! - The cause is decided from nginx's own text (the message and the phase); the request line,
//!   Host and referrer are the client's text and only ever become fields.
//! - `errno` is the number of `(N: text)` for system call failures and timeouts; for resolver
//!   outcomes (`could not be resolved (3: Host not found)`) the number is nginx's resolver code
//!   and goes to `rcode` instead.
//! - php-fpm's levels are reported in nginx's words (`WARNING` is `warn`) and its time in
//!   nginx's form, so one consumer reads both.

mod entry;

mod config_invalid;
mod dns_no_resolver;
mod dns_resolution_failed;
mod fpm_max_children;
mod host_not_found_in_upstream;
mod no_live_upstreams;
mod upstream_connect_timeout;
mod upstream_header_too_big;
mod upstream_invalid_response;
mod upstream_overloaded;
mod upstream_premature_close;
mod upstream_read_timeout;
mod upstream_refused;
mod upstream_reset;
mod upstream_socket_missing;
mod upstream_socket_permission;
mod upstream_tls_error;
mod worker_connections_exhausted;

use std::borrow::Cow;
use std::fmt;

use gatemend_proto::v1::Cause;
use memchr::memmem;
use serde::{Serialize, Serializer};

use entry::{Entry, leading_number};

/// What one line says: its cause and the fields it carries. Absent fields are `None` and are
/// left out of the JSON form; a `none` line carries no fields at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classified<'a> {
    pub cause: Cause,
    /// The upstream address (see the module docs for its normal form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Cow<'a, str>>,
    /// The system error number of the failure, e.g. 111 for `Connection refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<u32>,
    /// What nginx was doing, from ` while ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Cow<'a, str>>,
    /// The request line, e.g. `GET / HTTP/1.1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Cow<'a, str>>,
    /// The request's Host header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// nginx's connection number (`*5`), which ties the lines of one request together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// The php-fpm pool, for `fpm_max_children`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<Cow<'a, str>>,
    /// The limit that was reached: `pm.max_children`, or `worker_connections`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The DNS name that failed, for the `dns_*` causes and `host_not_found_in_upstream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    /// nginx's resolver code: 1..=5 are the DNS RCODEs (3 = Host not found), 110 = timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<u32>,
    /// The DNS server nginx asked, from `, resolver: ADDR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<Cow<'a, str>>,
    /// Where a configuration error is, `FILE:LINE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Cow<'a, str>>,
}

impl Classified<'_> {
    /// A line that names no 502/504 cause.
    pub fn none() -> Self {
        Classified {
            cause: Cause::None,
            upstream: None,
            errno: None,
            phase: None,
            client: None,
            server: None,
            request: None,
            host: None,
            level: None,
            time: None,
            pid: None,
            connection: None,
            pool: None,
            limit: None,
            name: None,
            rcode: None,
            resolver: None,
            config: None,
        }
    }
}

impl Classified<'_> {
    /// The same result, no longer borrowing the line: for keeping it past the line's buffer
    /// (evidence in a finding).
    pub fn into_owned(self) -> Classified<'static> {
        fn own(field: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            field.map(|f| Cow::Owned(f.into_owned()))
        }
        Classified {
            cause: self.cause,
            upstream: own(self.upstream),
            errno: self.errno,
            phase: self.phase.map(Phase::into_owned),
            client: own(self.client),
            server: own(self.server),
            request: own(self.request),
            host: own(self.host),
            level: self.level,
            time: self.time,
            pid: self.pid,
            connection: self.connection,
            pool: own(self.pool),
            limit: self.limit,
            name: own(self.name),
            rcode: self.rcode,
            resolver: own(self.resolver),
            config: own(self.config),
        }
    }
}

/// Classifies one line (without its `\n`). Never fails and never panics.
pub fn classify(line: &[u8]) -> Classified<'_> {
    let Some(entry) = Entry::parse(line) else {
        return Classified::none();
    };
    for &cause in ORDER {
        let Some(detect) = detector(cause) else {
            continue;
        };
        if let Some(extra) = detect(&entry) {
            return classified(cause, &entry, extra);
        }
    }
    Classified::none()
}

/// A detector: `Some` with the cause-specific fields when the line is its cause.
type Detector = for<'a> fn(&Entry<'a>) -> Option<Extra<'a>>;

/// Fields only some causes have; each detector fills what its cause carries.
#[derive(Debug, Clone, Default)]
struct Extra<'a> {
    pool: Option<&'a [u8]>,
    limit: Option<u32>,
    name: Option<&'a [u8]>,
    rcode: Option<u32>,
    config: Option<&'a [u8]>,
}

/// The order the detectors are asked in, most specific first: the phase `SSL handshaking`
/// makes a timeout or a reset a TLS error, `resolving` makes a refused `send()` a DNS failure,
/// and a timeout while connecting is not a read timeout. Every cause but `none` is listed once
/// (a test checks it).
const ORDER: &[Cause] = &[
    Cause::HostNotFoundInUpstream,
    Cause::ConfigInvalid,
    Cause::FpmMaxChildren,
    Cause::WorkerConnectionsExhausted,
    Cause::DnsNoResolver,
    Cause::DnsResolutionFailed,
    Cause::UpstreamTlsError,
    Cause::NoLiveUpstreams,
    Cause::UpstreamHeaderTooBig,
    Cause::UpstreamInvalidResponse,
    Cause::UpstreamPrematureClose,
    Cause::UpstreamConnectTimeout,
    Cause::UpstreamReadTimeout,
    Cause::UpstreamSocketMissing,
    Cause::UpstreamSocketPermission,
    Cause::UpstreamOverloaded,
    Cause::UpstreamRefused,
    Cause::UpstreamReset,
];

/// The detector of each cause; `none` is what is left when none of them matched.
fn detector(cause: Cause) -> Option<Detector> {
    match cause {
        Cause::UpstreamRefused => Some(upstream_refused::detect),
        Cause::UpstreamSocketMissing => Some(upstream_socket_missing::detect),
        Cause::UpstreamSocketPermission => Some(upstream_socket_permission::detect),
        Cause::UpstreamOverloaded => Some(upstream_overloaded::detect),
        Cause::UpstreamConnectTimeout => Some(upstream_connect_timeout::detect),
        Cause::UpstreamReadTimeout => Some(upstream_read_timeout::detect),
        Cause::UpstreamReset => Some(upstream_reset::detect),
        Cause::UpstreamPrematureClose => Some(upstream_premature_close::detect),
        Cause::UpstreamInvalidResponse => Some(upstream_invalid_response::detect),
        Cause::UpstreamHeaderTooBig => Some(upstream_header_too_big::detect),
        Cause::NoLiveUpstreams => Some(no_live_upstreams::detect),
        Cause::WorkerConnectionsExhausted => Some(worker_connections_exhausted::detect),
        Cause::DnsNoResolver => Some(dns_no_resolver::detect),
        Cause::DnsResolutionFailed => Some(dns_resolution_failed::detect),
        Cause::HostNotFoundInUpstream => Some(host_not_found_in_upstream::detect),
        Cause::UpstreamTlsError => Some(upstream_tls_error::detect),
        Cause::FpmMaxChildren => Some(fpm_max_children::detect),
        Cause::ConfigInvalid => Some(config_invalid::detect),
        Cause::None | Cause::Unspecified => None,
    }
}

/// Builds the result of a matched line: the common fields from the entry and its context,
/// plus what the detector found.
fn classified<'a>(cause: Cause, e: &Entry<'a>, extra: Extra<'a>) -> Classified<'a> {
    let context = Context::parse(e.context);
    // A resolver outcome's number is a resolver code, not an errno (see the module docs).
    let errno = if extra.rcode.is_some() {
        None
    } else {
        e.code()
    };
    Classified {
        cause,
        upstream: context.upstream.map(upstream_address).map(text),
        errno,
        phase: e.phase.clone(),
        client: context.client.map(text),
        server: context.server.map(text),
        request: context.request.map(text),
        host: context.host.map(text),
        level: Some(e.level),
        time: e.time.and_then(|t| match e.source {
            entry::Source::Nginx => Time::parse_nginx(t),
            entry::Source::Fpm => Time::parse_fpm(t),
        }),
        pid: e.pid,
        connection: e.connection,
        pool: extra.pool.map(text),
        limit: extra.limit,
        name: extra.name.map(text),
        rcode: extra.rcode,
        resolver: context.resolver.map(text),
        config: extra.config.map(text),
    }
}

/// Text of the line as UTF-8; borrowed when valid, replacement characters where not.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The request context nginx appends: `, client: A, server: B, request: "R", upstream: "U",
/// host: "H"` (any of them may be missing), or `, resolver: ADDR`.
#[derive(Debug, Default, PartialEq)]
struct Context<'a> {
    client: Option<&'a [u8]>,
    server: Option<&'a [u8]>,
    request: Option<&'a [u8]>,
    upstream: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    resolver: Option<&'a [u8]>,
}

impl<'a> Context<'a> {
    fn parse(s: &'a [u8]) -> Context<'a> {
        let mut c = Context {
            client: bare(s, b", client: "),
            server: bare(s, b", server: "),
            resolver: bare(s, b", resolver: "),
            ..Context::default()
        };
        // The request line is the client's text and may hold anything, quotes included; it
        // ends at the first quote that is followed by one of nginx's own keys or the line's
        // end. What follows it is searched only after it.
        let Some(start) = memmem::find(s, b", request: \"") else {
            c.upstream = quoted(s, b", upstream: \"");
            c.host = quoted(s, b", host: \"");
            return c;
        };
        let rest = s.get(start + 12..).unwrap_or_default();
        let end = memchr::memchr_iter(b'"', rest)
            .find(|&q| {
                let after = rest.get(q + 1..).unwrap_or_default();
                after.is_empty()
                    || [
                        &b", upstream: \""[..],
                        b", host: \"",
                        b", subrequest: \"",
                        b", referrer: \"",
                    ]
                    .iter()
                    .any(|key| after.starts_with(key))
            })
            .unwrap_or(rest.len());
        c.request = rest.get(..end);
        let after = rest.get(end..).unwrap_or_default();
        c.upstream = quoted(after, b", upstream: \"");
        c.host = quoted(after, b", host: \"");
        c
    }
}

/// The value after `key` up to the next `, ` or the end (client, server, resolver).
fn bare<'a>(s: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = memmem::find(s, key)? + key.len();
    let rest = s.get(start..)?;
    let end = memmem::find(rest, b", ").unwrap_or(rest.len());
    rest.get(..end)
}

/// The value after `key` (which ends with its opening quote) up to the closing quote.
fn quoted<'a>(s: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = memmem::find(s, key)? + key.len();
    let rest = s.get(start..)?;
    let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
    rest.get(..end)
}

/// nginx's upstream URL reduced to the address: `http://127.0.0.1:3000/uri` is
/// `127.0.0.1:3000`; `fastcgi://unix:/run/php/php8.2-fpm.sock:` and
/// `http://unix:/run/app.sock:/uri` are `unix:/run/...sock`.
fn upstream_address(url: &[u8]) -> &[u8] {
    let rest = match memmem::find(url, b"://") {
        Some(at) => url.get(at + 3..).unwrap_or_default(),
        None => url,
    };
    if let Some(path) = rest.strip_prefix(b"unix:") {
        // The colon nginx puts after a unix path separates it from the URI; socket paths
        // with a colon of their own are not worth guessing at.
        let end = memchr::memchr(b':', path).unwrap_or(path.len());
        return rest.get(..5 + end).unwrap_or(rest);
    }
    let end = memchr::memchr(b'/', rest).unwrap_or(rest.len());
    rest.get(..end).unwrap_or(rest)
}

/// The trailing ` in FILE:LINE` of an nginx configuration error.
fn config_location(head: &[u8]) -> Option<&[u8]> {
    let at = memmem::rfind(head, b" in ")?;
    let location = head.get(at + 4..)?;
    let colon = memchr::memrchr(b':', location)?;
    let line = location.get(colon + 1..)?;
    let looks_like_file = location.starts_with(b"/") && leading_number(line)?.1.is_empty();
    looks_like_file.then_some(location)
}

/// A log level, in nginx's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Notice,
    Warn,
    Error,
    Crit,
    Alert,
    Emerg,
}

impl Level {
    /// nginx's own level names.
    fn from_nginx(word: &[u8]) -> Option<Level> {
        Some(match word {
            b"debug" => Level::Debug,
            b"info" => Level::Info,
            b"notice" => Level::Notice,
            b"warn" => Level::Warn,
            b"error" => Level::Error,
            b"crit" => Level::Crit,
            b"alert" => Level::Alert,
            b"emerg" => Level::Emerg,
            _ => return None,
        })
    }

    /// php-fpm's level names (its `zlog`), mapped to nginx's.
    fn from_fpm(word: &[u8]) -> Option<Level> {
        Some(match word {
            b"DEBUG" => Level::Debug,
            b"NOTICE" => Level::Notice,
            b"WARNING" => Level::Warn,
            b"ERROR" | b"SYSTEM" => Level::Error,
            b"ALERT" => Level::Alert,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Crit => "crit",
            Level::Alert => "alert",
            Level::Emerg => "emerg",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What nginx was doing when it failed: its `log->action`, written as ` while <action>`.
/// The upstream ones are short names (`connecting`, not `connecting to upstream`); any other
/// action is kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase<'a> {
    /// `connecting to upstream`
    Connecting,
    /// `sending request to upstream`
    SendingRequest,
    /// `reading response header from upstream`
    ReadingResponseHeader,
    /// `reading upstream`: the body, after the header.
    ReadingUpstream,
    /// `SSL handshaking to upstream`
    SslHandshaking,
    /// `resolving`: the resolver talking to its DNS server.
    Resolving,
    /// Any other action, e.g. `reading client request line`, `sending to client`.
    Other(Cow<'a, [u8]>),
}

impl<'a> Phase<'a> {
    fn from_action(action: &'a [u8]) -> Phase<'a> {
        match action {
            b"connecting to upstream" => Phase::Connecting,
            b"sending request to upstream" => Phase::SendingRequest,
            b"reading response header from upstream" => Phase::ReadingResponseHeader,
            b"reading upstream" => Phase::ReadingUpstream,
            b"SSL handshaking to upstream" => Phase::SslHandshaking,
            b"resolving" => Phase::Resolving,
            other => Phase::Other(Cow::Borrowed(other)),
        }
    }

    /// `true` while nginx talks to an upstream; other actions with `upstream` in their last
    /// word (from modules this list does not name) count too.
    pub fn is_upstream(&self) -> bool {
        match self {
            Phase::Resolving => false,
            Phase::Other(action) => action.ends_with(b" upstream"),
            _ => true,
        }
    }

    /// The same phase, no longer borrowing the line.
    pub fn into_owned(self) -> Phase<'static> {
        match self {
            Phase::Connecting => Phase::Connecting,
            Phase::SendingRequest => Phase::SendingRequest,
            Phase::ReadingResponseHeader => Phase::ReadingResponseHeader,
            Phase::ReadingUpstream => Phase::ReadingUpstream,
            Phase::SslHandshaking => Phase::SslHandshaking,
            Phase::Resolving => Phase::Resolving,
            Phase::Other(action) => Phase::Other(Cow::Owned(action.into_owned())),
        }
    }

    pub fn as_str(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            Phase::Connecting => "connecting",
            Phase::SendingRequest => "sending request",
            Phase::ReadingResponseHeader => "reading response header",
            Phase::ReadingUpstream => "reading upstream",
            Phase::SslHandshaking => "SSL handshaking",
            Phase::Resolving => "resolving",
            Phase::Other(action) => return text(action),
        })
    }
}

impl fmt::Display for Phase<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for Phase<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

/// A wall-clock time as the log wrote it, without a zone (nginx and php-fpm write local time).
/// Shown as nginx writes it: `2026/11/21 01:01:15`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Time {
    /// `2026/11/21 01:01:15`
    fn parse_nginx(t: &[u8]) -> Option<Time> {
        if t.len() != 19 {
            return None;
        }
        Time {
            year: number(t, 0, 4)?,
            month: number(t, 5, 2)?,
            day: number(t, 8, 2)?,
            hour: number(t, 11, 2)?,
            minute: number(t, 14, 2)?,
            second: number(t, 17, 2)?,
        }
        .valid()
    }

    /// `21-Nov-2026 01:02:27`
    fn parse_fpm(t: &[u8]) -> Option<Time> {
        if t.len() != 20 {
            return None;
        }
        let month = match t.get(3..6)? {
            b"Jan" => 1,
            b"Feb" => 2,
            b"Mar" => 3,
            b"Apr" => 4,
            b"May" => 5,
            b"Jun" => 6,
            b"Jul" => 7,
            b"Aug" => 8,
            b"Sep" => 9,
            b"Oct" => 10,
            b"Nov" => 11,
            b"Dec" => 12,
            _ => return None,
        };
        Time {
            year: number(t, 7, 4)?,
            month,
            day: number(t, 0, 2)?,
            hour: number(t, 12, 2)?,
            minute: number(t, 15, 2)?,
            second: number(t, 18, 2)?,
        }
        .valid()
    }

    fn valid(self) -> Option<Time> {
        let ok = (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 61;
        ok.then_some(self)
    }
}

/// The `len` digits at `at`, all of them digits.
fn number<T: TryFrom<u64>>(t: &[u8], at: usize, len: usize) -> Option<T> {
    let digits = t.get(at..at + len)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (value, _) = leading_number(digits)?;
    T::try_from(value).ok()
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_but_none_has_a_detector_and_is_asked_exactly_once() {
        for &cause in Cause::ALL {
            let asked = ORDER.iter().filter(|&&c| c == cause).count();
            if cause == Cause::None {
                assert_eq!(asked, 0);
                assert!(detector(cause).is_none());
            } else {
                assert_eq!(asked, 1, "{cause}");
                assert!(detector(cause).is_some(), "{cause}");
            }
        }
    }

    #[test]
    fn a_refused_line_yields_every_field() {
        let line = b"2026/11/21 01:01:15 [error] 110#110: *5 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: fx.test, request: \"GET /refused HTTP/1.1\", upstream: \"http://127.0.0.1:3000/refused\", host: \"fx.test\"";
        let c = classify(line);
        assert_eq!(c.cause, Cause::UpstreamRefused);
        assert_eq!(c.upstream.as_deref(), Some("127.0.0.1:3000"));
        assert_eq!(c.errno, Some(111));
        assert_eq!(c.phase, Some(Phase::Connecting));
        assert_eq!(c.client.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.server.as_deref(), Some("fx.test"));
        assert_eq!(c.request.as_deref(), Some("GET /refused HTTP/1.1"));
        assert_eq!(c.host.as_deref(), Some("fx.test"));
        assert_eq!(c.level, Some(Level::Error));
        assert_eq!(
            c.time.map(|t| t.to_string()).as_deref(),
            Some("2026/11/21 01:01:15")
        );
        assert_eq!((c.pid, c.connection), (Some(110), Some(5)));
    }

    #[test]
    fn unix_upstreams_lose_nginx_s_trailing_colon_and_urls_lose_scheme_and_uri() {
        for (url, address) in [
            (
                &b"fastcgi://unix:/run/php/php8.2-fpm.sock:"[..],
                &b"unix:/run/php/php8.2-fpm.sock"[..],
            ),
            (
                b"fastcgi://unix:/run/php/php8.2-fpm.sock",
                b"unix:/run/php/php8.2-fpm.sock",
            ),
            (b"http://unix:/run/app.sock:/api/x", b"unix:/run/app.sock"),
            (b"http://[::1]:3000/refused_v6", b"[::1]:3000"),
            (b"http://flaky/no_live", b"flaky"),
            (b"fastcgi://127.0.0.1:9000", b"127.0.0.1:9000"),
            (b"", b""),
        ] {
            assert_eq!(upstream_address(url), address);
        }
    }

    #[test]
    fn the_client_s_request_line_can_not_change_the_cause() {
        // The request line is the client's text, written after nginx's message: a request
        // that reads like a refused connect is still a 404.
        let line = b"2026/11/21 01:01:35 [error] 110#110: *80 open() \"/var/www/html/x\" failed (2: No such file or directory), client: 127.0.0.1, server: fx.test, request: \"GET /connect() failed (111: Connection refused) while connecting to upstream HTTP/1.1\", host: \"fx.test\"";
        assert_eq!(classify(line), Classified::none());
    }

    #[test]
    fn a_request_line_holding_quotes_ends_at_the_quote_before_nginx_s_next_key() {
        let c = Context::parse(b", client: 10.0.0.1, server: a, request: \"GET /\"x\" HTTP/1.1\", upstream: \"http://127.0.0.1:3000/\", host: \"a\"");
        assert_eq!(c.request, Some(&b"GET /\"x\" HTTP/1.1"[..]));
        assert_eq!(c.upstream, Some(&b"http://127.0.0.1:3000/"[..]));
        assert_eq!(c.host, Some(&b"a"[..]));
    }

    #[test]
    fn times_are_checked_and_php_fpm_s_are_rewritten_in_nginx_s_form() {
        let t = Time::parse_fpm(b"21-Nov-2026 01:02:27").unwrap();
        assert_eq!(t.to_string(), "2026/11/21 01:02:27");
        assert_eq!(Time::parse_nginx(b"2026/13/21 01:02:27"), None);
        assert_eq!(Time::parse_nginx(b"2026/1x/21 01:02:27"), None);
        assert_eq!(Time::parse_fpm(b"21-Foo-2026 01:02:27"), None);
    }

    #[test]
    fn config_location_wants_an_absolute_file_and_a_line_number() {
        assert_eq!(
            config_location(b"unknown directive \"x\" in /etc/nginx/conf.d/a.conf:12"),
            Some(&b"/etc/nginx/conf.d/a.conf:12"[..])
        );
        assert_eq!(config_location(b"invalid value in \"x\""), None);
    }

    #[test]
    fn an_owned_result_equals_the_borrowed_one() {
        let line = b"2026/11/21 01:01:17 [info] 1#1: *1 x failed (104: y) while closing request, client: 127.0.0.1".to_vec();
        let borrowed = classify(&line);
        assert_eq!(borrowed.clone().into_owned(), borrowed);
        let phase = Phase::from_action(b"closing request");
        assert_eq!(phase.clone().into_owned(), phase);
    }

    #[test]
    fn json_leaves_absent_fields_out() {
        let json = serde_json::to_string(&classify(
            b"2026/11/21 01:02:40 [alert] 532#532: 8 worker_connections are not enough",
        ))
        .unwrap();
        assert_eq!(
            json,
            r#"{"cause":"worker_connections_exhausted","level":"alert","time":"2026/11/21 01:02:40","pid":532,"limit":8}"#
        );
        assert_eq!(
            serde_json::to_string(&classify(b"garbage")).unwrap(),
            r#"{"cause":"none"}"#
        );
    }
}
