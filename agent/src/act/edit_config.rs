//! edit_config: one typed configuration edit, applied so that it can always be undone.
//!
//! The request carries a `ConfigEdit` (file, block path, directive, old -> new, the file's
//! SHA-256, the diff the operator approved). Nothing in it is text to write: the agent
//! recomputes the change with its own editor (`crate::edit`) from the directive, the block and
//! the values, within its own allow-list and bounds (`actions.edits`).
//!
//! - [`admit`] (pure): the directive is one of the closed set and allowed here, the path is
//!   plain and matches the kind's globs, the value type-checks and is within its bound, a pass
//!   points where `actions.edits.targets` allows.
//! - [`observe`] (read-only): the file through its canonical path (owner, mode, text),
//!   `nginx -T` (the files nginx reads, its passes), the unit to reload, the name servers.
//! - [`plan`] (pure): the canonical path is allowed too (no escape through a link), the text
//!   still hashes to `file_sha256` (else refused as stale), the editor's result is the diff
//!   that was approved, the unit runs. A dry run returns the plan's lines, the diff among them.
//! - [`apply`]: under the unit's edit lock (`journal.rs`): journal the edit and back the file up
//!   in the state directory, atomic write keeping owner and mode, `nginx -t` / `php-fpm -t`,
//!   `ReloadUnit` over D-Bus, verify (the service runs, a GET through the edited location
//!   answers < 500). On any failure: restore the backup (atomically again), test, reload,
//!   verify the old state, and report `rolled_back` with every step. The journal and the
//!   backup are removed at the end; an agent killed on the way finds them at start
//!   ([`recover`]).
//!
//! The rollback bugs of other agents are impossible here by construction: nothing is created
//! in the configuration directories but the one temp file whose name the journal holds (and
//! that recovery removes), a rollback always tests and reloads, a backup that cannot be read
//! back intact stops the edit before the file is written, and a temp file is removed on every
//! path and at every start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatemend_proto::v1::{ActionRequest, ConfigEdit};
use gatemend_proto::{ActionStatus, ConfigKind, error_chain};
use serde::Serialize;

use super::journal::{self, Entry, FileOwner, ReloadSpec, Stage, UnitDir};
use super::reload_nginx::{alive, children, config_test, log_len, log_since, read_pid};
use super::unit::{Upstream, connect_until, parse_listen};
use super::{Facts, Recorder, Refusal, Settings, matches_any, plain_path, refuse};
use crate::config::{EditName, EditsConfig};
use crate::edit::{
    EditResult, EditableDirective, NginxEdit, PoolEdit, PoolKey, ValueKind, apply_edit,
    apply_pool_edit, sha256_hex, value,
};
use crate::probe::http;
use crate::probe::nginx::{BlockPath, BlockStep, Pass, Target};
use crate::probe::php_fpm::Pool;
use crate::probe::systemd::{JobCall, Systemd, UnitState};

/// The largest configuration file an edit reads: nginx and pool files are a few KiB.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// How long `nginx -t` / `php-fpm -t` may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a rollback's verification waits at most (the old state was serving a moment ago).
const ROLLBACK_VERIFY: Duration = Duration::from_secs(10);

/// The edit a request asks for, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    Nginx(NginxEdit),
    Pool(PoolEdit),
}

impl Requested {
    fn file(&self) -> &Path {
        match self {
            Requested::Nginx(e) => &e.file,
            Requested::Pool(e) => &e.file,
        }
    }

    fn name(&self) -> EditName {
        match self {
            Requested::Nginx(e) => EditName::Nginx(e.directive),
            Requested::Pool(e) => EditName::Pool(e.key),
        }
    }

    fn new_value(&self) -> &str {
        match self {
            Requested::Nginx(e) => &e.new,
            Requested::Pool(e) => &e.new,
        }
    }

    fn value_kind(&self) -> ValueKind {
        match self {
            Requested::Nginx(e) => e.directive.value_kind(),
            Requested::Pool(e) => e.key.value_kind(),
        }
    }

    /// `http > server[_] > location[~ \.php$]`, or `[www]` for a pool.
    fn place(&self) -> String {
        match self {
            Requested::Nginx(e) => e.block_path.to_string(),
            Requested::Pool(e) => format!("[{}]", e.pool),
        }
    }

    fn kind_id(&self) -> &'static str {
        match self {
            Requested::Nginx(_) => "nginx",
            Requested::Pool(_) => "php_fpm_pool",
        }
    }

    fn globs<'a>(&self, edits: &'a EditsConfig) -> (&'static str, &'a [String]) {
        match self {
            Requested::Nginx(_) => ("nginx_paths", &edits.nginx_paths),
            Requested::Pool(_) => ("pool_paths", &edits.pool_paths),
        }
    }
}

/// The request's `ConfigEdit`, typed: the directive of the closed set, the block path, the
/// values. Refused when any part is not what an edit of that kind is.
pub fn requested(request: &ActionRequest) -> Result<(Requested, &ConfigEdit), Refusal> {
    let Some(edit) = request.edit.as_ref() else {
        return refuse("edit_config names no edit");
    };
    if !plain_path(&edit.file) {
        return refuse(format!(
            "file `{}` is not a plain absolute path (no ., .., // or trailing /)",
            edit.file.escape_debug()
        ));
    }
    let sha_ok = edit.file_sha256.len() == 64
        && edit
            .file_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !sha_ok {
        return refuse("file_sha256 is not a SHA-256 in lowercase hex");
    }
    let old = (!edit.old_value.is_empty()).then(|| edit.old_value.clone());
    let file = PathBuf::from(&edit.file);
    let typed = match ConfigKind::try_from(edit.kind).unwrap_or(ConfigKind::Unspecified) {
        ConfigKind::Nginx => {
            let Some(directive) = EditableDirective::from_name(&edit.directive) else {
                return refuse(format!(
                    "`{}` is not an nginx directive this agent edits",
                    edit.directive.escape_debug()
                ));
            };
            let steps = |names: &[String]| -> Result<Vec<BlockStep>, Refusal> {
                names
                    .iter()
                    .map(|s| BlockStep::try_from(s.clone()).map_err(Refusal))
                    .collect()
            };
            Requested::Nginx(NginxEdit {
                file,
                block_path: BlockPath {
                    outer: steps(&edit.block_outer)?,
                    inner: steps(&edit.block)?,
                },
                directive,
                old,
                new: edit.new_value.clone(),
            })
        }
        ConfigKind::PhpFpmPool => {
            let Some(key) = PoolKey::ALL
                .into_iter()
                .find(|k| k.name() == edit.directive)
            else {
                return refuse(format!(
                    "`{}` is not a php-fpm pool key this agent edits",
                    edit.directive.escape_debug()
                ));
            };
            let [pool] = edit.block.as_slice() else {
                return refuse("a pool edit's block must be exactly the pool's name");
            };
            let plain = !pool.is_empty()
                && pool.len() <= 64
                && pool
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, '[' | ']' | ';' | '='));
            if !plain || !edit.block_outer.is_empty() {
                return refuse(format!("`{}` is not a pool name", pool.escape_debug()));
            }
            Requested::Pool(PoolEdit {
                file,
                pool: pool.clone(),
                key,
                old,
                new: edit.new_value.clone(),
            })
        }
        ConfigKind::Unspecified => return refuse("the edit's kind is not nginx or php_fpm_pool"),
    };
    Ok((typed, edit))
}

