//! nginx's access log: the 502s and 504s, per upstream, per second.
//!
//! The error log says why a request failed; the access log says how many did. A line is read
//! against the `log_format` it was written with ([`LogFormat::compile`] once, then
//! [`LogFormat::parse`] per line): the predefined `combined`, or any format made of `$variables`
//! and literal text. What is kept: `$status`, `$upstream_addr`, `$upstream_status`,
//! `$time_local`, and, for replaying a request, `$request`, the host (`$http_host`, `$host` or
//! `$server_name`) and `$server_port`. [`AccessRates`] counts the 502s and 504s per upstream
//! over a sliding window, and per upstream the answers (any other status but 503) with the
//! times of the latest answer and the latest 502/504: the evidence that an upstream works again
//! is answers through it after its last error, not the mere absence of errors.
//!
//! Both are pure and total: no I/O, the clock is an argument, and any bytes give an answer
//! (`None` for a line that does not fit the format).
//!
//! How a value's end is found, since formats are free text:
//! - a variable followed by literal text ends where that text next occurs (nginx escapes `"`
//!   and control bytes in values, so `"$http_user_agent"` cannot end early);
//! - `$upstream_*` values are lists, `a, b : c` (`, ` between tries of one group, ` : `
//!   between groups after an internal redirect); they contain spaces, so they end after the
//!   last item instead;
//! - `$time_local` is fixed-width (`21/Nov/2026:03:20:01 +0000`) and contains a space;
//! - the last variable of the format runs to the end of the line.

use std::collections::{BTreeMap, VecDeque};

use memchr::memmem;

use super::error::DetectError;

/// nginx's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// The key counted under when a line names no upstream (a format without `$upstream_addr`, or
/// a request nginx answered itself).
pub const NO_UPSTREAM: &str = "-";

/// The key counted under once [`AccessRates::MAX_UPSTREAMS`] upstreams are known, so that a
/// flood of distinct addresses cannot grow memory without bound.
pub const OTHER_UPSTREAMS: &str = "(other)";

/// A compiled `log_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Vec<u8>),
    Var { field: Option<Field>, shape: Shape },
}

/// The variables whose values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Status,
    UpstreamAddr,
    UpstreamStatus,
    TimeLocal,
    Request,
    /// `$http_host`, `$host`, `$server_name`, best first (the rank).
    Host(u8),
    ServerPort,
}

/// How a value's end is found (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    List,
    TimeLocal,
}

/// The width of `$time_local`: `21/Nov/2026:03:20:01 +0000`.
const TIME_LOCAL_LEN: usize = 26;

/// The fields of one access-log line that matter for counting 502s and 504s. Values are the
/// line's bytes; a field the format does not have is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessFields<'a> {
    /// `$status`, the status sent to the client; `None` if it is not a number.
    pub status: Option<u16>,
    /// `$upstream_addr`, e.g. `unix:/run/php/php8.2-fpm.sock`, `127.0.0.1:3000`,
    /// `127.0.0.1:3000, 127.0.0.1:3001`, or `-`.
    pub upstream_addr: Option<&'a [u8]>,
    /// `$upstream_status`, a list in step with `upstream_addr`, e.g. `502, 502`.
    pub upstream_status: Option<&'a [u8]>,
    /// `$time_local`, e.g. `21/Nov/2026:03:20:01 +0000`.
    pub time_local: Option<&'a [u8]>,
    /// `$request`, the request line, e.g. `GET /index.php HTTP/1.1`.
    pub request: Option<&'a [u8]>,
    /// The request's host: `$http_host` (with its port, as the client sent it), else `$host`,
    /// else `$server_name`.
    pub host: Option<&'a [u8]>,
    /// `$server_port`, the port the request came in on.
    pub server_port: Option<u16>,
}

