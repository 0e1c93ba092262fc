//! The active probe: one GET sent to nginx on loopback, the way a user's request went, to see
//! whether the upstream behind that location answers again.
//!
//! Kept small on purpose, and narrow: a GET of a path the logs saw (never another method,
//! never a path made up), HTTP/1.0 over a plain TCP socket to `127.0.0.1` or `::1` only, at a
//! port nginx itself listens on; only the status line is read (at most
//! [`STATUS_LINE_MAX`] bytes, the body never), redirects are not followed, and the whole
//! exchange has [`TIMEOUT`]. [`request_bytes`], [`parse_status_line`] and [`nginx_loopback`]
//! are pure; [`get`] is the I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::listeners::{Listener, listening_on};
use crate::detect::access::{MAX_PATH_BYTES, valid_host};

/// How long one probe may take, connect to status line.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The most bytes read while looking for the status line.
pub const STATUS_LINE_MAX: usize = 1_024;

/// The most ports one request is probed on when the logs do not say which it came in on.
pub const MAX_PORTS: usize = 4;

/// The User-Agent the probe sends, so that its requests can be told apart in the access log.
pub const USER_AGENT: &str = "gatemend-agent (recovery probe)";

/// One probe to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// nginx on loopback (see [`nginx_loopback`]).
    pub addr: SocketAddr,
    /// The path, as the logs saw it: `/index.php`.
    pub path: String,
    /// The Host header the request was sent with, when the logs name it.
    pub host: Option<String>,
}

impl Request {
    /// `GET /index.php via 127.0.0.1:80` (and the Host when there is one): what was sent,
    /// for the evidence.
    pub fn describe(&self) -> String {
        describe_all(std::slice::from_ref(self))
    }
}

