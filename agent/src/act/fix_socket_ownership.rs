//! fix_socket_ownership: chown/chmod a php-fpm socket to the pool's `listen.owner`,
//! `listen.group` and `listen.mode`, so nginx's workers may connect again.
//!
//! The values are the pool's (php-fpm's defaults when unset: the pool's `user` and `group`,
//! mode `0660`). A request may name values only to repeat the pool's or to pick ones this
//! host's config lists (`actions.socket_ownership`); anything else is refused, and no mode bit
//! for others is ever set unless that config says `allow_others`. So a controller cannot make
//! a socket 0777 or hand it to another user: who may speak FastCGI to php-fpm (and so run code
//! as the pool's user) is the host's decision.
//!
//! The path is never followed: it is `lstat`ed, refused unless it is a socket at its own
//! canonical path (no link anywhere in it), opened `O_PATH|O_NOFOLLOW` and checked to be the
//! same inode, and changed through that descriptor, so a link swapped in between cannot
//! redirect the chown. Verification: nginx's worker user may connect by the permission bits,
//! and a real `connect()` made with that user's filesystem ids is accepted.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatemend_proto::ActionStatus;
use gatemend_proto::v1::ActionRequest;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, open};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, fstat, lstat};
use nix::unistd::{Gid, Uid, fchownat, setfsgid, setfsuid};
use serde::Serialize;

use super::{ActError, Facts, Recorder, Refusal, Settings, refuse};
use crate::probe::php_fpm::Pool;
use crate::probe::socket::{self, Identity, SocketInfo};
use gatemend_proto::error_chain;

/// An owner, group and mode, with both names and ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ownership {
    pub owner: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, `0o660`.
    pub mode: u32,
}

impl std::fmt::Display for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} ({}:{}) {:04o}",
            self.owner, self.group, self.uid, self.gid, self.mode
        )
    }
}

/// The chown/chmod of one socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketPlan {
    pub path: PathBuf,
    /// What is there now.
    pub from: Ownership,
    /// What it will be.
    pub to: Ownership,
    /// Where `to` comes from: the request, or the pool and its file.
    pub source: String,
    /// The user that must be able to connect afterwards (nginx's workers).
    pub worker_user: String,
    pub verify_timeout_ms: u64,
    /// Set when the pool file disagrees with what nginx needs: php-fpm re-creates the socket
    /// from the pool file at its next start, so that file is what makes the fix last.
    pub lasting_note: Option<String>,
}

impl SocketPlan {
    pub(super) fn lines(&self) -> Vec<String> {
        let path = self.path.display();
        let mut lines = vec![
            format!("lstat {path}: must be a socket, not a link, at its canonical path"),
            format!("open {path} O_PATH|O_NOFOLLOW, check it is the same inode"),
            format!(
                "chown {path} {}:{} ({}:{}) -> {}:{} ({}:{})",
                self.from.owner,
                self.from.group,
                self.from.uid,
                self.from.gid,
                self.to.owner,
                self.to.group,
                self.to.uid,
                self.to.gid
            ),
            format!(
                "chmod {path} {:04o} -> {:04o}",
                self.from.mode, self.to.mode
            ),
            format!("values from {}", self.source),
            format!(
                "verify within {} ms: {} may connect (permission bits, then a real connect())",
                self.verify_timeout_ms, self.worker_user
            ),
        ];
        lines.extend(self.lasting_note.clone());
        lines
    }
}

/// The pool that listens on `path`, if any.
pub fn pool_for<'a>(pools: &'a [Pool], path: &str) -> Option<&'a Pool> {
    pools.iter().find(|p| p.socket_path() == Some(path))
}

/// The owner and group names the request asks for, else the pool's: the names `observe` looks
/// up (the plan then decides whether they are allowed).
pub(super) fn wanted_names(
    request: &ActionRequest,
    pools: &[Pool],
) -> (Option<String>, Option<String>) {
    let pool = pool_for(pools, &request.socket_path);
    let pick = |asked: &str, pooled: Option<&String>| {
        if asked.is_empty() {
            pooled.cloned()
        } else {
            Some(asked.to_owned())
        }
    };
    (
        pick(&request.owner, pool.and_then(|p| p.listen_owner.as_ref())),
        pick(&request.group, pool.and_then(|p| p.listen_group.as_ref())),
    )
}

