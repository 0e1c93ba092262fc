//! `gatemend`: the operator's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatemend_controller::cli;

#[derive(Debug, Parser)]
#[command(name = "gatemend", version, about = "gatemend operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the fleet's CA, the controller's and the agents' certificates.
    Pki {
        #[command(subcommand)]
        command: cli::pki::PkiCommand,
    },
    /// Check policies and explain decisions.
    Policy {
        #[command(subcommand)]
        command: cli::policy::PolicyCommand,
    },
    /// Verify, list, show and export the audit log.
    Audit {
        #[command(subcommand)]
        command: cli::audit::AuditCommand,
    },
    /// List, approve and deny pending actions through the controller's API.
    Approvals {
        #[command(subcommand)]
        command: cli::approvals::ApprovalsCommand,
    },
    /// Make operator tokens for the controller's review UI and API.
    Tokens {
        #[command(subcommand)]
        command: cli::tokens::TokensCommand,
    },
}

fn main() -> ExitCode {
    let result: anyhow::Result<ExitCode> = match Cli::parse().command {
        Command::Pki { command } => cli::pki::run(command)
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        // Invalid policies exit 1 (the problems are printed); failing to run at all exits 2.
        Command::Policy { command } => cli::policy::run(command)
            .map(|valid| {
                if valid {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
            .map_err(Into::into),
        // A broken chain (verify) or a missing record (show) exits 1; failing to run exits 2.
        Command::Audit { command } => cli::audit::run(command)
            .map(|ok| {
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
            .map_err(Into::into),
        Command::Approvals { command } => cli::approvals::run(command)
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Tokens { command } => cli::tokens::run(command)
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatemend: {e:#}");
            ExitCode::from(2)
        }
    }
}
