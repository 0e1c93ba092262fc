//! wrong_target: nginx points at a place no service serves, while the service it means is up
//! elsewhere — the php7.4 → php8.2 socket after an upgrade, a `proxy_pass` port typo. No
//! restart mends it; the runbooks' fix is the pass's target, proposed as an edit of the
//! `fastcgi_pass` / `proxy_pass` where it is written (a snippet's file when it is in one).

use std::net::SocketAddr;
use std::path::PathBuf;

use gatemend_proto::{Cause, RootCause};

use super::propose::{self, Proposal};
use super::target::pool_at;
use super::{Diagnosis, Probes};
use crate::detect::Classified;
use crate::edit::{EditableDirective, NginxEdit};
use crate::probe::nginx::{Pass, PassKind, Target};

/// Where the service really is, and how that was found.
struct Elsewhere {
    /// Where nginx should connect to reach it.
    at: Target,
    /// Where it listens, as the probe saw it (`0.0.0.0:3001`).
    listens: String,
    unit: Option<String>,
    /// How it was found, for the detail: `pool `www` in FILE`.
    how: String,
    /// How it was found, as the proposed edit's reason.
    why: String,
}

/// nginx's target and where the service listens instead, when that is what the probes show.
fn find(line: &Classified<'_>, p: &Probes) -> Option<(Target, Elsewhere)> {
    if !matches!(
        line.cause,
        Cause::UpstreamSocketMissing | Cause::UpstreamRefused
    ) {
        return None;
    }
    let upstream = line.upstream.as_deref()?;
    let target = Target::from_log(upstream)?;
    // nginx's configuration no longer pointing there is the fault mended (the pass was
    // edited), even though nothing will ever serve the old address.
    if p.nginx
        .as_ref()
        .is_some_and(|n| n.passes_to(upstream).is_empty())
    {
        return None;
    }
    let elsewhere = match &target {
        Target::Unix(path) => {
            if pool_at(&p.pools, path).is_some() || p.units_map.contains_key(upstream) {
                return None;
            }
            // A pool that listens on a socket that is there.
            let serving = p.pools.iter().find(|pool| {
                pool.socket_path().is_some_and(|s| {
                    p.sockets
                        .get(std::path::Path::new(s))
                        .is_some_and(|sock| sock.info.is_socket)
                })
            })?;
            let at = Target::Unix(PathBuf::from(serving.socket_path()?));
            let unit = serving.unit();
            Elsewhere {
                why: format!(
                    "{} runs the php-fpm pool `{}` ({}), which listens at {at}, a socket that is there; nothing serves {target}",
                    unit.as_deref().unwrap_or("php-fpm"),
                    serving.name,
                    serving.file.display()
                ),
                listens: at.to_string(),
                at,
                unit,
                how: format!("pool `{}` in {}", serving.name, serving.file.display()),
            }
        }
        Target::Tcp { host, port } => {
            // Only with a unit named for this upstream: where does that unit listen instead?
            let unit = p.units_map.get(upstream)?;
            if crate::probe::listeners::listening_on(&p.listeners, host, *port).is_some() {
                return None;
            }
            let listener = p
                .listeners
                .iter()
                .find(|l| l.unit.as_deref() == Some(unit.as_str()))?;
            Elsewhere {
                at: tcp_target(host, listener.addr),
                listens: listener.addr.to_string(),
                unit: Some(unit.clone()),
                how: format!("the agent config maps {upstream} to it"),
                why: format!(
                    "the agent config maps {upstream} to {unit}, and {unit}'s process listens at {} (/proc/net/tcp); nothing listens at {upstream}",
                    listener.addr
                ),
            }
        }
        Target::Upstream(_) | Target::Variable(_) => return None,
    };
    Some((target, elsewhere))
}

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    let (target, elsewhere) = find(line, p)?;
    let upstream = line.upstream.as_deref().unwrap_or_default();
    let pointed = p
        .nginx
        .as_ref()
        .and_then(|n| {
            n.passes_to(upstream)
                .first()
                .map(|pass| format!(" ({} in {}:{})", pass.raw, pass.file.display(), pass.line))
        })
        .unwrap_or_default();
    let unit = elsewhere.unit.clone();
    let detail = match (&target, &elsewhere.at) {
        (Target::Unix(path), Target::Unix(at)) => format!(
            "nginx points at {}{pointed}, but php-fpm listens at {} ({}, {})",
            path.display(),
            at.display(),
            unit.as_deref().unwrap_or("?"),
            elsewhere.how
        ),
        _ => format!(
            "nginx points at {upstream}{pointed}, but {} listens at {}",
            unit.as_deref().unwrap_or("?"),
            elsewhere.listens
        ),
    };
    Some(
        Diagnosis::new(RootCause::WrongTarget, detail)
            .unit(unit)
            .probe("nginx.target", upstream)
            .probe("service.listens", elsewhere.listens),
    )
}

/// The pass that failed, pointed where the service listens.
pub(super) fn propose(line: &Classified<'_>, p: &Probes) -> Proposal {
    let (_, elsewhere) =
        find(line, p).ok_or_else(|| "the probes no longer show the wrong target".to_owned())?;
    let n = propose::config(p)?;
    let pass = propose::failing_pass(line, n)?;
    let (directive, new) = retarget(pass, &elsewhere.at)?;
    let edit = NginxEdit {
        file: pass.file.clone(),
        block_path: pass.block_path.clone(),
        directive,
        old: Some(pass.raw.clone()),
        new,
    };
    propose::nginx(p, &edit, elsewhere.why)
}

/// Where nginx should connect to reach a listener on `addr`, as close to what the pass wrote
/// as can be: a listener on every address (or on loopback, for a pass to loopback) keeps the
/// pass's host and changes only its port.
fn tcp_target(host: &str, addr: SocketAddr) -> Target {
    let pass_loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let keep_host = addr.ip().is_unspecified() || (addr.ip().is_loopback() && pass_loopback);
    Target::Tcp {
        host: if keep_host {
            host.to_owned()
        } else {
            addr.ip().to_string()
        },
        port: addr.port(),
    }
}

/// The directive and its new value: the pass's target replaced, the scheme and URI of a
/// `proxy_pass` kept.
fn retarget(pass: &Pass, to: &Target) -> Result<(EditableDirective, String), String> {
    match (pass.kind, &pass.target, to) {
        (_, Target::Upstream(name), _) => Err(format!(
            "nginx reaches it through the servers of `upstream {name}`, which the editor does not change"
        )),
        (PassKind::Fastcgi, _, Target::Unix(_) | Target::Tcp { .. }) => {
            Ok((EditableDirective::FastcgiPass, to.to_string()))
        }
        (PassKind::Proxy, _, Target::Tcp { .. }) => {
            let (scheme, rest) = pass
                .raw
                .split_once("://")
                .ok_or_else(|| format!("proxy_pass `{}` has no scheme", pass.raw))?;
            let uri = rest.find('/').map_or("", |at| rest.get(at..).unwrap_or(""));
            Ok((
                EditableDirective::ProxyPass,
                format!("{scheme}://{to}{uri}"),
            ))
        }
        (kind, _, _) => Err(format!(
            "a {} to {to} is not an edit the agent makes",
            pass_name(kind)
        )),
    }
}

fn pass_name(kind: PassKind) -> &'static str {
    match kind {
        PassKind::Proxy => "proxy_pass",
        PassKind::Fastcgi => "fastcgi_pass",
        PassKind::Uwsgi => "uwsgi_pass",
        PassKind::Scgi => "scgi_pass",
        PassKind::Grpc => "grpc_pass",
    }
}
