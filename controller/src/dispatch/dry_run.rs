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
                let incident = self.incident_id(&f.host, None, &f.id);
                let audited = self.dispatched(&f.host, &incident, policy, request, now);
                self.audit(audited);
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
