//! Unix sockets: who owns one, its mode, and whether a given user may connect to it.
//!
//! [`inspect`] never follows a symlink (it `lstat`s), so a link at a socket path is reported
//! as a link, not as whatever it points to. [`may_connect`] answers the question the kernel
//! asks at `connect()`: write permission on the socket file and search permission on every
//! directory above it, for the user's uid, primary gid and supplementary groups. The decision
//! itself is the pure [`access`], so it is tested without a host.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{FileStat, SFlag, lstat};
use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
use serde::Serialize;

use super::ProbeError;

/// What is at a socket path, read with `lstat` (a symlink is reported, never followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketInfo {
    /// The path as asked.
    pub path: PathBuf,
    /// Whether anything (socket, file, link, ...) is at the path.
    pub exists: bool,
    /// Whether it is a unix socket.
    pub is_socket: bool,
    /// Whether it is a symbolic link (which is then not followed).
    pub is_symlink: bool,
    /// Owner uid; `None` when nothing is there.
    pub uid: Option<u32>,
    /// Group gid; `None` when nothing is there.
    pub gid: Option<u32>,
    /// The owner's name, when the uid has one in the host's user database.
    pub owner: Option<String>,
    /// The group's name, when the gid has one in the host's group database.
    pub group: Option<String>,
    /// Permission bits (`0o660`), without the file type; `None` when nothing is there.
    pub mode: Option<u32>,
}

impl SocketInfo {
    /// The mode as php-fpm's `listen.mode` writes it: `0660`.
    pub fn mode_octal(&self) -> Option<String> {
        self.mode.map(|m| format!("{m:04o}"))
    }

    /// `owner:group mode` for messages: `www-data:www-data 0660`, ids where there is no name.
    pub fn ownership(&self) -> String {
        let name = |name: &Option<String>, id: Option<u32>| match (name, id) {
            (Some(name), _) => name.clone(),
            (None, Some(id)) => id.to_string(),
            (None, None) => "?".to_owned(),
        };
        format!(
            "{}:{} {}",
            name(&self.owner, self.uid),
            name(&self.group, self.gid),
            self.mode_octal().unwrap_or_else(|| "?".to_owned())
        )
    }
}

/// Whether a user may connect, and why in one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    pub allowed: bool,
    pub why: String,
}

/// A user as the kernel sees it at `connect()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// Every group the user is in, the primary one included (`getgrouplist`).
    pub groups: Vec<u32>,
}

