//! TLS for the archive: trusted CAs from a PEM bundle, optional SPKI SHA-256 pinning, and
//! error classification so a certificate problem becomes a clear alarm.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// System CA bundle used when `ca_file` is not set.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA bundle could not be read.
    #[error("CA bundle {path}: {reason}")]
    CaFile {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// Decode a pin: 64 hex digits or base64 of 32 bytes.
pub fn parse_pin(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).ok()?
    } else {
        base64::engine::general_purpose::STANDARD.decode(s).ok()?
    };
    bytes.try_into().ok()
}

/// One DER TLV: (tag, header length, content length).
fn tlv(d: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *d.first()?;
    let l0 = *d.get(1)?;
    if l0 < 0x80 {
        return Some((tag, 2, usize::from(l0)));
    }
    let n = usize::from(l0 & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*d.get(2 + i)?);
    }
    Some((tag, 2 + n, len))
}

/// The DER of a certificate's SubjectPublicKeyInfo (RFC 5280 §4.1), found by walking the
/// TBSCertificate. `None` if the certificate is malformed.
pub fn spki_der(cert: &[u8]) -> Option<&[u8]> {
    let (t, h, l) = tlv(cert)?;
    if t != 0x30 {
        return None;
    }
    let cert = cert.get(h..h + l)?;
    let (t, h, l) = tlv(cert)?;
    if t != 0x30 {
        return None;
    }
    let mut tbs = cert.get(h..h + l)?;
    // Optional [0] version, then serial, signature, issuer, validity, subject, SPKI.
    if tbs.first() == Some(&0xa0) {
        let (_, h, l) = tlv(tbs)?;
        tbs = tbs.get(h + l..)?;
    }
    for _ in 0..5 {
        let (_, h, l) = tlv(tbs)?;
        tbs = tbs.get(h + l..)?;
    }
    let (t, h, l) = tlv(tbs)?;
    if t != 0x30 {
        return None;
    }
    tbs.get(..h + l)
}

/// SHA-256 of the certificate's SPKI.
pub fn spki_sha256(cert: &[u8]) -> Option<[u8; 32]> {
    spki_der(cert).map(|s| Sha256::digest(s).into())
}

/// Message prefix of a pin mismatch (matched by [`classify`]).
const PIN_MISMATCH: &str = "pinned key mismatch";

/// Chain validation by webpki, then the pin check.
#[derive(Debug)]
struct PinningVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if self.pins.is_empty() {
            return Ok(ok);
        }
        let got = spki_sha256(end_entity.as_ref()).ok_or_else(|| {
            rustls::Error::General(format!("{PIN_MISMATCH}: unreadable certificate"))
        })?;
        if self.pins.contains(&got) {
            Ok(ok)
        } else {
            let b = base64::engine::general_purpose::STANDARD.encode(got);
            Err(rustls::Error::General(format!(
                "{PIN_MISMATCH}: server key sha256 {b} is not one of the pinned keys"
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

/// Build the rustls client configuration: CAs from `ca_file` (or the system bundle),
/// pins from `pins` (already validated).
pub fn client_config(
    ca_file: Option<&Path>,
    pins: &[String],
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let ca_err = |reason: String| TlsSetupError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| ca_err(e.to_string()))?;
        roots.add(c).map_err(|e| ca_err(e.to_string()))?;
        n += 1;
    }
    if n == 0 {
        return Err(ca_err("no certificates in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let verifier = PinningVerifier {
        inner,
        pins: pins.iter().filter_map(|p| parse_pin(p)).collect(),
    };
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(cfg)
}

/// Alarm text for a TLS failure found anywhere in an error's source chain, or `None` if
/// the error is not about TLS.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        // hyper-util wraps I/O errors whose inner error is the rustls one.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    return Some(describe(r));
                }
            }
        }
        cur = e.source();
    }
    // hyper-util's connect error keeps the rustls error behind an io::Error whose
    // `source()` skips it; fall back to rustls's own display text.
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    classify_text(&text)
}

/// Classify rustls's display text of a certificate error.
fn classify_text(text: &str) -> Option<String> {
    if let Some(i) = text.find(PIN_MISMATCH) {
        return Some(text[i..].to_string());
    }
    let i = text.find("invalid peer certificate: ")?;
    let what = &text[i + "invalid peer certificate: ".len()..];
    Some(if what.starts_with("UnknownIssuer") {
        "server certificate is not issued by a trusted CA (check uplink.ca_file)".into()
    } else if what.starts_with("Expired") || what.contains("certificate expired") {
        "server certificate has expired".into()
    } else if what.starts_with("NotValidYet") {
        "server certificate is not valid yet (check the clock)".into()
    } else if what.starts_with("NotValidForName") || what.contains("not valid for name") {
        "server certificate does not name the endpoint host".into()
    } else {
        format!("server certificate rejected: {what}")
    })
}

fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "server certificate is not issued by a trusted CA (check uplink.ca_file)".into()
            }
            C::Expired | C::ExpiredContext { .. } => "server certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "server certificate is not valid yet (check the clock)".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "server certificate does not name the endpoint host".into()
            }
            C::Revoked => "server certificate is revoked".into(),
            other => format!("server certificate rejected: {other:?}"),
        },
        rustls::Error::General(m) if m.starts_with(PIN_MISMATCH) => m.clone(),
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_both_forms() {
        let raw = [0xabu8; 32];
        assert_eq!(parse_pin(&hex::encode(raw)), Some(raw));
        let b = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(parse_pin(&b), Some(raw));
        assert_eq!(parse_pin("abc"), None);
        assert_eq!(parse_pin(&hex::encode([1u8; 31])), None);
    }

    #[test]
    fn der_walk_rejects_garbage() {
        assert!(spki_der(&[]).is_none());
        assert!(spki_der(&[0x30, 0x82, 0xff]).is_none());
        assert!(spki_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_none());
        assert!(spki_der(&[0x31, 0x00]).is_none());
    }

    #[test]
    fn spki_of_a_real_certificate_matches_openssl() {
        // Generated with openssl at test time so the expected value is independent.
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let crt = dir.path().join("c.der");
        let st = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-subj",
                "/CN=pin.test",
                "-days",
                "1",
                "-outform",
                "DER",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("openssl is needed (apt-get install openssl)");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let der = std::fs::read(&crt).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -inform DER -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex",
                crt.display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let want = text.rsplit(' ').next().unwrap().trim();
        assert_eq!(hex::encode(spki_sha256(&der).unwrap()), want);
    }
}