/// A mode as php-fpm writes it (`0660`, `660`): octal, permission bits only. Set-id and
/// sticky bits are refused: a socket needs none.
pub fn parse_mode(text: &str) -> Result<u32, Refusal> {
    let text = text.trim();
    let mode = (!text.is_empty() && text.len() <= 4)
        .then(|| u32::from_str_radix(text, 8).ok())
        .flatten();
    match mode {
        Some(mode) if mode <= 0o777 => Ok(mode),
        Some(_) => refuse(format!(
            "mode `{text}` has set-id or sticky bits; a socket needs none"
        )),
        None => refuse(format!("mode `{text}` is not an octal mode like 0660")),
    }
}

/// The pure plan: the path is a socket at its canonical path, the target owner, group and mode
/// exist on this host, and they would let nginx's worker user connect.
pub fn plan(
    request: &ActionRequest,
    settings: &Settings,
    facts: &Facts,
) -> Result<SocketPlan, Refusal> {
    let path = &request.socket_path;
    let Some(info) = &facts.socket else {
        return refuse(format!("{path} was not inspected"));
    };
    if !info.exists {
        return refuse(format!("nothing is at {path}"));
    }
    if info.is_symlink {
        return refuse(format!("{path} is a symlink; links are never followed"));
    }
    if !info.is_socket {
        return refuse(format!("{path} is not a socket; it is left untouched"));
    }
    match &facts.canonical {
        Some(canonical) if canonical == Path::new(path) => {}
        Some(canonical) => {
            return refuse(format!(
                "{path} resolves through a link to {}; it is left untouched",
                canonical.display()
            ));
        }
        None => return refuse(format!("{path} cannot be resolved to a canonical path")),
    }
    let (Some(uid), Some(gid), Some(mode)) = (info.uid, info.gid, info.mode) else {
        return refuse(format!("{path}: owner or mode unknown"));
    };
    let pool = pool_for(&facts.pools, path);
    let allowed = &settings.actions.socket_ownership;
    let owner = choose(
        "owner",
        &request.owner,
        pool.and_then(|p| p.listen_owner.as_deref()),
        &allowed.owners,
        pool,
        path,
    )?;
    let group = choose(
        "group",
        &request.group,
        pool.and_then(|p| p.listen_group.as_deref()),
        &allowed.groups,
        pool,
        path,
    )?;
    let to_mode = choose_mode(request, pool, settings, path)?;
    let Some(&to_uid) = facts.users.get(&owner) else {
        return refuse(format!("there is no user `{owner}` on this host"));
    };
    let Some(&to_gid) = facts.groups.get(&group) else {
        return refuse(format!("there is no group `{group}` on this host"));
    };
    let to = Ownership {
        owner,
        group,
        uid: to_uid,
        gid: to_gid,
        mode: to_mode,
    };
    let from = Ownership {
        owner: info.owner.clone().unwrap_or_else(|| uid.to_string()),
        group: info.group.clone().unwrap_or_else(|| gid.to_string()),
        uid,
        gid,
        mode,
    };
    let worker_user = &settings.actions.worker_user;
    let Some(worker) = &facts.worker else {
        return refuse(format!(
            "nginx's worker user `{worker_user}` is not on this host; nothing could verify the fix"
        ));
    };
    let after = with_ownership(info, &to);
    let access = socket::access(&after, worker, &[]);
    let pool_file = pool.map(|p| p.file.display().to_string());
    if !access.allowed {
        return refuse(format!(
            "after the change {}; {}",
            access.why,
            match &pool_file {
                Some(file) => format!("{file} (listen.owner/group/mode) is what must change"),
                None => "the requested owner/group/mode would not fix it".to_owned(),
            }
        ));
    }
    let source = match pool {
        Some(p) if pool_says(p, &to) => format!("pool [{}] in {}", p.name, p.file.display()),
        _ => "the request, allowed by this host's actions.socket_ownership".to_owned(),
    };
    Ok(SocketPlan {
        path: PathBuf::from(path),
        lasting_note: pool.and_then(|p| lasting_note(p, &to, &after, worker, facts)),
        from,
        to,
        source,
        worker_user: worker_user.clone(),
        verify_timeout_ms: settings.verify_timeout_ms(request),
    })
}

/// Whether the pool's `listen.owner/group/mode` are exactly `to`.
fn pool_says(pool: &Pool, to: &Ownership) -> bool {
    pool.listen_owner.as_deref() == Some(to.owner.as_str())
        && pool.listen_group.as_deref() == Some(to.group.as_str())
        && parse_mode(&pool.listen_mode).ok() == Some(to.mode)
}

