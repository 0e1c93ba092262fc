//! Running the outer machine's programs (debootstrap, ip, nsenter) with errors that carry the
//! command line and its stderr.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::TestbedError;

/// Runs `command` to completion; a non-zero exit is an error carrying its stderr.
pub(crate) fn run(command: &mut Command) -> Result<Output, TestbedError> {
    let output = output(command)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(failed(command, &output))
    }
}

/// Runs `command` to completion and returns its output whatever the exit status.
pub(crate) fn output(command: &mut Command) -> Result<Output, TestbedError> {
    command.output().map_err(|source| TestbedError::Spawn {
        command: describe(command),
        source,
    })
}

/// The error for a command that ran and failed.
pub(crate) fn failed(command: &Command, output: &Output) -> TestbedError {
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if text.is_empty() {
        text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    }
    TestbedError::Command {
        command: describe(command),
        status: output.status.to_string(),
        stderr: text,
    }
}

/// The command line as a human would type it.
pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The full path of a program on PATH.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
