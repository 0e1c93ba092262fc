//! Follow many log files at once, the way `tail -F` does, on one inotify watcher.
//!
//! The watches are on the logs' parent directories, not on the files: a watch on a file follows
//! its inode, so it would keep reporting the rotated `access.log.1` and never see the new
//! `access.log` appear. A directory watch sees the file written, renamed, deleted and created.
//! A log whose directory does not exist yet is watched through its nearest existing ancestor
//! until the directory appears. The directory's parent is watched too, so the directory itself
//! being deleted and recreated is seen whatever the timing (a watch added to a directory while
//! it is being removed never reports anything). Events about other files in those directories
//! (`/var/log/syslog`) are dropped in the callback.
//!
//! One dedicated thread does all the reading with blocking I/O: notify's callback is
//! synchronous and only wakes that thread (a one-slot channel, so a burst of events is one
//! wake-up; each wake-up looks at every log, so no event detail is relied on and a lost or
//! overflowed event queue costs nothing but latency until the next event). A one-second tick
//! reads the rotated files still open and closes them after [`ROTATE_WAIT`], and retries
//! watches that failed (reading every log when a watch moved); it reads no current log
//! otherwise.
//!
//! What each wake-up does for a log, and why:
//! - Read the open file from its offset to its end and cut complete lines; the bytes after the
//!   last `\n` wait for the rest of their line (a writer may be half-way through a `write`).
//! - If the file is now shorter than the offset it was truncated in place (logrotate's
//!   `copytruncate`): read it again from 0.
//! - If the path now names another inode (renamed away and recreated, or deleted and recreated),
//!   the old file is kept open and read for [`ROTATE_WAIT`] after it last grew: nginx and php-fpm
//!   keep writing to the old inode until they are told to reopen, and logrotate's `create`
//!   makes the new file before that. The new file is read from its beginning.
//! - If the path is gone, the open file is still read: its writer may still hold it.
//!
//! Memory is bounded: a line longer than [`MAX_LINE`] is delivered cut at that length and the
//! rest of it skipped; it is counted in [`Tailer::truncated`] and [`Tailer::dropped`]. Lines
//! go out on the caller's bounded channel; when it is full the tailer waits (nothing is dropped
//! for speed), and lines it can no longer deliver because the receiver is gone are counted.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::ModifyKind;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::Sender;
use tracing::{debug, info, warn};

use super::error::DetectError;

/// The longest line delivered whole; longer ones are cut here. nginx's error lines are at most
/// a few KiB (its own buffer is 2 KiB plus the request), so only garbage reaches this.
pub const MAX_LINE: usize = 1 << 20;

/// How long a rotated-away file is still read after it last grew (see the module docs).
pub const ROTATE_WAIT: Duration = Duration::from_secs(5);

/// How much is read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// How often the thread wakes without an event: to close rotated files after [`ROTATE_WAIT`],
/// to retry a directory watch that failed, and to notice that the tailer was dropped. No log is
/// read on this tick; reading is driven by inotify only.
const TICK: Duration = Duration::from_secs(1);

/// Where to start in a log that already exists when the tailer starts. Logs that appear later
/// are always read from their beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only what is written from now on (the agent's default: old lines are history).
    End,
    /// Everything the file holds, then what is written.
    Beginning,
}

/// One complete line of one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The log's path as it was given (made absolute).
    pub path: PathBuf,
    /// The line without its trailing `\n`; at most [`MAX_LINE`] bytes, not necessarily UTF-8.
    pub bytes: Vec<u8>,
    /// When the tailer read it, for measuring how far behind the writer it is.
    pub read_at: Instant,
}

/// Follows a set of logs on a thread of its own until dropped (or until the receiver of its
/// lines is gone).
#[derive(Debug)]
pub struct Tailer {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    wake: SyncSender<()>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Lines lost or cut: not delivered because the receiver was gone, or truncated.
    dropped: AtomicU64,
    /// Lines cut at [`MAX_LINE`].
    truncated: AtomicU64,
}

