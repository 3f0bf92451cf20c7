//! The encrypted catalogue of a test installation with software keys, opened as someone
//! holding the box's keys would: the catalogue key unwrapped from
//! `<data>/keys/catalog.key.wrapped` with the software KEK `<data>/keys/install.key`.
//! For tests that edit or read the catalogue directly (SQLite, as a tamperer with the keys
//! would) and for greps of the decrypted page images.
#![allow(dead_code)]

#[path = "sqlcipher_pages.rs"]
pub mod pages;

use std::path::Path;

use branchrec::catalog::CatalogAccess;
use branchrec::vault::{KeyFileVault, KeyWrap};

/// The catalogue of `data` unlocked with its software KEK.
pub fn access(data: &Path) -> CatalogAccess {
    let kek = KeyFileVault::load(&data.join("keys/install.key")).expect("software KEK");
    CatalogAccess::unlock(&data.join("catalog.sqlite"), &data.join("keys"), &kek)
        .expect("catalogue key unwraps")
}

/// A plain rusqlite connection to the catalogue of `data`, keyed (5 s busy timeout).
pub fn connection(data: &Path) -> rusqlite::Connection {
    let c = access(data).raw_connection().expect("keyed connection");
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

/// The raw catalogue key of `data`, unwrapped by hand from the documented file format
/// (docs/catalog-schema.md) with the software KEK — what an attacker holding the KEK
/// file would do.
pub fn raw_key(data: &Path) -> [u8; 32] {
    let kek = KeyFileVault::load(&data.join("keys/install.key")).expect("software KEK");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("keys/catalog.key.wrapped")).unwrap())
            .unwrap();
    let w = &v["wraps"][0];
    let dk = kek
        .unwrap(
            w["kek_id"].as_str().unwrap(),
            &hex::decode(w["wrapped"].as_str().unwrap()).unwrap(),
        )
        .expect("the wrap opens with the KEK");
    *dk.as_bytes()
}

/// The decrypted page images of the catalogue of `data` (main file and WAL frames).
pub fn plaintext_pages(data: &Path) -> Vec<u8> {
    pages::plaintext_images(&raw_key(data), &data.join("catalog.sqlite"))
}

/// A keyed rusqlite connection to the catalogue of the installation configured in
/// `config`, whatever its key provider (TPM included): the KEK loaded as the CLI loads it
/// (`service::catalog::access`). 5 s busy timeout.
pub fn connection_for(config: &Path) -> rusqlite::Connection {
    let cfg = branchrec::config::Config::load(config).expect("config");
    let c = branchrec::service::catalog::access(&cfg)
        .expect("catalogue key unwraps")
        .raw_connection()
        .expect("keyed connection");
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}
