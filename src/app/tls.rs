//! SIP over TLS: the rustls server configuration of the `[sip.tls]` listener (server
//! certificate and key from files, TLS 1.2/1.3, mandatory client certificates from the
//! configured CA, SRC identity allowlist), the handshake with its timeout, and the
//! classification of refusals for the counters.
//!
//! The private key is read into zeroizing buffers and wiped as soon as ring holds it.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::config::SipTlsConfig;
use crate::sip::access::{
    AccessCounters, CertIdentities, IdentityAllowlist, RefusalLog, TlsRefusal,
};

/// Why the TLS material could not be loaded (names the file and the problem).
#[derive(Debug, Error)]
pub enum TlsLoadError {
    /// A file could not be read.
    #[error("sip.tls.{key} {path}: cannot read: {source}")]
    Read {
        /// Config key.
        key: &'static str,
        /// File.
        path: String,
        /// Underlying error.
        source: io::Error,
    },
    /// A file does not hold what it should.
    #[error("sip.tls.{key} {path}: {message}")]
    Content {
        /// Config key.
        key: &'static str,
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("sip.tls: {0}")]
    Rustls(String),
}

/// What `check-config` prints about the loaded material.
#[derive(Debug, Clone)]
pub struct TlsSummary {
    /// Identities of the server certificate.
    pub server_identities: Vec<String>,
    /// Certificates in the server chain.
    pub chain_len: usize,
    /// Server certificate notAfter (seconds since the epoch), if readable.
    pub server_not_after: Option<i64>,
    /// CA certificates trusted for client certificates.
    pub client_cas: usize,
    /// Allowlist entries.
    pub allowed_identities: usize,
    /// Permission bits of the key file when group or others may access it.
    pub key_mode_too_open: Option<u32>,
}

/// The loaded TLS listener configuration.
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    max_connections: usize,
    open: AtomicUsize,
    log: Mutex<RefusalLog>,
    /// Summary of what was loaded.
    pub summary: TlsSummary,
}

/// A certificate chain rejected only because of the identity allowlist.
#[derive(Debug, Error)]
#[error("certificate identities {0:?} are not in sip.tls.allowed_identities")]
struct NotAllowlisted(Vec<String>);

/// WebPKI chain verification to the configured CA, then the identity allowlist.
#[derive(Debug)]
struct AllowlistVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allow: IdentityAllowlist,
}

impl ClientCertVerifier for AllowlistVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let ids = CertIdentities::from_der(end_entity.as_ref()).ok_or(
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
        )?;
        if self.allow.find(&ids).is_some() {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NotAllowlisted(ids.describe()))),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn read(key: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsLoadError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| TlsLoadError::Read {
            key,
            path: path.display().to_string(),
            source,
        })
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let pem = read(key, path)?;
    let content = |message: String| TlsLoadError::Content {
        key,
        path: path.display().to_string(),
        message,
    };
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(content("no CERTIFICATE block in the file".into()));
    }
    for (i, c) in certs.iter().enumerate() {
        if CertIdentities::from_der(c.as_ref()).is_none() {
            return Err(content(format!(
                "certificate #{} does not parse as X.509",
                i + 1
            )));
        }
    }
    Ok(certs)
}

/// notAfter of a DER certificate, seconds since the epoch.
fn not_after(der: &[u8]) -> Option<i64> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(der).ok()?;
    let t = c.tbs_certificate.validity.not_after.to_unix_duration();
    i64::try_from(t.as_secs()).ok()
}

