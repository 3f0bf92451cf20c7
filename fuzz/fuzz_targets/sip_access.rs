//! Fuzz what the SIP access control reads from the network and the configuration: the
//! client certificate (DER, as presented in a TLS handshake) and allowlist entries.
//!
//! Properties: never panics; identities found in a certificate are matched against
//! allowlist entries built from the same input without panicking; an entry that parses
//! prints back to something that parses again.
#![no_main]

use branchrec::sip::access::{CertIdentities, IdentityAllowlist, IdentityPattern, SourceAllowlist};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ids = CertIdentities::from_der(data).unwrap_or_default();
    let _ = ids.describe();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entries: Vec<&str> = text.split('\n').take(16).collect();
    if let Ok(l) = SourceAllowlist::parse(&entries) {
        let _ = l.allows(std::net::IpAddr::from([10, 1, 2, 3]));
        let _ = l.allows(std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]));
    }
    for e in &entries {
        if let Ok(p) = e.parse::<IdentityPattern>() {
            let again: IdentityPattern = p.to_string().parse().expect("printed entry must parse");
            assert_eq!(again, p);
            let _ = p.matches(&ids);
        }
    }
    if let Ok(l) = IdentityAllowlist::parse(&entries) {
        let _ = l.find(&ids);
    }
});
