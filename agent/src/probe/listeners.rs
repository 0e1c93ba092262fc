//! TCP listeners and who holds them: `/proc/net/tcp{,6}` sockets in state LISTEN, the pids
//! whose fds hold each socket's inode, and the systemd unit from those pids' cgroup.
//!
//! The parsers ([`parse_proc_net_tcp`], [`unit_of_cgroup`]) are pure and total; [`read`]
//! walks a `/proc`.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use serde::Serialize;

use super::ProbeError;

/// A TCP socket in state LISTEN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// The local address; IPv4-mapped IPv6 addresses are given as IPv4.
    pub addr: SocketAddr,
    /// The socket's inode, as `/proc/PID/fd` links name it (`socket:[INODE]`).
    pub inode: u64,
    /// The processes holding the socket, ascending.
    pub pids: Vec<u32>,
    /// The systemd unit of the first of those processes (`nginx.service`).
    pub unit: Option<String>,
    /// The first process's name (`/proc/PID/comm`).
    pub process: Option<String>,
}

/// The `st` column of a socket in state LISTEN (`TCP_LISTEN` = 10).
const LISTEN: &str = "0A";

/// Parses the text of `/proc/net/tcp` (`v6 = false`) or `/proc/net/tcp6` (`v6 = true`) into
/// its listening sockets (state `0A`), without pids. Total: lines it cannot read are skipped.
///
/// The kernel prints each 32-bit word of an address as a number in the host's byte order,
/// so the text is decoded with the byte order of the machine that reads it (the one that
/// wrote it); the port is printed in network order already.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<Listener> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?.strip_suffix(':')?;
            let local = fields.next()?;
            let _remote = fields.next()?;
            if fields.next()? != LISTEN {
                return None;
            }
            // tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, then the inode.
            let inode = fields.nth(5)?.parse().ok()?;
            Some(Listener {
                addr: decode_addr(local, v6)?,
                inode,
                pids: Vec::new(),
                unit: None,
                process: None,
            })
        })
        .collect()
}

/// `0100007F:0050` or `00000000000000000000000001000000:0BB8`.
fn decode_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = hex_words(ip)?;
    let ip = match (v6, words.as_slice()) {
        (false, [word]) => IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes())),
        (true, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_exact_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            // A dual-stack socket bound to an IPv4 address shows it v4-mapped.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Eight hex digits per 32-bit word.
fn hex_words(hex: &str) -> Option<Vec<u32>> {
    if hex.is_empty() || !hex.len().is_multiple_of(8) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(8)
        .map(|i| u32::from_str_radix(hex.get(i..i + 8)?, 16).ok())
        .collect()
}

/// The systemd unit of a process from the text of its `/proc/PID/cgroup`: the last
/// `*.service` or `*.scope` component of its cgroup path.
///
/// The unified hierarchy (`0::`) is read first, then systemd's own named hierarchy
/// (`name=systemd`, on hybrid hosts where the unified one may be empty), then any other.
/// The last matching component wins because a host inside a container shows its units below
/// the container's own (`/machine.slice/x.service/payload/system.slice/nginx.service`).
pub fn unit_of_cgroup(text: &str) -> Option<String> {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some((controllers, path))
        })
        .collect();
    let unified = paths.iter().filter(|(c, _)| c.is_empty());
    let named = paths.iter().filter(|(c, _)| *c == "name=systemd");
    let rest = paths.iter();
    unified
        .chain(named)
        .chain(rest)
        .find_map(|(_, path)| unit_in_path(path))
}

fn unit_in_path(path: &str) -> Option<String> {
    path.split('/')
        .rev()
        .find(|part| {
            let stem = part
                .strip_suffix(".service")
                .or_else(|| part.strip_suffix(".scope"));
            stem.is_some_and(|s| !s.is_empty())
        })
        .map(str::to_owned)
}

/// Reads every TCP listener under `root_proc` (normally `/proc`) with its pids, unit and
/// process name. `ROOT/net/tcp` is the reading process's network namespace; a missing
/// `tcp6` (IPv6 disabled) is no error. Processes that exit or deny access while their fds
/// are read are skipped: the listing is a snapshot of what could be seen.
pub fn read(root_proc: &Path) -> Result<Vec<Listener>, ProbeError> {
    let mut listeners = Vec::new();
    for (name, v6) in [("tcp", false), ("tcp6", true)] {
        let path = root_proc.join("net").join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => listeners.extend(parse_proc_net_tcp(&text, v6)),
            Err(e) if v6 && e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(ProbeError::Read { path, source }),
        }
    }
    let mut holders: BTreeMap<u64, Vec<u32>> =
        listeners.iter().map(|l| (l.inode, Vec::new())).collect();
    let entries = std::fs::read_dir(root_proc).map_err(|source| ProbeError::List {
        path: root_proc.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(pids) = inode.and_then(|i| holders.get_mut(&i))
                && !pids.contains(&pid)
            {
                pids.push(pid);
            }
        }
    }
    for listener in &mut listeners {
        let mut pids = holders.get(&listener.inode).cloned().unwrap_or_default();
        pids.sort_unstable();
        if let Some(&first) = pids.first() {
            let dir = root_proc.join(first.to_string());
            listener.unit = std::fs::read_to_string(dir.join("cgroup"))
                .ok()
                .and_then(|text| unit_of_cgroup(&text));
            listener.process = std::fs::read_to_string(dir.join("comm"))
                .ok()
                .map(|comm| comm.trim_end().to_owned());
        }
        listener.pids = pids;
    }
    tracing::debug!(
        proc = %root_proc.display(),
        listeners = listeners.len(),
        "Read TCP listeners."
    );
    Ok(listeners)
}

/// The listener that accepts connections to `host:port`: one bound to that address, or to
/// a wildcard on that port. `host` is an IP address (`[::1]` brackets allowed), `localhost`
/// (either loopback address), or a name, which only a wildcard listener is known to match.
/// `0.0.0.0` accepts IPv4 only; `::` accepts both (Linux's default `bindv6only = 0`).
/// An exact address is preferred over a wildcard.
pub fn listening_on<'a>(listeners: &'a [Listener], host: &str, port: u16) -> Option<&'a Listener> {
    let host = host.trim();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let wanted: Vec<IpAddr> = if bare.eq_ignore_ascii_case("localhost") {
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    } else {
        bare.parse::<IpAddr>().map(normalize).into_iter().collect()
    };
    let on_port = || listeners.iter().filter(move |l| l.addr.port() == port);
    on_port()
        .find(|l| wanted.contains(&l.addr.ip()))
        .or_else(|| {
            on_port().find(|l| match l.addr.ip() {
                IpAddr::V6(ip) if ip.is_unspecified() => true,
                IpAddr::V4(ip) if ip.is_unspecified() => {
                    wanted.is_empty() || wanted.iter().any(IpAddr::is_ipv4)
                }
                _ => false,
            })
        })
}

/// `::ffff:a.b.c.d` is the IPv4 address, as listeners are decoded.
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
