//! upstream_slow: the service is up and accepts connections, but does not answer in time
//! (nginx's `*_read_timeout`, `*_connect_timeout`). The timeouts nginx applies are the evidence;
//! for a read (or send) timeout the runbooks raise the timeout of that location, proposed here.

use std::time::Duration;

use gatemend_proto::{Cause, RootCause};

use super::propose::{self, Proposal};
use super::{Diagnosis, Probes, unit_for};
use crate::detect::{Classified, Phase};
use crate::edit::{EditableDirective, NginxEdit, value};
use crate::probe::nginx::PassKind;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if !matches!(
        line.cause,
        Cause::UpstreamReadTimeout | Cause::UpstreamConnectTimeout
    ) {
        return None;
    }
    let upstream = line.upstream.as_deref().unwrap_or("?");
    let unit = unit_for(upstream, p).map(|(u, _)| u);
    let timeouts = p
        .nginx
        .as_ref()
        .map(|n| {
            n.timeouts
                .iter()
                .filter(|t| t.name.ends_with("read_timeout") || t.name.ends_with("connect_timeout"))
                .map(|t| format!("{} {}", t.name, t.args.join(" ")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let phase = line
        .phase
        .as_ref()
        .map(|ph| format!(" while {ph}"))
        .unwrap_or_default();
    let limits = if timeouts.is_empty() {
        "nginx's defaults (60s)".to_owned()
    } else {
        timeouts.clone()
    };
    Some(
        Diagnosis::new(
            RootCause::UpstreamSlow,
            format!("{upstream} did not answer in time{phase}; timeouts: {limits}"),
        )
        .unit(unit)
        .probe("nginx.timeouts", timeouts),
    )
}

/// nginx's default for every `*_read_timeout` / `*_send_timeout`.
const NGINX_DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The timeout of the location that timed out, raised: the requests took longer than the
/// timeout in effect there (nginx gave up at it), so the new one is that x1.5, rounded up to
/// whole seconds, never beyond the bound. Set on that location only: added to it when it
/// inherits the timeout, changed where it is set when the location (or a snippet included
/// right in it) sets it.
pub(super) fn propose(line: &Classified<'_>, p: &Probes) -> Proposal {
    let n = propose::config(p)?;
    let pass = propose::failing_pass(line, n)?;
    let sending = matches!(line.phase, Some(Phase::SendingRequest));
    let directive = match (pass.kind, sending) {
        (PassKind::Proxy, false) => EditableDirective::ProxyReadTimeout,
        (PassKind::Proxy, true) => EditableDirective::ProxySendTimeout,
        (PassKind::Fastcgi, false) => EditableDirective::FastcgiReadTimeout,
        (PassKind::Fastcgi, true) => EditableDirective::FastcgiSendTimeout,
        (kind, _) => {
            return Err(format!(
                "the timeouts of {kind:?} passes are not edited by the agent"
            ));
        }
    };
    let name = directive.name();
    let (current, from) = match propose::in_effect(&n.timeouts, name, &pass.block_path) {
        Some(d) => {
            let text = d.args.join(" ");
            let value = value::time(&text).ok_or_else(|| {
                format!(
                    "{name} `{text}` at {}:{} is not a time",
                    d.file.display(),
                    d.line
                )
            })?;
            (value, format!("set at {}:{}", d.file.display(), d.line))
        }
        None => (NGINX_DEFAULT_TIMEOUT, "nginx's default".to_owned()),
    };
    let bound = p.edit_bounds.max_timeout;
    let raised = raise(current, bound).ok_or_else(|| {
        format!(
            "{name} is {} ({from}), at or above the bound {}",
            time_text(current),
            time_text(bound)
        )
    })?;
    let (file, location) = propose::location_of(pass)?;
    let edit = match propose::set_in(&n.timeouts, name, &location)? {
        Some(d) => NginxEdit {
            file: d.file.clone(),
            block_path: d.block_path.clone(),
            directive,
            old: Some(d.args.join(" ")),
            new: time_text(raised),
        },
        None => NginxEdit {
            file,
            block_path: location,
            directive,
            old: None,
            new: time_text(raised),
        },
    };
    let capped = if raised == bound {
        format!(", capped at the bound {}", time_text(bound))
    } else {
        format!(" (bound {})", time_text(bound))
    };
    let scope = if edit.block_path.inner.is_empty() {
        format!(
            "in {}, a snippet included in this location (every location that includes it gets it)",
            edit.file.display()
        )
    } else {
        "on this location only".to_owned()
    };
    let why = format!(
        "requests to {} took longer than {name} {} ({from}), when nginx gave up: x1.5 rounded up to whole seconds is {}{capped}; {scope}",
        line.upstream.as_deref().unwrap_or("the upstream"),
        time_text(current),
        time_text(raised),
    );
    propose::nginx(p, &edit, why)
}

/// `current` x1.5, rounded up to whole seconds, at most `bound`; `None` when that is no raise.
pub(super) fn raise(current: Duration, bound: Duration) -> Option<Duration> {
    let ms = current.as_millis().saturating_mul(3) / 2;
    let secs = u64::try_from(ms.div_ceil(1_000)).unwrap_or(u64::MAX);
    let raised = Duration::from_secs(secs).min(bound);
    (raised > current).then_some(raised)
}

/// A time as nginx writes it: `90s`, or `500ms` below whole seconds.
pub(super) fn time_text(t: Duration) -> String {
    if t.subsec_millis() == 0 {
        format!("{}s", t.as_secs())
    } else {
        format!("{}ms", t.as_millis())
    }
}
