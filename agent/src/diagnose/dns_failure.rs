//! dns_failure: nginx could not resolve an upstream's name (no resolver defined, the resolver
//! failed or answered "not found", or the name in an `upstream`/`proxy_pass` does not resolve
//! when the configuration is loaded). No restart mends it.

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Probes};
use crate::detect::Classified;

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
