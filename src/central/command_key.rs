//! The central command key in an HSM: an Ed25519 key pair on a PKCS#11 token
//! (`CKM_EC_EDWARDS_KEY_PAIR_GEN`, signing with `CKM_EDDSA`; SoftHSM2 ≥ 2.6 has both),
//! behind the same [`CommandKey`] trait as the PEM file.

use std::path::Path;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{KeyType, ObjectHandle};
use cryptoki::session::Session;

use super::command::CommandKey;
use super::CentralError;

/// A command key on a PKCS#11 token.
pub struct Pkcs11CommandKey {
    session: std::sync::Mutex<Session>,
    _ctx: Pkcs11,
    key: ObjectHandle,
    pk: [u8; 32],
    what: String,
}

fn p11(what: &'static str) -> impl Fn(cryptoki::error::Error) -> CentralError {
    move |e| CentralError::Key(format!("PKCS#11 {what}: {e}"))
}

/// The 32-byte Ed25519 point of `CKA_EC_POINT`: a DER OCTET STRING (`04 20 …`) or raw.
fn edwards_point(v: &[u8]) -> Option<[u8; 32]> {
    match v {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        raw if raw.len() == 32 => raw.try_into().ok(),
        _ => None,
    }
}

impl Pkcs11CommandKey {
    /// Open `module`, log in to the token labelled `token_label` with `pin` and find the
    /// Ed25519 key pair labelled `key_label`.
    pub fn open(
        module: &Path,
        token_label: &str,
        key_label: &str,
        pin: &str,
    ) -> Result<Self, CentralError> {
        let t = super::key::open_token_key_pair(
            module,
            token_label,
            key_label,
            pin,
            KeyType::EC_EDWARDS,
            "Ed25519",
        )?;
        let point = t.ec_point;
        let (ctx, session, key) = (t.ctx, t.session, t.key);
        let pk = edwards_point(&point)
            .ok_or_else(|| CentralError::Key("the token's key is not an Ed25519 key".into()))?;
        Ok(Pkcs11CommandKey {
            session: std::sync::Mutex::new(session),
            _ctx: ctx,
            key,
            pk,
            what: format!("pkcs11:{token_label}/{key_label}"),
        })
    }
}

impl CommandKey for Pkcs11CommandKey {
    fn public_key(&self) -> [u8; 32] {
        self.pk
    }
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], CentralError> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let sig = session
            .sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                self.key,
                msg,
            )
            .map_err(p11("C_Sign(CKM_EDDSA)"))?;
        let sig: [u8; 64] = sig
            .try_into()
            .map_err(|_| CentralError::Key("CKM_EDDSA signature is not 64 bytes".into()))?;
        // The token's signature must verify with its public key before it leaves.
        if !crate::vault::signing::verify_raw(&self.pk, msg, &sig) {
            return Err(CentralError::Key(
                "the token's Ed25519 signature does not verify with its public key".into(),
            ));
        }
        Ok(sig)
    }
    fn describe(&self) -> String {
        self.what.clone()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn edwards_points() {
        let p = [9u8; 32];
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&p);
        assert_eq!(super::edwards_point(&der), Some(p));
        assert_eq!(super::edwards_point(&p), Some(p));
        assert_eq!(super::edwards_point(&der[..20]), None);
    }
}
