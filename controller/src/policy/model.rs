//! Validated policies: what the decision engine reads. Every value here has passed the checks
//! of [`super::validate`]; nothing in `decide` re-checks a range or re-parses an id.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatemend_proto::{ActionKind, Cause, RootCause};
use globset::GlobSet;

/// The SHA-256 of a policy file's bytes; the audit records it with every decision so a
/// reviewer can tell which version of a policy decided.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A loaded policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the operator named it (`policies/php.yaml`).
    pub path: PathBuf,
    /// SHA-256 of its bytes.
    pub digest: Digest,
}

/// Where a policy was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file, shared by every policy it defines.
    pub file: Arc<SourceFile>,
    /// The policy's index in the file's `policies:` list.
    pub index: usize,
}

/// How carefully a policy acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Dispatch the actions at once.
    Auto,
    /// Ask an operator first; dispatch on approval.
    Approve,
    /// Record the plan, run nothing.
    DryRun,
}

impl Mode {
    /// The id as written in policies.
    pub fn id(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Approve => "approve",
            Mode::DryRun => "dry_run",
        }
    }

    pub(super) fn parse(text: &str) -> Option<Mode> {
        [Mode::Auto, Mode::Approve, Mode::DryRun]
            .into_iter()
            .find(|m| m.id() == text)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Compiled globs together with their text (for `explain`).
#[derive(Debug, Clone)]
pub struct Globs {
    /// The globs as written.
    pub patterns: Vec<String>,
    pub(super) set: GlobSet,
}

impl Globs {
    /// Whether any of the globs matches `text` entirely.
    pub fn is_match(&self, text: &str) -> bool {
        self.set.is_match(text)
    }
}

/// Which hosts a policy applies to.
#[derive(Debug, Clone)]
pub struct HostMatch {
    /// Globs on the host name; `None` matches every name.
    pub names: Option<Globs>,
    /// Labels the host must carry, each with exactly this value.
    pub labels: BTreeMap<String, String>,
}

/// At least `count` lines within `within` before the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    /// Lines needed.
    pub count: u64,
    /// The sliding window.
    pub within: Duration,
}

/// Which findings a policy applies to. Empty lists and `None` match everything.
#[derive(Debug, Clone)]
pub struct Match {
    /// Causes (never empty).
    pub causes: Vec<Cause>,
    /// Root causes; empty matches any.
    pub root_causes: Vec<RootCause>,
    /// Globs on the diagnosed unit; a finding without a unit does not match.
    pub units: Option<Globs>,
    /// Host names and labels.
    pub hosts: Option<HostMatch>,
    /// A minimum line count within a window.
    pub threshold: Option<Threshold>,
    /// The finding must carry a proposed configuration edit of one of these directives.
    pub edits: Option<Vec<String>>,
}

/// How long the agent may wait for the service to come back after an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verify {
    /// The verification timeout.
    pub timeout: Duration,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            timeout: Duration::from_secs(30),
        }
    }
}

/// Limits over the whole fleet, counted over every in-flight action of every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetLimit {
    /// Hosts with an action in flight, at most.
    pub max_concurrent: u32,
    /// Percentage of the online hosts with an action in flight, at most, rounded up (so 10%
    /// of 3 hosts is 1 host: a small fleet still heals, one host at a time).
    pub max_percent: u8,
}

/// Hold every host and escalate once when many hosts show one cause at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storm {
    /// Share of the online hosts, in percent.
    pub hosts_percent: u8,
    /// And at least this many hosts ([`DEFAULT_STORM_MIN_HOSTS`] when the policy leaves it
    /// out).
    pub min_hosts: u32,
    /// Seen within this window.
    pub within: Duration,
}

/// A storm's `min_hosts` when the policy does not say: one or two hosts failing together is
/// not a storm, even where they are 30% of a small fleet; they are mended one at a time.
pub const DEFAULT_STORM_MIN_HOSTS: u32 = 3;

/// The guards of a policy. Absent keys take the conservative defaults of [`Guards::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// No second action for the same host and policy within this span.
    pub cooldown: Duration,
    /// Actions of this policy per host (within the attempts window) before escalating instead.
    pub max_attempts: u32,
    /// The attempt count resets once the host has been healthy this long.
    pub attempts_window: Duration,
    /// Fleet-wide limits.
    pub fleet: FleetLimit,
    /// The storm hold, when configured.
    pub storm: Option<Storm>,
}