/// An edit as JSON, the shape `gatemend-agent diagnose --json` prints as a finding's `edit`,
/// for `gatemend-agent act edit_config --edit JSON`.
pub fn parse_edit_json(text: &str) -> Result<ConfigEdit, String> {
    // Fields diagnosis may add later are ignored; a misspelled one leaves its field empty,
    // which the edit's own checks then refuse.
    #[derive(serde::Deserialize)]
    struct Json {
        kind: String,
        file: String,
        #[serde(default)]
        block: Vec<String>,
        #[serde(default)]
        block_outer: Vec<String>,
        directive: String,
        #[serde(default)]
        old_value: String,
        new_value: String,
        file_sha256: String,
        #[serde(default)]
        diff: String,
        #[serde(default)]
        why: String,
    }
    let json: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let kind: ConfigKind = json
        .kind
        .parse()
        .map_err(|e: gatemend_proto::UnknownId| e.to_string())?;
    Ok(ConfigEdit {
        kind: kind as i32,
        file: json.file,
        block: json.block,
        directive: json.directive,
        old_value: json.old_value,
        new_value: json.new_value,
        file_sha256: json.file_sha256,
        diff: json.diff,
        why: json.why,
        block_outer: json.block_outer,
    })
}

/// The pure allow-list check of an edit: nothing is read before it passes.
pub fn admit(request: &ActionRequest, settings: &Settings) -> Result<(), Refusal> {
    let (edit, _) = requested(request)?;
    let edits = &settings.actions.edits;
    let name = edit.name();
    if !edits.directives.contains(&name) {
        return refuse(format!(
            "`{}` is not in this host's allow-list (actions.edits.directives: {})",
            name.name(),
            edits
                .directives
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let (field, globs) = edit.globs(edits);
    let file = edit.file().to_string_lossy();
    if !matches_any(globs, &file) {
        return refuse(format!(
            "file `{file}` is not in this host's allow-list for {} edits (actions.edits.{field}: {})",
            edit.kind_id(),
            globs.join(", ")
        ));
    }
    if let Requested::Nginx(e) = &edit {
        let steps: Vec<BlockStep> = e.block_path.steps().cloned().collect();
        e.directive.allowed_in(&steps).map_err(Refusal)?;
    }
    value::check(edit.value_kind(), edit.new_value()).map_err(|why| {
        Refusal(format!(
            "{} `{}` refused: {why}",
            name.name(),
            edit.new_value().escape_debug()
        ))
    })?;
    check_bound(name, edit.new_value(), edits)
        .map_err(|why| Refusal(format!("{} {why}", name.name())))?;
    if let EditName::Nginx(d @ (EditableDirective::FastcgiPass | EditableDirective::ProxyPass)) =
        name
    {
        let address = pass_address(d, edit.new_value());
        if !edits.targets.iter().any(|p| wildcard_match(p, &address)) {
            return refuse(format!(
                "{} may not point at `{address}` on this host (actions.edits.targets: {})",
                d.name(),
                edits.targets.join(", ")
            ));
        }
    }
    Ok(())
}

/// Whether a (type-checked) value is within the host's bound for its directive; `Err` says
/// which bound.
fn check_bound(name: EditName, text: &str, edits: &EditsConfig) -> Result<(), String> {
    let over = |what: String, field: &str, max: String| {
        Err(format!("{what} is above actions.edits.{field} ({max})"))
    };
    match name.value_kind() {
        ValueKind::Time => {
            let time = value::time(text).unwrap_or_default();
            if time > edits.max_timeout.0 {
                return over(
                    format!("`{text}`"),
                    "max_timeout",
                    format!("{}s", edits.max_timeout.0.as_secs()),
                );
            }
        }
        ValueKind::Size => {
            if value::size(text).unwrap_or(u64::MAX) > edits.max_buffer.0 {
                return over(
                    format!("`{text}`"),
                    "max_buffer",
                    show_size(edits.max_buffer.0),
                );
            }
        }
        ValueKind::Buffers => {
            let (n, each) = value::buffers(text).unwrap_or((u32::MAX, u64::MAX));
            if n > edits.max_buffers {
                return over(
                    format!("`{text}`: {n} buffers"),
                    "max_buffers",
                    edits.max_buffers.to_string(),
                );
            }
            if each > edits.max_buffer.0 {
                return over(
                    format!("`{text}`: each buffer"),
                    "max_buffer",
                    show_size(edits.max_buffer.0),
                );
            }
        }
        ValueKind::Count => {
            let n = value::count(text).unwrap_or(u32::MAX);
            let (field, max) = match name {
                EditName::Pool(PoolKey::MaxChildren) => ("max_children", edits.max_children),
                EditName::Nginx(EditableDirective::WorkerRlimitNofile) => {
                    ("max_worker_rlimit_nofile", edits.max_worker_rlimit_nofile)
                }
                _ => ("max_worker_connections", edits.max_worker_connections),
            };
            if n > max {
                return over(format!("`{text}`"), field, max.to_string());
            }
        }
        ValueKind::FastcgiTarget | ValueKind::ProxyTarget | ValueKind::Resolver => {}
    }
    Ok(())
}

/// `1m`, `64k` or bytes: a size as nginx writes it.
fn show_size(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}m", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{}k", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

/// The address a pass sends to, as `actions.edits.targets` matches it: `fastcgi_pass`'s value
/// itself (`unix:/run/php/php8.2-fpm.sock`, `127.0.0.1:9000`); for `proxy_pass`, the value
/// without its scheme, URI and `$request_uri` (`127.0.0.1:3000`, `unix:/run/app.sock`,
/// `backend`).
pub fn pass_address(directive: EditableDirective, value: &str) -> String {
    let value = value.trim();
    if directive != EditableDirective::ProxyPass {
        return value.to_owned();
    }
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .unwrap_or(value);
    let rest = rest.strip_suffix("$request_uri").unwrap_or(rest);
    if let Some(unix) = rest.strip_prefix("unix:") {
        let path = unix.split(':').next().unwrap_or_default();
        return format!("unix:{path}");
    }
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// Whether `text` matches `pattern`, where `*` is any run of characters but `/` and every
/// other character is itself (`[` included: `[::1]:*` is an IPv6 address, not a class).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it was tried at, to backtrack to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // The star takes one more character, never a `/`.
                Some((sp, st)) if t[st] != '/' => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The unit an edit reloads and locks: nginx's, or the unit of the pool the file holds.
pub fn unit_of(request: &ActionRequest, settings: &Settings, pools: &[Pool]) -> Option<String> {
    let (edit, _) = requested(request).ok()?;
    match edit {
        Requested::Nginx(_) => Some(settings.actions.nginx_unit.clone()),
        Requested::Pool(e) => Some(
            pool_of(pools, &e)
                .and_then(Pool::unit)
                .unwrap_or_else(|| e.file.display().to_string()),
        ),
    }
}

fn pool_of<'p>(pools: &'p [Pool], edit: &PoolEdit) -> Option<&'p Pool> {
    pools
        .iter()
        .find(|p| p.file == edit.file && p.name == edit.pool)
}

/// What observe read for an edit.
#[derive(Debug, Clone)]
pub struct EditFacts {
    /// The file's path with every link resolved, or why it cannot be.
    pub canonical: Result<PathBuf, String>,
    /// The file read through its canonical path.
    pub file: Result<FileFacts, String>,
    /// `nginx -T`: the files nginx reads and its passes, or why it failed.
    pub nginx: Result<NginxFacts, String>,
    /// The host's name servers (`/etc/resolv.conf`): the only ones a `resolver` may name.
    pub nameservers: Vec<String>,
    /// The unit that will be reloaded, when systemd answered.
    pub unit: Option<UnitState>,
}

/// A configuration file as read before the edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub text: String,
    pub owner: FileOwner,
    /// A regular file (not a device, a directory, a fifo).
    pub regular: bool,
}

/// What `nginx -T` said.
#[derive(Debug, Clone, Default)]
pub struct NginxFacts {
    /// The files it listed, as it names them.
    pub files: Vec<PathBuf>,
    /// Every `*_pass`: where a pool's socket is used, to verify a pool edit through nginx.
    pub passes: Vec<Pass>,
}

/// Reads (never changes) what the plan of an edit needs.
pub async fn observe(request: &ActionRequest, settings: &Settings, pools: &[Pool]) -> EditFacts {
    let file = request
        .edit
        .as_ref()
        .map(|e| PathBuf::from(&e.file))
        .unwrap_or_default();
    let canonical =
        std::fs::canonicalize(&file).map_err(|e| format!("cannot resolve {}: {e}", file.display()));
    let file_facts = match &canonical {
        Ok(path) => read_file(path),
        Err(why) => Err(why.clone()),
    };
    let nginx = match crate::probe::nginx::dump(&settings.actions.nginx_binary).await {
        Ok(dump) if dump.success() => {
            let config = dump.config();
            Ok(NginxFacts {
                files: config.files,
                passes: config.passes,
            })
        }
        Ok(dump) => Err(format!(
            "`{} -T` fails now: {}",
            dump.binary.display(),
            dump.stderr
                .lines()
                .find(|l| l.contains("[emerg]"))
                .unwrap_or(dump.stderr.trim())
        )),
        Err(e) => Err(error_chain(&e)),
    };
    let nameservers = crate::probe::resolv::read(&settings.root).unwrap_or_default();
    let unit = match unit_of(request, settings, pools) {
        Some(unit) => match Systemd::system().await {
            Ok(systemd) => systemd.unit_state(&unit).await.ok(),
            Err(_) => None,
        },
        None => None,
    };
    EditFacts {
        canonical,
        file: file_facts,
        nginx,
        nameservers,
        unit,
    }
}

/// Reads a configuration file: its text (UTF-8, at most [`MAX_FILE_BYTES`]), owner and mode.
fn read_file(path: &Path) -> Result<FileFacts, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{} is not UTF-8 text; a person edits it", path.display()))?;
    Ok(FileFacts {
        text,
        owner: FileOwner::of(&meta),
        regular: meta.is_file(),
    })
}

