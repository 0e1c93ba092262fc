//! The agent's config file (YAML), e.g. `deploy/agent.example.yaml`.
//!
//! Deserialized straight into typed structs (`deny_unknown_fields`, so a typo is an error with
//! its line and column), then checked for cross-field rules in a second pass that reports every
//! problem at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatemend_proto::ActionKind;
use serde::Deserialize;

use crate::edit::{EditableDirective, PoolKey, value};

/// The whole agent config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's name: the Hello's host and its certificate's DNS name.
    pub host: String,
    /// Operator labels sent in Hello (env, role, ...), matched by policies.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The actions this host allows the controller to ask for.
    #[serde(default)]
    pub allowed_actions: Vec<ActionKind>,
    pub controller: ControllerConfig,
    pub outbox: OutboxConfig,
    /// Where the agent keeps the ids of actions it ran (and their results).
    pub state_dir: PathBuf,
    /// What the actions may touch and how they run (`act/`); every field has a default.
    #[serde(default)]
    pub actions: ActionsConfig,
    /// Which systemd unit serves an upstream, for upstreams diagnosis cannot trace by itself:
    /// `"127.0.0.1:3000": backend.service` (the upstream as nginx's error log names it).
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// How the logs are watched and findings resolved; every field has a default.
    #[serde(default)]
    pub detect: DetectConfig,
}

/// The watching side of the agent (`detect/`, `diagnose/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Logs to tail besides the error logs `nginx -T` names and php-fpm's own.
    #[serde(default)]
    pub logs: Vec<PathBuf>,
    /// Seconds a finding's lines must have stopped (with the probes healthy) before it is
    /// resolved.
    #[serde(default = "default_quiet_secs")]
    pub quiet_secs: u64,
    /// Seconds between two full probe snapshots (nginx -T, pools, units, sockets, listeners).
    #[serde(default = "default_review_secs")]
    pub review_secs: u64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            logs: Vec::new(),
            quiet_secs: default_quiet_secs(),
            review_secs: default_review_secs(),
        }
    }
}

fn default_quiet_secs() -> u64 {
    10
}
fn default_review_secs() -> u64 {
    5
}

/// The host's own limits on the actions: which units and sockets they may touch, where nginx
/// is, how long they may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    /// Globs of the units restart_unit / start_unit may touch (`php*-fpm.service`).
    #[serde(default = "default_action_units")]
    pub units: Vec<String>,
    /// Globs of the socket paths fix_socket_ownership may touch; `*` stops at `/`.
    #[serde(default = "default_action_sockets")]
    pub sockets: Vec<String>,
    /// The nginx binary reload_nginx runs `-t` with.
    #[serde(default = "default_nginx_binary")]
    pub nginx_binary: PathBuf,
    /// nginx's unit; when it is not loaded and active, reload_nginx signals the master from
    /// `nginx_pid_file` instead.
    #[serde(default = "default_nginx_unit")]
    pub nginx_unit: String,
    /// nginx's pid file (the master's pid).
    #[serde(default = "default_nginx_pid_file")]
    pub nginx_pid_file: PathBuf,
    /// nginx's error log, read after a reload for new `[emerg]` lines.
    #[serde(default = "default_nginx_error_log")]
    pub nginx_error_log: PathBuf,
    /// Where a reloaded nginx must answer an HTTP request.
    #[serde(default = "default_nginx_check_addr")]
    pub nginx_check_addr: std::net::SocketAddr,
    /// The user nginx's workers run as: the one that must be able to connect to a socket.
    #[serde(default = "default_worker_user")]
    pub worker_user: String,
    /// The deadline of an action whose request carries none, in milliseconds: the one
    /// default, used by the link's timer and by the actions alike.
    #[serde(default = "default_action_deadline_ms")]
    pub default_deadline_ms: u64,
    /// The longest deadline a request may ask for, in milliseconds; a longer one is clamped
    /// to this (and logged). An action holds its unit's lock until it ends, so a `u32`
    /// deadline of up to 49 days must not be taken at its word.
    #[serde(default = "default_max_deadline_ms")]
    pub max_deadline_ms: u64,
    /// How long verification waits when the request says nothing, in milliseconds.
    #[serde(default = "default_verify_timeout_ms")]
    pub default_verify_timeout_ms: u64,
    /// What fix_socket_ownership may set besides the pool's own values.
    #[serde(default)]
    pub socket_ownership: SocketOwnershipConfig,
    /// What edit_config may change: which directives, in which files, up to which values.
    #[serde(default)]
    pub edits: EditsConfig,
}

