//! `nginx -T`: running it, and splitting what it printed into its files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{NginxConfig, parse};
use crate::probe::ProbeError;

/// What `nginx -T` printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NginxDump {
    /// The binary that was run.
    pub binary: PathBuf,
    /// Its standard output: the configuration, when the test passed.
    pub stdout: String,
    /// Its standard error: `syntax is ok` / `test is successful`, or the `[emerg]` lines.
    pub stderr: String,
    /// The exit code (`None` when killed by a signal).
    pub exit_code: Option<i32>,
}

impl NginxDump {
    /// Whether `nginx -T` exited 0 (the configuration tests clean).
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The configuration parsed from stdout.
    pub fn config(&self) -> NginxConfig {
        parse(&self.stdout)
    }
}

/// How long `nginx -T` may take: it only reads files, so anything near this is a hung disk or
/// a hung resolver (nginx resolves upstream host names while testing).
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `BINARY -T` and keeps its output and exit status; a configuration that fails the test
/// is not an error here (its stderr is what diagnosis wants), failing to run the binary is.
pub async fn dump(binary: &Path) -> Result<NginxDump, ProbeError> {
    let command = format!("{} -T", binary.display());
    let mut child = tokio::process::Command::new(binary);
    child
        .arg("-T")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(DUMP_TIMEOUT, child.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => return Err(ProbeError::Spawn { command, source }),
        Err(_) => {
            return Err(ProbeError::Timeout {
                command,
                after: DUMP_TIMEOUT,
            });
        }
    };
    let dump = NginxDump {
        binary: binary.to_owned(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        exit_code: output.status.code(),
    };
    tracing::debug!(
        command = %command,
        exit_code = ?dump.exit_code,
        stdout_bytes = dump.stdout.len(),
        "Ran nginx -T."
    );
    Ok(dump)
}

/// Splits `nginx -T` output at its `# configuration file PATH:` lines. nginx prints each
/// file's bytes after its line and then a newline, so a file's line 1 is the line after.
pub(super) fn split_files(text: &str) -> Vec<(PathBuf, &str)> {
    const MARKER: &str = "# configuration file ";
    let mut files = Vec::new();
    let mut current = PathBuf::new();
    let mut body_start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(path) = bare.strip_prefix(MARKER).and_then(|p| p.strip_suffix(':')) {
            let body = text.get(body_start..offset).unwrap_or("");
            if !current.as_os_str().is_empty() || !body.trim().is_empty() {
                files.push((current, body));
            }
            current = PathBuf::from(path);
            body_start = offset + line.len();
        }
        offset += line.len();
    }
    let body = text.get(body_start..).unwrap_or("");
    if !current.as_os_str().is_empty() || !body.trim().is_empty() {
        files.push((current, body));
    }
    files
}
