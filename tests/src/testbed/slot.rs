//! Host slots: each booted host holds one slot `N` (1..=250) for its lifetime, which gives it
//! its name `gmN`, its veth link `ve-gmN` and its address range `10.77.N.0/24` (the outer end
//! `10.77.N.1`, the host `10.77.N.2`). A slot is an exclusive `flock` on
//! `/run/gatemend-testbed/slots/N.lock`, so two test processes never share a name or a range,
//! and a slot whose holder died is free again (the kernel drops the lock).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::TestbedError;
use super::process::output;

/// Where the slot locks live.
pub const SLOT_DIR: &str = "/run/gatemend-testbed/slots";
/// How many hosts may run on this machine at once.
pub const SLOTS: u16 = 250;

/// One held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    number: u16,
    lock: Flock<File>,
}

impl Slot {
    /// Takes the lowest free slot, first cleaning up whatever a crashed holder left in it.
    pub fn acquire() -> Result<Self, TestbedError> {
        fs::create_dir_all(SLOT_DIR).map_err(|source| TestbedError::Io {
            what: "cannot create",
            path: SLOT_DIR.into(),
            source,
        })?;
        for number in 1..=SLOTS {
            let path = PathBuf::from(SLOT_DIR).join(format!("{number}.lock"));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|source| TestbedError::Io {
                    what: "cannot open",
                    path: path.clone(),
                    source,
                })?;
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                let slot = Slot { number, lock };
                slot.clean_leftovers();
                return Ok(slot);
            }
        }
        Err(TestbedError::NoFreeSlot(SLOTS))
    }

    /// The slot number.
    pub fn number(&self) -> u16 {
        self.number
    }

    /// The host's name (also its machine name and hostname).
    pub fn host_name(&self) -> String {
        format!("gm{}", self.number)
    }

    /// The outer end of the host's veth pair, as systemd-nspawn names it.
    pub fn veth(&self) -> String {
        format!("ve-{}", self.host_name())
    }

    /// The outer machine's address on this host's link.
    pub fn outer_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.octet(), 1)
    }

    /// The host's own address.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.octet(), 2)
    }

    fn octet(&self) -> u8 {
        // `SLOTS` keeps the number within a byte.
        u8::try_from(self.number).unwrap_or(u8::MAX)
    }

    /// Records the systemd-nspawn pid in the slot file, so the next holder can stop a host
    /// whose test process was killed before it could tear down.
    pub fn record_pid(&mut self, pid: u32) {
        let file: &mut File = &mut self.lock;
        let _ = file.set_len(0);
        let _ = writeln!(file, "{pid}");
    }

    /// Stops a systemd-nspawn left by a holder that died, and removes its veth link.
    fn clean_leftovers(&self) {
        let path = PathBuf::from(SLOT_DIR).join(format!("{}.lock", self.number));
        let recorded = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        if let Some(pid) = recorded {
            // The pid may have been reused: only stop a systemd-nspawn that runs this slot's host.
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args.first().is_some_and(|a| a.ends_with(b"systemd-nspawn"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-M" && w[1] == self.host_name().as_bytes());
            if ours {
                eprintln!(
                    "testbed: stopping host {} left running by a dead test (pid {pid})",
                    self.host_name()
                );
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(20);
                while PathBuf::from(format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = output(Command::new("ip").args(["link", "delete", &self.veth()]));
        super::cgroup::remove(&self.host_name());
    }
}