impl Default for Guards {
    /// Defaults chosen so that a policy that forgets its guards cannot take the fleet down:
    /// one host at a time, five minutes apart, three tries.
    fn default() -> Self {
        Guards {
            cooldown: Duration::from_secs(300),
            max_attempts: 3,
            attempts_window: Duration::from_secs(3600),
            fleet: FleetLimit {
                max_concurrent: 1,
                max_percent: 100,
            },
            storm: None,
        }
    }
}

/// Where escalations of this policy go, and how often a page about an incident that keeps
/// failing is sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalate {
    /// An http(s) URL that receives a JSON POST; without one, the controller's
    /// `--escalate-webhook`.
    pub webhook: Option<String>,
    /// A paged incident still failing this long after its latest page is paged again.
    pub renotify: Duration,
}

/// How often a paged, still failing incident is paged again when the policy does not say
/// (`escalate: { renotify: 30m }`).
pub const DEFAULT_RENOTIFY: Duration = Duration::from_secs(30 * 60);

/// One validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Unique across the set.
    pub name: String,
    /// For humans.
    pub description: String,
    /// Higher is evaluated first.
    pub priority: i32,
    /// The file it came from.
    pub source: Source,
    /// Which findings it applies to.
    pub matcher: Match,
    /// How carefully it acts.
    pub mode: Mode,
    /// What it does, in order; may be empty only in `dry_run` mode.
    pub actions: Vec<ActionKind>,
    /// Verification settings passed to the agent.
    pub verify: Verify,
    /// Its guards.
    pub guards: Guards,
    /// Where its escalations go.
    pub escalate: Option<Escalate>,
    /// How long an approval it asks for (mode `approve`) stays open.
    pub approval_expires: Duration,
}

/// An approval's lifetime when the policy does not say (`approval: { expires: 30m }`).
pub const DEFAULT_APPROVAL_EXPIRY: Duration = Duration::from_secs(30 * 60);

impl Policy {
    /// Its escalations' webhook, when it names one.
    pub fn webhook(&self) -> Option<&str> {
        self.escalate.as_ref().and_then(|e| e.webhook.as_deref())
    }

    /// How often a paged incident it decided is paged again while it keeps failing.
    pub fn renotify(&self) -> Duration {
        self.escalate
            .as_ref()
            .map_or(DEFAULT_RENOTIFY, |e| e.renotify)
    }

    /// True when the policy only notifies a human: nothing runs on a host, so the host and
    /// fleet guards do not apply to it.
    pub fn escalates_only(&self) -> bool {
        !self.actions.is_empty() && self.actions.iter().all(|a| *a == ActionKind::Escalate)
    }
}

/// Every validated policy of a directory, in evaluation order.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Highest priority first; equal priorities keep file-name then file order.
    pub(super) policies: Vec<Policy>,
    /// For each cause (by its wire value), the indices of the policies that match it, in
    /// evaluation order: a finding only looks at the policies of its own cause.
    pub(super) by_cause: Vec<Vec<u32>>,
    pub(super) files: Vec<Arc<SourceFile>>,
}

impl PolicySet {
    pub(super) fn new(mut policies: Vec<Policy>, files: Vec<Arc<SourceFile>>) -> PolicySet {
        // Stable: equal priorities keep the order of the files (sorted by name) and within.
        policies.sort_by_key(|p| std::cmp::Reverse(p.priority));
        let slots = Cause::ALL.iter().map(|c| *c as usize).max().unwrap_or(0) + 1;
        let mut by_cause = vec![Vec::new(); slots];
        for (index, policy) in policies.iter().enumerate() {
            for cause in &policy.matcher.causes {
                if let (Some(slot), Ok(index)) =
                    (by_cause.get_mut(*cause as usize), u32::try_from(index))
                {
                    slot.push(index);
                }
            }
        }
        PolicySet {
            policies,
            by_cause,
            files,
        }
    }

    /// No policy at all: every finding decides `no_policy`.
    pub fn empty() -> PolicySet {
        PolicySet::new(Vec::new(), Vec::new())
    }

    /// Every policy, in evaluation order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The loaded files with their digests, sorted by name.
    pub fn files(&self) -> &[Arc<SourceFile>] {
        &self.files
    }

    /// The policy with this name.
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// The policies that list `cause`, in evaluation order.
    pub fn for_cause(&self, cause: Cause) -> impl Iterator<Item = &Policy> {
        self.by_cause
            .get(cause as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|&i| self.policies.get(i as usize))
    }
}