/// How the edit is verified once reloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "service", rename_all = "snake_case")]
pub enum Watch {
    /// nginx: the master in the pid file is the same and alive, its workers are all new, no
    /// new `[emerg]` in the error log.
    Nginx {
        pid_file: PathBuf,
        error_log: PathBuf,
    },
    /// php-fpm: the unit is active and the pool's socket or port accepts.
    PhpFpm { upstream: Option<Upstream> },
}

/// The GET that proves the edited location serves: nginx on loopback, a path the location
/// matches, the server's name as Host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyGet {
    pub addr: SocketAddr,
    pub path: String,
    pub host: Option<String>,
}

impl VerifyGet {
    fn request(&self) -> http::Request {
        http::Request {
            addr: self.addr,
            path: self.path.clone(),
            host: self.host.clone(),
        }
    }

    fn describe(&self) -> String {
        self.request().describe()
    }
}

/// One edit of one file, decided before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EditPlan {
    pub action_id: String,
    /// `nginx` or `php_fpm_pool`.
    pub kind: String,
    /// The file as the request (and `nginx -T`) names it.
    pub file: PathBuf,
    /// The file written: its path with every link resolved.
    pub canonical: PathBuf,
    /// The block path (`http > server[_] > location[~ \.php$]`) or the pool (`[www]`).
    pub place: String,
    pub directive: String,
    pub old_value: String,
    pub new_value: String,
    pub sha256_before: String,
    pub sha256_after: String,
    /// The unified diff, recomputed here and equal to the one approved.
    pub diff: String,
    /// The whole new text: not shown (the diff is), not serialized.
    #[serde(skip)]
    pub new_text: String,
    /// Kept on every text written.
    pub owner: FileOwner,
    /// The test and the unit reloaded.
    pub reload: ReloadSpec,
    pub watch: Watch,
    pub get: Option<VerifyGet>,
    pub verify_timeout_ms: u64,
    /// The unit's journal directory in the state directory.
    pub journal_dir: PathBuf,
    /// Names the journal entry, the backup and the temp file.
    pub key: String,
    /// The atomic write's temp file, beside the file, hidden from nginx's and php-fpm's
    /// include globs (a leading `.`, a `.tmp` end).
    pub temp: PathBuf,
}

impl EditPlan {
    pub(super) fn lines(&self) -> Vec<String> {
        let owner = format!(
            "{}:{} {:04o}",
            self.owner.uid, self.owner.gid, self.owner.mode
        );
        let shown = if self.canonical == self.file {
            self.file.display().to_string()
        } else {
            format!("{} (-> {})", self.file.display(), self.canonical.display())
        };
        let old = if self.old_value.is_empty() {
            "(absent)"
        } else {
            &self.old_value
        };
        let mut lines = vec![format!(
            "edit {shown}, {owner}, sha256 {}: {} {old} -> {} in {}",
            self.sha256_before, self.directive, self.new_value, self.place
        )];
        lines.extend(self.diff.lines().map(str::to_owned));
        let entry = self.journal_dir.join(format!("{}.json", self.key));
        let backup = self.journal_dir.join(format!("{}.backup", self.key));
        lines.push(format!(
            "journal the edit in {} and back the file up to {} (read back, sha256 checked) before writing",
            entry.display(),
            backup.display()
        ));
        lines.push(format!(
            "write {} ({owner}), fsync, rename over {}, fsync the directory; sha256 becomes {}",
            self.temp.display(),
            self.canonical.display(),
            self.sha256_after
        ));
        lines.push(format!(
            "run `{}`; only if it exits 0, D-Bus ReloadUnit(\"{}\", \"replace\") and wait for its JobRemoved",
            self.reload.test.join(" "),
            self.reload.unit
        ));
        let watch = match &self.watch {
            Watch::Nginx {
                pid_file,
                error_log,
            } => format!(
                "the master in {} alive with the same pid, its workers all new, no new [emerg] in {}",
                pid_file.display(),
                error_log.display()
            ),
            Watch::PhpFpm { upstream } => match upstream {
                Some(up) => format!("{} active, {up} accepts", self.reload.unit),
                None => format!("{} active", self.reload.unit),
            },
        };
        let get = match &self.get {
            Some(get) => format!("; {} answers < 500", get.describe()),
            None => String::new(),
        };
        lines.push(format!(
            "verify within {} ms: {watch}{get}",
            self.verify_timeout_ms
        ));
        lines.push(format!(
            "on any failure: restore the backup the same way, `{}`, reload, verify the old state; report rolled_back",
            self.reload.test.join(" ")
        ));
        lines
    }
}