/// The owner or group to set: the pool's (php-fpm's default, the pool's `user`/`group`, is
/// already applied by the probe), or the request's when it is the pool's or this host's
/// config lists it. Anything else is refused: the controller does not choose who may connect.
fn choose(
    field: &str,
    asked: &str,
    pooled: Option<&str>,
    allowed: &[String],
    pool: Option<&Pool>,
    path: &str,
) -> Result<String, Refusal> {
    let config_key = format!("actions.socket_ownership.{field}s");
    match (asked, pooled) {
        ("", Some(pooled)) => Ok(pooled.to_owned()),
        ("", None) => match pool {
            Some(p) => refuse(format!(
                "no {field} to set: pool [{}] in {} names no listen.{field} and no {field}",
                p.name,
                p.file.display()
            )),
            None => refuse(format!(
                "no {field} to set: the request names none and no php-fpm pool listens on {path}"
            )),
        },
        (asked, Some(pooled)) if asked == pooled => Ok(pooled.to_owned()),
        (asked, _) if allowed.iter().any(|a| a == asked) => Ok(asked.to_owned()),
        (asked, Some(pooled)) => refuse(format!(
            "the request asks for {field} `{asked}`, but the pool{} says `{pooled}` and this host's config does not allow `{asked}` ({config_key})",
            pool.map(|p| format!(" [{}] in {}", p.name, p.file.display()))
                .unwrap_or_default()
        )),
        (asked, None) => refuse(format!(
            "the request asks for {field} `{asked}`; no php-fpm pool listens on {path} and this host's config does not allow `{asked}` ({config_key})"
        )),
    }
}

/// The mode to set: the pool's `listen.mode` (php-fpm's default `0660`), or the request's
/// when it is the pool's or listed in the config; never a bit for others unless the config
/// says `allow_others`.
fn choose_mode(
    request: &ActionRequest,
    pool: Option<&Pool>,
    settings: &Settings,
    path: &str,
) -> Result<u32, Refusal> {
    let allowed = &settings.actions.socket_ownership;
    let pooled = pool.map(|p| parse_mode(&p.listen_mode)).transpose()?;
    let mode = if request.mode.is_empty() {
        match pooled {
            Some(mode) => mode,
            None => {
                return refuse(format!(
                    "no mode to set: the request names none and no php-fpm pool listens on {path}"
                ));
            }
        }
    } else {
        let asked = parse_mode(&request.mode)?;
        let listed = allowed
            .modes
            .iter()
            .any(|m| parse_mode(m).is_ok_and(|m| m == asked));
        if pooled != Some(asked) && !listed {
            return refuse(format!(
                "the request asks for mode {asked:04o}, but {} and this host's config does not allow it (actions.socket_ownership.modes)",
                match (pool, pooled) {
                    (Some(p), Some(m)) =>
                        format!("the pool [{}] in {} says {m:04o}", p.name, p.file.display()),
                    _ => format!("no php-fpm pool listens on {path}"),
                }
            ));
        }
        asked
    };
    if mode & 0o007 != 0 && !allowed.allow_others {
        return refuse(format!(
            "mode {mode:04o} would let every local user connect to {path} (and run code as the pool's user); this host's config does not allow permission bits for others (actions.socket_ownership.allow_others){}",
            match pool {
                Some(p) if pooled == Some(mode) =>
                    format!("; {} (listen.mode) is what must change", p.file.display()),
                _ => String::new(),
            }
        ));
    }
    Ok(mode)
}