impl LogFormat {
    /// Compile a format: `combined`, or the text of a `log_format` (its quoted parts joined, as
    /// nginx joins them).
    ///
    /// # Errors
    /// A `$` not followed by a variable name, an unclosed `${`, or a format with neither
    /// `$status` nor `$upstream_status` (no 502 could ever be counted from it).
    pub fn compile(format: &str) -> Result<LogFormat, DetectError> {
        let text = if format.trim() == "combined" {
            COMBINED
        } else {
            format
        };
        let invalid = |reason: String| DetectError::LogFormat {
            format: format.to_owned(),
            reason,
        };
        let bytes = text.as_bytes();
        let mut segments = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b != b'$' {
                literal.push(b);
                i += 1;
                continue;
            }
            let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                let rest = bytes.get(i + 2..).unwrap_or_default();
                let close = memchr::memchr(b'}', rest)
                    .ok_or_else(|| invalid(format!("unclosed ${{ at byte {i}")))?;
                (rest.get(..close).unwrap_or_default(), i + 3 + close)
            } else {
                let rest = bytes.get(i + 1..).unwrap_or_default();
                let len = rest
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                (rest.get(..len).unwrap_or_default(), i + 1 + len)
            };
            if name.is_empty() || !name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                return Err(invalid(format!("invalid variable name at byte {i}")));
            }
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(variable(name));
            i = next;
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        let has = |want: Field| {
            segments
                .iter()
                .any(|s| matches!(s, Segment::Var { field: Some(f), .. } if *f == want))
        };
        if !has(Field::Status) && !has(Field::UpstreamStatus) {
            return Err(invalid(
                "has neither $status nor $upstream_status: no 502 can be counted from it".into(),
            ));
        }
        Ok(LogFormat { segments })
    }

    /// Whether lines of this format name their upstream.
    pub fn has_upstream(&self) -> bool {
        self.segments.iter().any(|s| {
            matches!(
                s,
                Segment::Var {
                    field: Some(Field::UpstreamAddr),
                    ..
                }
            )
        })
    }

    /// Read one line (without its `\n`); `None` if it does not fit the format.
    pub fn parse<'a>(&self, line: &'a [u8]) -> Option<AccessFields<'a>> {
        let mut fields = AccessFields::default();
        // The rank of the host variable read so far: a better one replaces it.
        let mut host_rank = u8::MAX;
        let mut pos = 0;
        let mut segments = self.segments.iter().peekable();
        while let Some(segment) = segments.next() {
            let rest = line.get(pos..)?;
            match segment {
                Segment::Literal(literal) => {
                    if !rest.starts_with(literal) {
                        return None;
                    }
                    pos += literal.len();
                }
                Segment::Var { field, shape } => {
                    let len = match (segments.peek(), shape) {
                        (None, _) => rest.len(),
                        (Some(Segment::Literal(next)), Shape::List) => list_len(rest, next),
                        (_, Shape::List) => list_len(rest, b""),
                        (_, Shape::TimeLocal) => TIME_LOCAL_LEN.min(rest.len()),
                        (Some(Segment::Literal(next)), Shape::Text) => {
                            memmem::find(rest, next).unwrap_or(rest.len())
                        }
                        // Two variables with nothing between: the first is one word.
                        (Some(Segment::Var { .. }), Shape::Text) => {
                            memchr::memchr(b' ', rest).unwrap_or(rest.len())
                        }
                    };
                    let value = rest.get(..len)?;
                    match field {
                        Some(Field::Status) => fields.status = parse_status(value),
                        Some(Field::UpstreamAddr) => fields.upstream_addr = Some(value),
                        Some(Field::UpstreamStatus) => fields.upstream_status = Some(value),
                        Some(Field::TimeLocal) => fields.time_local = Some(value),
                        Some(Field::Request) => fields.request = Some(value),
                        Some(Field::Host(rank))
                            if *rank < host_rank && value != b"-" && !value.is_empty() =>
                        {
                            host_rank = *rank;
                            fields.host = Some(value);
                        }
                        Some(Field::Host(_)) => {}
                        Some(Field::ServerPort) => {
                            fields.server_port =
                                std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                        }
                        None => {}
                    }
                    pos += len;
                }
            }
        }
        (pos == line.len()).then_some(fields)
    }
}

fn variable(name: &[u8]) -> Segment {
    let field = match name {
        b"status" => Some(Field::Status),
        b"upstream_addr" => Some(Field::UpstreamAddr),
        b"upstream_status" => Some(Field::UpstreamStatus),
        b"time_local" => Some(Field::TimeLocal),
        b"request" => Some(Field::Request),
        b"http_host" => Some(Field::Host(0)),
        b"host" => Some(Field::Host(1)),
        b"server_name" => Some(Field::Host(2)),
        b"server_port" => Some(Field::ServerPort),
        _ => None,
    };
    let shape = if name == b"time_local" {
        Shape::TimeLocal
    } else if name.starts_with(b"upstream_") && name != b"upstream_cache_status" {
        Shape::List
    } else {
        Shape::Text
    };
    Segment::Var { field, shape }
}