/// Owner, group and permission bits of one directory above the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirPerm {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Reads what is at `path` without following a symlink. A missing path is not an error: it is
/// reported with `exists: false`.
pub fn inspect(path: &Path) -> Result<SocketInfo, ProbeError> {
    match lstat(path) {
        Ok(stat) => Ok(info_from_stat(path, &stat)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(SocketInfo {
            path: path.to_owned(),
            exists: false,
            is_socket: false,
            is_symlink: false,
            uid: None,
            gid: None,
            owner: None,
            group: None,
            mode: None,
        }),
        Err(source) => Err(ProbeError::Stat {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The [`SocketInfo`] of an `lstat` result, with the owner's and group's names looked up.
pub fn info_from_stat(path: &Path, stat: &FileStat) -> SocketInfo {
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    SocketInfo {
        path: path.to_owned(),
        exists: true,
        is_socket: kind == SFlag::S_IFSOCK,
        is_symlink: kind == SFlag::S_IFLNK,
        uid: Some(stat.st_uid),
        gid: Some(stat.st_gid),
        // A uid without a name is shown as the number; the lookup failing is not fatal.
        owner: User::from_uid(Uid::from_raw(stat.st_uid))
            .ok()
            .flatten()
            .map(|u| u.name),
        group: Group::from_gid(Gid::from_raw(stat.st_gid))
            .ok()
            .flatten()
            .map(|g| g.name),
        mode: Some(stat.st_mode & 0o7777),
    }
}

/// Looks a user up in the host's user database, with every group it is in.
pub fn identity(user: &str) -> Result<Identity, ProbeError> {
    let lookup = |why: String| ProbeError::User {
        user: user.to_owned(),
        why,
    };
    let found = User::from_name(user)
        .map_err(|e| lookup(format!("getpwnam: {e}")))?
        .ok_or_else(|| lookup("no such user".into()))?;
    let name = CString::new(user).map_err(|_| lookup("the name contains a NUL byte".into()))?;
    let groups =
        getgrouplist(&name, found.gid).map_err(|e| lookup(format!("getgrouplist: {e}")))?;
    Ok(Identity {
        user: user.to_owned(),
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
    })
}

/// Whether `user` may connect to the socket `info` describes: looks the user up and reads the
/// directories above the socket, then decides with [`access`]. A user that cannot be looked up
/// may not connect (and the answer says why).
pub fn may_connect(info: &SocketInfo, user: &str) -> Access {
    let who = match identity(user) {
        Ok(who) => who,
        Err(e) => {
            return Access {
                allowed: false,
                why: e.to_string(),
            };
        }
    };
    let mut parents = Vec::new();
    for dir in info.path.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        match nix::sys::stat::stat(dir) {
            Ok(stat) => parents.push(DirPerm {
                path: dir.to_owned(),
                uid: stat.st_uid,
                gid: stat.st_gid,
                mode: stat.st_mode & 0o7777,
            }),
            Err(e) => {
                return Access {
                    allowed: false,
                    why: format!("cannot stat {}: {e}", dir.display()),
                };
            }
        }
    }
    // Outermost first, so the first directory that blocks is the one named.
    parents.reverse();
    access(info, &who, &parents)
}

/// The kernel's decision at `connect()` for `who`: search (x) on every directory in `parents`
/// (outermost first), then write (w) on the socket. The owner class applies when the uid owns
/// the file, else the group class when the user is in the file's group, else other; uid 0
/// passes (CAP_DAC_OVERRIDE). POSIX ACLs are not read: Debian's /run/php has none.
pub fn access(info: &SocketInfo, who: &Identity, parents: &[DirPerm]) -> Access {
    let path = info.path.display();
    let deny = |why: String| Access {
        allowed: false,
        why,
    };
    if !info.exists {
        return deny(format!("{path} does not exist"));
    }
    if info.is_symlink {
        return deny(format!("{path} is a symlink, not a socket"));
    }
    if !info.is_socket {
        return deny(format!("{path} is not a socket"));
    }
    let (Some(uid), Some(gid), Some(mode)) = (info.uid, info.gid, info.mode) else {
        return deny(format!("{path}: owner or mode unknown"));
    };
    let user = format!("{} (uid {})", who.user, who.uid);
    if who.uid == 0 {
        return Access {
            allowed: true,
            why: format!("{user} is root"),
        };
    }
    for dir in parents {
        let (class, bits) = class_bits(who, dir.uid, dir.gid, dir.mode);
        if bits & 0o1 == 0 {
            return deny(format!(
                "{user} may not search {} (mode {:04o}, {class} has no x)",
                dir.path.display(),
                dir.mode
            ));
        }
    }
    let (class, bits) = class_bits(who, uid, gid, mode);
    let owned = format!("{path} is {} {mode:04o}", info.ownership_ids(uid, gid));
    if bits & 0o2 == 0 {
        deny(format!(
            "{user} may not connect: {owned}, {class} has no write"
        ))
    } else {
        Access {
            allowed: true,
            why: format!("{user} may connect: {owned}, {class} has write"),
        }
    }
}

impl SocketInfo {
    fn ownership_ids(&self, uid: u32, gid: u32) -> String {
        format!(
            "{}:{}",
            self.owner.clone().unwrap_or_else(|| uid.to_string()),
            self.group.clone().unwrap_or_else(|| gid.to_string())
        )
    }
}

/// Which permission class applies to `who` on a file, and its three bits.
fn class_bits(who: &Identity, uid: u32, gid: u32, mode: u32) -> (&'static str, u32) {
    if who.uid == uid {
        ("the owner", (mode >> 6) & 0o7)
    } else if who.gid == gid || who.groups.contains(&gid) {
        ("its group", (mode >> 3) & 0o7)
    } else {
        ("other", mode & 0o7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(uid: u32, gid: u32, mode: u32) -> SocketInfo {
        SocketInfo {
            path: PathBuf::from("/run/php/php8.2-fpm.sock"),
            exists: true,
            is_socket: true,
            is_symlink: false,
            uid: Some(uid),
            gid: Some(gid),
            owner: None,
            group: None,
            mode: Some(mode),
        }
    }

    fn www_data() -> Identity {
        Identity {
            user: "www-data".into(),
            uid: 33,
            gid: 33,
            groups: vec![33],
        }
    }

    fn run_php(mode: u32) -> Vec<DirPerm> {
        vec![
            DirPerm {
                path: "/run".into(),
                uid: 0,
                gid: 0,
                mode: 0o755,
            },
            DirPerm {
                path: "/run/php".into(),
                uid: 33,
                gid: 33,
                mode,
            },
        ]
    }

    #[test]
    fn the_pool_default_lets_www_data_connect() {
        let access = access(&socket(33, 33, 0o660), &www_data(), &run_php(0o755));
        assert!(access.allowed, "{}", access.why);
    }

    #[test]
    fn root_owned_0600_denies_www_data_and_says_why() {
        let access = access(&socket(0, 0, 0o600), &www_data(), &run_php(0o755));
        assert!(!access.allowed);
        assert!(access.why.contains("other has no write"), "{}", access.why);
    }

    #[test]
    fn owner_class_wins_even_when_group_or_other_would_allow() {
        // The kernel picks the first matching class; it does not fall through.
        let access = access(&socket(33, 0, 0o066), &www_data(), &run_php(0o755));
        assert!(!access.allowed, "{}", access.why);
    }

    #[test]
    fn a_supplementary_group_grants_group_write() {
        let mut who = www_data();
        who.groups.push(1001);
        assert!(access(&socket(0, 1001, 0o660), &who, &run_php(0o755)).allowed);
        assert!(!access(&socket(0, 1001, 0o660), &www_data(), &run_php(0o755)).allowed);
    }

    #[test]
    fn a_directory_without_search_blocks_and_is_named() {
        let dirs = run_php(0o700);
        let mut who = www_data();
        who.uid = 34;
        who.gid = 34;
        who.groups = vec![34];
        let access = access(&socket(0, 0, 0o666), &who, &dirs);
        assert!(!access.allowed);
        assert!(access.why.contains("/run/php"), "{}", access.why);
    }

    #[test]
    fn links_files_and_missing_paths_are_never_connectable() {
        let mut link = socket(33, 33, 0o777);
        link.is_socket = false;
        link.is_symlink = true;
        assert!(!access(&link, &www_data(), &[]).allowed);
        let mut file = socket(33, 33, 0o666);
        file.is_socket = false;
        assert!(!access(&file, &www_data(), &[]).allowed);
        let mut missing = socket(33, 33, 0o666);
        missing.exists = false;
        assert!(!access(&missing, &www_data(), &[]).allowed);
    }

    #[test]
    fn inspect_reports_a_link_as_a_link_and_a_missing_path_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let info = inspect(&link).unwrap();
        assert!(info.exists && info.is_symlink && !info.is_socket);
        let file = inspect(&target).unwrap();
        assert!(file.exists && !file.is_symlink && !file.is_socket);
        assert!(!inspect(&dir.path().join("nothing")).unwrap().exists);
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        let sock = inspect(&dir.path().join("s")).unwrap();
        assert!(sock.is_socket && sock.uid.is_some());
        drop(listener);
    }
}
