//! Who is on the other end of a request: the address failed logins are counted against, and
//! whether the browser reached the UI over TLS (then the session cookie is `__Host-` and
//! `Secure`).
//!
//! The UI itself speaks plain HTTP. TLS, when there is some, ends in front of it: either the
//! operator says so for every request (`--http-secure-cookies`), or a proxy the operator named
//! (`--http-trusted-proxy`) says so per request with `X-Forwarded-Proto: https`. Forwarding
//! headers are believed only from such a proxy, since anyone else can write them; from that
//! proxy, the client's address is the last one its `X-Forwarded-For` names.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::Web;

/// How the UI is reached; set from the controller's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    /// Every request came through TLS (`--http-secure-cookies`).
    pub secure_cookies: bool,
    /// Peers whose `X-Forwarded-Proto` and `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<IpAddr>,
}

/// The client of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its address, as far as the UI can tell.
    pub addr: IpAddr,
    /// Whether it reached the UI over TLS.
    pub secure: bool,
}

impl Client {
    /// The client of a request from `peer` (None when the server did not record the peer:
    /// then every such request counts as one unknown address) with these headers.
    pub fn of(peer: Option<SocketAddr>, headers: &HeaderMap, transport: &Transport) -> Client {
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        let proxied = transport.trusted_proxies.iter().any(|p| same_ip(*p, peer));
        if !proxied {
            return Client {
                addr: peer,
                secure: transport.secure_cookies,
            };
        }
        let https = last_value(headers, "x-forwarded-proto")
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
        let addr = last_value(headers, "x-forwarded-for")
            .and_then(|a| a.parse::<IpAddr>().ok())
            .unwrap_or(peer);
        Client {
            addr,
            secure: transport.secure_cookies || https,
        }
    }
}

/// The last comma-separated value of the last such header: what the nearest proxy added.
fn last_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(name)
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Equal addresses, an IPv4-mapped IPv6 one equal to its IPv4 (a dual-stack listener sees
/// IPv4 peers that way).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

impl FromRequestParts<Web> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Client, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        Ok(Client::of(peer, &parts.headers, &web.inner.transport))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("a header value"));
        }
        h
    }

    fn peer(text: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(text.parse().expect("an address"), 40000))
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_proxy() {
        let transport = Transport {
            secure_cookies: false,
            trusted_proxies: vec!["10.0.0.1".parse().expect("an address")],
        };
        let forwarded = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
        ]);
        assert_eq!(
            Client::of(peer("10.0.0.1"), &forwarded, &transport),
            Client {
                addr: "203.0.113.9".parse().expect("an address"),
                secure: true
            },
            "the proxy's last X-Forwarded-For entry is the client"
        );
        assert!(
            Client::of(peer("::ffff:10.0.0.1"), &forwarded, &transport).secure,
            "the proxy seen through a dual-stack socket"
        );
        assert_eq!(
            Client::of(peer("10.0.0.2"), &forwarded, &transport),
            Client {
                addr: "10.0.0.2".parse().expect("an address"),
                secure: false
            },
            "anyone else's forwarding headers are ignored"
        );
        let plain = headers(&[("x-forwarded-proto", "http"), ("x-forwarded-for", "junk")]);
        assert_eq!(
            Client::of(peer("10.0.0.1"), &plain, &transport),
            Client {
                addr: "10.0.0.1".parse().expect("an address"),
                secure: false
            }
        );
    }

    #[test]
    fn the_flag_makes_every_request_secure_and_no_peer_is_one_unknown_address() {
        let transport = Transport {
            secure_cookies: true,
            trusted_proxies: Vec::new(),
        };
        let client = Client::of(None, &HeaderMap::new(), &transport);
        assert!(client.secure);
        assert_eq!(client.addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
}
