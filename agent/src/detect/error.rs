//! What can go wrong while watching logs, with what an operator needs to act on it.

use std::path::PathBuf;

/// A tailer that could not start, or an access-log format that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The inotify instance could not be created (e.g. `fs.inotify.max_user_instances` reached).
    #[error("cannot create an inotify watcher")]
    Watcher(#[source] notify::Error),
    /// A directory holding a log could not be watched (permissions, or
    /// `fs.inotify.max_user_watches` reached).
    #[error("cannot watch {} for changes to {}", dir.display(), log.display())]
    Watch {
        /// The directory the watch was put on: the log's parent, or its nearest existing ancestor.
        dir: PathBuf,
        /// The log the watch is for.
        log: PathBuf,
        #[source]
        source: notify::Error,
    },
    /// A relative log path was given and the working directory could not be read to resolve it.
    #[error("cannot resolve the relative log path {}", path.display())]
    RelativePath {
        /// The path as given.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The tailer's thread could not be started.
    #[error("cannot start the tailer thread")]
    Thread(#[source] std::io::Error),
    /// An nginx `log_format` this reader cannot match lines against.
    #[error("log_format {format:?}: {reason}")]
    LogFormat {
        /// The format string as given.
        format: String,
        /// What is wrong with it.
        reason: String,
    },
}
