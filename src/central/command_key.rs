//! The central command key in an HSM: an Ed25519 key pair on a PKCS#11 token
//! (`CKM_EC_EDWARDS_KEY_PAIR_GEN`, signing with `CKM_EDDSA`; SoftHSM2 ≥ 2.6 has both),
//! behind the same [`CommandKey`] trait as the PEM file.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};

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
        let ctx = Pkcs11::new(module).map_err(|e| {
            CentralError::Key(format!("loading PKCS#11 module {}: {e}", module.display()))
        })?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(p11("C_Initialize"))?;
        let slot = ctx
            .get_slots_with_token()
            .map_err(p11("C_GetSlotList"))?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|t| t.label().trim_end() == token_label)
                    .unwrap_or(false)
            })
            .ok_or_else(|| {
                CentralError::Key(format!("no PKCS#11 token labelled {token_label:?}"))
            })?;
        let session = ctx.open_ro_session(slot).map_err(p11("C_OpenSession"))?;
        session
            .login(
                UserType::User,
                Some(&cryptoki::types::AuthPin::from(pin.to_string())),
            )
            .map_err(p11("C_Login"))?;
        let find = |class: ObjectClass| {
            session.find_objects(&[
                Attribute::Class(class),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Label(key_label.as_bytes().to_vec()),
            ])
        };
        let key = match find(ObjectClass::PRIVATE_KEY).map_err(p11("C_FindObjects"))?[..] {
            [k] => k,
            [] => {
                return Err(CentralError::Key(format!(
                    "token {token_label:?} has no Ed25519 private key labelled {key_label:?}"
                )))
            }
            _ => {
                return Err(CentralError::Key(format!(
                    "token {token_label:?} has several Ed25519 private keys labelled {key_label:?}"
                )))
            }
        };
        let pubh = *find(ObjectClass::PUBLIC_KEY)
            .map_err(p11("C_FindObjects"))?
            .first()
            .ok_or_else(|| {
                CentralError::Key(format!(
                    "token {token_label:?} has no Ed25519 public key labelled {key_label:?}"
                ))
            })?;
        let point = session
            .get_attributes(pubh, &[AttributeType::EcPoint])
            .map_err(p11("C_GetAttributeValue(CKA_EC_POINT)"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(v) => Some(v),
                _ => None,
            })
            .ok_or_else(|| CentralError::Key("public key without CKA_EC_POINT".into()))?;
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