/// Load and check everything `[sip.tls]` names: the chain parses, the key parses and
/// belongs to the leaf certificate, the CA file holds at least one CA, the allowlist
/// parses. Used by the daemon at start-up and by `check-config`.
pub fn load(cfg: &SipTlsConfig) -> Result<TlsServer, TlsLoadError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("cert_file", &cfg.cert_file)?;
    let key_path = cfg.key_file.display().to_string();
    let key_pem = read("key_file", &cfg.key_file)?;
    let key_mode_too_open = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&cfg.key_file)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
            .filter(|m| m & 0o077 != 0)
    };
    let mut key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsLoadError::Content {
            key: "key_file",
            path: key_path.clone(),
            message: format!("not PEM: {e}"),
        })?
        .ok_or_else(|| TlsLoadError::Content {
            key: "key_file",
            path: key_path.clone(),
            message: "no PRIVATE KEY block (PKCS#8, RSA or EC) in the file".into(),
        })?;
    drop(key_pem); // zeroized on drop
    let signing = rustls::crypto::ring::sign::any_supported_type(&key);
    key.zeroize();
    let signing = signing.map_err(|e| TlsLoadError::Content {
        key: "key_file",
        path: key_path.clone(),
        message: format!("unusable private key: {e}"),
    })?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|e| TlsLoadError::Content {
        key: "key_file",
        path: key_path,
        message: format!("does not belong to the first certificate of sip.tls.cert_file ({e})"),
    })?;

    let cas = certs("client_ca_file", &cfg.client_ca_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &cas {
        roots.add(c.clone()).map_err(|e| TlsLoadError::Content {
            key: "client_ca_file",
            path: cfg.client_ca_file.display().to_string(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsLoadError::Rustls(e.to_string()))?;
    let allow = IdentityAllowlist::parse(&cfg.allowed_identities)
        .map_err(|e| TlsLoadError::Rustls(format!("allowed_identities: {e}")))?;
    let allowed_identities = allow.len();
    let verifier = Arc::new(AllowlistVerifier { inner, allow });
    let versions: &[&'static rustls::SupportedProtocolVersion] = if cfg.min_version == "1.3" {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsLoadError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    server.ignore_client_order = true;
    let leaf = chain.first().map(|c| c.as_ref()).unwrap_or_default();
    let summary = TlsSummary {
        server_identities: CertIdentities::from_der(leaf)
            .map(|i| i.describe())
            .unwrap_or_default(),
        chain_len: chain.len(),
        server_not_after: not_after(leaf),
        client_cas: cas.len(),
        allowed_identities,
        key_mode_too_open,
    };
    Ok(TlsServer {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        handshake_timeout: Duration::from_millis(u64::from(cfg.handshake_timeout_ms)),
        max_connections: cfg.max_connections,
        open: AtomicUsize::new(0),
        log: Mutex::new(RefusalLog::new(
            Duration::from_secs(u64::from(cfg.log_interval_s)),
            4096,
        )),
        summary,
    })
}

/// The refusal reason of a failed `accept`.
pub fn classify(e: &io::Error) -> TlsRefusal {
    let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return TlsRefusal::Handshake;
    };
    match r {
        rustls::Error::NoCertificatesPresented => TlsRefusal::NoCertificate,
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsRefusal::UnknownCa
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsRefusal::Expired,
            CertificateError::Other(o) if o.0.downcast_ref::<NotAllowlisted>().is_some() => {
                TlsRefusal::NotAllowlisted
            }
            _ => TlsRefusal::BadCertificate,
        },
        _ => TlsRefusal::Handshake,
    }
}

/// Holds one slot of `max_connections` while a TLS connection lives.
pub struct ConnSlot(Arc<TlsServer>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted, authenticated TLS connection.
pub struct Accepted {
    /// The TLS stream.
    pub stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    /// Identities of the SRC's certificate.
    pub identities: Vec<String>,
    /// Negotiated protocol version, e.g. `TLSv1_3`.
    pub version: String,
    /// The connection's slot (release by dropping).
    pub slot: ConnSlot,
}

impl TlsServer {
    /// Handshake on an accepted TCP connection, bounded by `handshake_timeout_ms`;
    /// refusals are counted in `counters` and logged once per peer and interval.
    pub async fn accept(
        self: &Arc<Self>,
        tcp: tokio::net::TcpStream,
        remote: SocketAddr,
        counters: &AccessCounters,
    ) -> Option<Accepted> {
        let slot = if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused(remote, TlsRefusal::TooManyConnections, "", counters);
            return None;
        } else {
            ConnSlot(self.clone())
        };
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
            Err(_) => {
                self.refused(remote, TlsRefusal::Timeout, "", counters);
                None
            }
            Ok(Err(e)) => {
                let why = classify(&e);
                self.refused(remote, why, &e.to_string(), counters);
                None
            }
            Ok(Ok(stream)) => {
                counters.tls_accepted();
                let (_, conn) = stream.get_ref();
                let identities = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| CertIdentities::from_der(c.as_ref()))
                    .map(|i| i.describe())
                    .unwrap_or_default();
                let version = conn
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                Some(Accepted {
                    stream,
                    identities,
                    version,
                    slot,
                })
            }
        }
    }

    fn refused(
        &self,
        remote: SocketAddr,
        why: TlsRefusal,
        detail: &str,
        counters: &AccessCounters,
    ) {
        counters.tls_refused(why);
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).note(
            crate::clock::MonoClock::process().now(),
            remote.ip(),
            why.as_str(),
        );
        if let Some(suppressed) = log {
            tracing::warn!(
                peer = %remote,
                reason = why.as_str(),
                suppressed,
                detail,
                "SIP over TLS connection refused"
            );
        }
    }
}