/// The pure planner of an edit.
pub fn plan(
    request: &ActionRequest,
    settings: &Settings,
    facts: &Facts,
) -> Result<EditPlan, Refusal> {
    let (edit, wire) = requested(request)?;
    let Some(seen) = facts.edit.as_ref() else {
        return refuse("the file was not read");
    };
    let edits = &settings.actions.edits;
    let canonical = seen.canonical.clone().map_err(Refusal)?;
    let (field, globs) = edit.globs(edits);
    if !plain_path(&canonical.to_string_lossy())
        || !matches_any(globs, &canonical.to_string_lossy())
    {
        return refuse(format!(
            "{} resolves to {}, outside this host's allow-list (actions.edits.{field}: {})",
            edit.file().display(),
            canonical.display(),
            globs.join(", ")
        ));
    }
    let file = seen.file.clone().map_err(Refusal)?;
    if !file.regular {
        return refuse(format!("{} is not a regular file", canonical.display()));
    }
    let now = sha256_hex(&file.text);
    if now != wire.file_sha256 {
        return refuse(format!(
            "stale: {} has changed since the edit was proposed (sha256 {now}, the edit was computed against {}); nothing was changed",
            edit.file().display(),
            wire.file_sha256
        ));
    }
    let nginx = seen.nginx.as_ref().map_err(|why| {
        Refusal(format!(
            "{why}; no edit is applied while the configuration does not test clean"
        ))
    })?;
    let (result, unit, test, watch, get): (EditResult, String, Vec<String>, Watch, _) = match &edit
    {
        Requested::Nginx(e) => {
            if !nginx.files.contains(&e.file) {
                return refuse(format!(
                    "nginx does not read {} (it is not in `nginx -T`)",
                    e.file.display()
                ));
            }
            if e.directive == EditableDirective::Resolver {
                check_resolver(&e.new, &seen.nameservers)?;
            }
            let result = apply_edit(&file.text, e).map_err(|err| Refusal(err.to_string()))?;
            let actions = &settings.actions;
            (
                result,
                actions.nginx_unit.clone(),
                vec![actions.nginx_binary.display().to_string(), "-t".to_owned()],
                Watch::Nginx {
                    pid_file: actions.nginx_pid_file.clone(),
                    error_log: actions.nginx_error_log.clone(),
                },
                Some(verify_get(&e.block_path, actions.nginx_check_addr)),
            )
        }
        Requested::Pool(e) => {
            let Some(pool) = pool_of(&facts.pools, e) else {
                return refuse(format!(
                    "{} holds no php-fpm pool [{}]",
                    e.file.display(),
                    e.pool
                ));
            };
            let (Some(unit), Some(version)) = (pool.unit(), pool.version.as_ref()) else {
                return refuse(format!(
                    "no php-fpm unit is known for {} (its path names no PHP version)",
                    e.file.display()
                ));
            };
            let result = apply_pool_edit(&file.text, e).map_err(|err| Refusal(err.to_string()))?;
            let upstream = pool.listen.as_deref().and_then(parse_listen);
            let get = upstream.as_ref().and_then(|up| {
                nginx
                    .passes
                    .iter()
                    .find(|pass| serves(pass, up))
                    .map(|pass| verify_get(&pass.block_path, settings.actions.nginx_check_addr))
            });
            (
                result,
                unit,
                vec![format!("/usr/sbin/php-fpm{version}"), "-t".to_owned()],
                Watch::PhpFpm { upstream },
                get,
            )
        }
    };
    if !wire.diff.is_empty() && wire.diff != result.diff {
        return refuse(format!(
            "the approved diff is not what this edit does to {} now; nothing was changed\napproved:\n{}\nnow:\n{}",
            edit.file().display(),
            wire.diff,
            result.diff
        ));
    }
    match &seen.unit {
        Some(state) if state.load_state == "loaded" && state.active_state == "active" => {}
        Some(state) => {
            return refuse(format!(
                "{unit} is {} ({}): edit_config reloads a running unit; nothing was changed",
                state.active_state, state.load_state
            ));
        }
        None => {
            return refuse(format!(
                "systemd did not answer for {unit}: edit_config reloads over D-Bus; nothing was changed"
            ));
        }
    }
    let key: String = sha256_hex(&request.action_id).chars().take(16).collect();
    let name = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = canonical
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".{name}.gatemend-{key}.tmp"));
    // Half the deadline at most: the rest is the rollback's, should verification fail.
    let deadline_ms =
        u64::try_from(settings.deadline(request).duration.as_millis()).unwrap_or(u64::MAX);
    Ok(EditPlan {
        action_id: request.action_id.clone(),
        kind: edit.kind_id().to_owned(),
        file: edit.file().to_owned(),
        canonical,
        place: edit.place(),
        directive: edit.name().name().to_owned(),
        old_value: wire.old_value.clone(),
        new_value: edit.new_value().to_owned(),
        sha256_before: result.sha256_before,
        sha256_after: result.sha256_after,
        diff: result.diff,
        new_text: result.new_text,
        owner: file.owner,
        reload: ReloadSpec {
            unit: unit.clone(),
            test,
        },
        watch,
        get,
        verify_timeout_ms: settings.verify_timeout_ms(request).min(deadline_ms / 2),
        journal_dir: UnitDir::new(&settings.state_dir, &unit).0,
        key,
        temp,
    })
}

/// Every address of a `resolver` must be one of the host's own name servers.
fn check_resolver(value: &str, nameservers: &[String]) -> Result<(), Refusal> {
    for word in value.split_whitespace().filter(|w| !w.contains('=')) {
        let bare = word.trim_start_matches('[');
        let bare = bare.split(']').next().unwrap_or(bare);
        if !nameservers.iter().any(|ns| ns == word || ns == bare) {
            return refuse(format!(
                "resolver `{word}` is not one of this host's name servers (/etc/resolv.conf: {})",
                if nameservers.is_empty() {
                    "none".to_owned()
                } else {
                    nameservers.join(", ")
                }
            ));
        }
    }
    Ok(())
}

/// Whether a pass sends to the pool's socket or port.
fn serves(pass: &Pass, upstream: &Upstream) -> bool {
    match (&pass.target, upstream) {
        (Target::Unix(path), Upstream::Unix(socket)) => path == socket,
        (Target::Tcp { host, port }, Upstream::Tcp(addr)) => {
            *port == addr.port()
                && (host.parse::<std::net::IpAddr>().ok() == Some(addr.ip())
                    || (host == "localhost" && addr.ip().is_loopback()))
        }
        _ => false,
    }
}

/// The GET that verifies an edit at `path`: a request the edited location answers, sent to
/// nginx on loopback at `addr`, with the server's first plain name as Host. The path, by the
/// innermost `location`:
///
/// - `= /p`, `^~ /p`, `/p`: `/p` itself;
/// - a regex (`~`, `~*`) ending in an extension (`\.php$`, `[^/]\.php(/|$)`): `/index.EXT`;
/// - anything else (another regex, a named location, no location: `http`, `server`): `/`.
pub fn verify_get(path: &BlockPath, addr: SocketAddr) -> VerifyGet {
    let steps: Vec<&BlockStep> = path.steps().collect();
    let location = steps.iter().rev().find(|s| s.directive == "location");
    let uri = location
        .map(|l| location_path(&l.key))
        .filter(|p| http::request_bytes(p, None).is_ok())
        .unwrap_or_else(|| "/".to_owned());
    let host = steps
        .iter()
        .rev()
        .find(|s| s.directive == "server")
        .and_then(|s| {
            s.key
                .split_whitespace()
                .find(|name| {
                    *name != "_"
                        && !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                })
                .map(str::to_owned)
        });
    VerifyGet {
        addr,
        path: uri,
        host,
    }
}

