//! AWS Signature Version 4 (sans-IO): canonical request, string to sign, signature.
//!
//! Only what S3 needs: header-based signing with a payload hash. Verified against the
//! published AWS test vectors (see the tests at the bottom).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of the empty payload, hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Access key pair. The secret is zeroized on drop and never printed.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id (not secret, may be logged).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// A request to sign. `path` is the raw (unencoded) absolute path, `query` the raw pairs.
#[derive(Debug)]
pub struct Request<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// Absolute path, not yet percent-encoded (`/bucket/key`).
    pub path: &'a str,
    /// Query parameters, not yet encoded; order does not matter.
    pub query: &'a [(String, String)],
    /// Headers to sign (names any case); must include `host` and `x-amz-date`.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the payload (or `UNSIGNED-PAYLOAD`).
    pub payload_sha256: &'a str,
}

/// Percent-encode per SigV4: unreserved characters stay, everything else is `%XX`;
/// `/` stays when `keep_slash` (paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The canonical query string: pairs encoded, sorted by name then value.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    h.sort();
    let canon: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = h
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (canon, signed)
}

/// The canonical request (step 1 of SigV4) and the signed-headers list.
pub fn canonical_request(req: &Request<'_>) -> (String, String) {
    let (canon_headers, signed) = canonical_headers(req.headers);
    let cr = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri_encode(req.path, true),
        canonical_query(req.query),
        canon_headers,
        signed,
        req.payload_sha256
    );
    (cr, signed)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: new_from_slice cannot fail.
    let mut m = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The `Authorization` header value for `req`, signed at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn authorization(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let (cr, signed) = canonical_request(req);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(cr.as_bytes()))
    );
    let k_secret = Zeroizing::new(format!("AWS4{}", creds.secret_access_key.as_str()));
    let k_date = Zeroizing::new(hmac(k_secret.as_bytes(), date.as_bytes()));
    let k_region = Zeroizing::new(hmac(&k_date[..], region.as_bytes()));
    let k_service = Zeroizing::new(hmac(&k_region[..], service.as_bytes()));
    let k_signing = Zeroizing::new(hmac(&k_service[..], b"aws4_request"));
    let sig = hex::encode(hmac(&k_signing[..], sts.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={sig}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    fn sig_of(auth: &str) -> &str {
        auth.rsplit("Signature=").next().unwrap()
    }

    #[test]
    fn canonical_request_of_get_vanilla() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        };
        let headers = [
            h("Host", "example.amazon.com"),
            h("X-Amz-Date", "20150830T123600Z"),
        ];
        let req = Request {
            method: "GET",
            path: "/",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let (cr, _) = canonical_request(&req);
        assert_eq!(
            cr,
            format!("GET\n/\n\nhost:example.amazon.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}")
        );
        let a = authorization(&req, &creds, "us-east-1", "service", "20150830T123600Z");
        assert!(a.contains("Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"));
        assert!(a.contains("SignedHeaders=host;x-amz-date,"));
    }

    fn s3_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        }
    }

    /// The S3 documentation's worked examples (sigv4-header-based-auth).
    #[test]
    fn s3_documentation_examples() {
        let headers = [
            h("Host", "examplebucket.s3.amazonaws.com"),
            h("Range", "bytes=0-9"),
            h("x-amz-content-sha256", EMPTY_SHA256),
            h("x-amz-date", "20130524T000000Z"),
        ];
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let a = authorization(&req, &s3_creds(), "us-east-1", "s3", "20130524T000000Z");
        assert_eq!(
            sig_of(&a),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );

        let body_hash = hex::encode(Sha256::digest(b"Welcome to Amazon S3."));
        let headers = [
            h("Host", "examplebucket.s3.amazonaws.com"),
            h("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            h("x-amz-date", "20130524T000000Z"),
            h("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            h("x-amz-content-sha256", &body_hash),
        ];
        let req = Request {
            method: "PUT",
            path: "/test$file.text",
            query: &[],
            headers: &headers,
            payload_sha256: &body_hash,
        };
        let a = authorization(&req, &s3_creds(), "us-east-1", "s3", "20130524T000000Z");
        assert_eq!(
            sig_of(&a),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );

        let headers = [
            h("Host", "examplebucket.s3.amazonaws.com"),
            h("x-amz-date", "20130524T000000Z"),
            h("x-amz-content-sha256", EMPTY_SHA256),
        ];
        let q = [h("max-keys", "2"), h("prefix", "J")];
        let req = Request {
            method: "GET",
            path: "/",
            query: &q,
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let a = authorization(&req, &s3_creds(), "us-east-1", "s3", "20130524T000000Z");
        assert_eq!(
            sig_of(&a),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn encoding_rules() {
        assert_eq!(uri_encode("a b/c~d*", true), "a%20b/c~d%2A");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(
            canonical_query(&[h("uploadId", "x y"), h("partNumber", "2")]),
            "partNumber=2&uploadId=x%20y"
        );
        assert_eq!(canonical_query(&[h("uploads", "")]), "uploads=");
        let c = s3_creds();
        assert!(!format!("{c:?}").contains("EXAMPLEKEY"));
    }
}
