//! Memory: what the host has to spare (`MemAvailable` in `/proc/meminfo`) and what php-fpm's
//! children use (the resident set, `VmRSS`, of every child of a pool's master), the facts
//! `pm.max_children` is sized from: a pool is given more children only when their measured
//! memory fits in what is available.
//!
//! The parsers ([`parse_meminfo`], [`parse_status`], [`pool_of_cmdline`]) are pure and total;
//! [`read`] walks a `/proc`.

use std::collections::BTreeMap;
use std::path::Path;

use super::ProbeError;

/// How many `/proc` entries are read at most: a host has far fewer processes, and a walk
/// must end whatever `/proc` holds.
const MAX_PROCESSES: usize = 1 << 17;

/// The memory facts of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// `MemAvailable` in bytes: what can be given to new processes without swapping.
    pub available: Option<u64>,
    /// The children of each php-fpm master, by (unit, pool name).
    pub pools: BTreeMap<(String, String), PoolMemory>,
}

/// What the running children of one pool use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolMemory {
    /// How many children were measured.
    pub children: u32,
    /// Their resident sets added, in bytes.
    pub rss: u64,
}

impl PoolMemory {
    /// The average child's resident set in bytes, when any was measured.
    pub fn average(&self) -> Option<u64> {
        (self.children > 0).then(|| self.rss / u64::from(self.children))
    }
}

/// A process as `/proc/PID/status` describes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// `PPid:`.
    pub ppid: Option<u32>,
    /// `VmRSS:` in bytes (absent for kernel threads).
    pub rss: Option<u64>,
}

/// `MemAvailable:` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| kib_field(line, "MemAvailable:"))
}

/// `PPid:` and `VmRSS:` of `/proc/PID/status`. Total: missing fields are `None`.
pub fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        if let Some(ppid) = line.strip_prefix("PPid:") {
            status.ppid = ppid.trim().parse().ok();
        } else if let Some(rss) = kib_field(line, "VmRSS:") {
            status.rss = Some(rss);
        }
    }
    status
}

/// The pool a php-fpm child serves, from its process title (`/proc/PID/cmdline`):
/// `php-fpm: pool www`, padded with NULs or spaces.
pub fn pool_of_cmdline(cmdline: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(cmdline).ok()?;
    let title = text.trim_end_matches(['\0', ' ']);
    let name = title.strip_prefix("php-fpm: pool ")?.trim();
    (!name.is_empty() && !name.contains('\0')).then_some(name)
}

/// `NAME:   1234 kB` as bytes.
fn kib_field(line: &str, name: &str) -> Option<u64> {
    let rest = line.strip_prefix(name)?.trim();
    let kib: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Reads `MemAvailable` and the children of each php-fpm master in `masters` (unit, MainPID)
/// under `proc` (`/proc` on a host). A process that goes away while it is read is skipped;
/// failing to read `meminfo` or to list `proc` is an error.
pub fn read(proc: &Path, masters: &[(String, u32)]) -> Result<Memory, ProbeError> {
    let meminfo = proc.join("meminfo");
    let text = std::fs::read_to_string(&meminfo).map_err(|source| ProbeError::Read {
        path: meminfo.clone(),
        source,
    })?;
    let mut memory = Memory {
        available: parse_meminfo(&text),
        pools: BTreeMap::new(),
    };
    if masters.is_empty() {
        return Ok(memory);
    }
    let entries = std::fs::read_dir(proc).map_err(|source| ProbeError::List {
        path: proc.to_owned(),
        source,
    })?;
    for entry in entries.take(MAX_PROCESSES).flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let status = parse_status(&status);
        let Some(unit) = masters
            .iter()
            .find(|(_, pid)| Some(*pid) == status.ppid)
            .map(|(unit, _)| unit)
        else {
            continue;
        };
        let (Some(rss), Ok(cmdline)) = (status.rss, std::fs::read(dir.join("cmdline"))) else {
            continue;
        };
        let Some(pool) = pool_of_cmdline(&cmdline) else {
            continue;
        };
        let measured = memory
            .pools
            .entry((unit.clone(), pool.to_owned()))
            .or_default();
        measured.children = measured.children.saturating_add(1);
        measured.rss = measured.rss.saturating_add(rss);
    }
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    // From a testbed host (Debian 12), trimmed.
    const MEMINFO: &str = "MemTotal:        8131480 kB\nMemFree:         1021368 kB\n\
                           MemAvailable:    6211772 kB\nBuffers:          312100 kB\n";
    const STATUS: &str = "Name:\tphp-fpm8.2\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t412\n\
                          Ngid:\t0\nPid:\t412\nPPid:\t398\nTracerPid:\t0\n\
                          VmPeak:\t  222652 kB\nVmSize:\t  222588 kB\nVmRSS:\t   11964 kB\n";

    #[test]
    fn meminfo_and_status_fields_are_read_in_bytes() {
        assert_eq!(parse_meminfo(MEMINFO), Some(6_211_772 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(
            parse_status(STATUS),
            Status {
                ppid: Some(398),
                rss: Some(11_964 * 1024)
            }
        );
        // A kernel thread has no VmRSS.
        assert_eq!(
            parse_status("Name:\tkthreadd\nPPid:\t0\n"),
            Status {
                ppid: Some(0),
                rss: None
            }
        );
    }

    #[test]
    fn the_pool_comes_from_the_childs_process_title() {
        assert_eq!(
            pool_of_cmdline(b"php-fpm: pool www\0\0\0\0\0\0\0\0\0"),
            Some("www")
        );
        assert_eq!(
            pool_of_cmdline(b"php-fpm: pool www                 "),
            Some("www")
        );
        assert_eq!(
            pool_of_cmdline(b"php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)\0"),
            None
        );
        assert_eq!(pool_of_cmdline(b"/usr/sbin/nginx\0-g\0"), None);
        assert_eq!(pool_of_cmdline(b"php-fpm: pool \0"), None);
    }

    #[test]
    fn children_of_each_master_are_counted_per_pool() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path();
        std::fs::write(proc.join("meminfo"), MEMINFO).unwrap();
        let process = |pid: u32, ppid: u32, rss_kib: u64, title: &[u8]| {
            let p = proc.join(pid.to_string());
            std::fs::create_dir(&p).unwrap();
            std::fs::write(
                p.join("status"),
                format!("Name:\tx\nPPid:\t{ppid}\nVmRSS:\t {rss_kib} kB\n"),
            )
            .unwrap();
            std::fs::write(p.join("cmdline"), title).unwrap();
        };
        process(398, 1, 30_000, b"php-fpm: master process (x)\0");
        process(412, 398, 10_000, b"php-fpm: pool www\0\0\0");
        process(413, 398, 14_000, b"php-fpm: pool www\0\0\0");
        process(414, 398, 8_000, b"php-fpm: pool api\0\0\0");
        // Another master's child, and a process that is no php-fpm child.
        process(500, 499, 50_000, b"php-fpm: pool www\0");
        process(600, 398, 1_000, b"sh\0-c\0x\0");
        std::fs::create_dir(proc.join("self")).unwrap();
        let memory = read(proc, &[("php8.2-fpm.service".into(), 398)]).unwrap();
        assert_eq!(memory.available, Some(6_211_772 * 1024));
        let www = memory.pools[&("php8.2-fpm.service".into(), "www".into())];
        assert_eq!(
            www,
            PoolMemory {
                children: 2,
                rss: 24_000 * 1024
            }
        );
        assert_eq!(www.average(), Some(12_000 * 1024));
        assert_eq!(memory.pools.len(), 2);
        assert_eq!(PoolMemory::default().average(), None);
    }
}