fn location_path(key: &str) -> String {
    let mut words = key.split_whitespace();
    let (first, second) = (words.next().unwrap_or_default(), words.next());
    match (first, second) {
        ("=" | "^~", Some(path)) => path.to_owned(),
        ("~" | "~*", Some(regex)) => regex_example(regex),
        (path, None) if path.starts_with('/') => path.to_owned(),
        _ => "/".to_owned(),
    }
}

/// `/index.EXT` for a regex whose last `\.` is followed by letters or digits (`\.php$`),
/// else `/`.
fn regex_example(regex: &str) -> String {
    regex
        .rfind("\\.")
        .map(|at| {
            regex
                .get(at + 2..)
                .unwrap_or_default()
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect::<String>()
        })
        .filter(|ext| !ext.is_empty())
        .map_or_else(|| "/".to_owned(), |ext| format!("/index.{ext}"))
}

/// The precheck's output: the file and the service the plan was made from.
pub(super) fn describe(facts: &Facts) -> String {
    let Some(seen) = &facts.edit else {
        return String::new();
    };
    let mut lines = Vec::new();
    match (&seen.canonical, &seen.file) {
        (Ok(path), Ok(file)) => lines.push(format!(
            "{}: {}:{} {:04o}, {} bytes, sha256 {}",
            path.display(),
            file.owner.uid,
            file.owner.gid,
            file.owner.mode,
            file.text.len(),
            sha256_hex(&file.text)
        )),
        (_, Err(why)) | (Err(why), _) => lines.push(why.clone()),
    }
    match &seen.nginx {
        Ok(n) => lines.push(format!("nginx -T: {} files, test passes", n.files.len())),
        Err(why) => lines.push(why.clone()),
    }
    if let Some(state) = &seen.unit {
        lines.push(super::unit::describe_state(state));
    }
    lines.join("\n")
}

/// Applies the plan. The work runs on a task of its own: should the action's deadline drop
/// this future, the task still finishes (rolls back) and only then lets go of the unit's
/// edit lock.
pub async fn apply(plan: &EditPlan, rec: &Recorder) -> (ActionStatus, String) {
    let (plan, task_rec) = (plan.clone(), rec.clone());
    match tokio::spawn(async move { run(&plan, &task_rec).await }).await {
        Ok(done) => done,
        Err(e) => (
            ActionStatus::Failed,
            format!(
                "the edit's task ended abnormally: {e}; the journal is finished at the next start"
            ),
        ),
    }
}

/// A step's outcome: what to tell, and whether it went well.
type Step = Result<String, String>;

async fn run(plan: &EditPlan, rec: &Recorder) -> (ActionStatus, String) {
    let dir = UnitDir(plan.journal_dir.clone());
    let started = Instant::now();
    rec.begin("journal");
    let prepared = prepare(plan, &dir).await;
    let Prepared {
        lock,
        entry,
        original,
        baseline,
    } = match prepared {
        Ok(ready) => ready,
        Err((status, why)) => {
            rec.record("journal", started, false, why.clone());
            return (status, why);
        }
    };
    rec.record(
        "journal",
        started,
        true,
        format!(
            "{} written (stage pending); backup {} read back, sha256 {}\nbaseline: {}",
            dir.entry_path(&plan.key).display(),
            entry.backup.display(),
            plan.sha256_before,
            baseline
                .as_ref()
                .map_or_else(|| "no GET".to_owned(), |(line, _)| line.clone())
        ),
    );
    let baseline_ok = baseline.as_ref().is_some_and(|(_, status)| *status < 500);
    let mut entry = entry;

    let started = Instant::now();
    let written = write(plan, &dir, &mut entry, &original);
    let failure = match written {
        Ok(text) => {
            rec.record("write", started, true, text);
            forward(plan, rec).await
        }
        Err(why) => {
            rec.record("write", started, false, why.clone());
            Some(why)
        }
    };
    let outcome = match failure {
        None => {
            let started = Instant::now();
            entry.stage = Stage::Verified;
            let cleaned = dir
                .write_entry(&plan.key, &entry)
                .and_then(|()| dir.remove(&plan.key));
            match cleaned {
                Ok(()) => rec.record(
                    "cleanup",
                    started,
                    true,
                    format!("journal entry and backup removed from {}", dir.0.display()),
                ),
                Err(e) => rec.record("cleanup", started, false, error_chain(&e)),
            }
            (
                ActionStatus::Succeeded,
                format!(
                    "{}: {} {} -> {} in {}; `{}` passed, {} reloaded and verified",
                    plan.file.display(),
                    plan.directive,
                    if plan.old_value.is_empty() {
                        "(absent)"
                    } else {
                        &plan.old_value
                    },
                    plan.new_value,
                    plan.place,
                    plan.reload.test.join(" "),
                    plan.reload.unit
                ),
            )
        }
        Some(why) => rollback(plan, &dir, &mut entry, &why, baseline_ok, rec).await,
    };
    drop(lock);
    outcome
}

/// What [`prepare`] leaves ready for the write.
struct Prepared {
    /// The unit's edit lock, held to the end of the edit (rollback included).
    lock: journal::UnitEditLock,
    entry: Entry,
    /// The file's text, hashed again right now.
    original: String,
    /// The GET before the edit: its line and status (599 when it got none).
    baseline: Option<(String, u16)>,
}

/// Lock, a last hash check, the baseline GET, the journal entry and the backup: everything
/// before the file is touched. `Err` touched nothing outside the state directory.
async fn prepare(plan: &EditPlan, dir: &UnitDir) -> Result<Prepared, (ActionStatus, String)> {
    let failed = |e: journal::JournalError| {
        (
            ActionStatus::Failed,
            format!("{}; nothing was changed", error_chain(&e)),
        )
    };
    dir.create().map_err(failed)?;
    let Some(lock) = dir.try_lock().map_err(failed)? else {
        return Err((
            ActionStatus::Refused,
            format!(
                "another agent process is editing {}'s configuration now; nothing was changed",
                plan.reload.unit
            ),
        ));
    };
    let pending = dir.entries().map_err(failed)?;
    if let Some((key, _)) = pending.first() {
        return Err((
            ActionStatus::Refused,
            format!(
                "an earlier edit of {}'s configuration ({}) is not finished; the agent finishes it at its next start; nothing was changed",
                plan.reload.unit,
                dir.entry_path(key).display()
            ),
        ));
    }
    let original = read_file(&plan.canonical)
        .map_err(|why| (ActionStatus::Failed, format!("{why}; nothing was changed")))?
        .text;
    if sha256_hex(&original) != plan.sha256_before {
        return Err((
            ActionStatus::Refused,
            format!(
                "stale: {} changed since the plan was made; nothing was changed",
                plan.file.display()
            ),
        ));
    }
    let baseline = match &plan.get {
        Some(get) => Some(match http::get(&get.request()).await {
            Ok(status) => (format!("{} -> {status}", get.describe()), status),
            Err(e) => (format!("{}: {}", get.describe(), error_chain(&e)), 599),
        }),
        None => None,
    };
    let entry = Entry {
        action_id: plan.action_id.clone(),
        file: plan.canonical.clone(),
        temp: plan.temp.clone(),
        backup: dir.backup_path(&plan.key),
        sha256_before: plan.sha256_before.clone(),
        sha256_after: plan.sha256_after.clone(),
        uid: plan.owner.uid,
        gid: plan.owner.gid,
        mode: plan.owner.mode,
        reload: plan.reload.clone(),
        stage: Stage::Pending,
    };
    dir.write_entry(&plan.key, &entry).map_err(failed)?;
    // The backup must read back intact before the file is touched: an edit without a
    // backup it could restore is not made.
    let backed_up = journal::write_durable(
        &entry.backup,
        &dir.0.join(format!(".{}.backup.tmp", plan.key)),
        original.as_bytes(),
    )
    .map_err(|e| error_chain(&e))
    .and_then(|()| {
        std::fs::read(&entry.backup)
            .map_err(|e| format!("cannot read back {}: {e}", entry.backup.display()))
    })
    .and_then(|bytes| {
        let text = String::from_utf8_lossy(&bytes);
        if sha256_hex(&text) == plan.sha256_before {
            Ok(())
        } else {
            Err(format!(
                "the backup {} does not read back as the file's text",
                entry.backup.display()
            ))
        }
    });
    if let Err(why) = backed_up {
        let _ = dir.remove(&plan.key);
        return Err((
            ActionStatus::Failed,
            format!("no backup: {why}; the file was not written"),
        ));
    }
    Ok(Prepared {
        lock,
        entry,
        original,
        baseline,
    })
}