/// edit_config's allow-list and bounds. The request names a directive of the editor's closed
/// set; this host says which of them it lets the controller change, in which files (the
/// file's canonical path must match, links resolved), where a pass may point, and how far a
/// value may go. A request outside any of them is refused before the file is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditsConfig {
    /// nginx directives and php-fpm pool keys that may be edited (names as in the files:
    /// `fastcgi_pass`, `pm.max_children`); default: all of the closed set.
    #[serde(default = "default_edit_directives")]
    pub directives: Vec<EditName>,
    /// Globs of the nginx files that may be edited (`**` crosses `/`, `*` does not); the
    /// file's path and its canonical path must both match.
    #[serde(default = "default_edit_nginx_paths")]
    pub nginx_paths: Vec<String>,
    /// Globs of the php-fpm pool files that may be edited.
    #[serde(default = "default_edit_pool_paths")]
    pub pool_paths: Vec<String>,
    /// Where `fastcgi_pass` / `proxy_pass` may point: patterns of the address (`unix:PATH`,
    /// `HOST:PORT`, `[V6]:PORT`, an upstream block's name; `*` matches any run of characters
    /// but `/`). The default keeps passes on this host.
    #[serde(default = "default_edit_targets")]
    pub targets: Vec<String>,
    /// The longest `*_timeout` an edit may set (an nginx time: `300s`, `5m`).
    #[serde(default = "default_edit_max_timeout")]
    pub max_timeout: ConfigTime,
    /// The largest `*_buffer_size`, and each buffer of `*_buffers` (an nginx size: `1m`).
    #[serde(default = "default_edit_max_buffer")]
    pub max_buffer: ConfigSize,
    /// The most buffers a `*_buffers` may name.
    #[serde(default = "default_edit_max_buffers")]
    pub max_buffers: u32,
    /// The most `pm.max_children`.
    #[serde(default = "default_edit_max_children")]
    pub max_children: u32,
    /// The most `worker_connections`.
    #[serde(default = "default_edit_max_worker_connections")]
    pub max_worker_connections: u32,
    /// The most `worker_rlimit_nofile`.
    #[serde(default = "default_edit_max_worker_rlimit_nofile")]
    pub max_worker_rlimit_nofile: u32,
}

impl Default for EditsConfig {
    fn default() -> Self {
        Self {
            directives: default_edit_directives(),
            nginx_paths: default_edit_nginx_paths(),
            pool_paths: default_edit_pool_paths(),
            targets: default_edit_targets(),
            max_timeout: default_edit_max_timeout(),
            max_buffer: default_edit_max_buffer(),
            max_buffers: default_edit_max_buffers(),
            max_children: default_edit_max_children(),
            max_worker_connections: default_edit_max_worker_connections(),
            max_worker_rlimit_nofile: default_edit_max_worker_rlimit_nofile(),
        }
    }
}

/// One name of the editor's closed sets: an nginx directive or a php-fpm pool key, written
/// as in the files. Any other name is an error at its line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditName {
    Nginx(EditableDirective),
    Pool(PoolKey),
}

impl EditName {
    /// The name of `text`, if it is one of the closed sets.
    pub fn from_name(text: &str) -> Option<Self> {
        EditableDirective::from_name(text)
            .map(EditName::Nginx)
            .or_else(|| {
                PoolKey::ALL
                    .into_iter()
                    .find(|k| k.name() == text)
                    .map(EditName::Pool)
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            EditName::Nginx(d) => d.name(),
            EditName::Pool(k) => k.name(),
        }
    }

    /// The kind of value it takes.
    pub fn value_kind(self) -> value::ValueKind {
        match self {
            EditName::Nginx(d) => d.value_kind(),
            EditName::Pool(k) => k.value_kind(),
        }
    }
}

impl<'de> Deserialize<'de> for EditName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EditName::from_name(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not an editable directive or pool key, expected one of: {}",
                gatemend_proto::EDITABLE_DIRECTIVES.join(", ")
            ))
        })
    }
}

/// An nginx time in the config (`300s`, `5m`; a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigTime(pub Duration);

/// An nginx size in the config (`64k`, `1m`; a bare number is bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

/// A YAML string or number read as text, so `300` and `300s` both reach the nginx parsers.
fn scalar_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an nginx time or size (300s, 1m, 64k)")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(Text)
}

