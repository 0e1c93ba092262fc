//! A cgroup of its own for each host.
//!
//! With `--keep-unit` and no systemd on the outer machine, systemd-nspawn runs the host in
//! `<its own cgroup>/payload`. Started from the same cgroup, every host would share one payload
//! cgroup, and their systemds would create and remove each other's unit cgroups (seen as units
//! failing at boot with `status=219/CGROUP`). So each host's systemd-nspawn is started inside
//! `gatemend-testbed/<host>` of every cgroup hierarchy that tracks processes.

use std::fs;
use std::path::{Path, PathBuf};

/// The hierarchies systemd tracks processes in: the named v1 one and the v2 one, wherever
/// this machine mounts them (hybrid: `systemd` and `unified`; pure v2: the root).
const ROOTS: &[&str] = &[
    "/sys/fs/cgroup/systemd",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup",
];

/// Creates the host's cgroups and returns their `cgroup.procs` files, for the process that
/// execs systemd-nspawn to move itself into.
pub(crate) fn create(host: &str) -> Vec<PathBuf> {
    let mut procs = Vec::new();
    for root in ROOTS.iter().map(Path::new) {
        if !root.join("cgroup.procs").exists() {
            continue;
        }
        let dir = root.join("gatemend-testbed").join(host);
        if fs::create_dir_all(&dir).is_ok() {
            procs.push(dir.join("cgroup.procs"));
        }
    }
    procs
}

/// Removes the host's cgroups (depth first; a cgroup directory goes once it is empty).
pub(crate) fn remove(host: &str) {
    for root in ROOTS.iter().map(Path::new) {
        remove_tree(&root.join("gatemend-testbed").join(host));
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
}
