//! One batch of work: begin (lock, catch up), decide, audit, commit, then send; and the
//! clock's tick.

use super::*;

impl Dispatcher {
    /// Does one batch, again and again while the database is lost: nothing else is decided
    /// meanwhile.
    pub(super) async fn work(&mut self, work: &Work) {
        loop {
            match self.try_work(work).await {
                Ok(()) => {
                    self.health.deciding(now_ms());
                    return;
                }
                Err(e) => {
                    self.health.lost(e.to_string(), now_ms());
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One batch: begin (lock, catch up), decide, append its audit records, commit, then
    /// send. When the audit or the commit fails nothing is sent, the chains are as they were,
    /// and the state is reloaded from the database at the next begin.
    pub(super) async fn try_work(&mut self, work: &Work) -> Result<(), BatchError> {
        let chains_before = self.state_db.as_ref().map(|_| self.chains.clone());
        if let Some(db) = &mut self.state_db {
            *self.session.get_mut() = Some(db.begin(&mut self.state).await?);
            self.drop_chains_of_others();
        }
        let now = now_ms();
        let mut received = Vec::new();
        let mut last_seq = 0;
        match work {
            Work::Events(events) => {
                for Forwarded { seq, event } in events {
                    if let Ingested::Finding { received: at, .. } = event {
                        received.push(*at);
                    }
                    last_seq = last_seq.max(*seq);
                    self.on_event(event.clone(), now_ms()).await;
                }
            }
            Work::Approved => self.dispatch_approved(now).await,
            Work::Tick => self.on_tick(now).await,
        }
        let session = self.session.get_mut().take();
        let written = match self.write_audit().await {
            Ok(()) => match (&mut self.state_db, session) {
                (Some(db), Some(session)) => db
                    .commit(session, &mut self.state)
                    .await
                    .map_err(BatchError::from),
                _ => {
                    self.state.take_changes();
                    Ok(())
                }
            },
            Err(e) => {
                // The session's transaction rolls back as it is dropped.
                if let Some(db) = &mut self.state_db {
                    db.forget_cache();
                }
                Err(BatchError::from(e))
            }
        };
        if let Err(e) = written {
            self.outbox.clear();
            self.audit_queue.clear();
            if let Some(chains) = chains_before {
                self.chains = chains;
            }
            return Err(e);
        }
        for at in received {
            self.stats.decision_latency.observe(at.elapsed());
        }
        self.stats.incidents(self.state.incidents().map(|(_, i)| i));
        self.flush();
        self.decided.send_if_modified(|decided| {
            let moved = last_seq > *decided;
            *decided = (*decided).max(last_seq);
            moved
        });
        Ok(())
    }

    /// Sends what the committed batch decided.
    pub(super) fn flush(&mut self) {
        for out in std::mem::take(&mut self.outbox) {
            match out {
                Outgoing::Action { host, request } => {
                    let id = request.action_id.clone();
                    let kind = ActionKind::try_from(request.kind).unwrap_or_default();
                    let unit = request.unit.clone();
                    let dry_run = request.dry_run;
                    match self.fleet.send_action(&host, request) {
                        Ok(()) if dry_run => {
                            tracing::info!(host = %host, action = %id, kind = %kind, "Dry run: plan requested, nothing runs.");
                        }
                        Ok(()) => {
                            tracing::info!(host = %host, action = %id, kind = %kind, unit = %unit, "Action dispatched.");
                        }
                        // Gone between the decision and now: the chain is given up at its
                        // deadline unless the host reconnects first (then it is sent again).
                        Err(e) => {
                            tracing::warn!(host = %host, action = %id, error = %e, "Action decided but not sent.");
                        }
                    }
                }
                Outgoing::Escalation {
                    webhook,
                    escalation,
                } => self.notifier.escalate(webhook.as_deref(), escalation),
            }
        }
    }

    /// Forgets the chains another controller took over (or that ended) since the last batch.
    pub(super) fn drop_chains_of_others(&mut self) {
        let in_flight = &self.state.data().in_flight;
        let id = &self.id;
        self.chains.retain(|action, chain| {
            let mine = in_flight
                .get(&chain.id)
                .and_then(|a| a.chain.as_ref())
                .is_some_and(|c| c.owner == *id);
            if !mine {
                tracing::info!(action = %action, host = %chain.finding.host, "Chain taken over by another controller (its host reconnected there) or ended.");
            }
            mine
        });
    }

    /// The clock: this controller's heartbeat, the controllers gone silent, the hosts
    /// connected here, timeouts, expiries, approvals given elsewhere.
    pub(super) async fn on_tick(&mut self, now: UnixMs) {
        if self.state_db.is_some() {
            self.state.record_heartbeat(&self.id, now);
            for gone in self.state.silent_controllers(now, CONTROLLER_SILENT) {
                if gone == self.id {
                    continue;
                }
                let hosts = self.state.forget_controller(&gone);
                tracing::warn!(controller = %gone, hosts = hosts.len(), "A controller went silent; its hosts are offline until they reconnect.");
            }
            // The hosts connected here are online here, whatever another controller wrote
            // (it may have taken this one for gone while the database was away).
            for view in self.fleet.hosts() {
                let here = view.online
                    && self
                        .state
                        .host(&view.host)
                        .is_some_and(|h| h.online && h.controller == self.id);
                if view.online && !here {
                    self.state.host_online(&view.host, view.labels, &self.id);
                }
            }
        }
        self.expire(now).await;
        self.expire_orphans(now).await;
        self.expire_approvals(now).await;
        self.settled(now).await;
        self.overdue_retries(now);
        self.renotify(now);
        self.dispatch_approved(now).await;
    }
}
