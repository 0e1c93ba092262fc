//! What can go wrong while ingesting the fleet's messages.

use std::path::PathBuf;

/// The durable store behind ingest refused or failed to store a record.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store file could not be opened, read, written or synced.
    #[error("findings store {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of the store file is not a record (and is not the torn last line of a crash).
    #[error("findings store {}:{line}: not a record", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// The blocking writer task died (it panicked or the runtime is shutting down).
    #[error("findings store writer stopped")]
    WriterGone,
}

/// Why `Fleet::send_action` could not hand an ActionRequest to a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendActionError {
    /// No agent with that host name ever said Hello.
    #[error("unknown host `{0}`")]
    UnknownHost(String),
    /// The host is known but has no live stream.
    #[error("host `{0}` is offline")]
    Offline(String),
    /// The host's allow-list (from its Hello) does not permit this action.
    #[error("host `{host}` does not allow action `{action}`")]
    NotAllowed { host: String, action: String },
    /// The host's outgoing queue is full: the agent does not read its stream.
    #[error("host `{0}` is not reading its stream (queue full)")]
    QueueFull(String),
}

/// The controller's listener could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding or accepting on the listen address failed.
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server stopped with an error.
    #[error("gRPC server")]
    Transport(#[source] tonic::transport::Error),
}
