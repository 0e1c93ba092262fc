//! Addresses decoded: a pass's argument, an upstream server's address, an upstream as the
//! error log names it, and when two of them are the same.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::model::{PassKind, Target};

/// Two targets nginx would connect to the same way; `localhost` is taken for the loopback
/// addresses it names in every stock `/etc/hosts`, since nginx's log shows the address.
pub(super) fn same_target(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Target::Tcp { host: ha, port: pa }, Target::Tcp { host: hb, port: pb }) => {
            pa == pb
                && (ha.eq_ignore_ascii_case(hb)
                    || (is_loopback(ha)
                        && is_loopback(hb)
                        && (is_localhost(ha) || is_localhost(hb))))
        }
        _ => a == b,
    }
}

fn is_localhost(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
}

fn is_loopback(host: &str) -> bool {
    is_localhost(host)
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
}

impl Target {
    /// An upstream as nginx's error log or the classifier names it: `unix:/path.sock`
    /// (a trailing `:` or `:/uri` ignored), `127.0.0.1:3000`, `[::1]:3000`, with or without a
    /// scheme and a URI (`http://127.0.0.1:3000/x`). A name without a port (an upstream block,
    /// as `no live upstreams` lines give it, or a host) is [`Target::Upstream`]. `None` for
    /// empty or undecodable text.
    pub fn from_log(upstream: &str) -> Option<Target> {
        let text = upstream.trim().trim_matches('"');
        let text = text.split_once("://").map_or(text, |(_, rest)| rest);
        if let Some(path) = text.strip_prefix("unix:") {
            // `unix:/path.sock:` or `unix:/path.sock:/uri`: the path ends at the first colon.
            let path = path.split(':').next().unwrap_or(path);
            return (!path.is_empty()).then(|| Target::Unix(PathBuf::from(path)));
        }
        let hostport = text.split(['/', '?']).next().unwrap_or(text);
        match split_host_port(hostport) {
            HostPort::WithPort(host, port) => Some(Target::Tcp { host, port }),
            HostPort::NoPort(name) => Some(Target::Upstream(name)),
            HostPort::Invalid => None,
        }
    }
}

/// Decodes a pass's argument. The second value is set when the address has a scheme and a
/// host without a port: an upstream block's name if one has it, known only at the end.
pub(super) fn pass_target(kind: PassKind, raw: &str) -> (Target, Option<String>) {
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, raw),
    };
    let default_port = match scheme.as_deref() {
        Some("https" | "grpcs" | "suwsgi") => Some(443),
        Some(_) => Some(80),
        None => None,
    };
    if let Some(path) = rest.strip_prefix("unix:") {
        // proxy_pass (http) takes a URI after the path: `http://unix:/path.sock:/uri`.
        let path = if kind == PassKind::Proxy && scheme.is_some() {
            path.split(':').next().unwrap_or(path)
        } else {
            path
        };
        return (Target::Unix(PathBuf::from(path)), None);
    }
    let hostport = if scheme.is_some() {
        rest.split(['/', '?']).next().unwrap_or(rest)
    } else {
        rest
    };
    if hostport.contains('$') {
        return (Target::Variable(raw.to_owned()), None);
    }
    match split_host_port(hostport) {
        HostPort::WithPort(host, port) => (Target::Tcp { host, port }, None),
        HostPort::NoPort(host) => match default_port {
            Some(port) => (
                Target::Tcp {
                    host: host.clone(),
                    port,
                },
                Some(host),
            ),
            // `fastcgi_pass php_pool;`: without a scheme or port only a block name is valid.
            None => (Target::Upstream(host), None),
        },
        HostPort::Invalid => (Target::Upstream(hostport.to_owned()), None),
    }
}

/// An `upstream` block's server address: a missing port is 80, the upstream module's default.
pub(super) fn server_target(address: &str) -> Target {
    if let Some(path) = address.strip_prefix("unix:") {
        Target::Unix(PathBuf::from(path))
    } else {
        match split_host_port(address) {
            HostPort::WithPort(host, port) => Target::Tcp { host, port },
            // The upstream module's default port.
            HostPort::NoPort(host) => Target::Tcp { host, port: 80 },
            HostPort::Invalid => Target::Upstream(address.to_owned()),
        }
    }
}

enum HostPort {
    WithPort(String, u16),
    NoPort(String),
    Invalid,
}

/// `host:port`, `[v6]:port`, `[v6]`, `host`; IPv6 is returned without brackets.
fn split_host_port(text: &str) -> HostPort {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return HostPort::Invalid;
        };
        return match after.strip_prefix(':') {
            Some(port) => port.parse().map_or(HostPort::Invalid, |p| {
                HostPort::WithPort(host.to_owned(), p)
            }),
            None if after.is_empty() => HostPort::NoPort(host.to_owned()),
            None => HostPort::Invalid,
        };
    }
    match text.rsplit_once(':') {
        // More than one colon without brackets: nginx reads a bare IPv6 address.
        Some((host, _)) if host.contains(':') => {
            if text.parse::<Ipv6Addr>().is_ok() {
                HostPort::NoPort(text.to_owned())
            } else {
                HostPort::Invalid
            }
        }
        Some((host, port)) if !host.is_empty() => port.parse().map_or(HostPort::Invalid, |p| {
            HostPort::WithPort(host.to_owned(), p)
        }),
        Some(_) => HostPort::Invalid,
        None if text.is_empty() => HostPort::Invalid,
        None => HostPort::NoPort(text.to_owned()),
    }
}