/// The stage `writing` journalled, then the new text in place; read back.
fn write(plan: &EditPlan, dir: &UnitDir, entry: &mut Entry, original: &str) -> Step {
    entry.stage = Stage::Writing;
    dir.write_entry(&plan.key, entry)
        .map_err(|e| error_chain(&e))?;
    // Last look before the rename: a file changed under us is not overwritten.
    let now = read_file(&plan.canonical)?;
    if now.text != original {
        return Err(format!(
            "stale: {} changed while the edit was prepared; it was not written",
            plan.file.display()
        ));
    }
    journal::write_atomic(
        &plan.canonical,
        &plan.temp,
        plan.new_text.as_bytes(),
        &plan.owner,
    )
    .map_err(|e| error_chain(&e))?;
    let back = read_file(&plan.canonical)?;
    let sha = sha256_hex(&back.text);
    if sha != plan.sha256_after || back.owner != plan.owner {
        return Err(format!(
            "{} reads back as sha256 {sha}, {}:{} {:04o}; expected {}",
            plan.canonical.display(),
            back.owner.uid,
            back.owner.gid,
            back.owner.mode,
            plan.sha256_after
        ));
    }
    Ok(format!(
        "{} -> {} ({}:{} {:04o}), fsynced, renamed, directory fsynced; sha256 {}",
        plan.temp.display(),
        plan.canonical.display(),
        plan.owner.uid,
        plan.owner.gid,
        plan.owner.mode,
        sha
    ))
}

/// Test, reload, verify. `None`: all passed; `Some(why)`: the first failure.
async fn forward(plan: &EditPlan, rec: &Recorder) -> Option<String> {
    let started = Instant::now();
    rec.begin("test");
    match test(&plan.reload.test).await {
        Ok(out) => rec.record("test", started, true, out),
        Err(out) => {
            rec.record("test", started, false, out.clone());
            let why = out
                .lines()
                .find(|l| l.contains("[emerg]") || l.contains("ERROR"))
                .or_else(|| out.lines().last())
                .unwrap_or("")
                .trim()
                .to_owned();
            return Some(format!("`{}` failed: {why}", plan.reload.test.join(" ")));
        }
    }
    let before = Before::read(&plan.watch);
    let started = Instant::now();
    rec.begin("reload");
    match reload(&plan.reload.unit, JobCall::Reload, rec).await {
        Ok(out) => rec.record("reload", started, true, out),
        Err(out) => {
            rec.record("reload", started, false, out.clone());
            return Some(format!("the reload of {} failed", plan.reload.unit));
        }
    }
    let started = Instant::now();
    rec.begin("verify");
    let until = started + Duration::from_millis(plan.verify_timeout_ms);
    match verify(plan, &before, until, true).await {
        Ok(out) => {
            rec.record("verify", started, true, out);
            None
        }
        Err(out) => {
            rec.record("verify", started, false, out.clone());
            Some(format!(
                "verification failed within {} ms: {}",
                plan.verify_timeout_ms,
                out.lines().last().unwrap_or_default()
            ))
        }
    }
}

/// Restore, test, reload, verify the old state; the journal is removed once the file holds
/// its old text again.
async fn rollback(
    plan: &EditPlan,
    dir: &UnitDir,
    entry: &mut Entry,
    why: &str,
    baseline_ok: bool,
    rec: &Recorder,
) -> (ActionStatus, String) {
    let started = Instant::now();
    entry.stage = Stage::Restoring;
    let journalled = dir.write_entry(&plan.key, entry);
    let restored = restore(entry).map(|text| match journalled {
        Ok(()) => text,
        Err(e) => format!(
            "{text}\n(the journal's stage could not be updated: {})",
            error_chain(&e)
        ),
    });
    match restored {
        Ok(text) => rec.record("rollback_restore", started, true, text),
        Err(text) => {
            rec.record("rollback_restore", started, false, text.clone());
            tracing::error!(file = %plan.canonical.display(), backup = %entry.backup.display(), "An edit failed and its rollback could not restore the file; the journal is kept for the next start.");
            return (
                ActionStatus::Failed,
                format!(
                    "{why}; the rollback could not restore {}: {text}; the journal and backup are kept and the agent retries at its next start",
                    plan.canonical.display()
                ),
            );
        }
    }
    // The old text is back: whatever happens next, nothing of the edit is left on disk.
    let cleaned = dir.remove(&plan.key);
    let started = Instant::now();
    rec.begin("rollback_test");
    match test(&plan.reload.test).await {
        Ok(out) => rec.record("rollback_test", started, true, out),
        Err(out) => {
            rec.record("rollback_test", started, false, out);
            return (
                ActionStatus::Failed,
                format!(
                    "{why}; {} was restored, but `{}` fails on the restored configuration, so it was not reloaded",
                    plan.canonical.display(),
                    plan.reload.test.join(" ")
                ),
            );
        }
    }
    let before = Before::read(&plan.watch);
    // A unit the edit stopped is started again; a running one is reloaded.
    let running = match &plan.watch {
        Watch::Nginx { .. } => before.master.is_some(),
        Watch::PhpFpm { .. } => unit_active(&plan.reload.unit).await,
    };
    let call = match (running, &plan.watch) {
        (true, _) => JobCall::Reload,
        (false, Watch::Nginx { .. }) => JobCall::Start,
        (false, Watch::PhpFpm { .. }) => JobCall::Restart,
    };
    let started = Instant::now();
    rec.begin("rollback_reload");
    match reload(&plan.reload.unit, call, rec).await {
        Ok(out) => rec.record("rollback_reload", started, true, out),
        Err(out) => {
            rec.record("rollback_reload", started, false, out);
            return (
                ActionStatus::Failed,
                format!(
                    "{why}; {} was restored and tests clean, but {} of {} failed",
                    plan.canonical.display(),
                    call.method(),
                    plan.reload.unit
                ),
            );
        }
    }
    let started = Instant::now();
    rec.begin("rollback_verify");
    let until = started + Duration::from_millis(plan.verify_timeout_ms).min(ROLLBACK_VERIFY);
    // The old state answered < 500 before the edit: it must again. One that did not (the
    // edit was the fix) is only required to run.
    match verify(plan, &before, until, baseline_ok).await {
        Ok(mut out) => {
            if let Err(e) = cleaned {
                out.push_str(&format!("\n(journal cleanup: {})", error_chain(&e)));
            }
            rec.record("rollback_verify", started, true, out);
            (
                ActionStatus::RolledBack,
                format!(
                    "rolled back: {why}; {} restored (sha256 {}), `{}` passed, {} reloaded and serving the old configuration",
                    plan.canonical.display(),
                    plan.sha256_before,
                    plan.reload.test.join(" "),
                    plan.reload.unit
                ),
            )
        }
        Err(out) => {
            rec.record("rollback_verify", started, false, out.clone());
            (
                ActionStatus::Failed,
                format!(
                    "{why}; {} was restored and {} reloaded, but the old state did not verify: {}",
                    plan.canonical.display(),
                    plan.reload.unit,
                    out.lines().last().unwrap_or_default()
                ),
            )
        }
    }
}

