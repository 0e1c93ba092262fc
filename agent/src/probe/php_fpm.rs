//! php-fpm pools: where each pool listens, with which owner, group and mode, and which
//! systemd unit runs it.
//!
//! Parsing is pure and total ([`parse_pools`]); reading the files of every installed version
//! is [`read_pools`].

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ProbeError;

/// One `[name]` pool of a php-fpm pool file, with php-fpm's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// The section name, e.g. `www`.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The PHP version from the file's path (`8.2` for `/etc/php/8.2/fpm/pool.d/www.conf`).
    pub version: Option<String>,
    /// `listen =`: a unix socket path or `[addr:]port`.
    pub listen: Option<String>,
    /// `listen.owner`, defaulting to the pool's `user` as php-fpm does.
    pub listen_owner: Option<String>,
    /// `listen.group`, defaulting to the pool's `group` as php-fpm does.
    pub listen_group: Option<String>,
    /// `listen.mode`, default `0660`.
    pub listen_mode: String,
    /// `user` the workers run as.
    pub user: Option<String>,
    /// `group` the workers run as.
    pub group: Option<String>,
    /// `pm.max_children`, when set to a number.
    pub max_children: Option<u32>,
}

impl Pool {
    /// The systemd unit that runs this pool, from the version in its path:
    /// `php8.2-fpm.service`.
    pub fn unit(&self) -> Option<String> {
        self.version.as_ref().map(|v| format!("php{v}-fpm.service"))
    }

    /// The socket path, when the pool listens on a unix socket.
    pub fn socket_path(&self) -> Option<&str> {
        self.listen.as_deref().filter(|l| l.starts_with('/'))
    }
}

/// One line of a php-fpm ini file, with where its parts are: the pool editor (`crate::edit`)
/// replaces exactly a value's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IniLine {
    /// `[name]`.
    Section { name: String, line: u32 },
    /// `key = value`; `value` is trimmed and unquoted, `value_span` its bytes as written
    /// (quotes included, surrounding whitespace not).
    Entry {
        key: String,
        value: String,
        line: u32,
        /// The byte range of the whole line, its newline excluded.
        line_span: std::ops::Range<usize>,
        value_span: std::ops::Range<usize>,
    },
}

/// The sections and `key = value` lines of an ini file, in order; blank lines, comments (`;`,
/// `#` at the start) and anything else are skipped. Total.
pub(crate) fn ini_lines(text: &str) -> Vec<IniLine> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (index, raw_with_newline) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += raw_with_newline.len();
        let raw = raw_with_newline
            .strip_suffix('\n')
            .unwrap_or(raw_with_newline);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let line = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push(IniLine::Section {
                name: name.trim().to_owned(),
                line,
            });
            continue;
        }
        let Some((key, value)) = raw.split_once('=') else {
            continue;
        };
        let value_start = start + key.len() + 1 + (value.len() - value.trim_start().len());
        let written = value.trim();
        out.push(IniLine::Entry {
            key: key.trim().to_owned(),
            value: unquote(written).to_owned(),
            line,
            line_span: start..start + raw.len(),
            value_span: value_start..value_start + written.len(),
        });
    }
    out
}

/// Parses the text of one pool file. Never fails: lines that are not `key = value` or a
/// `[section]` are ignored, as php-fpm would reject the file at start-up anyway and this
/// probe only reports what is there. Keys before the first section are ignored.
pub fn parse_pools(file: &Path, text: &str) -> Vec<Pool> {
    let version = version_from_path(file);
    let mut pools: Vec<Pool> = Vec::new();
    for entry in ini_lines(text) {
        let (key, value) = match entry {
            IniLine::Section { name, .. } => {
                pools.push(Pool {
                    name,
                    file: file.to_owned(),
                    version: version.clone(),
                    listen: None,
                    listen_owner: None,
                    listen_group: None,
                    listen_mode: "0660".to_owned(),
                    user: None,
                    group: None,
                    max_children: None,
                });
                continue;
            }
            IniLine::Entry { key, value, .. } => (key, value),
        };
        let Some(pool) = pools.last_mut() else {
            continue;
        };
        let value = value.replace("$pool", &pool.name);
        match key.as_str() {
            "listen" => pool.listen = Some(value),
            "listen.owner" => pool.listen_owner = Some(value),
            "listen.group" => pool.listen_group = Some(value),
            "listen.mode" => pool.listen_mode = value,
            "user" => pool.user = Some(value),
            "group" => pool.group = Some(value),
            "pm.max_children" => pool.max_children = value.parse().ok(),
            _ => {}
        }
    }
    for pool in &mut pools {
        if pool.listen_owner.is_none() {
            pool.listen_owner.clone_from(&pool.user);
        }
        if pool.listen_group.is_none() {
            pool.listen_group.clone_from(&pool.group);
        }
    }
    pools
}

/// Reads every pool of every installed php-fpm version under `root` (`/` on a host):
/// `etc/php/*/fpm/pool.d/*.conf`, sorted by path.
pub fn read_pools(root: &Path) -> Result<Vec<Pool>, ProbeError> {
    let php = root.join("etc/php");
    let mut files = Vec::new();
    for version in read_dir_sorted(&php)? {
        let pool_d = version.join("fpm/pool.d");
        if pool_d.is_dir() {
            files.extend(
                read_dir_sorted(&pool_d)?
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "conf")),
            );
        }
    }
    let mut pools = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|source| ProbeError::Read {
            path: file.clone(),
            source,
        })?;
        // Report the pool under the path the host sees, not the path it was read through.
        let shown = Path::new("/").join(file.strip_prefix(root).unwrap_or(&file));
        pools.extend(parse_pools(&shown, &String::from_utf8_lossy(&bytes)));
    }
    Ok(pools)
}