/// What the result says when the pool file disagrees with the fix: php-fpm re-creates the
/// socket from the pool file at its next start, undoing a chown the file does not agree with.
fn lasting_note(
    pool: &Pool,
    to: &Ownership,
    after: &SocketInfo,
    worker: &Identity,
    facts: &Facts,
) -> Option<String> {
    let pooled = (
        pool.listen_owner.as_deref(),
        pool.listen_group.as_deref(),
        parse_mode(&pool.listen_mode).ok(),
    );
    let ids = (
        pooled.0.and_then(|o| facts.users.get(o)).copied(),
        pooled.1.and_then(|g| facts.groups.get(g)).copied(),
    );
    let file = pool.file.display();
    let said = format!(
        "listen.owner={} listen.group={} listen.mode={}",
        pooled.0.unwrap_or("(unset)"),
        pooled.1.unwrap_or("(unset)"),
        pool.listen_mode
    );
    let same = pooled.0 == Some(to.owner.as_str())
        && pooled.1 == Some(to.group.as_str())
        && pooled.2 == Some(to.mode);
    if same {
        return None;
    }
    // Would the pool's own values let nginx in? Names not resolved here are the request's, so
    // the pool's may be unknown; say only what is known.
    let pool_allows = match (ids, pooled.2) {
        ((Some(uid), Some(gid)), Some(mode)) => {
            let mut pooled_info = after.clone();
            pooled_info.uid = Some(uid);
            pooled_info.gid = Some(gid);
            pooled_info.mode = Some(mode);
            Some(socket::access(&pooled_info, worker, &[]).allowed)
        }
        _ => None,
    };
    Some(match pool_allows {
        Some(false) => format!(
            "the pool file {file} says {said}, which does not let {} connect: php-fpm re-creates the socket with those at its next start, so the pool file is what makes this fix last",
            worker.user
        ),
        _ => format!(
            "the pool file {file} says {said}: php-fpm re-creates the socket with those at its next start, so the pool file is what makes this fix last"
        ),
    })
}

fn with_ownership(info: &SocketInfo, to: &Ownership) -> SocketInfo {
    SocketInfo {
        uid: Some(to.uid),
        gid: Some(to.gid),
        owner: Some(to.owner.clone()),
        group: Some(to.group.clone()),
        mode: Some(to.mode),
        ..info.clone()
    }
}

/// Precheck again at the last moment, chown/chmod through an `O_PATH` descriptor, verify.
pub async fn apply(plan: &SocketPlan, rec: &Recorder) -> (ActionStatus, String) {
    let path = &plan.path;
    let started = Instant::now();
    let fd = match open_checked(path) {
        Ok(Ok((fd, stat))) => {
            let info = socket::info_from_stat(path, &stat);
            rec.record(
                "precheck",
                started,
                true,
                format!(
                    "lstat {}: socket {}, inode {}; opened O_PATH|O_NOFOLLOW: same inode",
                    path.display(),
                    info.ownership(),
                    stat.st_ino
                ),
            );
            fd
        }
        Ok(Err(refusal)) => {
            rec.record("precheck", started, false, refusal.0.clone());
            return (ActionStatus::Refused, refusal.0);
        }
        Err(e) => {
            let text = error_chain(&e);
            rec.record("precheck", started, false, text.clone());
            return (ActionStatus::Failed, text);
        }
    };
    let started = Instant::now();
    match change(&fd, plan) {
        Ok(()) => rec.record(
            "do",
            started,
            true,
            format!(
                "chown {p} {} -> {}:{} ({}:{})\nchmod {p} {:04o} -> {:04o}",
                format_args!(
                    "{}:{} ({}:{})",
                    plan.from.owner, plan.from.group, plan.from.uid, plan.from.gid
                ),
                plan.to.owner,
                plan.to.group,
                plan.to.uid,
                plan.to.gid,
                plan.from.mode,
                plan.to.mode,
                p = path.display()
            ),
        ),
        Err(e) => {
            let text = error_chain(&e);
            rec.record("do", started, false, text.clone());
            return (ActionStatus::Failed, text);
        }
    }
    drop(fd);
    verify(plan, rec).await
}

/// `lstat`, canonical path, `open(O_PATH|O_NOFOLLOW)` and `fstat` of the same inode: the
/// descriptor the change goes through, or why not.
fn open_checked(path: &Path) -> Result<Result<(OwnedFd, FileStat), Refusal>, ActError> {
    let sys = |call: &'static str| {
        move |source| ActError::Sys {
            call,
            path: path.to_owned(),
            source,
        }
    };
    let before = lstat(path).map_err(sys("lstat"))?;
    let kind = SFlag::from_bits_truncate(before.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFSOCK {
        return Ok(refuse(format!("{} is no longer a socket", path.display())));
    }
    match std::fs::canonicalize(path) {
        Ok(canonical) if canonical == path => {}
        _ => {
            return Ok(refuse(format!(
                "{} now resolves through a link",
                path.display()
            )));
        }
    }
    let fd = open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open(O_PATH|O_NOFOLLOW)"))?;
    let opened = fstat(&fd).map_err(sys("fstat"))?;
    if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino) {
        return Ok(refuse(format!(
            "{} was replaced between lstat and open",
            path.display()
        )));
    }
    Ok(Ok((fd, opened)))
}

