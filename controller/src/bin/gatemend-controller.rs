//! `gatemend-controller`: the controller daemon.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "gatemend-controller",
    version,
    about = "gatemend controller daemon"
)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
    eprintln!("gatemend-controller: the link and the policy engine are not built yet");
    std::process::exit(2);
}