/// The error log of every installed php-fpm version under `root`: `error_log =` in
/// `etc/php/*/fpm/php-fpm.conf` (relative paths are under php-fpm's prefix, `/usr`), or the
/// Debian default `/var/log/phpX.Y-fpm.log` when the file names none. Paths as the host sees
/// them; `syslog` is skipped (nothing to tail).
pub fn read_error_logs(root: &Path) -> Result<Vec<PathBuf>, ProbeError> {
    let mut logs = Vec::new();
    for version_dir in read_dir_sorted(&root.join("etc/php"))? {
        let conf = version_dir.join("fpm/php-fpm.conf");
        let Some(version) = version_dir
            .file_name()
            .map(|v| v.to_string_lossy().into_owned())
        else {
            continue;
        };
        let text = match std::fs::read(&conf) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ProbeError::Read { path: conf, source }),
        };
        match error_log_of(&text) {
            Some(log) if log == "syslog" => {}
            Some(log) if log.starts_with('/') => logs.push(PathBuf::from(log)),
            Some(log) => logs.push(Path::new("/usr").join(log)),
            None => logs.push(PathBuf::from(format!("/var/log/php{version}-fpm.log"))),
        }
    }
    Ok(logs)
}

/// `error_log = VALUE` of php-fpm's main file, the global section only.
fn error_log_of(text: &str) -> Option<String> {
    let mut global = true;
    let mut found = None;
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            global = section.trim() == "global";
            continue;
        }
        if !global || line.starts_with(';') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "error_log"
        {
            found = Some(unquote(value.trim()).to_owned());
        }
    }
    found
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, ProbeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ProbeError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

fn version_from_path(file: &Path) -> Option<String> {
    let mut parts = file.iter().map(|p| p.to_string_lossy());
    parts.find(|p| p == "php")?;
    let version = parts.next()?;
    (!version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .then(|| version.into_owned())
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_global_error_log_of_php_fpm_conf_is_found() {
        let conf = "[global]\npid = /run/php/php8.2-fpm.pid\nerror_log = /var/log/php8.2-fpm.log\n\
                    ;error_log = /tmp/x\n[www]\nerror_log = /ignored\n";
        assert_eq!(
            error_log_of(conf).as_deref(),
            Some("/var/log/php8.2-fpm.log")
        );
        assert_eq!(
            error_log_of("[global]\n;error_log = log/php-fpm.log\n"),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let fpm = dir.path().join("etc/php/8.2/fpm");
        std::fs::create_dir_all(&fpm).unwrap();
        std::fs::write(
            fpm.join("php-fpm.conf"),
            "[global]\nerror_log = log/fpm.log\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("etc/php/7.4/fpm")).unwrap();
        std::fs::write(
            dir.path().join("etc/php/7.4/fpm/php-fpm.conf"),
            "[global]\n",
        )
        .unwrap();
        assert_eq!(
            read_error_logs(dir.path()).unwrap(),
            [
                PathBuf::from("/var/log/php7.4-fpm.log"),
                PathBuf::from("/usr/log/fpm.log")
            ]
        );
    }

    use super::*;

    /// Debian bookworm's shipped `/etc/php/8.2/fpm/pool.d/www.conf`, comments trimmed.
    const DEBIAN_WWW: &str = "; Start a new pool named 'www'.\n[www]\nuser = www-data\n\
        group = www-data\nlisten = /run/php/php8.2-fpm.sock\nlisten.owner = www-data\n\
        listen.group = www-data\n;listen.mode = 0660\npm = dynamic\npm.max_children = 5\n";

    #[test]
    fn debian_pool_gives_socket_owner_mode_and_unit() {
        let pools = parse_pools(Path::new("/etc/php/8.2/fpm/pool.d/www.conf"), DEBIAN_WWW);
        assert_eq!(pools.len(), 1);
        let www = &pools[0];
        assert_eq!(www.name, "www");
        assert_eq!(www.socket_path(), Some("/run/php/php8.2-fpm.sock"));
        assert_eq!(www.listen_owner.as_deref(), Some("www-data"));
        assert_eq!(www.listen_group.as_deref(), Some("www-data"));
        assert_eq!(www.listen_mode, "0660");
        assert_eq!(www.max_children, Some(5));
        assert_eq!(www.unit().as_deref(), Some("php8.2-fpm.service"));
    }

    #[test]
    fn listen_owner_defaults_to_the_pool_user_and_pool_variable_expands() {
        let text = "[api]\nuser = app\ngroup = app\nlisten = \"/run/php/$pool.sock\"\n\
                    listen.mode = 0600\n[tcp]\nlisten = 127.0.0.1:9000\n";
        let pools = parse_pools(Path::new("/etc/php/7.4/fpm/pool.d/x.conf"), text);
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].socket_path(), Some("/run/php/api.sock"));
        assert_eq!(pools[0].listen_owner.as_deref(), Some("app"));
        assert_eq!(pools[0].listen_mode, "0600");
        assert_eq!(pools[1].socket_path(), None);
        assert_eq!(pools[1].listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(pools[1].unit().as_deref(), Some("php7.4-fpm.service"));
    }

    #[test]
    fn garbage_gives_no_pool_and_no_panic() {
        for text in [
            "",
            "=",
            "[",
            "]\n[",
            "listen = /x\n",
            "[a]\n=\n==\nkey\n",
            "\u{0}\u{feff}[x",
        ] {
            let _ = parse_pools(Path::new("weird"), text);
        }
        assert!(parse_pools(Path::new("/p"), "listen = /x\n").is_empty());
        assert_eq!(
            parse_pools(Path::new("/p"), "[a]\npm.max_children = lots\n")[0].max_children,
            None
        );
    }
}
