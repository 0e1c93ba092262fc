//! The ActionRequest a decision sends: pure, from the finding and the policy.
//!
//! Action ids are derived, not drawn: `<finding id>@<revision>/<policy>/<index>` (with `/dry`
//! for a dry run). The same finding revision decided again — a controller restarted before the
//! agent's result arrived, and the agent resends the finding — yields the same id, and the
//! agent, which remembers the ids it ran, answers with the first result instead of acting twice.

use std::time::Duration;

use gatemend_proto::ActionKind;
use gatemend_proto::v1::ActionRequest;

use super::error::Unfit;
use crate::decide::Finding;
use crate::policy::Policy;

/// How long an action may take beyond its verification: the D-Bus job itself, `nginx -t`.
pub const WORK_ALLOWANCE: Duration = Duration::from_secs(30);

/// The id of action `index` of `policy` for this finding revision.
pub fn action_id(f: &Finding, policy: &Policy, index: usize, dry_run: bool) -> String {
    let dry = if dry_run { "/dry" } else { "" };
    format!("{}@{}/{}/{index}{dry}", f.id, f.revision, policy.name)
}

/// The finding an action id was derived from (see [`action_id`]); the whole id when it was
/// not derived here.
pub fn finding_of(action_id: &str) -> &str {
    action_id
        .rsplit_once('@')
        .map_or(action_id, |(finding, _)| finding)
}

/// The id under which a decision's chain of actions is in flight.
pub fn chain_id(f: &Finding, policy: &Policy) -> String {
    format!("{}@{}/{}", f.id, f.revision, policy.name)
}

/// The whole deadline the agent gets for one action.
pub fn deadline(policy: &Policy) -> Duration {
    policy.verify.timeout.saturating_add(WORK_ALLOWANCE)
}

/// Action `index` of `policy` (not `escalate`: nothing is sent for that) for `f`.
pub fn build(
    f: &Finding,
    policy: &Policy,
    index: usize,
    kind: ActionKind,
    dry_run: bool,
) -> Result<ActionRequest, Unfit> {
    let mut request = ActionRequest {
        action_id: action_id(f, policy, index, dry_run),
        finding_id: f.id.clone(),
        kind: kind as i32,
        dry_run,
        deadline_ms: millis(deadline(policy)),
        verify_timeout_ms: millis(policy.verify.timeout),
        policy: policy.name.clone(),
        ..ActionRequest::default()
    };
    match kind {
        ActionKind::RestartUnit | ActionKind::StartUnit => {
            if f.unit.is_empty() {
                return Err(Unfit::NoUnit {
                    kind,
                    upstream: f.upstream.clone(),
                });
            }
            request.unit = f.unit.clone();
            // Lets the agent verify the socket the finding is about, not only the unit.
            request.socket_path = socket_path(&f.upstream).unwrap_or_default().to_owned();
        }
        ActionKind::FixSocketOwnership => {
            request.socket_path = socket_path(&f.upstream)
                .ok_or_else(|| Unfit::NoSocket {
                    kind,
                    upstream: f.upstream.clone(),
                })?
                .to_owned();
            // Owner, group and mode stay empty: the agent takes them from the pool's file.
            request.unit = f.unit.clone();
        }
        ActionKind::ReloadNginx => request.unit = "nginx.service".to_owned(),
        ActionKind::EditConfig => {
            let edit = f.edit.as_ref().ok_or_else(|| Unfit::NoEdit {
                kind,
                finding: f.id.clone(),
            })?;
            request.edit = Some(edit.to_wire());
            // One edit at a time per unit on the host: nginx's, or the pool's php-fpm.
            request.unit = match edit.kind {
                gatemend_proto::ConfigKind::PhpFpmPool => f.unit.clone(),
                _ => "nginx.service".to_owned(),
            };
        }
        ActionKind::Escalate | ActionKind::Unspecified => return Err(Unfit::Unknown { kind }),
    }
    Ok(request)
}

/// `unix:/run/php/php8.2-fpm.sock` → `/run/php/php8.2-fpm.sock`.
fn socket_path(upstream: &str) -> Option<&str> {
    upstream
        .strip_prefix("unix:")
        .map(|p| p.trim_end_matches(':'))
        .filter(|p| p.starts_with('/'))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy;

    fn finding(upstream: &str, unit: &str) -> Finding {
        serde_json::from_value(serde_json::json!({
            "id": "web-1/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock",
            "revision": 3,
            "host": "web-1",
            "cause": "upstream_socket_missing",
            "root_cause": "service_down",
            "upstream": upstream,
            "unit": unit,
            "first_seen": 1,
            "last_seen": 2,
        }))
        .unwrap()
    }

    fn restart_policy() -> Policy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.yaml"),
            "policies:\n  - name: restart\n    match: { cause: [upstream_socket_missing] }\n    \
             mode: auto\n    actions: [restart_unit]\n    verify: { timeout: 20s }\n",
        )
        .unwrap();
        policy::load(dir.path()).unwrap().policies()[0].clone()
    }

    #[test]
    fn a_restart_names_the_unit_and_the_socket_and_a_derived_id() {
        let f = finding("unix:/run/php/php8.2-fpm.sock", "php8.2-fpm.service");
        let p = restart_policy();
        let r = build(&f, &p, 0, ActionKind::RestartUnit, false).unwrap();
        assert_eq!(
            r.action_id,
            "web-1/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock@3/restart/0"
        );
        assert_eq!(r.unit, "php8.2-fpm.service");
        assert_eq!(r.socket_path, "/run/php/php8.2-fpm.sock");
        assert_eq!((r.verify_timeout_ms, r.deadline_ms), (20_000, 50_000));
        assert!(!r.dry_run);
        assert_eq!(
            finding_of(&r.action_id),
            "web-1/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock"
        );
        // Deciding the same revision again gives the same id; a dry run another.
        assert_eq!(build(&f, &p, 0, ActionKind::RestartUnit, false).unwrap(), r);
        assert_ne!(
            build(&f, &p, 0, ActionKind::RestartUnit, true)
                .unwrap()
                .action_id,
            r.action_id
        );
    }

    #[test]
    fn a_restart_without_a_unit_and_a_socket_fix_without_a_socket_are_unfit() {
        let p = restart_policy();
        assert_eq!(
            build(
                &finding("127.0.0.1:3000", ""),
                &p,
                0,
                ActionKind::RestartUnit,
                false
            ),
            Err(Unfit::NoUnit {
                kind: ActionKind::RestartUnit,
                upstream: "127.0.0.1:3000".into()
            })
        );
        assert!(matches!(
            build(
                &finding("127.0.0.1:3000", "x.service"),
                &p,
                0,
                ActionKind::FixSocketOwnership,
                false
            ),
            Err(Unfit::NoSocket { .. })
        ));
        assert!(matches!(
            build(
                &finding("unix:relative", "x.service"),
                &p,
                0,
                ActionKind::FixSocketOwnership,
                false
            ),
            Err(Unfit::NoSocket { .. })
        ));
    }
}