impl<'de> Deserialize<'de> for ConfigTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = scalar_text(deserializer)?;
        value::time(&text).map(ConfigTime).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not an nginx time above 0 (300s, 5m, 1m30s)"
            ))
        })
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = scalar_text(deserializer)?;
        value::size(&text).map(ConfigSize).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not an nginx size above 0 (64k, 1m, 4096)"
            ))
        })
    }
}

fn default_edit_directives() -> Vec<EditName> {
    EditableDirective::ALL
        .into_iter()
        .map(EditName::Nginx)
        .chain(PoolKey::ALL.into_iter().map(EditName::Pool))
        .collect()
}
fn default_edit_nginx_paths() -> Vec<String> {
    vec!["/etc/nginx/**".to_owned()]
}
fn default_edit_pool_paths() -> Vec<String> {
    vec!["/etc/php/*/fpm/pool.d/*.conf".to_owned()]
}
fn default_edit_targets() -> Vec<String> {
    [
        "unix:/run/php/*.sock",
        "127.0.0.1:*",
        "[::1]:*",
        "localhost:*",
    ]
    .map(str::to_owned)
    .to_vec()
}
fn default_edit_max_timeout() -> ConfigTime {
    ConfigTime(Duration::from_secs(300))
}
fn default_edit_max_buffer() -> ConfigSize {
    ConfigSize(1 << 20)
}
fn default_edit_max_buffers() -> u32 {
    64
}
fn default_edit_max_children() -> u32 {
    256
}
fn default_edit_max_worker_connections() -> u32 {
    65_536
}
fn default_edit_max_worker_rlimit_nofile() -> u32 {
    131_072
}

/// fix_socket_ownership sets a socket to its pool's `listen.owner`, `listen.group` and
/// `listen.mode` (php-fpm's defaults when unset: the pool's `user` and `group`, `0660`). A
/// request asking for other values is refused unless this host lists them here: the
/// controller must not be able to widen who may speak FastCGI to php-fpm.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketOwnershipConfig {
    /// Owners a request may ask for besides the pool's.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Groups a request may ask for besides the pool's.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Modes (octal text, `0660`) a request may ask for besides the pool's.
    #[serde(default)]
    pub modes: Vec<String>,
    /// Whether a socket may get any permission bit for others (`0o007`), from the pool or a
    /// request. Off: a pool saying `listen.mode = 0666` is refused, since every local user
    /// could then run code as the pool's user.
    #[serde(default)]
    pub allow_others: bool,
}

/// The deadline an action runs under, and whether the request's was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub duration: Duration,
    /// The request's deadline in milliseconds, when it was longer than `max_deadline_ms`.
    pub clamped_from_ms: Option<u64>,
}

impl ActionsConfig {
    /// The deadline of a request asking for `requested_ms` (0: none): `default_deadline_ms`,
    /// or the request's, at most `max_deadline_ms`.
    pub fn deadline(&self, requested_ms: u32) -> Deadline {
        let max = self.max_deadline_ms.max(1);
        let (ms, clamped_from_ms) = match u64::from(requested_ms) {
            0 => (self.default_deadline_ms.min(max), None),
            ms if ms > max => (max, Some(ms)),
            ms => (ms, None),
        };
        Deadline {
            duration: Duration::from_millis(ms),
            clamped_from_ms,
        }
    }
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            units: default_action_units(),
            sockets: default_action_sockets(),
            nginx_binary: default_nginx_binary(),
            nginx_unit: default_nginx_unit(),
            nginx_pid_file: default_nginx_pid_file(),
            nginx_error_log: default_nginx_error_log(),
            nginx_check_addr: default_nginx_check_addr(),
            worker_user: default_worker_user(),
            default_deadline_ms: default_action_deadline_ms(),
            max_deadline_ms: default_max_deadline_ms(),
            default_verify_timeout_ms: default_verify_timeout_ms(),
            socket_ownership: SocketOwnershipConfig::default(),
            edits: EditsConfig::default(),
        }
    }
}

