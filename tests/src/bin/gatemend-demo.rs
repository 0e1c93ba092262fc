//! `gatemend-demo`: the README's main command. Boots a fleet of real Debian hosts, runs the
//! freshly built agent inside each, and shows every host's address, nginx and php-fpm state
//! and what its nginx answers.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use gatemend_tests::testbed::{Fleet, Host, HostSpec, binaries, http, preflight, rootfs};

#[derive(Debug, Parser)]
#[command(name = "gatemend-demo", about = "Boot the demo fleet and show it")]
struct Cli {
    /// How many hosts to boot.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    hosts: u16,
    /// Exit when the demo is done (0 when every host is healthy) instead of keeping the fleet
    /// running until Ctrl-C.
    #[arg(long)]
    non_interactive: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("gatemend-demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    preflight()?;
    let started = Instant::now();
    let (root, origin) = rootfs::ensure()?;
    say(&format!(
        "root filesystem {} ({origin:?}, {:.1} s)",
        root.display(),
        started.elapsed().as_secs_f64()
    ));

    let agent = binaries::path("gatemend-agent")?;
    let agent_inside = format!("{}/gatemend-agent", binaries::HOST_BIN_DIR);
    let spec = HostSpec::default().bind_ro(&agent, &agent_inside);
    say(&format!("booting {} hosts", cli.hosts));
    let fleet = Fleet::boot(usize::from(cli.hosts), &spec)?;
    say(&format!(
        "fleet running after {:.1} s",
        fleet.booted_in().as_secs_f64()
    ));

    println!();
    println!(
        "{:<8} {:<12} {:<22} {:<22} {:<10} GET /index.php",
        "HOST", "ADDRESS", "nginx", "php8.2-fpm", "GET /"
    );
    let mut healthy = true;
    for host in fleet.hosts() {
        healthy &= show(host, &agent_inside)?;
    }
    println!();

    if cli.non_interactive {
        say(if healthy {
            "every host is healthy"
        } else {
            "some host is NOT healthy"
        });
        return Ok(healthy);
    }
    say(
        "the fleet keeps running; reach a host with `nsenter -t PID1 -a bash` (PID1 below). Ctrl-C stops it.",
    );
    for host in fleet.hosts() {
        say(&format!(
            "  {} PID1 {} console {}",
            host.name(),
            host.pid1(),
            host.console_log().display()
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(tokio::signal::ctrl_c())
        .context("waiting for Ctrl-C")?;
    say("stopping the fleet");
    drop(fleet);
    Ok(healthy)
}

/// Prints one host's line, from the agent running inside the host (its own D-Bus) and from
/// HTTP requests to the host's nginx. Returns whether everything is up.
fn show(host: &Host, agent: &str) -> anyhow::Result<bool> {
    let out = host.exec(&[
        agent,
        "probe",
        "unit",
        "nginx.service",
        "php8.2-fpm.service",
    ])?;
    let mut states = Vec::new();
    for line in out.lines() {
        let state: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("agent printed {line:?}"))?;
        let active = state["active_state"].as_str().unwrap_or("?");
        let sub = state["sub_state"].as_str().unwrap_or("?");
        let pid = state["main_pid"].as_u64().unwrap_or(0);
        states.push((active == "active", format!("{active}/{sub} pid {pid}")));
    }
    let addr = SocketAddr::from((host.host_addr(), 80));
    let status = |path: &str| http::get(addr, path).map(|r| r.status).unwrap_or(0);
    let (root, php) = (status("/"), status("/index.php"));
    let unit = |i: usize| states.get(i).map_or("?", |(_, s)| s.as_str()).to_owned();
    println!(
        "{:<8} {:<12} {:<22} {:<22} {:<10} {}",
        host.name(),
        host.host_addr(),
        unit(0),
        unit(1),
        root,
        php
    );
    Ok(states.len() == 2 && states.iter().all(|(up, _)| *up) && root == 200 && php == 200)
}

fn say(message: &str) {
    println!("demo: {message}");
}
