//! Why a policy directory was rejected: one [`PolicyError`] per problem, each naming the file,
//! the line and column, and the path of the offending value.

use std::fmt;
use std::path::PathBuf;

use gatemend_proto::UnknownId;

/// A 1-based line and column in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One problem in one policy file, printed as `file:line:col: path: message`.
///
/// `pos` is absent only when the problem has no place inside a file (the file cannot be read,
/// the directory holds no policy file); `path` is empty for problems of the file as a whole
/// (a YAML syntax error).
#[derive(Debug, thiserror::Error)]
#[error("{}", Located(self))]
pub struct PolicyError {
    /// The file (or the directory) as the operator named it: `policies/php.yaml`.
    pub file: PathBuf,
    /// Where in the file.
    pub pos: Option<Pos>,
    /// The value's path in the document: `policies[0].guards.fleet.max_percent`.
    pub path: String,
    /// What is wrong.
    pub problem: Problem,
}

struct Located<'a>(&'a PolicyError);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{}", e.file.display())?;
        if let Some(pos) = e.pos {
            write!(f, ":{pos}")?;
        }
        if !e.path.is_empty() {
            write!(f, ": {}", e.path)?;
        }
        write!(f, ": {}", e.problem)
    }
}

/// What is wrong with a policy value or file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The directory or a file could not be read.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// A `.yaml` file whose bytes are not UTF-8 text.
    #[error("not a YAML file: the bytes are not UTF-8 text")]
    NotUtf8,
    /// What the YAML parser reported: syntax errors, unknown keys, wrong types, missing keys.
    #[error("{0}")]
    Yaml(String),
    /// The directory holds no `*.yaml` file.
    #[error("no policy files (*.yaml) in this directory")]
    NoPolicyFiles,
    /// Every file parsed but none defines a policy.
    #[error("the policy files define no policy: every finding would get no_policy")]
    NoPolicies,
    /// A cause, root cause or action id that does not exist.
    #[error("{0}")]
    UnknownId(UnknownId),
    /// A mode that does not exist.
    #[error("unknown mode `{0}`, expected one of: auto, approve, dry_run")]
    UnknownMode(String),
    /// A duration that does not parse.
    #[error(
        "invalid duration `{text}`: {reason}; write a number and a unit (ms, s, m, h, d), \
         such as 30s, 5m or 1h30m"
    )]
    Duration {
        /// The text as written.
        text: String,
        /// What the parser stumbled on.
        reason: &'static str,
    },
    /// A duration of zero where a span of time is needed.
    #[error("must be longer than 0, got `{0}`")]
    ZeroDuration(String),
    /// A number outside its range (percentages).
    #[error("must be {min}..={max}, got {got}")]
    OutOfRange {
        /// Smallest valid value.
        min: u64,
        /// Largest valid value.
        max: u64,
        /// The value as written.
        got: u64,
    },
    /// A count of zero.
    #[error("must be at least 1, got 0")]
    Zero,
    /// A directive `match.edit` names that no agent can edit.
    #[error(
        "unknown editable directive `{0}`, expected one of: {known}",
        known = gatemend_proto::EDITABLE_DIRECTIVES.join(", ")
    )]
    UnknownDirective(String),
    /// A policy that runs edit_config must say which edits it takes.
    #[error("a policy with edit_config must name the directives it applies in match.edit")]
    EditWithoutMatch,
    /// A list or text that must not be empty.
    #[error("must not be empty")]
    Empty,
    /// `auto` and `approve` need something to run.
    #[error("must name at least one action in {0} mode")]
    NoActions(&'static str),
    /// The same action twice in one policy.
    #[error("`{0}` is listed twice")]
    DuplicateAction(String),
    /// A glob that does not compile.
    #[error("invalid glob `{glob}`: {reason}")]
    Glob {
        /// The glob as written.
        glob: String,
        /// The glob compiler's explanation.
        reason: String,
    },
    /// Two policies with one name (names key the cooldowns and the audit).
    #[error("duplicate policy name `{name}`, first defined at {first}")]
    DuplicateName {
        /// The name.
        name: String,
        /// `file:line:col` of the first definition.
        first: String,
    },
    /// A webhook that is not an http(s) URL.
    #[error("must be an http:// or https:// URL, got `{0}`")]
    Webhook(String),
}