/// The length of an `$upstream_*` list at the start of `text`: items (no space, no comma, not
/// the literal text that follows the list in the format) joined by `, ` or ` : `.
fn list_len(text: &[u8], until: &[u8]) -> usize {
    let item = |from: usize| {
        let rest = text.get(from..).unwrap_or_default();
        let mut len = 0;
        while let Some(&b) = rest.get(len) {
            let at_literal =
                !until.is_empty() && rest.get(len..).is_some_and(|r| r.starts_with(until));
            if b == b' ' || b == b',' || at_literal {
                break;
            }
            len += 1;
        }
        len
    };
    let mut end = item(0);
    loop {
        let rest = text.get(end..).unwrap_or_default();
        let sep = if rest.starts_with(b", ") {
            2
        } else if rest.starts_with(b" : ") {
            3
        } else {
            return end;
        };
        let next = item(end + sep);
        if next == 0 {
            return end;
        }
        end += sep + next;
    }
}

/// A three-digit status; `-` and anything else are `None`.
fn parse_status(value: &[u8]) -> Option<u16> {
    match value {
        [a, b, c] if value.iter().all(u8::is_ascii_digit) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// The items of an `$upstream_*` list, in order, across both separators (`, ` and ` : `;
/// a plain `:` is part of an address).
pub fn list_items(list: &[u8]) -> Vec<&[u8]> {
    let mut items = Vec::new();
    for part in list.split(|&b| b == b',') {
        let mut rest = part;
        loop {
            let (item, next) = match memmem::find(rest, b" : ") {
                Some(at) => (rest.get(..at), rest.get(at + 3..)),
                None => (Some(rest), None),
            };
            let item = item.unwrap_or_default().trim_ascii();
            if !item.is_empty() {
                items.push(item);
            }
            match next {
                Some(next) => rest = next,
                None => break,
            }
        }
    }
    items
}

impl AccessFields<'_> {
    /// `$time_local` as Unix seconds, if it is well formed.
    pub fn time_unix(&self) -> Option<i64> {
        parse_time_local(self.time_local?)
    }

    /// Each upstream the request was sent to, with the status it gave (see [`AccessRates`] for
    /// how a line without `$upstream_status` is read). A request that reached no upstream
    /// gives one attempt with [`NO_UPSTREAM`] and the client's `$status`.
    pub fn attempts(&self) -> Vec<(&[u8], Option<u16>)> {
        let addrs: Vec<&[u8]> = self
            .upstream_addr
            .map(|a| list_items(a).into_iter().filter(|a| *a != b"-").collect())
            .unwrap_or_default();
        if addrs.is_empty() {
            return vec![(NO_UPSTREAM.as_bytes(), self.status)];
        }
        match self.upstream_status {
            Some(statuses) => {
                let mut statuses = list_items(statuses).into_iter().map(parse_status);
                addrs
                    .into_iter()
                    .map(|addr| (addr, statuses.next().flatten()))
                    .collect()
            }
            // Without `$upstream_status` only the last try's outcome is known: the client got it.
            None => {
                let last = addrs.len() - 1;
                addrs
                    .into_iter()
                    .enumerate()
                    .map(|(i, addr)| (addr, if i == last { self.status } else { None }))
                    .collect()
            }
        }
    }
}

/// `21/Nov/2026:03:20:01 +0000` to Unix seconds.
pub fn parse_time_local(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let (date, zone) = text.split_once(' ')?;
    let mut parts = date.splitn(4, [':', '/']);
    let day: i64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.splitn(3, ':');
    let hour: i64 = clock.next()?.parse().ok()?;
    let minute: i64 = clock.next()?.parse().ok()?;
    let second: i64 = clock.next()?.parse().ok()?;
    if !(1..=31).contains(&day)
        || !(0..=9999).contains(&year)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let (sign, zone) = match zone.as_bytes().first()? {
        b'+' => (1, zone.get(1..)?),
        b'-' => (-1, zone.get(1..)?),
        _ => return None,
    };
    if zone.len() != 4 || !zone.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset: i64 =
        zone.get(..2)?.parse::<i64>().ok()? * 3600 + zone.get(2..)?.parse::<i64>().ok()? * 60;
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - sign * offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The longest path kept for a replay or watched: a longer one is not sent again.
pub const MAX_PATH_BYTES: usize = 1_024;

/// A request that may be sent again to see whether an upstream answers: a GET of a path the
/// logs saw go to it, with the Host it was sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The path, without its query string: `/index.php`.
    pub path: String,
    /// The Host header as the client sent it (`10.77.1.2:8080`), when the log names it.
    pub host: Option<String>,
    /// The port the request came in on: `$server_port`, else the Host's port; `None` when
    /// neither says (then it came in on 80, as a Host without a port means).
    pub port: Option<u16>,
}

impl Replay {
    /// A replay of a `GET` request line sent with `host`, on `port` if known; `None` for another
    /// method, or a path that could not be sent again as it was.
    pub fn of_get(request: &[u8], host: Option<&[u8]>, port: Option<u16>) -> Option<Replay> {
        let (method, path) = request_path(request)?;
        if method != "GET" {
            return None;
        }
        let host = host
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| valid_host(h));
        Some(Replay {
            path: path.to_owned(),
            host: host.map(str::to_owned),
            port: port.or_else(|| host.and_then(host_port)),
        })
    }

    fn is(&self, path: &str, host: Option<&str>, port: Option<u16>) -> bool {
        self.path == path && self.host.as_deref() == host && self.port == port
    }
}

