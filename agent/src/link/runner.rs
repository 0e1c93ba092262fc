//! The narrow seam between the link and the actions (`act/`, another stage): the link asks a
//! runner to carry out an ActionRequest it has already checked against the allow-list and the
//! ledger, and sends back whatever the runner answers.

use futures_util::future::BoxFuture;
use gatemend_proto::ActionStatus;
use gatemend_proto::v1::{ActionRequest, ActionStep};

/// How an action ended, without the envelope (action id, host, time) the link adds.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: ActionStatus,
    pub steps: Vec<ActionStep>,
    pub message: String,
}

/// Carries out an action request.
pub trait ActionRunner: Send + Sync + 'static {
    fn run(&self, request: ActionRequest) -> BoxFuture<'static, Outcome>;
}

/// Refuses every action: the actions are not built yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefuseAll;

impl ActionRunner for RefuseAll {
    fn run(&self, _request: ActionRequest) -> BoxFuture<'static, Outcome> {
        Box::pin(std::future::ready(Outcome {
            status: ActionStatus::Refused,
            steps: Vec::new(),
            message: "actions not built yet".into(),
        }))
    }
}
