//! The one way the CLI and tools get at the catalogue: load the box's KEK (without ever
//! provisioning one), unwrap the catalogue key with it, and open the encrypted file
//! (`docs/catalog-schema.md`, "Encryption at rest"). The daemon does the same once at
//! start-up (`app::open_storage`) and shares the resulting [`CatalogAccess`].

use crate::catalog::{CatalogAccess, CatalogKeyError};
use crate::config::Config;

/// The catalogue of this installation, unlocked with its KEK. Fails with a
/// [`CatalogKeyError`] ("catalogue key cannot be unwrapped: …") when the KEK cannot be
/// loaded (TPM refuses, no keys provisioned) or does not open the wrapped key.
pub fn access(cfg: &Config) -> Result<CatalogAccess, CatalogKeyError> {
    let cc = cfg.custody();
    let keys = crate::vault::custody::open_existing(&cc)
        .map_err(|e| CatalogKeyError::KekUnavailable(e.to_string()))?;
    // The same keys give the audit MAC key (schema 9): install it so that this
    // process's audit entries are keyed, without loading the custody keys twice.
    if crate::vault::audit_key::installed().is_none() {
        crate::vault::audit_key::install(std::sync::Arc::new(keys.audit_mac_key()));
    }
    CatalogAccess::unlock(&cfg.storage.catalog_path(), &cc.keys_dir, &keys.wrap)
}