/// A request line's method and path, the query string and fragment cut:
/// `GET /a.php?b=1 HTTP/1.1` -> (`GET`, `/a.php`). `None` for anything but a path of plain
/// printable bytes: nginx writes `"`, `\` and control bytes as `\xHH` in its logs, which sent
/// again would be another path.
pub fn request_path(request: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(request).ok()?;
    let mut parts = text.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    if parts.count() > 1 || method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let path = target.split(['?', '#']).next()?;
    let plain = path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    (path.starts_with('/') && path.len() <= MAX_PATH_BYTES && plain).then_some((method, path))
}

/// Whether a host from a log may be sent again as a Host header: a name or an address, with
/// an optional port; not a `server_name` pattern (`_`, `*.example.com`, `~^www`).
pub fn valid_host(host: &str) -> bool {
    host != "_"
        && !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The port a Host value names: `a:8080` and `[::1]:8080` -> 8080; `None` without one.
pub fn host_port(host: &str) -> Option<u16> {
    let port = match host.strip_prefix('[') {
        Some(v6) => v6.split_once("]:")?.1,
        // An unbracketed IPv6 address has colons and no port.
        None if host.matches(':').count() == 1 => host.rsplit_once(':')?.1,
        None => return None,
    };
    port.parse().ok()
}

/// 502s and 504s per upstream: per second over a sliding window, and in total; and the
/// answers per upstream (see [`Traffic`]).
///
/// Each try nginx made counts against the upstream it went to, with the status that upstream
/// gave (`$upstream_status`): a request that failed on `a` and then succeeded on `b` is one
/// 502 for `a` and one answer of `b`. Without `$upstream_status`, the client's `$status`
/// counts against the last upstream tried. Without `$upstream_addr` (the `combined` format),
/// everything counts under [`NO_UPSTREAM`]; then the paths [`AccessRates::watch_paths`] names
/// (those the error log saw fail) are followed one by one instead.
///
/// Memory is bounded: at most [`AccessRates::MAX_UPSTREAMS`] upstreams (the rest count
/// together as [`OTHER_UPSTREAMS`]), a bucket per second of the window for each, and at most
/// [`AccessRates::MAX_WATCHED_PATHS`] paths; what does not fit is counted in
/// [`AccessRates::dropped`].
#[derive(Debug, Clone)]
pub struct AccessRates {
    window: u64,
    upstreams: BTreeMap<String, Series>,
    paths: BTreeMap<String, Traffic>,
    dropped: Dropped,
}

#[derive(Debug, Clone, Default)]
struct Series {
    /// Per-second counts, oldest first, only seconds that had a 502 or 504, within the window.
    buckets: VecDeque<Bucket>,
    total: Counts,
    traffic: Traffic,
    /// The latest GET that went to this upstream.
    replay: Option<Replay>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    second: u64,
    counts: Counts,
}

/// A count of 502s and 504s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bad_gateway: u64,
    pub gateway_timeout: u64,
}

/// What the requests through one upstream (or to one path) got, as the access log shows
/// them. Times are the `now` the lines were recorded at (Unix seconds); "since the latest
/// error" is in the order the lines were recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Answers: any status but 502, 503, 504 and 499 (the client gone before an answer), so
    /// the upstream answered, whatever it said.
    pub answers: u64,
    /// Answers recorded after the latest 502 or 504 (all of them when there was none).
    pub answers_since_error: u64,
    /// When the first of those was recorded.
    pub first_answer_since_error: Option<u64>,
    /// When the latest answer was recorded.
    pub last_answer: Option<u64>,
    /// The latest answer's status.
    pub last_status: Option<u16>,
    /// When the latest 502 or 504 was recorded.
    pub last_error: Option<u64>,
}