fn default_action_units() -> Vec<String> {
    vec!["php*-fpm.service".to_owned(), "nginx.service".to_owned()]
}
fn default_action_sockets() -> Vec<String> {
    vec!["/run/php/*.sock".to_owned()]
}
fn default_nginx_binary() -> PathBuf {
    PathBuf::from("/usr/sbin/nginx")
}
fn default_nginx_unit() -> String {
    "nginx.service".to_owned()
}
fn default_nginx_pid_file() -> PathBuf {
    PathBuf::from("/run/nginx.pid")
}
fn default_nginx_error_log() -> PathBuf {
    PathBuf::from("/var/log/nginx/error.log")
}
fn default_nginx_check_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 80))
}
fn default_worker_user() -> String {
    "www-data".to_owned()
}
fn default_action_deadline_ms() -> u64 {
    60_000
}
fn default_max_deadline_ms() -> u64 {
    600_000
}
fn default_verify_timeout_ms() -> u64 {
    10_000
}

/// How to reach the controller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// `https://host:port` (or `http://` with `insecure: true`), tried in order.
    pub endpoints: Vec<String>,
    /// Client certificate, key and the CA the controller's certificate must chain to.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Plain text, no certificates. Logged as a warning at every start.
    #[serde(default)]
    pub insecure: bool,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// First reconnect delay in milliseconds; doubles per failure up to `backoff_max_ms`.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// At most this many findings and results sent per second (stays below the controller's
    /// per-agent rate limit when the outbox is resent after an outage).
    #[serde(default = "default_send_rate")]
    pub send_rate_per_sec: u32,
}

/// The files of mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The DNS name in the controller's certificate.
    #[serde(default = "default_server_name")]
    pub server_name: String,
}

/// The on-disk queue of unacked messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    pub dir: PathBuf,
    /// When this many messages wait, the oldest is dropped (and counted, and logged).
    #[serde(default = "default_outbox_max")]
    pub max_messages: usize,
}

fn default_heartbeat_secs() -> u64 {
    10
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_send_rate() -> u32 {
    500
}
fn default_server_name() -> String {
    "gatemend-controller".to_owned()
}
fn default_outbox_max() -> usize {
    10_000
}

impl ControllerConfig {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }
}

/// A config that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit the structs; the message carries line and column.
    #[error("{}:{message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// Cross-field rules, every violation on its own line.
    #[error("{}: {}", path.display(), problems.join(&format!("\n{}: ", path.display())))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// Reads and validates the agent config at `path`.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config: AgentConfig = serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: match e.location() {
            Some(at) => {
                // serde_yaml appends " at line L column C"; the prefix already says it.
                let text = e.to_string();
                let text = text
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                format!("{}:{}: {text}", at.line(), at.column())
            }
            None => format!(" {e}"),
        },
    })?;
    let problems = validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

/// Every cross-field problem of `config`.
pub fn validate(config: &AgentConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if config.host.is_empty()
        || !config
            .host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        problems.push(format!(
            "host: `{}` is not a host name (letters, digits, '-' and '.')",
            config.host
        ));
    }
    let controller = &config.controller;
    if controller.endpoints.is_empty() {
        problems.push("controller.endpoints: must list at least one endpoint".into());
    }
    let scheme = if controller.insecure {
        "http://"
    } else {
        "https://"
    };
    for (i, endpoint) in controller.endpoints.iter().enumerate() {
        if !endpoint.starts_with(scheme) {
            problems.push(format!(
                "controller.endpoints[{i}]: `{endpoint}` must start with {scheme} (insecure: {})",
                controller.insecure
            ));
        }
    }
    match (&controller.tls, controller.insecure) {
        (None, false) => problems.push(
            "controller.tls: required (or set controller.insecure: true for plain text)".into(),
        ),
        (Some(_), true) => {
            problems.push("controller.tls: must not be set together with insecure: true".into());
        }
        _ => {}
    }
    if controller.backoff_initial_ms == 0
        || controller.backoff_max_ms < controller.backoff_initial_ms
    {
        problems.push(
            "controller.backoff_initial_ms: must be at least 1 and at most backoff_max_ms".into(),
        );
    }
    if controller.send_rate_per_sec == 0 {
        problems.push("controller.send_rate_per_sec: must be at least 1".into());
    }
    if config.outbox.max_messages == 0 {
        problems.push("outbox.max_messages: must be at least 1".into());
    }
    if config.allowed_actions.contains(&ActionKind::Unspecified) {
        problems.push("allowed_actions: `unspecified` is not an action".into());
    }
    problems.extend(validate_actions(&config.actions));
    problems
}