impl Tailer {
    /// Start following `paths`, sending each complete line to `out`.
    ///
    /// The directory watches and the starting offsets are in place when this returns, so a line
    /// written after it returns is delivered. Relative paths are resolved against the current
    /// directory now. Must not be called from inside an async task that cannot block briefly:
    /// it opens the logs and adds the watches with blocking calls (all quick).
    ///
    /// # Errors
    /// When the inotify watcher or the thread cannot be created, or a directory cannot be
    /// watched (permissions, `fs.inotify.max_user_watches`). A log that cannot be opened
    /// (permissions) is not an error: it is logged and retried on its next change.
    pub fn spawn(
        paths: Vec<PathBuf>,
        start: StartAt,
        out: Sender<Line>,
    ) -> Result<Tailer, DetectError> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let path = if path.is_absolute() {
                path
            } else {
                std::env::current_dir()
                    .map_err(|source| DetectError::RelativePath {
                        path: path.clone(),
                        source,
                    })?
                    .join(&path)
            };
            // The same log named twice would deliver every line twice.
            if !files.iter().any(|f: &Tailed| f.path == path) {
                files.push(Tailed::new(path));
            }
        }

        // One slot: a pending wake-up already means "look at everything".
        let (wake, woken) = sync_channel::<()>(1);
        let waker = wake.clone();
        let rewatch = Arc::new(AtomicBool::new(false));
        let rewatch_flag = Arc::clone(&rewatch);
        let interest = Interest::new(&files);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match &event {
                // Opens and reads (ours included) change nothing worth reading.
                Ok(event) if matches!(event.kind, EventKind::Access(_)) => return,
                // Other files beside the logs' directories (syslog in /var/log).
                Ok(event) if !interest.concerns(event) => return,
                // notify keys its watches by path: when it sees a watched path deleted or moved
                // (even the old directory of a name we have since watched again) it drops the
                // watch under that name. Put them all back after this event is handled.
                Ok(event)
                    if matches!(
                        event.kind,
                        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                    ) =>
                {
                    rewatch_flag.store(true, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(error) => debug!(%error, "inotify reported an error; rechecking every log"),
            }
            // Full: a wake-up is already pending. Disconnected: the thread has ended.
            let _ = waker.try_send(());
        })
        .map_err(DetectError::Watcher)?;

        let counters = Arc::new(Counters::default());
        let mut state = State {
            files,
            watcher,
            watched: HashMap::new(),
            rewatch,
            scratch: vec![0; READ_CHUNK],
        };
        state.ensure_watches()?;
        let sink = Sink {
            out,
            counters: Arc::clone(&counters),
            closed: false,
        };
        for file in &mut state.files {
            file.open_initial(start);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("gatemend-tail".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || state.run(sink, &woken, &stop)
            })
            .map_err(DetectError::Thread)?;
        // Read what Beginning asked for, and anything written while the watches were set up.
        let _ = wake.try_send(());
        Ok(Tailer {
            counters,
            stop,
            wake,
            thread: Some(thread),
        })
    }

    /// Lines lost or cut so far: lines the receiver was gone for, and lines cut at
    /// [`MAX_LINE`] (also counted in [`Tailer::truncated`]).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Lines delivered cut at [`MAX_LINE`] so far.
    pub fn truncated(&self) -> u64 {
        self.counters.truncated.load(Ordering::Relaxed)
    }
}

impl Drop for Tailer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(());
        // Not joined: the thread may be waiting for room on a full channel whose receiver the
        // caller still holds; it ends at its next wake-up or when the receiver goes.
        drop(self.thread.take());
    }
}

/// Everything the tailer thread owns.
struct State {
    files: Vec<Tailed>,
    watcher: RecommendedWatcher,
    /// Watched directory -> its (device, inode) when the watch was added: a directory deleted
    /// and recreated under the same name needs a new watch.
    watched: HashMap<PathBuf, FileId>,
    /// Set by the callback when notify may have dropped a watch (see there).
    rewatch: Arc<AtomicBool>,
    scratch: Vec<u8>,
}

/// (device, inode): what tells a rotated file from its successor.
type FileId = (u64, u64);

fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