fn change(fd: &OwnedFd, plan: &SocketPlan) -> Result<(), ActError> {
    let sys = |call: &'static str| {
        move |source| ActError::Sys {
            call,
            path: plan.path.clone(),
            source,
        }
    };
    fchownat(
        fd,
        "",
        Some(Uid::from_raw(plan.to.uid)),
        Some(Gid::from_raw(plan.to.gid)),
        AtFlags::AT_EMPTY_PATH,
    )
    .map_err(sys("fchownat(AT_EMPTY_PATH)"))?;
    // An O_PATH descriptor cannot be fchmod'ed; its /proc/self/fd entry names exactly that
    // inode (what glibc's own no-follow chmod does).
    let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
    fchmodat(
        AT_FDCWD,
        by_fd.as_str(),
        Mode::from_bits_truncate(plan.to.mode),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(sys("chmod via /proc/self/fd"))?;
    Ok(())
}

/// The owner and mode are what was planned, the worker user may connect by the bits, and a
/// real connect() with its ids is accepted.
async fn verify(plan: &SocketPlan, rec: &Recorder) -> (ActionStatus, String) {
    let path = &plan.path;
    let started = Instant::now();
    rec.begin("verify");
    let until = started + Duration::from_millis(plan.verify_timeout_ms);
    let mut out = Vec::new();
    let fail = |out: &mut Vec<String>, why: String| {
        out.push(why.clone());
        rec.record("verify", started, false, out.join("\n"));
        (ActionStatus::Failed, why)
    };
    let info = match socket::inspect(path) {
        Ok(info) => info,
        Err(e) => return fail(&mut out, error_chain(&e)),
    };
    out.push(format!("lstat {}: {}", path.display(), info.ownership()));
    if !info.is_socket
        || (info.uid, info.gid, info.mode)
            != (Some(plan.to.uid), Some(plan.to.gid), Some(plan.to.mode))
    {
        return fail(
            &mut out,
            format!("{} is not {} after the change", path.display(), plan.to),
        );
    }
    let access = socket::may_connect(&info, &plan.worker_user);
    out.push(access.why.clone());
    if !access.allowed {
        return fail(&mut out, access.why);
    }
    let who = match socket::identity(&plan.worker_user) {
        Ok(who) => who,
        Err(e) => return fail(&mut out, e.to_string()),
    };
    match connect_as(path, &who, &info, until).await {
        Ok(()) => out.push(format!(
            "connect() as {} (fsuid {}): accepted",
            who.user, who.uid
        )),
        Err(e) => {
            return fail(&mut out, format!("connect() as {} failed: {e}", who.user));
        }
    }
    rec.record("verify", started, true, out.join("\n"));
    let mut message = format!(
        "{} is now {}:{} {:04o}; {} may connect",
        path.display(),
        plan.to.owner,
        plan.to.group,
        plan.to.mode,
        plan.worker_user
    );
    if let Some(note) = &plan.lasting_note {
        message.push_str("; ");
        message.push_str(note);
    }
    (ActionStatus::Succeeded, message)
}

/// A real `connect()` with `who`'s filesystem uid and gid, on a thread of its own: fsuid and
/// fsgid are per thread (and dropping fsuid 0 drops the thread's file capabilities), so the
/// rest of the agent keeps root's. The gid is the socket's group when `who` is in it (the
/// kernel's group check then passes as it would through a supplementary group), else the
/// user's primary group. A thread, not a forked child: no fork after the runtime started.
async fn connect_as(
    path: &Path,
    who: &Identity,
    info: &SocketInfo,
    until: Instant,
) -> std::io::Result<()> {
    let gid = match info.gid {
        Some(gid) if who.groups.contains(&gid) || who.gid == gid => gid,
        _ => who.gid,
    };
    let uid = who.uid;
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let target = path.to_owned();
        std::thread::Builder::new()
            .name("gatemend-connect-as".into())
            .spawn(move || {
                setfsgid(Gid::from_raw(gid));
                setfsuid(Uid::from_raw(uid));
                // setfsuid reports the previous value; asking again tells whether it took.
                let result = if setfsuid(Uid::from_raw(uid)) == Uid::from_raw(uid) {
                    std::os::unix::net::UnixStream::connect(&target).map(drop)
                } else {
                    Err(std::io::Error::other("setfsuid did not take"))
                };
                let _ = tx.send(result);
            })?;
        let left = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let result = match tokio::time::timeout(left, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(std::io::Error::other(
                "the connect thread ended without answering",
            )),
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
