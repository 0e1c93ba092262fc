//! One real Debian host: its own systemd as PID 1, its own D-Bus, nginx and php-fpm, in its
//! own network namespace, booted with systemd-nspawn from the cached root filesystem.
//!
//! `--volatile=overlay` keeps the cached root clean (every boot starts from the same image),
//! `--register=no --keep-unit` because the outer machine has no systemd, and the process runs
//! under `setpriv --pdeathsig TERM` so a test process that dies without unwinding still takes
//! its hosts down with it.

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::TestbedError;
use super::cgroup;
use super::process::{describe, failed, output, run};
use super::slot::Slot;

/// What goes into a host besides the root filesystem.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Read-only bind mounts, outer path -> path inside the host (the freshly built binaries
    /// and their configs).
    pub binds_ro: Vec<(PathBuf, String)>,
    /// How long a boot may take before the test fails with the console log.
    pub boot_timeout: Duration,
}

impl Default for HostSpec {
    fn default() -> Self {
        Self {
            binds_ro: Vec::new(),
            boot_timeout: Duration::from_secs(120),
        }
    }
}

impl HostSpec {
    /// Adds a read-only bind mount.
    pub fn bind_ro(mut self, outer: impl Into<PathBuf>, inside: impl Into<String>) -> Self {
        self.binds_ro.push((outer.into(), inside.into()));
        self
    }

    /// Mounts the freshly built agent at [`super::binaries::AGENT_INSIDE`].
    pub fn with_agent(self) -> Result<Self, TestbedError> {
        let agent = super::binaries::path("gatemend-agent")?;
        Ok(self.bind_ro(agent, super::binaries::AGENT_INSIDE))
    }
}

/// A booted host. Dropping it shuts it down and removes its veth link.
#[derive(Debug)]
pub struct Host {
    slot: Slot,
    nspawn: Child,
    pid1: u32,
    console: PathBuf,
    booted_in: Duration,
}

