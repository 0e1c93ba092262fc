//! `gatemend pki`: create the fleet's CA and certificates.

use std::path::PathBuf;

use clap::Subcommand;

use crate::pki::{self, PkiError};

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a CA and the controller's certificate in DIR.
    Init {
        /// The PKI directory (created; must not hold a CA yet).
        dir: PathBuf,
        /// Another DNS name or IP address agents may reach the controller by (repeatable).
        /// The name `gatemend-controller` is always included.
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Issue an agent's client certificate and key for HOST, signed by the CA in DIR.
    Issue {
        /// The agent's host name, as in its config's `host`; its certificate's DNS name.
        #[arg(long)]
        host: String,
        /// The PKI directory made by `pki init`.
        dir: PathBuf,
    },
}

/// Runs the subcommand and prints the files it wrote.
pub fn run(command: PkiCommand) -> Result<(), PkiError> {
    match command {
        PkiCommand::Init { dir, sans } => {
            let issued = pki::init(&dir, &sans)?;
            println!("CA:         {}", pki::ca_cert_path(&dir).display());
            println!(
                "controller: {} {}",
                issued.cert.display(),
                issued.key.display()
            );
        }
        PkiCommand::Issue { host, dir } => {
            let issued = pki::issue(&dir, &host)?;
            println!("{host}: {} {}", issued.cert.display(), issued.key.display());
        }
    }
    Ok(())
}
