//! What can go wrong creating or loading the fleet's certificates.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file of the PKI directory could not be read or written.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `pki init` would overwrite an existing CA.
    #[error("{} already exists; refusing to overwrite a CA", .0.display())]
    Exists(PathBuf),
    /// A host name that cannot be a certificate's DNS name.
    #[error("`{0}` is not a valid host name (letters, digits, '-' and '.')")]
    BadHostName(String),
    /// rcgen refused to build a key or certificate.
    #[error("creating {what}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    /// rustls refused the loaded material.
    #[error("TLS configuration: {0}")]
    Tls(String),
}