/// The PATH commands inside a host run with.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Host {
    /// Starts systemd-nspawn for a new host. The host is not usable until [`Host::wait_booted`].
    pub(crate) fn spawn(
        rootfs: &Path,
        spec: &HostSpec,
        run_dir: &Path,
    ) -> Result<Self, TestbedError> {
        let mut slot = Slot::acquire()?;
        let name = slot.host_name();
        let console = run_dir.join(format!("{name}.console.log"));
        let log = File::create(&console).map_err(|source| TestbedError::Io {
            what: "cannot create",
            path: console.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| TestbedError::Io {
            what: "cannot reopen",
            path: console.clone(),
            source,
        })?;
        // The shell moves itself into the host's own cgroups, then becomes setpriv, which sets
        // the parent-death signal and becomes systemd-nspawn: one process, no fork.
        let cgroups = cgroup::create(&name);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"for f in $GATEMEND_CGROUP_PROCS; do echo $$ > "$f" || exit 1; done; exec "$@""#)
            .arg("sh")
            .env(
                "GATEMEND_CGROUP_PROCS",
                cgroups
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .args(["setpriv", "--pdeathsig", "TERM", "--", "systemd-nspawn"])
            .args([
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
                "--network-veth",
            ])
            .args(["-b", "--console=pipe", "-M", &name, "-D"])
            .arg(rootfs);
        for (outer, inside) in &spec.binds_ro {
            command.arg(format!("--bind-ro={}:{inside}", outer.display()));
        }
        // Its own process group: a Ctrl-C at the terminal reaches the test or demo, which then
        // shuts the hosts down in order, instead of killing systemd-nspawn under it.
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        let nspawn = command.spawn().map_err(|source| TestbedError::Spawn {
            command: describe(&command),
            source,
        })?;
        slot.record_pid(nspawn.id());
        Ok(Host {
            slot,
            nspawn,
            pid1: 0,
            console,
            booted_in: Duration::ZERO,
        })
    }

    /// Waits until the host's systemd says `running`, and gives it its address.
    pub(crate) fn wait_booted(&mut self, timeout: Duration) -> Result<(), TestbedError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut state = String::from("no PID 1 yet");
        loop {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                return Err(TestbedError::BootFailed {
                    host: self.name(),
                    status: status.to_string(),
                    console: self.console.clone(),
                    console_tail: self.console_tail(),
                });
            }
            if self.pid1 == 0 {
                self.pid1 = self.find_pid1().unwrap_or(0);
            } else {
                let out = output(&mut self.command(&["systemctl", "is-system-running"]))?;
                state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                match state.as_str() {
                    "running" => break,
                    "degraded" => {
                        return Err(TestbedError::BootDegraded {
                            host: self.name(),
                            failed: self.failed_units(),
                            console: self.console.clone(),
                        });
                    }
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(self.boot_timeout(started, state));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.configure_network()?;
        self.booted_in = started.elapsed();
        Ok(())
    }

    fn boot_timeout(&self, started: Instant, state: String) -> TestbedError {
        TestbedError::BootTimeout {
            host: self.name(),
            seconds: started.elapsed().as_secs(),
            state,
            console: self.console.clone(),
            console_tail: self.console_tail(),
        }
    }

    /// The failed units with the last journal lines of each: with `--console=pipe` the
    /// console shows little, the journal says why a unit failed.
    fn failed_units(&self) -> String {
        self.sh(
            "for u in $(systemctl --failed --no-legend --plain | cut -d' ' -f1); do \
             echo \"== $u\"; journalctl -b -u \"$u\" --no-pager -n 20; done",
        )
        .unwrap_or_else(|e| format!("(cannot list the failed units: {e})"))
    }

    /// The host's PID 1 is the child of systemd-nspawn that runs systemd.
    fn find_pid1(&self) -> Option<u32> {
        let nspawn = self.nspawn.id();
        let tasks = fs::read_dir(format!("/proc/{nspawn}/task")).ok()?;
        tasks
            .flatten()
            .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|children| {
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd")
            })
    }

    fn configure_network(&self) -> Result<(), TestbedError> {
        let veth = self.slot.veth();
        let outer = format!("{}/24", self.slot.outer_addr());
        run(Command::new("ip").args(["addr", "replace", &outer, "dev", &veth]))?;
        run(Command::new("ip").args(["link", "set", &veth, "up"]))?;
        let inner = format!("{}/24", self.host_addr());
        // Only the link's own /24 is routed: a host can reach the outer machine and nothing else.
        for args in [
            vec!["ip", "addr", "replace", inner.as_str(), "dev", "host0"],
            vec!["ip", "link", "set", "host0", "up"],
        ] {
            let mut command = Command::new("nsenter");
            command
                .args(["-t", &self.pid1.to_string(), "-n", "--"])
                .args(args);
            run(&mut command)?;
        }
        Ok(())
    }

    /// The host's name (its hostname, and the name its agent reports as).
    pub fn name(&self) -> String {
        self.slot.host_name()
    }

    /// The host's address on its link to the outer machine.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.slot.host_addr()
    }

    /// The outer machine's address as the host sees it (where a controller listens).
    pub fn outer_addr(&self) -> Ipv4Addr {
        self.slot.outer_addr()
    }

    /// The host's PID 1 as the outer machine sees it.
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// How long the boot took, from systemd-nspawn's start to `running` and addressed.
    pub fn booted_in(&self) -> Duration {
        self.booted_in
    }

    /// Where the host's console output goes.
    pub fn console_log(&self) -> &Path {
        &self.console
    }

    /// The D-Bus address of the host's system bus, reachable from the outer machine.
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path={}",
            self.path("/run/dbus/system_bus_socket").display()
        )
    }

    /// A path inside the host, as the outer machine reaches it.
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid1)).join(inside.trim_start_matches('/'))
    }

    /// A command that runs inside the host (all its namespaces, its root, a clean environment).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &self.pid1.to_string(), "-a", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", HOST_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        command
    }

    /// Runs a command inside the host; returns its stdout, or an error with its stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<String, TestbedError> {
        let out = run(&mut self.command(argv))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a shell script inside the host (`sh -c`); returns its stdout.
    pub fn sh(&self, script: &str) -> Result<String, TestbedError> {
        self.exec(&["sh", "-c", script])
    }

    /// Runs a command inside the host and returns its output whatever the exit status.
    pub fn output(&self, argv: &[&str]) -> Result<Output, TestbedError> {
        output(&mut self.command(argv))
    }

    /// Reads a file inside the host.
    pub fn read(&self, inside: &str) -> Result<String, TestbedError> {
        let path = self.path(inside);
        fs::read_to_string(&path).map_err(|source| TestbedError::Io {
            what: "cannot read",
            path,
            source,
        })
    }

    /// Writes a file inside the host (owned by root).
    pub fn write(&self, inside: &str, contents: &str) -> Result<(), TestbedError> {
        let path = self.path(inside);
        fs::write(&path, contents).map_err(|source| TestbedError::Io {
            what: "cannot write",
            path,
            source,
        })
    }

    /// A unit's `systemctl show -p PROPERTY --value` inside the host.
    pub fn unit_property(&self, unit: &str, property: &str) -> Result<String, TestbedError> {
        Ok(self
            .exec(&["systemctl", "show", "-p", property, "--value", unit])?
            .trim()
            .to_owned())
    }

    /// The last 40 lines of the console log.
    pub fn console_tail(&self) -> String {
        let text = fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Shuts the host down: SIGTERM to systemd-nspawn (a clean shutdown of the host's
    /// systemd), SIGKILL after 20 s, then removes the veth link if it is still there.
    fn shutdown(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.nspawn.id()).unwrap_or(i32::MAX));
        if matches!(self.nspawn.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.nspawn.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(self.nspawn.try_wait(), Ok(None)) {
                eprintln!(
                    "testbed: host {} did not stop in 20 s; killing it",
                    self.name()
                );
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
            }
        }
        cgroup::remove(&self.name());
        if Path::new("/sys/class/net").join(self.slot.veth()).exists() {
            let mut delete = Command::new("ip");
            delete.args(["link", "delete", &self.slot.veth()]);
            if let Ok(out) = output(&mut delete)
                && !out.status.success()
            {
                eprintln!("testbed: {}", failed(&delete, &out));
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
    }
}