/// Every problem of the `actions:` section: globs that do not compile, zero durations.
fn validate_actions(actions: &ActionsConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, globs) in [("units", &actions.units), ("sockets", &actions.sockets)] {
        for (i, glob) in globs.iter().enumerate() {
            if let Err(e) = globset::Glob::new(glob) {
                problems.push(format!("actions.{field}[{i}]: `{glob}` is not a glob: {e}"));
            }
        }
    }
    for (i, glob) in actions.sockets.iter().enumerate() {
        if !glob.starts_with('/') {
            problems.push(format!(
                "actions.sockets[{i}]: `{glob}` must be an absolute path"
            ));
        }
    }
    if actions.default_deadline_ms == 0 || actions.default_verify_timeout_ms == 0 {
        problems.push(
            "actions.default_deadline_ms, default_verify_timeout_ms: must be at least 1".into(),
        );
    }
    if actions.max_deadline_ms < actions.default_deadline_ms {
        problems.push(format!(
            "actions.max_deadline_ms: must be at least default_deadline_ms ({}), got {}",
            actions.default_deadline_ms, actions.max_deadline_ms
        ));
    }
    if actions.max_deadline_ms > u64::from(u32::MAX) {
        problems.push(format!(
            "actions.max_deadline_ms: must be at most {} (a request's deadline is a u32), got {}",
            u32::MAX,
            actions.max_deadline_ms
        ));
    }
    let sockets = &actions.socket_ownership;
    for (i, mode) in sockets.modes.iter().enumerate() {
        match crate::act::fix_socket_ownership::parse_mode(mode) {
            Err(refusal) => {
                problems.push(format!("actions.socket_ownership.modes[{i}]: {refusal}"));
            }
            Ok(bits) if bits & 0o007 != 0 && !sockets.allow_others => problems.push(format!(
                "actions.socket_ownership.modes[{i}]: `{mode}` gives others access; set allow_others: true to allow it"
            )),
            Ok(_) => {}
        }
    }
    for (field, names) in [("owners", &sockets.owners), ("groups", &sockets.groups)] {
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':') {
                problems.push(format!(
                    "actions.socket_ownership.{field}[{i}]: `{name}` is not a user or group name"
                ));
            }
        }
    }
    if actions.worker_user.is_empty() {
        problems.push("actions.worker_user: must name a user".into());
    }
    problems.extend(validate_edits(&actions.edits));
    problems
}

