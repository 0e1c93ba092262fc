//! Several hosts booted together from the cached root filesystem.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::host::{Host, HostSpec};
use super::{TestbedError, lock, preflight, rootfs};

/// Booted hosts; dropping the fleet shuts every host down (also when a test panics).
#[derive(Debug)]
pub struct Fleet {
    hosts: Vec<Host>,
    rootfs: PathBuf,
    booted_in: Duration,
}

/// Serialises boots across threads and processes: on a 2-core machine, hosts booting in
/// parallel from several tests slow each other down past any sane timeout.
const BOOT_LOCK: &str = "/run/gatemend-testbed/boot.lock";

impl Fleet {
    /// [`Fleet::boot`] for a test: a testbed that cannot boot fails the test, with the whole
    /// error chain (a missing tool or root says so; it never skips).
    #[track_caller]
    pub fn boot_for_test(count: usize, spec: &HostSpec) -> Self {
        match Fleet::boot(count, spec) {
            Ok(fleet) => fleet,
            Err(e) => panic!("testbed: {:#}", anyhow::Error::from(e)),
        }
    }

    /// Boots `count` hosts and waits until every one runs. Call it from the thread that keeps
    /// the fleet: the hosts are bound to that thread's life (parent-death signal).
    pub fn boot(count: usize, spec: &HostSpec) -> Result<Self, TestbedError> {
        preflight()?;
        let (rootfs, _) = rootfs::ensure()?;
        let run_dir = run_dir()?;
        let _boot = lock::exclusive(Path::new(BOOT_LOCK))?;
        let started = Instant::now();
        let mut hosts = Vec::with_capacity(count);
        // Spawned from this thread (parent-death signal), waited for in parallel.
        for _ in 0..count {
            hosts.push(Host::spawn(&rootfs, spec, &run_dir)?);
        }
        let results: Vec<Result<(), TestbedError>> = std::thread::scope(|scope| {
            let waits: Vec<_> = hosts
                .iter_mut()
                .map(|host| scope.spawn(|| host.wait_booted(spec.boot_timeout)))
                .collect();
            waits
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        for result in results {
            result?;
        }
        Ok(Fleet {
            hosts,
            rootfs,
            booted_in: started.elapsed(),
        })
    }

    /// The hosts, in boot order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The root filesystem the hosts booted from.
    pub fn rootfs(&self) -> &PathBuf {
        &self.rootfs
    }

    /// How long booting the whole fleet took.
    pub fn booted_in(&self) -> Duration {
        self.booted_in
    }
}

/// A fresh directory for this fleet's console logs.
fn run_dir() -> Result<PathBuf, TestbedError> {
    static FLEETS: AtomicU32 = AtomicU32::new(0);
    let n = FLEETS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join("gatemend-testbed")
        .join(format!("{}-{n}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|source| TestbedError::Io {
        what: "cannot create",
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}