/// What did not fit the bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Tries counted under [`OTHER_UPSTREAMS`] because [`AccessRates::MAX_UPSTREAMS`]
    /// upstreams were known already.
    pub upstreams: u64,
    /// Paths not watched because [`AccessRates::MAX_WATCHED_PATHS`] were.
    pub paths: u64,
}

/// One upstream's figures at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRate {
    pub upstream: String,
    /// Within the second `now`.
    pub this_second: Counts,
    /// Within the window ending at `now` (the last `window` seconds, `now` included).
    pub in_window: Counts,
    /// 502s per second, averaged over the window.
    pub bad_gateway_per_second: f64,
    /// 504s per second, averaged over the window.
    pub gateway_timeout_per_second: f64,
    /// Since counting began.
    pub total: Counts,
}

/// What one status says about the upstream that gave it.
enum Outcome {
    Error(Counts),
    Answer(u16),
    Neither,
}

fn outcome(status: Option<u16>) -> Outcome {
    match status {
        Some(502) => Outcome::Error(Counts {
            bad_gateway: 1,
            gateway_timeout: 0,
        }),
        Some(504) => Outcome::Error(Counts {
            bad_gateway: 0,
            gateway_timeout: 1,
        }),
        // 503 is most often nginx's own limit; 499 the client leaving before any answer.
        Some(503 | 499) | None => Outcome::Neither,
        Some(status) => Outcome::Answer(status),
    }
}

impl AccessRates {
    /// How many distinct upstreams are counted apart; the rest count as [`OTHER_UPSTREAMS`].
    pub const MAX_UPSTREAMS: usize = 1024;

    /// How many paths [`AccessRates::watch_paths`] follows at most.
    pub const MAX_WATCHED_PATHS: usize = 256;

    /// Count over a window of `window_seconds` (at least 1).
    pub fn new(window_seconds: u64) -> AccessRates {
        AccessRates {
            window: window_seconds.max(1),
            upstreams: BTreeMap::new(),
            paths: BTreeMap::new(),
            dropped: Dropped::default(),
        }
    }

