//! Why the review UI could not start, or why its tokens file was refused.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The tokens file (`--tokens`) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Reading the file failed.
    #[error("cannot read the tokens file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not have the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Entries break a rule (every problem, one per line).
    #[error("{path}: invalid tokens:\n{}", problems.join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `tokens[N].field: what is wrong`, one per problem.
        problems: Vec<String>,
    },
}

/// The HTTP server could not run.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Binding the listen address failed.
    #[error("cannot listen for the review UI on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving stopped with an I/O error.
    #[error("the review UI stopped serving")]
    Serve {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