/// The backup back in place, atomically, with the file's owner and mode; read back.
fn restore(entry: &Entry) -> Step {
    let backup = std::fs::read(&entry.backup)
        .map_err(|e| format!("cannot read the backup {}: {e}", entry.backup.display()))?;
    let text = String::from_utf8(backup).map_err(|_| {
        format!(
            "the backup {} is not the file's text",
            entry.backup.display()
        )
    })?;
    if sha256_hex(&text) != entry.sha256_before {
        return Err(format!(
            "the backup {} does not hash to {}",
            entry.backup.display(),
            entry.sha256_before
        ));
    }
    let owner = FileOwner {
        uid: entry.uid,
        gid: entry.gid,
        mode: entry.mode,
    };
    // A write that failed before its rename left the old text: nothing to put back (and a
    // read-only /etc would refuse the restore as it refused the write).
    if let Ok(now) = read_file(&entry.file)
        && sha256_hex(&now.text) == entry.sha256_before
        && now.owner == owner
    {
        return Ok(format!(
            "{} already holds its old text (sha256 {}); nothing to restore",
            entry.file.display(),
            entry.sha256_before
        ));
    }
    journal::write_atomic(&entry.file, &entry.temp, text.as_bytes(), &owner)
        .map_err(|e| error_chain(&e))?;
    let back = read_file(&entry.file)?;
    let sha = sha256_hex(&back.text);
    if sha != entry.sha256_before {
        return Err(format!(
            "{} reads back as sha256 {sha} after the restore",
            entry.file.display()
        ));
    }
    Ok(format!(
        "{} -> {} ({}:{} {:04o}); sha256 {sha}",
        entry.backup.display(),
        entry.file.display(),
        owner.uid,
        owner.gid,
        owner.mode
    ))
}

/// Runs the configuration test; `Ok(output)` when it passed.
async fn test(argv: &[String]) -> Step {
    match tokio::time::timeout(TEST_TIMEOUT, config_test(argv)).await {
        Ok(Ok((true, out))) => Ok(out),
        Ok(Ok((false, out))) => Err(out),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!(
            "`{}` did not finish within {} s",
            argv.join(" "),
            TEST_TIMEOUT.as_secs()
        )),
    }
}

/// A job on the unit over D-Bus (`ReloadUnit`, or `StartUnit`/`RestartUnit` in a rollback
/// when the edit stopped it); its calls and answers.
async fn reload(unit: &str, call: JobCall, rec: &Recorder) -> Step {
    let systemd = Systemd::system().await.map_err(|e| error_chain(&e))?;
    let mut lines = Vec::new();
    let run = systemd
        .run_job(unit, call, &mut |line| {
            rec.note(line.clone());
            lines.push(line);
        })
        .await;
    match run {
        Ok(job) if job.done() => Ok(lines.join("\n")),
        Ok(job) => {
            lines.push(format!("the job ended with {}", job.result));
            Err(lines.join("\n"))
        }
        Err(e) => {
            lines.push(error_chain(&e));
            Err(lines.join("\n"))
        }
    }
}

async fn unit_active(unit: &str) -> bool {
    match Systemd::system().await {
        Ok(systemd) => systemd
            .unit_state(unit)
            .await
            .is_ok_and(|s| s.active_state == "active"),
        Err(_) => false,
    }
}

/// What the service looked like just before a reload.
struct Before {
    /// nginx's master, when it runs.
    master: Option<u32>,
    workers: Vec<u32>,
    log_from: u64,
}

impl Before {
    fn read(watch: &Watch) -> Self {
        match watch {
            Watch::Nginx {
                pid_file,
                error_log,
            } => {
                let master = read_pid(pid_file).ok().filter(|&pid| alive(pid));
                Before {
                    master,
                    workers: master.map(children).unwrap_or_default(),
                    log_from: log_len(error_log),
                }
            }
            Watch::PhpFpm { .. } => Before {
                master: None,
                workers: Vec::new(),
                log_from: 0,
            },
        }
    }
}

