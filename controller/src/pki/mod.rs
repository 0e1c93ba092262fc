//! The fleet's certificates: one CA, the controller's server certificate, one client
//! certificate per agent host.
//!
//! Layout of the PKI directory:
//! - `ca.pem`, `ca.key`: the CA (the key never leaves the operator's machine);
//! - `controller.pem`, `controller.key`: the controller, DNS name [`CONTROLLER_NAME`] plus any
//!   extra names or IPs given to `pki init --san`;
//! - `hosts/<host>.pem`, `hosts/<host>.key`: one agent each.
//!
//! An agent's identity is the DNS subject alternative name of its certificate (the common name
//! is set to the same host, for people reading the certificate, but is not what is checked):
//! ingest accepts a Hello only when the certificate is valid for the Hello's host.

pub mod error;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

pub use error::PkiError;

/// The DNS name in the controller's certificate that agents verify (their `server_name`).
pub const CONTROLLER_NAME: &str = "gatemend-controller";

const CA_DAYS: i64 = 3_650;
const LEAF_DAYS: i64 = 825;

/// The paths of one certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

pub fn controller_paths(dir: &Path) -> Issued {
    Issued {
        cert: dir.join("controller.pem"),
        key: dir.join("controller.key"),
    }
}

pub fn host_paths(dir: &Path, host: &str) -> Issued {
    Issued {
        cert: dir.join("hosts").join(format!("{host}.pem")),
        key: dir.join("hosts").join(format!("{host}.key")),
    }
}

/// Creates the CA and the controller's certificate in `dir`. `extra_sans` are more names or
/// IP addresses for the controller certificate.
pub fn init(dir: &Path, extra_sans: &[String]) -> Result<Issued, PkiError> {
    let ca_cert = ca_cert_path(dir);
    if ca_cert.exists() {
        return Err(PkiError::Exists(ca_cert));
    }
    create_dir(dir)?;
    let ca_key = generate_key("the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("gatemend CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, CA_DAYS);
    let cert = params
        .self_signed(&ca_key)
        .map_err(generate("the CA certificate"))?;
    write_private(&ca_key_path(dir), &ca_key.serialize_pem())?;
    write_public(&ca_cert, &cert.pem())?;

    let issuer = Issuer::new(params, ca_key);
    let mut sans = vec![CONTROLLER_NAME.to_owned()];
    sans.extend(extra_sans.iter().cloned());
    let paths = controller_paths(dir);
    leaf(
        &issuer,
        CONTROLLER_NAME,
        &sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        &paths,
    )?;
    Ok(paths)
}

/// Issues the client certificate of agent `host`, signed by the CA in `dir`.
pub fn issue(dir: &Path, host: &str) -> Result<Issued, PkiError> {
    rustls::pki_types::DnsName::try_from(host)
        .map_err(|_| PkiError::BadHostName(host.to_owned()))?;
    let ca_key = KeyPair::from_pem(&read_text(&ca_key_path(dir))?)
        .map_err(generate("loading the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&read_text(&ca_cert_path(dir))?, ca_key)
        .map_err(generate("loading the CA certificate"))?;
    create_dir(&dir.join("hosts"))?;
    let paths = host_paths(dir, host);
    leaf(
        &issuer,
        host,
        &[host.to_owned()],
        ExtendedKeyUsagePurpose::ClientAuth,
        &paths,
    )?;
    Ok(paths)
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: &[String],
    usage: ExtendedKeyUsagePurpose,
    paths: &Issued,
) -> Result<(), PkiError> {
    let key = generate_key(common_name)?;
    let mut params = CertificateParams::default();
    for san in sans {
        let san = match san.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                san.clone()
                    .try_into()
                    .map_err(|_| PkiError::BadHostName(san.clone()))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.distinguished_name = name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_DAYS);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(generate(&format!("the certificate of {common_name}")))?;
    write_private(&paths.key, &key.serialize_pem())?;
    write_public(&paths.cert, &cert.pem())
}

/// The controller's rustls config: its certificate, and client certificates required and
/// verified against the CA. ALPN h2, as gRPC needs.
pub fn server_config(dir: &Path) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(&ca_cert_path(dir))? {
        roots
            .add(cert)
            .map_err(|e| PkiError::Tls(format!("CA certificate: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| PkiError::Tls(e.to_string()))?;
    let paths = controller_paths(dir);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let pem = |reason: String| PkiError::Pem {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(read_text(path)?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no certificate in the file".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(read_text(path)?.as_bytes()).map_err(|e| PkiError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "gatemend");
    dn
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for hosts whose clocks run a little behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn generate_key(what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate().map_err(generate(what))
}

fn generate(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_owned(),
        source,
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(io(dir))
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io(path))
}

/// Keys are created 0600 from the start, never world-readable even for an instant.
fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn write_public(path: &Path, text: &str) -> Result<(), PkiError> {
    fs::write(path, text).map_err(io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_issue_gives_a_verifiable_host_certificate() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["127.0.0.1".into()]).unwrap();
        let web1 = issue(dir.path(), "web1").unwrap();
        let cert = load_certs(&web1.cert).unwrap().remove(0);
        let end = webpki::EndEntityCert::try_from(&cert).unwrap();
        let web1_name = rustls::pki_types::ServerName::try_from("web1").unwrap();
        let web2_name = rustls::pki_types::ServerName::try_from("web2").unwrap();
        assert!(end.verify_is_valid_for_subject_name(&web1_name).is_ok());
        assert!(end.verify_is_valid_for_subject_name(&web2_name).is_err());
        let mode = fs::metadata(&web1.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        server_config(dir.path()).unwrap();
        assert!(matches!(init(dir.path(), &[]), Err(PkiError::Exists(_))));
        assert!(matches!(
            issue(dir.path(), "web 1"),
            Err(PkiError::BadHostName(_))
        ));
    }
}
