//! dns_failure: nginx could not resolve an upstream's name (no resolver defined, the resolver
//! failed or answered "not found", or the name in an `upstream`/`proxy_pass` does not resolve
//! when the configuration is loaded). No restart mends it; with no resolver at all, the
//! runbooks declare one, proposed here.

use gatemend_proto::{Cause, RootCause};

use super::propose::{self, Proposal};
use super::{Diagnosis, Probes};
use crate::detect::Classified;
use crate::edit::{EditableDirective, NginxEdit};
use crate::probe::nginx::{BlockPath, BlockStep};

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    let name = line.name.as_deref().unwrap_or("?");
    let resolvers = p
        .nginx
        .as_ref()
        .map(|n| n.resolvers.join(" "))
        .unwrap_or_default();
    let detail = match line.cause {
        Cause::DnsNoResolver => {
            format!("nginx must resolve `{name}` at request time and no `resolver` is configured")
        }
        Cause::DnsResolutionFailed => {
            let how = match line.rcode {
                Some(1) => "format error",
                Some(2) => "server failure",
                Some(3) => "host not found",
                Some(4) => "not implemented",
                Some(5) => "refused",
                Some(110) => "timed out",
                _ => "failed",
            };
            let by = line
                .resolver
                .as_deref()
                .map(|r| format!(" by {r}"))
                .unwrap_or_default();
            format!("resolving `{name}`{by}: {how}")
        }
        Cause::HostNotFoundInUpstream => {
            let at = line
                .config
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            format!(
                "the upstream host `{name}`{at} does not resolve; nginx cannot load its configuration"
            )
        }
        _ => return None,
    };
    Some(
        Diagnosis::new(RootCause::DnsFailure, detail)
            .probe("dns.name", name)
            .probe("nginx.resolver", resolvers),
    )
}

/// A `resolver` in the `http` block naming the host's own name servers, as `/etc/resolv.conf`
/// lists them (a loopback stub such as systemd-resolved's 127.0.0.53 stays as it is): nginx
/// then resolves names per request the way every other program on the host does.
pub(super) fn propose(p: &Probes) -> Proposal {
    if p.nameservers.is_empty() {
        return Err("/etc/resolv.conf names no nameserver to declare".to_owned());
    }
    // nginx takes IPv6 addresses in brackets and no zone (`fe80::1%eth0`).
    let (usable, zoned): (Vec<&String>, Vec<&String>) =
        p.nameservers.iter().partition(|ns| !ns.contains('%'));
    if usable.is_empty() {
        return Err(format!(
            "the nameservers of /etc/resolv.conf ({}) are link-local addresses with a zone, which nginx's resolver does not take",
            p.nameservers.join(" ")
        ));
    }
    let addresses: Vec<String> = usable
        .iter()
        .map(|ns| {
            if ns.contains(':') {
                format!("[{ns}]")
            } else {
                (*ns).clone()
            }
        })
        .collect();
    let (file, _) = propose::top_block_file(p, "http")?;
    let edit = NginxEdit {
        file: file.to_owned(),
        block_path: BlockPath {
            outer: Vec::new(),
            inner: vec![BlockStep::new("http", &[], [])],
        },
        directive: EditableDirective::Resolver,
        old: None,
        new: addresses.join(" "),
    };
    let skipped = if zoned.is_empty() {
        String::new()
    } else {
        format!(
            " ({} left out: nginx takes no zone)",
            zoned
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let why = format!(
        "the host's name servers, as /etc/resolv.conf lists them: {}{skipped}; declared in the http block, every server and location inherits it",
        addresses.join(" ")
    );
    propose::nginx(p, &edit, why)
}