    /// Count one line at `now` (Unix seconds; the caller's clock, or the line's own
    /// [`AccessFields::time_unix`]): its 502s and 504s, its answers, the GET it was. A `now`
    /// older than the newest second already counted for that upstream counts in that newest
    /// second, so memory stays bounded.
    pub fn record(&mut self, fields: &AccessFields<'_>, now: u64) {
        let replay = fields
            .request
            .and_then(request_path)
            .filter(|(method, _)| *method == "GET")
            .map(|(_, path)| {
                let host = fields
                    .host
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| valid_host(h));
                (
                    path,
                    host,
                    fields.server_port.or_else(|| host.and_then(host_port)),
                )
            });
        for (addr, status) in fields.attempts() {
            let outcome = outcome(status);
            let named = addr != NO_UPSTREAM.as_bytes();
            if matches!(outcome, Outcome::Neither) && !(named && replay.is_some()) {
                continue;
            }
            let key = String::from_utf8_lossy(addr);
            let series = if let Some(series) = self.upstreams.get_mut(key.as_ref()) {
                series
            } else {
                let key = if self.upstreams.len() >= Self::MAX_UPSTREAMS {
                    self.dropped.upstreams = self.dropped.upstreams.saturating_add(1);
                    OTHER_UPSTREAMS.to_owned()
                } else {
                    key.into_owned()
                };
                self.upstreams.entry(key).or_default()
            };
            match outcome {
                Outcome::Error(add) => {
                    series.add(add, now, self.window);
                    series.traffic.error(now);
                }
                Outcome::Answer(status) => series.traffic.answer(status, now),
                Outcome::Neither => {}
            }
            if let Some((path, host, port)) = replay
                && named
                && !series
                    .replay
                    .as_ref()
                    .is_some_and(|r| r.is(path, host, port))
            {
                series.replay = Some(Replay {
                    path: path.to_owned(),
                    host: host.map(str::to_owned),
                    port,
                });
            }
        }
        // Without `$upstream_addr` the path is all that ties a line to an upstream.
        if fields.upstream_addr.is_none()
            && let Some((_, path)) = fields.request.and_then(request_path)
            && let Some(traffic) = self.paths.get_mut(path)
        {
            match outcome(fields.status) {
                Outcome::Error(_) => traffic.error(now),
                Outcome::Answer(status) => traffic.answer(status, now),
                Outcome::Neither => {}
            }
        }
    }

    /// Follows exactly these paths from now on (what was counted for a path still named is
    /// kept): the paths of the requests the error log saw fail, so that an access log without
    /// `$upstream_addr` still tells their answers from the rest.
    pub fn watch_paths<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) {
        let mut kept = BTreeMap::new();
        for path in paths {
            if kept.contains_key(path) {
                continue;
            }
            if kept.len() >= Self::MAX_WATCHED_PATHS {
                self.dropped.paths = self.dropped.paths.saturating_add(1);
                continue;
            }
            let traffic = self.paths.remove(path).unwrap_or_default();
            kept.insert(path.to_owned(), traffic);
        }
        self.paths = kept;
    }

    /// The figures for one upstream at `now`; `None` if it never had a 502 or 504.
    pub fn rate(&self, upstream: &str, now: u64) -> Option<UpstreamRate> {
        let series = self.upstreams.get(upstream)?;
        (series.total != Counts::default()).then(|| series.rate(upstream, now, self.window))
    }

    /// The figures for every upstream that ever had a 502 or 504, by name.
    pub fn rates(&self, now: u64) -> Vec<UpstreamRate> {
        self.upstreams
            .iter()
            .filter(|(_, series)| series.total != Counts::default())
            .map(|(name, series)| series.rate(name, now, self.window))
            .collect()
    }

    /// The answers and errors of one upstream, as `$upstream_addr` names it.
    pub fn traffic(&self, upstream: &str) -> Option<Traffic> {
        self.upstreams.get(upstream).map(|s| s.traffic)
    }

    /// The answers and errors of one watched path (see [`AccessRates::watch_paths`]).
    pub fn path_traffic(&self, path: &str) -> Option<Traffic> {
        self.paths.get(path).copied()
    }

    /// The latest GET that went to this upstream, to send again.
    pub fn replay(&self, upstream: &str) -> Option<&Replay> {
        self.upstreams.get(upstream)?.replay.as_ref()
    }

    /// What did not fit the bounds, since counting began.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// The window, in seconds.
    pub fn window(&self) -> u64 {
        self.window
    }
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.bad_gateway = self.bad_gateway.saturating_add(other.bad_gateway);
        self.gateway_timeout = self.gateway_timeout.saturating_add(other.gateway_timeout);
    }
}

impl Traffic {
    fn answer(&mut self, status: u16, now: u64) {
        self.answers = self.answers.saturating_add(1);
        self.answers_since_error = self.answers_since_error.saturating_add(1);
        self.first_answer_since_error.get_or_insert(now);
        self.last_answer = Some(self.last_answer.map_or(now, |t| t.max(now)));
        self.last_status = Some(status);
    }

    fn error(&mut self, now: u64) {
        self.last_error = Some(self.last_error.map_or(now, |t| t.max(now)));
        self.answers_since_error = 0;
        self.first_answer_since_error = None;
    }
}

impl Series {
    fn add(&mut self, add: Counts, now: u64, window: u64) {
        self.total.add(add);
        match self.buckets.back_mut() {
            Some(last) if last.second >= now => last.counts.add(add),
            _ => self.buckets.push_back(Bucket {
                second: now,
                counts: add,
            }),
        }
        while let Some(first) = self.buckets.front() {
            if first.second.saturating_add(window) <= now {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    fn rate(&self, name: &str, now: u64, window: u64) -> UpstreamRate {
        let mut in_window = Counts::default();
        let mut this_second = Counts::default();
        for bucket in &self.buckets {
            if bucket.second <= now && bucket.second.saturating_add(window) > now {
                in_window.add(bucket.counts);
                if bucket.second == now {
                    this_second.add(bucket.counts);
                }
            }
        }
        #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
        let per_second = |n: u64| n as f64 / window as f64;
        UpstreamRate {
            upstream: name.to_owned(),
            this_second,
            in_window,
            bad_gateway_per_second: per_second(in_window.bad_gateway),
            gateway_timeout_per_second: per_second(in_window.gateway_timeout),
            total: self.total,
        }
    }
}
