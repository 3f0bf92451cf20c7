//! Access to the compliance private key: [`ComplianceKey`] does the one private-key
//! operation HPKE needs (raw P-256 ECDH with a sender's ephemeral point); everything else
//! runs in software (`branchrec_core::hpke::open_with_dh`). Two implementations: a PEM
//! file ([`PemKey`], small installations, with a warning) and a PKCS#11 token
//! ([`Pkcs11Key`], an HSM; SoftHSM2 in the tests) through the `cryptoki` crate.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use p256::pkcs8::DecodePrivateKey;
use zeroize::Zeroizing;

use super::CentralError;
use crate::compliance;
use crate::hpke::{PublicKey, SecretKey, ENC_LEN, SECRET_LEN};
use crate::vault::{DataKey, KeyWrap, VaultError};

/// The compliance private key, wherever it lives.
pub trait ComplianceKey: Send + Sync {
    /// The matching public key (the recipient's `pkR` in HPKE's key schedule).
    fn public_key(&self) -> &PublicKey;
    /// Raw ECDH: the x coordinate of `sk · enc` for a sender's ephemeral point `enc`
    /// (65 bytes, uncompressed).
    fn dh(&self, enc: &[u8]) -> Result<Zeroizing<[u8; SECRET_LEN]>, CentralError>;
    /// Where the key lives, for messages (`pem:/path`, `pkcs11:token/label`).
    fn describe(&self) -> String;
}

/// A compliance private key in a PEM file (PKCS#8 or SEC1 `EC PRIVATE KEY`). Whoever
/// reads the file opens every archived recording: for small installations only.
pub struct PemKey {
    sk: SecretKey,
    pk: PublicKey,
    path: String,
}

impl PemKey {
    /// Load the file.
    pub fn load(path: &Path) -> Result<Self, CentralError> {
        let pem = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| CentralError::Key(format!("reading {}: {e}", path.display())))?,
        );
        let sk = p256::SecretKey::from_pkcs8_pem(pem.trim())
            .or_else(|_| p256::SecretKey::from_sec1_pem(pem.trim()))
            .map_err(|_| {
                CentralError::Key(format!(
                    "{}: not a P-256 private key PEM (PKCS#8 or EC PRIVATE KEY)",
                    path.display()
                ))
            })?;
        let sk = SecretKey::from_p256(sk);
        Ok(PemKey {
            pk: sk.public_key(),
            sk,
            path: path.display().to_string(),
        })
    }
}

impl ComplianceKey for PemKey {
    fn public_key(&self) -> &PublicKey {
        &self.pk
    }
    fn dh(&self, enc: &[u8]) -> Result<Zeroizing<[u8; SECRET_LEN]>, CentralError> {
        let e = PublicKey::from_sec1(enc)
            .map_err(|_| CentralError::Tampered("enc is not a P-256 point".into()))?;
        Ok(self.sk.dh(&e))
    }
    fn describe(&self) -> String {
        format!("pem:{}", self.path)
    }
}

/// A compliance private key in a PKCS#11 token: the token does `C_DeriveKey
/// (CKM_ECDH1_DERIVE, CKD_NULL)` into a session-only generic secret, which is read once
/// (`CKA_VALUE`) and destroyed. The private key itself never leaves the token.
pub struct Pkcs11Key {
    // Field order: the session is closed before the library is finalised. A PKCS#11
    // session must not be used by two threads at once (cryptoki's `Session` is not
    // `Sync`): one mutex, held for the derive-read-destroy of one ECDH.
    session: std::sync::Mutex<Session>,
    _ctx: Pkcs11,
    key: ObjectHandle,
    pk: PublicKey,
    what: String,
}

fn p11(what: &str) -> impl Fn(cryptoki::error::Error) -> CentralError + '_ {
    move |e| CentralError::Key(format!("PKCS#11 {what}: {e}"))
}

/// The point of a `CKA_EC_POINT` value: DER `OCTET STRING` around the uncompressed point
/// (what PKCS#11 prescribes), or the bare point (some tokens).
fn ec_point(v: &[u8]) -> Option<&[u8]> {
    match v {
        [0x04, 0x41, rest @ ..] if rest.len() == ENC_LEN => Some(rest),
        p if p.len() == ENC_LEN && p[0] == 0x04 => Some(p),
        _ => None,
    }
}

/// A key pair found on a PKCS#11 token: the logged-in session, the private key and the
/// public key's `CKA_EC_POINT`.
pub(crate) struct TokenKeyPair {
    pub ctx: Pkcs11,
    pub session: Session,
    pub key: ObjectHandle,
    pub ec_point: Vec<u8>,
}