impl State {
    fn run(mut self, mut sink: Sink, woken: &Receiver<()>, stop: &AtomicBool) {
        loop {
            let event = match woken.recv_timeout(TICK) {
                Ok(()) => true,
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // A watch added or moved may have missed the file's own events: read everything.
            let moved = self.settle_watches();
            let now = Instant::now();
            for file in &mut self.files {
                if event || moved {
                    file.check(&mut sink, &mut self.scratch);
                }
                file.expire(now, &mut sink, &mut self.scratch);
            }
            if sink.closed {
                debug!("The receiver of log lines is gone; the tailer stops.");
                break;
            }
        }
    }

    /// Move the watches until they stop moving: a watch put on an ancestor may find the next
    /// directory down already created, whose creation it was too late to see. Returns whether
    /// any watch moved (or failed, so the logs are looked at anyway).
    fn settle_watches(&mut self) -> bool {
        let mut moved = false;
        // Each round goes at least one directory deeper; paths are not deeper than this.
        for _ in 0..64 {
            match self.ensure_watches() {
                Ok(true) => moved = true,
                Ok(false) => break,
                Err(error) => {
                    warn!(error = %DisplayChain(&error), "Cannot watch a log directory; retrying.");
                    return true;
                }
            }
        }
        moved
    }

    /// Put a watch on each log's directory (or its nearest existing ancestor) and take it off
    /// directories no log needs any more. Returns whether a watch was added or removed.
    fn ensure_watches(&mut self) -> Result<bool, DetectError> {
        let mut desired: HashMap<PathBuf, (FileId, &Path)> = HashMap::new();
        for file in &self.files {
            if let Some((dir, id)) = nearest_existing_dir(&file.path) {
                // Its parent too: the directory's own deletion can race the watch being added
                // (a watch put on a directory being removed never reports anything); the
                // parent reports it, and the new directory's creation, either way.
                if let Some(parent) = dir.parent()
                    && let Ok(meta) = std::fs::metadata(parent)
                {
                    desired
                        .entry(parent.to_path_buf())
                        .or_insert((file_id(&meta), &file.path));
                }
                desired.entry(dir).or_insert((id, &file.path));
            }
        }
        let mut changed = false;
        if self.rewatch.swap(false, Ordering::Relaxed) {
            // Adding a watch that still exists is harmless (inotify returns the same one).
            self.watched.clear();
        }
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(dir, id)| desired.get(*dir).map(|(want, _)| want) != Some(*id))
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in stale {
            // The directory may be gone, and its watch with it: nothing to undo then.
            if let Err(error) = self.watcher.unwatch(&dir) {
                debug!(dir = %dir.display(), %error, "Unwatching a log directory failed.");
            }
            self.watched.remove(&dir);
            changed = true;
        }
        let mut first_error = None;
        for (dir, (id, log)) in desired {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    // A directory deleted while the watch was being added leaves a watch on a
                    // dead inode that will never report anything: look again until the
                    // directory watched is the one the name still has.
                    let now = std::fs::metadata(&dir)
                        .ok()
                        .filter(|meta| meta.is_dir())
                        .map(|meta| file_id(&meta));
                    if now == Some(id) {
                        debug!(dir = %dir.display(), "Watching a log directory.");
                        self.watched.insert(dir, id);
                    }
                    changed = true;
                }
                Err(source) => {
                    first_error.get_or_insert(DetectError::Watch {
                        dir,
                        log: log.to_path_buf(),
                        source,
                    });
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(changed),
        }
    }
}

/// The paths whose events matter: the logs, anything in their directories (a rotated
/// `access.log.1` still being written), and the directories on the way to them (created,
/// deleted, renamed). Fixed at spawn, read by notify's callback.
struct Interest {
    logs: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
    chain: HashSet<PathBuf>,
}

impl Interest {
    fn new(files: &[Tailed]) -> Interest {
        let mut interest = Interest {
            logs: HashSet::new(),
            dirs: HashSet::new(),
            chain: HashSet::new(),
        };
        for file in files {
            interest.logs.insert(file.path.clone());
            if let Some(dir) = file.path.parent() {
                interest.dirs.insert(dir.to_path_buf());
                interest
                    .chain
                    .extend(dir.ancestors().map(Path::to_path_buf));
            }
        }
        interest
    }

    fn concerns(&self, event: &notify::Event) -> bool {
        // No path (a queue overflow, a rescan): anything may have changed.
        event.paths.is_empty()
            || event.need_rescan()
            || event.paths.iter().any(|path| {
                self.logs.contains(path)
                    || self.chain.contains(path)
                    || path.parent().is_some_and(|dir| self.dirs.contains(dir))
            })
    }
}

