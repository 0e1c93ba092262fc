//! `gatemend tokens new`: a fresh operator token, and the line for the controller's tokens
//! file (which holds only its SHA-256).

use std::io::{self, Write};

use clap::Subcommand;

use crate::web::{Role, new_token, token_hash};

/// `gatemend tokens ...`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Print a new random token (give it to the operator) and the YAML line to add to the
    /// controller's --tokens file.
    New {
        /// The operator's name, as the audit log will record it.
        #[arg(long)]
        name: String,
        /// viewer (reads), approver (also approves and denies) or admin.
        #[arg(long, value_parser = clap::value_parser!(Role))]
        role: Role,
    },
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Role::Viewer, Role::Approver, Role::Admin]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.id()))
    }
}

/// The tokens-file line for `name` with `role` holding `token`.
pub fn yaml_line(name: &str, role: Role, token: &str) -> String {
    // The name is quoted as a YAML string so any name (spaces, colons) stays one scalar.
    let quoted = serde_json::to_string(name).unwrap_or_else(|_| format!("{name:?}"));
    format!(
        "  - {{ name: {quoted}, role: {role}, token_sha256: {} }}",
        hex::encode(token_hash(token))
    )
}

/// Runs `gatemend tokens ...`: the token on the first line of stdout, the YAML line on the
/// second; the advice goes to stderr so scripts can take stdout as it is.
pub fn run(command: TokensCommand) -> io::Result<()> {
    match command {
        TokensCommand::New { name, role } => {
            let token = new_token();
            let mut out = io::stdout().lock();
            writeln!(out, "{token}")?;
            writeln!(out, "{}", yaml_line(&name, role, &token))?;
            eprintln!(
                "gatemend: give the first line to {name} (shown once; only its hash is kept) and add the second under `tokens:` in the controller's --tokens file, then restart the controller."
            );
            Ok(())
        }
    }
}