/// Polls until the service is up after the reload and the GET answers as required, or `until`
/// passes; a new `[emerg]` fails at once. `need_answer`: the GET must answer < 500 (else its
/// status is only reported).
async fn verify(plan: &EditPlan, before: &Before, until: Instant, need_answer: bool) -> Step {
    let mut last = Vec::new();
    loop {
        let mut out = Vec::new();
        let up = match &plan.watch {
            Watch::Nginx {
                pid_file,
                error_log,
            } => {
                let master = read_pid(pid_file).ok().filter(|&pid| alive(pid));
                let workers = master.map(children).unwrap_or_default();
                let same = before.master.is_none() || master == before.master;
                let new =
                    !workers.is_empty() && workers.iter().all(|w| !before.workers.contains(w));
                out.push(format!(
                    "master {master:?} (before {:?}), workers {:?} -> {workers:?}",
                    before.master, before.workers
                ));
                let emerg: Vec<String> = log_since(error_log, before.log_from)
                    .lines()
                    .filter(|l| l.contains("[emerg]"))
                    .map(str::to_owned)
                    .collect();
                if !emerg.is_empty() {
                    out.push(format!(
                        "new [emerg] in {}: {}",
                        error_log.display(),
                        emerg.join("\n")
                    ));
                    return Err(out.join("\n"));
                }
                master.is_some() && same && new
            }
            Watch::PhpFpm { upstream } => {
                let active = unit_active(&plan.reload.unit).await;
                out.push(format!("{} active: {active}", plan.reload.unit));
                let accepts = match upstream {
                    Some(up) => {
                        let ok = connect_until(up, Instant::now() + Duration::from_millis(500))
                            .await
                            .is_ok();
                        out.push(format!("{up} accepts: {ok}"));
                        ok
                    }
                    None => true,
                };
                active && accepts
            }
        };
        let answered = match (&plan.get, up) {
            (Some(get), true) => {
                let got = http::get(&get.request()).await;
                let line = match &got {
                    Ok(status) => format!("{} -> {status}", get.describe()),
                    Err(e) => format!("{}: {}", get.describe(), error_chain(&e)),
                };
                out.push(line);
                !need_answer || got.is_ok_and(|status| status < 500)
            }
            (None, true) => true,
            (_, false) => false,
        };
        if up && answered {
            return Ok(out.join("\n"));
        }
        if Instant::now() >= until {
            last.extend(out);
            last.push(format!(
                "not verified before the timeout ({})",
                if up {
                    "the GET did not answer < 500"
                } else {
                    "the service is not back"
                }
            ));
            return Err(last.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finishes every edit a previous agent process left in the journal: at start, before the
/// link, so nothing is half-applied when the agent begins to act. A unit whose edit lock a
/// live process holds is left to it. Returns one line per thing done, for the log.
///
/// Per entry, after removing its temp file: `verified` -> only cleaned up; the file holds the
/// new text -> restored from the backup, tested, reloaded; the old text after a write or
/// during a rollback -> tested and reloaded (the service may run the new text); the old text
/// before any write -> cleaned up; any other text (changed by someone since) -> left alone,
/// the backup kept beside the journal as `KEY.backup.kept`.
pub async fn recover(state_dir: &Path) -> Vec<String> {
    let mut report = Vec::new();
    let dirs = match journal::unit_dirs(&journal::root(state_dir)) {
        Ok(dirs) => dirs,
        Err(e) => return vec![format!("cannot read the edit journal: {}", error_chain(&e))],
    };
    for dir in dirs {
        let lock = match dir.try_lock() {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                report.push(format!(
                    "{}: another live process holds its lock; left to it",
                    dir.0.display()
                ));
                continue;
            }
            Err(e) => {
                report.push(error_chain(&e));
                continue;
            }
        };
        match dir.entries() {
            Ok(entries) => {
                for (key, entry) in entries {
                    match entry {
                        Ok(entry) => report.push(recover_entry(&dir, &key, entry).await),
                        Err(e) => report.push(format!(
                            "{}; left in place for a person to read",
                            error_chain(&e)
                        )),
                    }
                }
            }
            Err(e) => report.push(error_chain(&e)),
        }
        if let Ok(leftovers) = dir.leftovers() {
            for path in leftovers {
                if journal::remove_if_present(&path).unwrap_or(false) {
                    report.push(format!("removed the leftover {}", path.display()));
                }
            }
        }
        drop(lock);
    }
    report
}

async fn recover_entry(dir: &UnitDir, key: &str, mut entry: Entry) -> String {
    let what = format!(
        "edit {} of {} ({key})",
        entry.action_id,
        entry.file.display()
    );
    let mut notes = Vec::new();
    match journal::remove_if_present(&entry.temp) {
        Ok(true) => notes.push(format!("removed the temp file {}", entry.temp.display())),
        Ok(false) => {}
        Err(e) => notes.push(error_chain(&e)),
    }
    let now = read_file(&entry.file).map(|f| sha256_hex(&f.text));
    let needs_reload = match (entry.stage, now.as_deref()) {
        (Stage::Verified, _) => {
            notes.push("it was verified: cleaned up".to_owned());
            false
        }
        (_, Ok(sha)) if sha == entry.sha256_after => {
            entry.stage = Stage::Restoring;
            let _ = dir.write_entry(key, &entry);
            match restore(&entry) {
                Ok(text) => notes.push(format!("never verified: restored {text}")),
                Err(why) => {
                    return format!(
                        "{what}: never verified, and the restore failed: {why}; the journal is kept"
                    );
                }
            }
            true
        }
        (Stage::Writing | Stage::Restoring, Ok(sha)) if sha == entry.sha256_before => {
            notes.push("the file holds its old text; the service may run the new one".to_owned());
            true
        }
        (Stage::Pending, Ok(sha)) if sha == entry.sha256_before => {
            notes.push("the file was never written: cleaned up".to_owned());
            false
        }
        (_, other) => {
            let kept = dir.0.join(format!("{key}.backup.kept"));
            let _ = std::fs::rename(&entry.backup, &kept);
            let _ = dir.remove(key);
            return format!(
                "{what}: the file is neither the text before nor after the edit ({}); left as it is, the backup kept at {}",
                match other {
                    Ok(sha) => format!("sha256 {sha}"),
                    Err(why) => why.clone(),
                },
                kept.display()
            );
        }
    };
    if needs_reload {
        match test(&entry.reload.test).await {
            Ok(_) => {
                let rec = Recorder::default();
                match reload(&entry.reload.unit, JobCall::Reload, &rec).await {
                    Ok(_) => notes.push(format!(
                        "`{}` passed, {} reloaded",
                        entry.reload.test.join(" "),
                        entry.reload.unit
                    )),
                    Err(out) => notes.push(format!(
                        "the reload of {} failed: {}",
                        entry.reload.unit,
                        out.lines().last().unwrap_or_default()
                    )),
                }
            }
            Err(out) => notes.push(format!(
                "`{}` fails on the restored file, not reloaded: {}",
                entry.reload.test.join(" "),
                out.lines()
                    .find(|l| l.contains("[emerg]"))
                    .unwrap_or_default()
            )),
        }
    }
    if let Err(e) = dir.remove(key) {
        notes.push(error_chain(&e));
    }
    format!("{what}: {}", notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_do_not_cross_slashes_and_brackets_are_literal() {
        assert!(wildcard_match(
            "unix:/run/php/*.sock",
            "unix:/run/php/php8.2-fpm.sock"
        ));
        assert!(!wildcard_match(
            "unix:/run/php/*.sock",
            "unix:/run/php/x/y.sock"
        ));
        assert!(!wildcard_match(
            "unix:/run/php/*.sock",
            "unix:/run/php/a.sockx"
        ));
        assert!(wildcard_match("[::1]:*", "[::1]:9000"));
        assert!(!wildcard_match("[::1]:*", "[::2]:9000"));
        assert!(wildcard_match("127.0.0.1:*", "127.0.0.1:3000"));
        assert!(!wildcard_match("127.0.0.1:*", "127.0.0.10:3000"));
        assert!(wildcard_match("*", "backend"));
        assert!(!wildcard_match("*", "a/b"));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn pass_addresses_drop_scheme_uri_and_variable() {
        use EditableDirective::{FastcgiPass, ProxyPass};
        assert_eq!(
            pass_address(FastcgiPass, "127.0.0.1:9000"),
            "127.0.0.1:9000"
        );
        assert_eq!(
            pass_address(ProxyPass, "http://127.0.0.1:3000/api/"),
            "127.0.0.1:3000"
        );
        assert_eq!(
            pass_address(ProxyPass, "https://backend$request_uri"),
            "backend"
        );
        assert_eq!(
            pass_address(ProxyPass, "http://unix:/run/app.sock:/x"),
            "unix:/run/app.sock"
        );
    }

    #[test]
    fn a_location_gives_the_path_it_matches() {
        assert_eq!(location_path("~ \\.php$"), "/index.php");
        assert_eq!(location_path("~ [^/]\\.php(/|$)"), "/index.php");
        assert_eq!(location_path("~* \\.PHP$"), "/index.PHP");
        assert_eq!(location_path("= /status"), "/status");
        assert_eq!(location_path("^~ /static/"), "/static/");
        assert_eq!(location_path("/api/"), "/api/");
        assert_eq!(location_path("@fallback"), "/");
        assert_eq!(location_path("~ ^/(a|b)$"), "/");
    }
}