/// The log's directory if it exists, else its nearest existing ancestor, with its identity.
fn nearest_existing_dir(log: &Path) -> Option<(PathBuf, FileId)> {
    let mut dir = log.parent();
    while let Some(d) = dir {
        if let Ok(meta) = std::fs::metadata(d)
            && meta.is_dir()
        {
            return Some((d.to_path_buf(), file_id(&meta)));
        }
        dir = d.parent();
    }
    None
}

/// Where the lines go, and the count of what could not go.
struct Sink {
    out: Sender<Line>,
    counters: Arc<Counters>,
    /// The receiver is gone: nothing more can be delivered.
    closed: bool,
}

impl Sink {
    fn deliver(&mut self, path: &Path, bytes: Vec<u8>, read_at: Instant) {
        if self.closed {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let line = Line {
            path: path.to_path_buf(),
            bytes,
            read_at,
        };
        // Waits for room: a slow consumer slows the tailer down, it does not lose lines.
        if self.out.blocking_send(line).is_err() {
            self.closed = true;
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn truncated(&mut self, path: &Path) {
        self.counters.truncated.fetch_add(1, Ordering::Relaxed);
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        warn!(path = %path.display(), max = MAX_LINE, "Log line longer than the maximum; delivered cut, the rest skipped.");
    }
}

/// One log path and the files open for it.
struct Tailed {
    path: PathBuf,
    /// The file the path named when last looked at.
    current: Option<Open>,
    /// Files the path named before, still read for a while (see [`ROTATE_WAIT`]).
    retired: Vec<Retired>,
    /// The last open error logged, so a log that stays unreadable is reported once.
    last_error: Option<String>,
}

/// One open file and where reading it stands.
struct Open {
    file: File,
    id: FileId,
    offset: u64,
    /// The start of a line whose `\n` has not been written yet.
    pending: Vec<u8>,
    /// Skipping to the next `\n`: the rest of an over-long line, or the part of a line before
    /// the point a log was started at.
    discarding: bool,
}

struct Retired {
    open: Open,
    last_growth: Instant,
}

impl Tailed {
    fn new(path: PathBuf) -> Tailed {
        Tailed {
            path,
            current: None,
            retired: Vec::new(),
            last_error: None,
        }
    }

    fn open_initial(&mut self, start: StartAt) {
        self.current = self.open(start);
    }

    /// Look at the path and read whatever the files for it hold now.
    fn check(&mut self, sink: &mut Sink, scratch: &mut [u8]) {
        // The file open now is read first: after a rename its writer keeps writing to it until
        // it reopens, and those lines come before the new file's.
        if let Some(open) = &mut self.current {
            open.read_available(&self.path, sink, scratch);
        }
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_file() => {
                let id = file_id(&meta);
                if self.current.as_ref().map(|open| open.id) != Some(id) {
                    if let Some(old) = self.current.take() {
                        info!(path = %self.path.display(), "Log rotated or recreated; reading the new file from its start.");
                        self.retired.push(Retired {
                            open: old,
                            last_growth: Instant::now(),
                        });
                    }
                    self.current = self.open(StartAt::Beginning);
                    if let Some(open) = &mut self.current {
                        open.read_available(&self.path, sink, scratch);
                    }
                }
            }
            Ok(_) => self.report(format!("{} is not a regular file", self.path.display())),
            // Not there (yet, or any more): the open file, if any, is still read above.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => self.report(format!("cannot stat {}: {error}", self.path.display())),
        }
        for retired in &mut self.retired {
            if retired.open.read_available(&self.path, sink, scratch) > 0 {
                retired.last_growth = Instant::now();
            }
        }
    }

    /// Close rotated files that have not grown for [`ROTATE_WAIT`], after a last read; a line
    /// left without its `\n` will not get one and is delivered as it is.
    fn expire(&mut self, now: Instant, sink: &mut Sink, scratch: &mut [u8]) {
        let path = &self.path;
        self.retired.retain_mut(|retired| {
            if retired.open.read_available(path, sink, scratch) > 0 {
                retired.last_growth = now;
            }
            if now.duration_since(retired.last_growth) < ROTATE_WAIT {
                return true;
            }
            retired.open.flush_partial(path, sink);
            debug!(path = %path.display(), "Closed the rotated file.");
            false
        });
    }

    fn open(&mut self, start: StartAt) -> Option<Open> {
        let opened = File::open(&self.path).and_then(|file| {
            let meta = file.metadata()?;
            Ok((file, meta))
        });
        let (mut file, meta) = match opened {
            Ok(opened) => opened,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                self.report(format!("cannot open {}: {error}", self.path.display()));
                return None;
            }
        };
        self.last_error = None;
        let mut offset = 0;
        let mut discarding = false;
        if start == StartAt::End && meta.len() > 0 {
            let end = meta.len();
            match file.seek(SeekFrom::Start(end)) {
                Ok(_) => {
                    offset = end;
                    // Started mid-line: the part before the start is not a line of ours.
                    let mut last = [0u8; 1];
                    discarding =
                        matches!(file.read_at(&mut last, end - 1), Ok(1) if last[0] != b'\n');
                }
                Err(error) => {
                    self.report(format!("cannot seek {}: {error}", self.path.display()));
                }
            }
        }
        Some(Open {
            file,
            id: file_id(&meta),
            offset,
            pending: Vec::new(),
            discarding,
        })
    }

    fn report(&mut self, message: String) {
        if self.last_error.as_deref() != Some(message.as_str()) {
            warn!(path = %self.path.display(), error = %message, "Cannot read a log; retrying on its next change.");
            self.last_error = Some(message);
        }
    }
}

impl Open {
    /// Read from the offset to the end of the file, delivering complete lines. Returns the
    /// number of bytes read.
    fn read_available(&mut self, path: &Path, sink: &mut Sink, scratch: &mut [u8]) -> u64 {
        let len = match self.file.metadata() {
            Ok(meta) => meta.len(),
            Err(error) => {
                warn!(path = %path.display(), %error, "Cannot stat an open log.");
                return 0;
            }
        };
        if len < self.offset {
            // Truncated in place (copytruncate): what was cut is in the copy; start again.
            // A half line we held was cut with it.
            info!(path = %path.display(), offset = self.offset, len, "Log truncated; reading it again from its start.");
            if let Err(error) = self.file.seek(SeekFrom::Start(0)) {
                warn!(path = %path.display(), %error, "Cannot seek a truncated log.");
                return 0;
            }
            self.offset = 0;
            self.pending.clear();
            self.discarding = false;
        }
        let mut total = 0;
        loop {
            let n = match self.file.read(scratch) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    warn!(path = %path.display(), %error, "Cannot read a log.");
                    break;
                }
            };
            let read_at = Instant::now();
            self.offset += n as u64;
            total += n as u64;
            self.consume(scratch.get(..n).unwrap_or_default(), path, sink, read_at);
            if sink.closed {
                break;
            }
        }
        total
    }

    /// Cut `chunk` into lines, keeping the unfinished last one.
    fn consume(&mut self, chunk: &[u8], path: &Path, sink: &mut Sink, read_at: Instant) {
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (piece, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or_default();
            if self.discarding {
                self.discarding = false;
                continue;
            }
            let room = MAX_LINE - self.pending.len();
            let mut line = std::mem::take(&mut self.pending);
            if piece.len() > room {
                line.extend_from_slice(piece.get(..room).unwrap_or_default());
                sink.truncated(path);
            } else {
                line.extend_from_slice(piece);
            }
            sink.deliver(path, line, read_at);
        }
        if self.discarding || rest.is_empty() {
            return;
        }
        let room = MAX_LINE - self.pending.len();
        if rest.len() > room {
            self.pending
                .extend_from_slice(rest.get(..room).unwrap_or_default());
            let line = std::mem::take(&mut self.pending);
            sink.truncated(path);
            sink.deliver(path, line, read_at);
            self.discarding = true;
        } else {
            self.pending.extend_from_slice(rest);
        }
    }

    /// Deliver the unfinished last line of a file that will not be written any more.
    fn flush_partial(&mut self, path: &Path, sink: &mut Sink) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            sink.deliver(path, line, Instant::now());
        }
    }
}

/// An error with its sources, on one line, for a log field.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
