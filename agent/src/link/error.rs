//! What can go wrong on the agent's link to the controller.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The outbox or the action ledger could not be read, written or synced.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file in the outbox or ledger does not decode: written by something else, or damaged.
    #[error("{} does not decode", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    /// A TLS file named in the config could not be read.
    #[error("cannot read TLS file {}", path.display())]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The SIGTERM handler could not be installed.
    #[error("installing the SIGTERM handler")]
    Signal(#[source] std::io::Error),
    /// An endpoint is not a usable URI, or the TLS material was refused.
    #[error("endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Why one session with the controller ended; the link reconnects after each.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionEnd {
    #[error("connecting to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the controller refused the stream: {}", .0.message())]
    Refused(tonic::Status),
    #[error("the controller closed the stream")]
    Closed,
    /// The outbox or ledger failed: the link cannot keep its promise and stops.
    #[error(transparent)]
    Local(#[from] LinkError),
}