/// Rate-limited log of sources refused by `sip.allowed_sources` (one line per source
/// and interval).
pub struct SourceDenyLog(Mutex<RefusalLog>);

impl Default for SourceDenyLog {
    fn default() -> Self {
        SourceDenyLog(Mutex::new(RefusalLog::new(Duration::from_secs(60), 4096)))
    }
}

impl SourceDenyLog {
    /// Log (maybe) one refused datagram or connection.
    pub fn note(&self, remote: SocketAddr, transport: &'static str) {
        let log = self.0.lock().unwrap_or_else(|e| e.into_inner()).note(
            crate::clock::MonoClock::process().now(),
            remote.ip(),
            transport,
        );
        if let Some(suppressed) = log {
            tracing::warn!(
                peer = %remote,
                transport,
                suppressed,
                "SIP from a source not in sip.allowed_sources: dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write_pki(dir: &Path) -> SipTlsConfig {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let srv = rcgen::CertificateParams::new(vec!["rec.example".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("s.crt"), srv.pem()).unwrap();
        std::fs::write(dir.join("s.key"), key.serialize_pem()).unwrap();
        std::fs::write(
            dir.join("other.key"),
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        SipTlsConfig {
            listen: vec!["127.0.0.1:5061".parse().unwrap()],
            cert_file: dir.join("s.crt"),
            key_file: dir.join("s.key"),
            client_ca_file: dir.join("ca.crt"),
            allowed_identities: vec!["sbc.example".into()],
            min_version: "1.2".into(),
            handshake_timeout_ms: 5000,
            max_connections: 4,
            contact_host: None,
            log_interval_s: 60,
        }
    }

    fn err(cfg: &SipTlsConfig) -> String {
        match load(cfg) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn load_checks_every_file() {
        let d = tempfile::tempdir().unwrap();
        let good = write_pki(d.path());
        let s = load(&good).unwrap();
        assert_eq!(
            s.summary.server_identities,
            ["cn:rcgen self signed cert", "dns:rec.example"]
        );
        assert_eq!((s.summary.chain_len, s.summary.client_cas), (1, 1));
        assert!(s.summary.server_not_after.is_some());

        let mut c = good.clone();
        c.cert_file = PathBuf::from("/nonexistent/s.crt");
        assert!(
            err(&c).starts_with("sip.tls.cert_file /nonexistent/s.crt: cannot read"),
            "{}",
            err(&c)
        );
        let mut c = good.clone();
        c.key_file = d.path().join("other.key");
        assert!(
            err(&c).contains("does not belong to the first certificate"),
            "{}",
            err(&c)
        );
        let mut c = good.clone();
        c.key_file = d.path().join("ca.crt");
        assert!(
            err(&c).contains("sip.tls.key_file") && err(&c).contains("no PRIVATE KEY"),
            "{}",
            err(&c)
        );
        let mut c = good.clone();
        c.client_ca_file = d.path().join("s.key");
        assert!(
            err(&c).contains("sip.tls.client_ca_file") && err(&c).contains("no CERTIFICATE"),
            "{}",
            err(&c)
        );
        std::fs::write(
            d.path().join("junk.crt"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut c = good;
        c.cert_file = d.path().join("junk.crt");
        assert!(err(&c).contains("does not parse as X.509"), "{}", err(&c));
    }

    #[test]
    fn refusals_are_classified() {
        let io = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cert = |e: CertificateError| io(rustls::Error::InvalidCertificate(e));
        assert_eq!(
            classify(&io(rustls::Error::NoCertificatesPresented)),
            TlsRefusal::NoCertificate
        );
        assert_eq!(
            classify(&cert(CertificateError::UnknownIssuer)),
            TlsRefusal::UnknownCa
        );
        assert_eq!(
            classify(&cert(CertificateError::BadSignature)),
            TlsRefusal::UnknownCa
        );
        assert_eq!(
            classify(&cert(CertificateError::Expired)),
            TlsRefusal::Expired
        );
        assert_eq!(
            classify(&cert(CertificateError::NotValidYet)),
            TlsRefusal::Expired
        );
        assert_eq!(
            classify(&cert(CertificateError::Revoked)),
            TlsRefusal::BadCertificate
        );
        let other = rustls::OtherError(Arc::new(NotAllowlisted(vec!["cn:x".into()])));
        assert_eq!(
            classify(&cert(CertificateError::Other(other))),
            TlsRefusal::NotAllowlisted
        );
        assert_eq!(
            classify(&io(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))),
            TlsRefusal::Handshake
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::ConnectionReset)),
            TlsRefusal::Handshake
        );
    }
}
