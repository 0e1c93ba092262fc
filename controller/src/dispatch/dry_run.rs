//! Dry runs: each action's plan is asked for; nothing runs.

use super::*;

impl Dispatcher {
    /// Asks each action of the policy for its plan.
    pub(super) async fn dry_run(&mut self, f: &Finding, policy: &Policy, now: UnixMs) {
        for (index, &kind) in policy.actions.iter().enumerate() {
            if kind == ActionKind::Escalate {
                continue;
            }
            let request = request::build(f, policy, index, kind, true);
            if let Ok(request) = &request {
                self.audit(
                    record(Kind::ActionDispatched, now)
                        .host(&f.host)
                        .incident(self.incident_id(&f.host, None, &f.id))
                        .policy(&policy.name, policy.source.file.digest.to_string())
                        .body(serde_json::json!({
                            "action_id": request.action_id,
                            "kind": kind.to_string(),
                            "unit": request.unit,
                            "socket_path": request.socket_path,
                            "dry_run": true,
                        })),
                );
            }
            let checked = request.and_then(|request| {
                self.fleet
                    .check_send(&f.host, kind)
                    .map(|()| request)
                    .map_err(|e| Unfit::Unsent {
                        kind,
                        why: e.to_string(),
                    })
            });
            match checked {
                Ok(request) => {
                    self.outbox.push(Outgoing::Action {
                        host: f.host.clone(),
                        request,
                    });
                }
                Err(e) => {
                    tracing::warn!(host = %f.host, kind = %kind, policy = %policy.name, error = %e, "Dry run: no plan.");
                }
            }
        }
    }
}