/// Open `module`, log in to the token labelled `token_label` with `pin` (read-only
/// session) and find the key pair of `key_type` labelled `key_label` (`what` names the
/// kind in errors): exactly one private key, and its public key's `CKA_EC_POINT`. Shared
/// by the compliance key ([`Pkcs11Key`]) and the command key
/// (`command_key::Pkcs11CommandKey`).
pub(crate) fn open_token_key_pair(
    module: &Path,
    token_label: &str,
    key_label: &str,
    pin: &str,
    key_type: KeyType,
    what: &str,
) -> Result<TokenKeyPair, CentralError> {
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
        .ok_or_else(|| CentralError::Key(format!("no PKCS#11 token labelled {token_label:?}")))?;
    let session = ctx.open_ro_session(slot).map_err(p11("C_OpenSession"))?;
    let pin = cryptoki::types::AuthPin::from(pin.to_string());
    session
        .login(UserType::User, Some(&pin))
        .map_err(p11("C_Login"))?;
    let find = |class: ObjectClass| {
        session.find_objects(&[
            Attribute::Class(class),
            Attribute::KeyType(key_type),
            Attribute::Label(key_label.as_bytes().to_vec()),
        ])
    };
    let key = match find(ObjectClass::PRIVATE_KEY).map_err(p11("C_FindObjects"))?[..] {
        [k] => k,
        [] => {
            return Err(CentralError::Key(format!(
                "token {token_label:?} has no {what} private key labelled {key_label:?}"
            )))
        }
        _ => {
            return Err(CentralError::Key(format!(
                "token {token_label:?} has several {what} private keys labelled {key_label:?}"
            )))
        }
    };
    let pubh = *find(ObjectClass::PUBLIC_KEY)
        .map_err(p11("C_FindObjects"))?
        .first()
        .ok_or_else(|| {
            CentralError::Key(format!(
                "token {token_label:?} has no {what} public key labelled {key_label:?}"
            ))
        })?;
    let ec_point = session
        .get_attributes(pubh, &[AttributeType::EcPoint])
        .map_err(p11("C_GetAttributeValue(CKA_EC_POINT)"))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| CentralError::Key("public key without CKA_EC_POINT".into()))?;
    Ok(TokenKeyPair {
        ctx,
        session,
        key,
        ec_point,
    })
}

impl Pkcs11Key {
    /// Open `module` (e.g. `/usr/lib/softhsm/libsofthsm2.so`), log in to the token
    /// labelled `token_label` with `pin`, and find the EC key pair labelled `key_label`.
    pub fn open(
        module: &Path,
        token_label: &str,
        key_label: &str,
        pin: &str,
    ) -> Result<Self, CentralError> {
        let t = open_token_key_pair(module, token_label, key_label, pin, KeyType::EC, "EC")?;
        let point = t.ec_point;
        let (ctx, session, key) = (t.ctx, t.session, t.key);
        let pk = ec_point(&point)
            .and_then(|p| PublicKey::from_sec1(p).ok())
            .ok_or_else(|| CentralError::Key("the token's key is not a P-256 key".into()))?;
        Ok(Pkcs11Key {
            session: std::sync::Mutex::new(session),
            _ctx: ctx,
            key,
            pk,
            what: format!("pkcs11:{token_label}/{key_label}"),
        })
    }
}

impl ComplianceKey for Pkcs11Key {
    fn public_key(&self) -> &PublicKey {
        &self.pk
    }
    fn dh(&self, enc: &[u8]) -> Result<Zeroizing<[u8; SECRET_LEN]>, CentralError> {
        PublicKey::from_sec1(enc)
            .map_err(|_| CentralError::Tampered("enc is not a P-256 point".into()))?;
        let mech = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), enc));
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen((SECRET_LEN as u64).into()),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let h = session
            .derive_key(&mech, self.key, &template)
            .map_err(p11("C_DeriveKey(CKM_ECDH1_DERIVE)"))?;
        let got = session
            .get_attributes(h, &[AttributeType::Value])
            .map_err(p11("C_GetAttributeValue(CKA_VALUE)"));
        let _ = session.destroy_object(h);
        let mut out = Zeroizing::new([0u8; SECRET_LEN]);
        for a in got? {
            if let Attribute::Value(mut v) = a {
                if v.len() != SECRET_LEN {
                    zeroize::Zeroize::zeroize(&mut v);
                    return Err(CentralError::Key("ECDH result is not 32 bytes".into()));
                }
                out.copy_from_slice(&v);
                zeroize::Zeroize::zeroize(&mut v);
                return Ok(out);
            }
        }
        Err(CentralError::Key("ECDH result without CKA_VALUE".into()))
    }
    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// A [`ComplianceKey`] as the container reader's [`KeyWrap`]: it unwraps the compliance
/// slot (`hpke1:…`) and nothing else; it cannot wrap.
pub struct ComplianceUnwrap<'a>(pub &'a dyn ComplianceKey);

impl KeyWrap for ComplianceUnwrap<'_> {
    fn kek_id(&self) -> String {
        compliance::KEK_PREFIX.to_string()
    }
    fn wrap(&self, _: &DataKey) -> Result<Vec<u8>, VaultError> {
        Err(VaultError::WrapFailed)
    }
    fn unwrap(&self, kek_id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        if compliance::key_id_of(kek_id).is_none() {
            return Err(VaultError::UnknownKek(kek_id.to_string()));
        }
        let enc = compliance::wrapped_enc(wrapped)
            .map_err(|_| VaultError::Malformed("compliance slot"))?;
        let dh = self
            .0
            .dh(enc)
            .map_err(|e| VaultError::KeyUnavailable(e.to_string()))?;
        compliance::unwrap_data_key(kek_id, wrapped, &dh, self.0.public_key())
            .map_err(|_| VaultError::UnwrapFailed)
    }
}
