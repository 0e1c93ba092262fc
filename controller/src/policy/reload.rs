//! Keeping the running policy set current: reload on SIGHUP and when a file of the directory
//! changes (inotify through notify), all or nothing.
//!
//! A reload reads the whole directory again with [`super::load`]. A valid set replaces the
//! running one whole; an invalid one is rejected whole, every problem is logged, and the running
//! set stays. Each outcome is also sent as a [`Reload`] event, for the audit log.
//!
//! Editors write a file in several steps (truncate, write, rename a swap file), so file events
//! are gathered for a short quiet period before one reload; a set whose files and digests equal
//! the running set's is not swapped (nothing changed for the decisions).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::{PolicyError, PolicySet, SourceFile, load};

/// How long the directory must be quiet after a file event before it is read again.
const QUIET: Duration = Duration::from_millis(250);

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// A file of the directory changed.
    FileChange,
}

impl Trigger {
    /// For logs and the audit.
    pub fn id(self) -> &'static str {
        match self {
            Trigger::Signal => "sighup",
            Trigger::FileChange => "file_change",
        }
    }
}

/// The outcome of one reload.
#[derive(Debug, Clone)]
pub enum Reload {
    /// A new set runs now.
    Applied {
        trigger: Trigger,
        policies: usize,
        files: Vec<Arc<SourceFile>>,
    },
    /// The directory reads the same as the running set: nothing to swap.
    Unchanged { trigger: Trigger },
    /// The new set is invalid; the running set stays. One line per problem.
    Rejected {
        trigger: Trigger,
        errors: Vec<String>,
    },
}

/// Why the reloader could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot watch the policy directory {}", dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot listen for SIGHUP")]
    Signal(#[source] std::io::Error),
}

/// Starts reloading `dir` into `running` on SIGHUP and on file changes; each outcome is also
/// sent on `outcomes` (never blocking: a full queue drops the event, the log keeps it).
///
/// Runs until `running` has no receivers left.
pub fn spawn(
    dir: PathBuf,
    running: watch::Sender<Arc<PolicySet>>,
    outcomes: mpsc::Sender<Reload>,
) -> Result<tokio::task::JoinHandle<()>, ReloadError> {
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            // A full queue means a reload is already due: one is enough.
            Ok(event) if !event.kind.is_access() => {
                let _ = changed.try_send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Watching the policy directory failed."),
        })
        .map_err(|source| ReloadError::Watch {
            dir: dir.clone(),
            source,
        })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| ReloadError::Watch {
            dir: dir.clone(),
            source,
        })?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(ReloadError::Signal)?;
    Ok(tokio::spawn(async move {
        // Owned by the task: dropping the watcher stops the events.
        let _watcher = watcher;
        loop {
            let trigger = tokio::select! {
                Some(()) = hangup.recv() => Trigger::Signal,
                Some(()) = changes.recv() => {
                    // Let the editor finish: wait until the directory is quiet.
                    while tokio::time::timeout(QUIET, changes.recv()).await.is_ok_and(|e| e.is_some()) {}
                    Trigger::FileChange
                }
                () = running.closed() => return,
            };
            let outcome = reload(&dir, &running, trigger).await;
            log(&dir, &outcome);
            let _ = outcomes.try_send(outcome);
        }
    }))
}

/// Reads `dir` again and swaps the set when it is valid and different.
async fn reload(dir: &Path, running: &watch::Sender<Arc<PolicySet>>, trigger: Trigger) -> Reload {
    let read = dir.to_path_buf();
    let loaded = match tokio::task::spawn_blocking(move || load(read)).await {
        Ok(loaded) => loaded,
        Err(e) => {
            return Reload::Rejected {
                trigger,
                errors: vec![format!(
                    "{}: reading the policies failed: {e}",
                    dir.display()
                )],
            };
        }
    };
    match loaded {
        Err(errors) => Reload::Rejected {
            trigger,
            errors: errors.iter().map(PolicyError::to_string).collect(),
        },
        Ok(set) if same_files(&set, &running.borrow()) => Reload::Unchanged { trigger },
        Ok(set) => {
            let policies = set.policies().len();
            let files = set.files().to_vec();
            running.send_replace(Arc::new(set));
            Reload::Applied {
                trigger,
                policies,
                files,
            }
        }
    }
}

/// The same files with the same bytes: the same decisions.
fn same_files(a: &PolicySet, b: &PolicySet) -> bool {
    a.files().len() == b.files().len() && a.files().iter().zip(b.files()).all(|(x, y)| x == y)
}

fn log(dir: &Path, outcome: &Reload) {
    match outcome {
        Reload::Applied {
            trigger,
            policies,
            files,
        } => {
            let digests = files
                .iter()
                .map(|f| format!("{}={}", f.path.display(), f.digest))
                .collect::<Vec<_>>()
                .join(" ");
            tracing::info!(dir = %dir.display(), trigger = trigger.id(), policies, files = %digests, "Policies reloaded.");
        }
        Reload::Unchanged { trigger } => {
            tracing::info!(dir = %dir.display(), trigger = trigger.id(), "Policies reread; unchanged.");
        }
        Reload::Rejected { trigger, errors } => {
            for error in errors {
                tracing::error!(dir = %dir.display(), trigger = trigger.id(), error = %error, "Invalid policy.");
            }
            tracing::error!(dir = %dir.display(), trigger = trigger.id(), problems = errors.len(), "Policy reload rejected; the running set stays.");
        }
    }
}
