//! config_invalid: nginx rejects its configuration. The line says so; `nginx -t` (in the
//! probes) says whether it still does, and its stderr is the evidence.

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Probes};
use crate::detect::Classified;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if line.cause != Cause::ConfigInvalid {
        return None;
    }
    let at = line
        .config
        .as_deref()
        .map(|c| format!(" in {c}"))
        .unwrap_or_default();
    let detail = match &p.nginx_error {
        Some(stderr) => format!(
            "nginx -t fails{at}: {}",
            first_emerg(stderr).unwrap_or("see the evidence")
        ),
        None => format!("nginx reported an invalid configuration{at}; nginx -t passes now"),
    };
    let mut d = Diagnosis::new(RootCause::ConfigInvalid, detail).unit(Some("nginx.service".into()));
    if let Some(stderr) = &p.nginx_error {
        d = d.probe("nginx.test", stderr.trim());
    }
    Some(d)
}

/// The first `[emerg]` line of `nginx -t`'s output.
fn first_emerg(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .find(|l| l.contains("[emerg]"))
        .map(str::trim)
}