/// Every problem of `actions.edits`: path globs that do not compile or are not absolute,
/// empty target patterns, zero bounds.
fn validate_edits(edits: &EditsConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, globs) in [
        ("nginx_paths", &edits.nginx_paths),
        ("pool_paths", &edits.pool_paths),
    ] {
        for (i, glob) in globs.iter().enumerate() {
            if let Err(e) = globset::Glob::new(glob) {
                problems.push(format!(
                    "actions.edits.{field}[{i}]: `{glob}` is not a glob: {e}"
                ));
            }
            if !glob.starts_with('/') || glob.split('/').any(|part| part == "..") {
                problems.push(format!(
                    "actions.edits.{field}[{i}]: `{glob}` must be an absolute path without `..`"
                ));
            }
        }
    }
    for (i, target) in edits.targets.iter().enumerate() {
        if target.trim().is_empty() || target.chars().any(char::is_whitespace) {
            problems.push(format!(
                "actions.edits.targets[{i}]: `{target}` is not an address pattern"
            ));
        }
    }
    for (field, bound) in [
        ("max_buffers", edits.max_buffers),
        ("max_children", edits.max_children),
        ("max_worker_connections", edits.max_worker_connections),
        ("max_worker_rlimit_nofile", edits.max_worker_rlimit_nofile),
    ] {
        if bound == 0 {
            problems.push(format!("actions.edits.{field}: must be at least 1"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.yaml");
        let config = load(&path).unwrap();
        assert_eq!(config.host, "web1");
        assert_eq!(
            config.allowed_actions,
            [ActionKind::RestartUnit, ActionKind::StartUnit]
        );
    }

    #[test]
    fn a_typo_names_its_line_and_column() {
        let (_dir, path) = write("host: web1\nlabls: {}\n");
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("agent.yaml:2:1: unknown field `labls`"),
            "{err}"
        );
    }

    #[test]
    fn every_cross_field_problem_is_reported_at_once() {
        let (_dir, path) = write(
            "host: web_1\ncontroller:\n  endpoints: [\"http://127.0.0.1:7443\"]\n\
             outbox: {dir: /tmp/o, max_messages: 0}\nstate_dir: /tmp/s\n",
        );
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("host: `web_1`"), "{err}");
        assert!(err.contains("must start with https://"), "{err}");
        assert!(err.contains("controller.tls: required"), "{err}");
        assert!(err.contains("outbox.max_messages"), "{err}");
    }

    #[test]
    fn one_default_deadline_and_a_maximum_for_what_requests_ask() {
        let actions = ActionsConfig::default();
        assert_eq!(actions.deadline(0).duration, Duration::from_secs(60));
        assert_eq!(actions.deadline(0).clamped_from_ms, None);
        let asked = actions.deadline(u32::MAX);
        assert_eq!(asked.duration, Duration::from_secs(600));
        assert_eq!(asked.clamped_from_ms, Some(u64::from(u32::MAX)));
        let (_dir, path) = write(
            "host: web1\ncontroller:\n  endpoints: [\"http://127.0.0.1:7443\"]\n  insecure: true\n\
             outbox: {dir: /tmp/o}\nstate_dir: /tmp/s\n\
             actions: {default_deadline_ms: 90000, max_deadline_ms: 30000}\n",
        );
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains(
                "actions.max_deadline_ms: must be at least default_deadline_ms (90000), got 30000"
            ),
            "{err}"
        );
    }

    #[test]
    fn edit_allow_lists_name_the_closed_set_and_their_bounds_are_nginx_values() {
        let yaml = |edits: &str| {
            format!(
                "host: web1\ncontroller:\n  endpoints: [\"http://127.0.0.1:7443\"]\n  insecure: true\n\
                 outbox: {{dir: /tmp/o}}\nstate_dir: /tmp/s\nactions:\n  edits:\n{edits}"
            )
        };
        let (_dir, path) = write(&yaml(
            "    directives: [fastcgi_pass, pm.max_children]\n    max_timeout: 2m\n    max_buffer: 64k\n",
        ));
        let edits = load(&path).unwrap().actions.edits;
        assert_eq!(
            edits.directives,
            [
                EditName::Nginx(EditableDirective::FastcgiPass),
                EditName::Pool(PoolKey::MaxChildren)
            ]
        );
        assert_eq!(edits.max_timeout, ConfigTime(Duration::from_secs(120)));
        assert_eq!(edits.max_buffer, ConfigSize(64 * 1024));
        assert_eq!(edits.max_children, 256, "a default");
        let (_dir, path) = write(&yaml("    directives: [fastcgi_pass, include]\n"));
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("agent.yaml:9:") && err.contains("`include` is not an editable directive"),
            "{err}"
        );
        let (_dir, path) = write(&yaml("    max_timeout: forever\n"));
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("agent.yaml:9:") && err.contains("`forever` is not an nginx time"),
            "{err}"
        );
        let (_dir, path) = write(&yaml(
            "    nginx_paths: [\"etc/nginx/**\", \"/etc/nginx/../shadow\"]\n    max_children: 0\n",
        ));
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("actions.edits.nginx_paths[0]: `etc/nginx/**` must be an absolute path"),
            "{err}"
        );
        assert!(err.contains("actions.edits.nginx_paths[1]"), "{err}");
        assert!(
            err.contains("actions.edits.max_children: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn socket_values_beyond_the_pools_are_checked_and_others_bits_need_allow_others() {
        let yaml = |socket: &str| {
            format!(
                "host: web1\ncontroller:\n  endpoints: [\"http://127.0.0.1:7443\"]\n  insecure: true\n\
                 outbox: {{dir: /tmp/o}}\nstate_dir: /tmp/s\nactions:\n  socket_ownership: {socket}\n"
            )
        };
        let (_dir, path) = write(&yaml(
            "{owners: [\"a b\"], modes: [\"0666\", \"0999\", \"0640\"]}",
        ));
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("socket_ownership.owners[0]: `a b`"), "{err}");
        assert!(
            err.contains("modes[0]: `0666` gives others access"),
            "{err}"
        );
        assert!(
            err.contains("modes[1]: mode `0999` is not an octal mode"),
            "{err}"
        );
        assert!(!err.contains("modes[2]"), "{err}");
        let (_dir, path) = write(&yaml("{modes: [\"0666\"], allow_others: true}"));
        let config = load(&path).unwrap();
        assert!(config.actions.socket_ownership.allow_others);
    }
}
