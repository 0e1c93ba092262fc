//! `gatemend`: the operator's command line.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "gatemend", version, about = "gatemend operator CLI")]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
}