/// Why a probe gave no status.
#[derive(Debug, thiserror::Error)]
pub enum HttpProbeError {
    #[error("refusing to probe {addr}: only loopback addresses are probed")]
    NotLoopback { addr: SocketAddr },
    #[error("refusing to send path {path:?}: not a plain path as the logs write one")]
    InvalidPath { path: String },
    #[error("refusing to send Host {host:?}: not a host name or address")]
    InvalidHost { host: String },
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send the request to {addr}")]
    Send {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the answer from {addr}")]
    Receive {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("{addr} answered without an HTTP status line: {start:?}")]
    NoStatus { addr: SocketAddr, start: String },
}

/// The bytes of the request: `GET PATH HTTP/1.0`, the Host when known, the User-Agent,
/// `Connection: close`. Refuses a path or host that is not plain (no header injection, no
/// request made up from a log's escapes).
pub fn request_bytes(path: &str, host: Option<&str>) -> Result<Vec<u8>, HttpProbeError> {
    let plain = path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if !path.starts_with('/') || path.len() > MAX_PATH_BYTES || !plain {
        return Err(HttpProbeError::InvalidPath {
            path: path.to_owned(),
        });
    }
    let mut text = format!("GET {path} HTTP/1.0\r\n");
    if let Some(host) = host {
        if !valid_host(host) {
            return Err(HttpProbeError::InvalidHost {
                host: host.to_owned(),
            });
        }
        text.push_str(&format!("Host: {host}\r\n"));
    }
    text.push_str(&format!(
        "User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ));
    Ok(text.into_bytes())
}

/// The status of a status line (`HTTP/1.1 200 OK`): `Some` once the line is complete and is
/// one, `None` otherwise.
pub fn parse_status_line(bytes: &[u8]) -> Option<u16> {
    let end = memchr::memchr(b'\n', bytes)?;
    let line = bytes.get(..end)?;
    let rest = line.strip_prefix(b"HTTP/")?;
    let space = memchr::memchr(b' ', rest)?;
    let code = rest.get(space + 1..space + 4)?;
    let after = rest.get(space + 4).copied();
    if !code.iter().all(u8::is_ascii_digit) || !matches!(after, None | Some(b' ' | b'\r')) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Where nginx accepts on loopback at `port`: `127.0.0.1:port` when an nginx listener there
/// takes IPv4 loopback, else `[::1]:port`; `None` when no listener of nginx's (its process or
/// its unit) is on that port, so the probe never reaches another program.
pub fn nginx_loopback(listeners: &[Listener], port: u16) -> Option<SocketAddr> {
    let is_nginx = |l: &Listener| {
        l.process.as_deref() == Some("nginx") || l.unit.as_deref() == Some("nginx.service")
    };
    [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
    .into_iter()
    .find(|ip| listening_on(listeners, &ip.to_string(), port).is_some_and(is_nginx))
    .map(|ip| SocketAddr::new(ip, port))
}

/// Every port nginx listens on that loopback reaches (its process or its unit holds it), 80
/// first, at most [`MAX_PORTS`].
pub fn nginx_ports(listeners: &[Listener]) -> Vec<u16> {
    let mut ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.addr.port())
        .filter(|&port| nginx_loopback(listeners, port).is_some())
        .collect();
    ports.sort_unstable_by_key(|&port| (port != 80, port));
    ports.dedup();
    ports.truncate(MAX_PORTS);
    ports
}

/// `GET / (Host a) via 127.0.0.1:80 and 127.0.0.1:8080`: requests of one path and Host to
/// several ports, for the evidence.
pub fn describe_all(requests: &[Request]) -> String {
    let Some(first) = requests.first() else {
        return String::new();
    };
    let via: Vec<String> = requests.iter().map(|r| r.addr.to_string()).collect();
    let host = first
        .host
        .as_ref()
        .map_or_else(String::new, |h| format!(" (Host {h})"));
    format!("GET {}{host} via {}", first.path, via.join(" and "))
}

/// Sends the GET and returns the status nginx answered, reading nothing past the status line.
///
/// # Errors
/// An address that is not loopback, a path or host that is not plain, no connection, no
/// status line within [`STATUS_LINE_MAX`] bytes, or no answer within [`TIMEOUT`].
pub async fn get(request: &Request) -> Result<u16, HttpProbeError> {
    let addr = request.addr;
    if !addr.ip().is_loopback() {
        return Err(HttpProbeError::NotLoopback { addr });
    }
    let bytes = request_bytes(&request.path, request.host.as_deref())?;
    match tokio::time::timeout(TIMEOUT, exchange(addr, &bytes)).await {
        Ok(result) => result,
        Err(_) => Err(HttpProbeError::Timeout {
            addr,
            after: TIMEOUT,
        }),
    }
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<u16, HttpProbeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpProbeError::Connect { addr, source })?;
    stream
        .write_all(request)
        .await
        .map_err(|source| HttpProbeError::Send { addr, source })?;
    let mut buf = vec![0; STATUS_LINE_MAX];
    let mut len = 0;
    while let Some(free) = buf.get_mut(len..).filter(|free| !free.is_empty()) {
        let n = stream
            .read(free)
            .await
            .map_err(|source| HttpProbeError::Receive { addr, source })?;
        if n == 0 {
            break;
        }
        len += n;
        let read = buf.get(..len).unwrap_or_default();
        if memchr::memchr(b'\n', read).is_some() {
            break;
        }
    }
    // Dropping the stream closes it: the body is never read.
    let read = buf.get(..len).unwrap_or_default();
    parse_status_line(read).ok_or_else(|| HttpProbeError::NoStatus {
        addr,
        start: String::from_utf8_lossy(read.get(..read.len().min(80)).unwrap_or_default())
            .into_owned(),
    })
}

#[cfg(test)]
mod tests {
    // A test reports a failure by panicking.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines_are_read_and_anything_else_is_none() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 502 Bad Gateway\r\nX: y"),
            Some(502)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), None, "incomplete");
        assert_eq!(parse_status_line(b"this is not http\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20x OK\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn only_plain_paths_and_hosts_are_sent() {
        let bytes = request_bytes("/index.php", Some("10.77.1.2:8080")).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("GET /index.php HTTP/1.0\r\nHost: 10.77.1.2:8080\r\n"),
            "{text}"
        );
        assert!(text.ends_with("Connection: close\r\n\r\n"), "{text}");
        let text = String::from_utf8(request_bytes("/", None).unwrap()).unwrap();
        assert!(!text.contains("Host:"), "{text}");
        for path in ["index.php", "/a b", "/a\r\nX: y", "/\\x22", ""] {
            assert!(
                matches!(
                    request_bytes(path, None),
                    Err(HttpProbeError::InvalidPath { .. })
                ),
                "{path:?}"
            );
        }
        for host in ["a\r\nX: y", "_", "a b", "*.example.com"] {
            assert!(
                matches!(
                    request_bytes("/", Some(host)),
                    Err(HttpProbeError::InvalidHost { .. })
                ),
                "{host:?}"
            );
        }
    }

    fn listener(addr: &str, process: &str, unit: Option<&str>) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            inode: 1,
            pids: vec![1],
            unit: unit.map(str::to_owned),
            process: Some(process.to_owned()),
        }
    }

    #[test]
    fn the_probe_goes_only_to_a_port_nginx_listens_on() {
        let listeners = [
            listener("0.0.0.0:80", "nginx", Some("nginx.service")),
            listener("[::]:80", "nginx", Some("nginx.service")),
            listener("[::]:8443", "nginx", None),
            listener("127.0.0.1:3000", "python3", Some("backend.service")),
            listener("10.77.1.2:8080", "nginx", Some("nginx.service")),
        ];
        assert_eq!(
            nginx_loopback(&listeners, 80),
            Some("127.0.0.1:80".parse().unwrap())
        );
        // `::` takes IPv4 too on Linux.
        assert_eq!(
            nginx_loopback(&listeners, 8443),
            Some("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(nginx_loopback(&listeners, 3000), None, "not nginx");
        assert_eq!(nginx_loopback(&listeners, 8080), None, "not on loopback");
        assert_eq!(nginx_loopback(&listeners, 81), None);
        let v6 = [listener("[::1]:80", "nginx", None)];
        assert_eq!(nginx_loopback(&v6, 80), Some("[::1]:80".parse().unwrap()));
        // The ports a request without a known port is sent to: nginx's on loopback, 80 first.
        assert_eq!(nginx_ports(&listeners), [80, 8443]);
    }

    /// A server on loopback that reads the request, answers `answer` and keeps the
    /// connection open; returns its address and the request it read.
    async fn server(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer).await.unwrap();
            // An endless body: the probe must not wait for it.
            let chunk = vec![b'x'; 64 * 1024];
            while conn.write_all(&chunk).await.is_ok() {}
            request
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_loopback_server_answers_its_status_and_the_body_is_not_read() {
        let (addr, task) = server(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n").await;
        let request = Request {
            addr,
            path: "/index.php".into(),
            host: Some("10.77.1.2".into()),
        };
        assert_eq!(get(&request).await.unwrap(), 200);
        let sent = String::from_utf8(task.await.unwrap()).unwrap();
        assert!(sent.starts_with("GET /index.php HTTP/1.0\r\n"), "{sent}");
        assert!(sent.contains("\r\nHost: 10.77.1.2\r\n"), "{sent}");
        assert!(sent.contains(USER_AGENT), "{sent}");

        let (addr, _task) = server(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        let request = Request {
            addr,
            path: "/".into(),
            host: None,
        };
        assert_eq!(get(&request).await.unwrap(), 502);
        // A redirect is a status like any other: not followed.
        let (addr, _task) = server(b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n").await;
        let request = Request {
            addr,
            path: "/".into(),
            host: None,
        };
        assert_eq!(get(&request).await.unwrap(), 301);
    }

    #[tokio::test]
    async fn garbage_a_closed_port_and_other_addresses_are_errors() {
        let (addr, _task) = server(b"this is not http at all\n").await;
        let request = Request {
            addr,
            path: "/".into(),
            host: None,
        };
        assert!(matches!(
            get(&request).await,
            Err(HttpProbeError::NoStatus { .. })
        ));
        // A port nothing listens on: bind one, then close it.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let request = Request {
            addr: closed,
            path: "/".into(),
            host: None,
        };
        assert!(matches!(
            get(&request).await,
            Err(HttpProbeError::Connect { .. })
        ));
        let request = Request {
            addr: "10.77.1.2:80".parse().unwrap(),
            path: "/".into(),
            host: None,
        };
        assert!(matches!(
            get(&request).await,
            Err(HttpProbeError::NotLoopback { .. })
        ));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(conn);
        });
        let request = Request {
            addr,
            path: "/".into(),
            host: None,
        };
        let result = get(&request).await;
        assert!(
            matches!(result, Err(HttpProbeError::Timeout { .. })),
            "{result:?}"
        );
    }
}
