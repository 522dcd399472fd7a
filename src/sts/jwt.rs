//! OIDC tokens (JWT, compact JWS) for `AssumeRoleWithWebIdentity`: the key set of an issuer (JWKS), the
//! signature (RS256 and ES256 only: `none`, the MAC algorithms and anything else are refused before a
//! key is looked at), and the registered claims (`iss`, `aud`, `exp`, `nbf`, with a small skew). The
//! signatures are checked by `ring` (already in the build through rustls). Pure: the clock is a
//! parameter, the key set is read by the caller (a file, or a URL fetched by `server::sts`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// The longest token looked at.
pub const MAX_TOKEN_CHARS: usize = 16 * 1024;
/// Clock difference allowed on `exp` and `nbf`, either way.
pub const SKEW_S: u64 = 60;
/// The shortest RSA modulus accepted (bytes): 2,048 bits.
const MIN_RSA_BYTES: usize = 256;

/// An issuer's signing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point (0x04 || x || y).
    P256(Vec<u8>),
}

impl PublicKey {
    fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::Rsa { .. } => "RS256",
            PublicKey::P256(_) => "ES256",
        }
    }
}

/// Why a token is refused (the STS answer is InvalidIdentityToken, or ExpiredTokenException for
/// [`JwtError::Expired`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(&'static str),
    /// An algorithm other than RS256 and ES256.
    Algorithm(String),
    /// No key of the issuer's set has the token's `kid` and algorithm.
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    /// A required claim missing or wrong: `iss`, `aud`, `sub`, `exp`.
    Claim(&'static str),
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Malformed(what) => write!(f, "The web identity token is malformed: {what}."),
            JwtError::Algorithm(alg) => {
                write!(
                    f,
                    "The web identity token's algorithm `{alg}` is not accepted (RS256, ES256)."
                )
            }
            JwtError::UnknownKey => {
                f.write_str("The web identity token is signed by a key the issuer does not list.")
            }
            JwtError::Signature => f.write_str("The web identity token's signature is not valid."),
            JwtError::Expired => f.write_str("Token expired."),
            JwtError::NotYetValid => f.write_str("The web identity token is not valid yet."),
            JwtError::Claim("aud") => f.write_str("Incorrect token audience."),
            JwtError::Claim(claim) => write!(
                f,
                "The web identity token's `{claim}` claim is missing or not accepted."
            ),
        }
    }
}

impl Jwks {
    /// Reads a JWKS document (`{"keys":[...]}`). Keys that cannot sign tokens s3p accepts (other key
    /// types, `use: enc`, curves other than P-256, RSA under 2,048 bits) are skipped; a set left empty is
    /// an error.
    pub fn from_json(text: &str) -> Result<Jwks, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no `keys` list")?;
        let b64 = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        };
        let keys: Vec<Jwk> = list
            .iter()
            .filter(|k| {
                k.get("use")
                    .and_then(Value::as_str)
                    .is_none_or(|u| u == "sig")
            })
            .filter_map(|k| {
                let kid = k.get("kid").and_then(Value::as_str).map(str::to_string);
                let key = match k.get("kty").and_then(Value::as_str)? {
                    "RSA" => {
                        let (n, e) = (b64(k.get("n"))?, b64(k.get("e"))?);
                        let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
                        (n.len() >= MIN_RSA_BYTES && !e.is_empty())
                            .then_some(PublicKey::Rsa { n, e })?
                    }
                    "EC" if k.get("crv").and_then(Value::as_str) == Some("P-256") => {
                        let (x, y) = (b64(k.get("x"))?, b64(k.get("y"))?);
                        if x.len() != 32 || y.len() != 32 {
                            return None;
                        }
                        let mut point = vec![4u8];
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        PublicKey::P256(point)
                    }
                    _ => return None,
                };
                // A key that names its algorithm must name the one its type signs with.
                match k.get("alg").and_then(Value::as_str) {
                    Some(alg) if alg != key.algorithm() => None,
                    _ => Some(Jwk { kid, key }),
                }
            })
            .collect();
        if keys.is_empty() {
            return Err(
                "no usable key (RSA of 2,048 bits or more, or EC P-256, for signing)".into(),
            );
        }
        Ok(Jwks { keys })
    }

    /// Whether a key with this id is in the set (a token naming another makes the caller refetch a URL).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn decode_json(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(what)),
    }
}

fn split(token: &str) -> Result<(&str, &str, &str), JwtError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(JwtError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => Ok((h, p, s)),
        _ => Err(JwtError::Malformed("not three parts")),
    }
}

/// The token's header `kid` and payload `iss`, read without verifying anything: which issuer's key set
/// (and which key) to verify it with.
pub fn unverified_issuer_and_kid(token: &str) -> Result<(String, Option<String>), JwtError> {
    let (header, payload, _) = split(token)?;
    let header = decode_json(header, "header")?;
    let payload = decode_json(payload, "payload")?;
    let iss = payload
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(JwtError::Claim("iss"))?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((iss.to_string(), kid))
}

/// Verifies the signature of `token` with `keys`; returns the payload's claims.
pub fn verify_signature(token: &str, keys: &Jwks) -> Result<Map<String, Value>, JwtError> {
    let (header_b64, payload_b64, signature_b64) = split(token)?;
    let header = decode_json(header_b64, "header")?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "RS256" && alg != "ES256" {
        return Err(JwtError::Algorithm(alg.to_string()));
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwtError::Malformed("signature"))?;
    let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    let mut candidates = keys
        .keys
        .iter()
        .filter(|k| k.key.algorithm() == alg && (kid.is_none() || k.kid.as_deref() == kid));
    let mut any = false;
    let verified = candidates.any(|k| {
        any = true;
        match &k.key {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &signature)
                .is_ok(),
            PublicKey::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, &signature)
                    .is_ok()
            }
        }
    });
    if !any {
        return Err(JwtError::UnknownKey);
    }
    if !verified {
        return Err(JwtError::Signature);
    }
    decode_json(payload_b64, "payload")
}

/// What the claims must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    /// `aud` (a string or a list) must name one of these.
    pub audiences: &'a [String],
    pub now_s: u64,
}

/// Checks `iss`, `aud`, `exp` (required), `nbf` (when present) and `sub` (required: it names the
/// session's parent).
pub fn check_claims(claims: &Map<String, Value>, expected: &Expected) -> Result<(), JwtError> {
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(JwtError::Claim("iss"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => expected.audiences.iter().any(|e| e == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| expected.audiences.iter().any(|e| e == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(JwtError::Claim("aud"));
    }
    let time = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_f64)
            .map(|t| t.max(0.0) as u64)
    };
    let exp = time("exp").ok_or(JwtError::Claim("exp"))?;
    if expected.now_s >= exp.saturating_add(SKEW_S) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = time("nbf") {
        if expected.now_s.saturating_add(SKEW_S) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => Ok(()),
        _ => Err(JwtError::Claim("sub")),
    }
}

/// The value of a claim, by name or dotted path (`realm_access.roles`), as strings: a string claim
/// is one value, a list of strings several, a number or boolean its text.
pub fn claim_values(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    // A claim named with dots (`https://example.com/roles`) is taken whole; else the path is followed.
    let value = claims.get(path).or_else(|| {
        let mut parts = path.split('.');
        let mut value = claims.get(parts.next()?);
        for part in parts {
            value = value.and_then(|v| v.get(part));
        }
        value
    });
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match value {
        Some(Value::Array(list)) => list.iter().filter_map(text).collect(),
        Some(v) => text(v).into_iter().collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // RFC 7515 appendix A.2 (RS256) and A.3 (ES256): the published example tokens and public keys.
    const RFC_RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    const RFC_RS256: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    const RFC_EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const RFC_EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const RFC_ES256: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

    fn rsa_set() -> Jwks {
        Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"RSA","n":"{RFC_RSA_N}","e":"AQAB"}}]}}"#
        ))
        .unwrap()
    }

    fn ec_set() -> Jwks {
        Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{RFC_EC_X}","y":"{RFC_EC_Y}"}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_rfc_7515_examples_verify() {
        for (token, keys) in [(RFC_RS256, rsa_set()), (RFC_ES256, ec_set())] {
            let claims = verify_signature(token, &keys).unwrap();
            assert_eq!(claims["iss"], "joe");
            assert_eq!(claims["exp"], 1_300_819_380);
        }
    }

    #[test]
    fn changed_tokens_and_the_wrong_kind_of_key_are_refused() {
        for (token, keys) in [(RFC_RS256, rsa_set()), (RFC_ES256, ec_set())] {
            let dots: Vec<usize> = token.match_indices('.').map(|(i, _)| i).collect();
            for i in [3, dots[0] + 5, dots[1] + 4, token.len() - 2] {
                let mut bytes = token.as_bytes().to_vec();
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                let changed = String::from_utf8(bytes).unwrap();
                assert!(verify_signature(&changed, &keys).is_err(), "position {i}");
            }
        }
        assert_eq!(
            verify_signature(RFC_RS256, &ec_set()),
            Err(JwtError::UnknownKey)
        );
        assert_eq!(
            verify_signature(RFC_ES256, &rsa_set()),
            Err(JwtError::UnknownKey)
        );
    }

    #[test]
    fn none_and_mac_algorithms_are_refused_before_any_key() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"joe"}"#);
        for alg in ["none", "HS256", "RS512", "PS256", "ES384", ""] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            let token = format!("{header}.{payload}.");
            assert_eq!(
                verify_signature(&token, &rsa_set()),
                Err(JwtError::Algorithm(alg.into()))
            );
        }
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(
                matches!(
                    verify_signature(bad, &rsa_set()),
                    Err(JwtError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert!(verify_signature(&"a".repeat(MAX_TOKEN_CHARS + 1), &rsa_set()).is_err());
    }

    #[test]
    fn a_named_kid_must_be_in_the_set() {
        let keys = Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"k1","n":"{RFC_RSA_N}","e":"AQAB"}}]}}"#
        ))
        .unwrap();
        assert!(keys.has_kid("k1") && !keys.has_kid("k2"));
        let (_, payload, sig) = split(RFC_RS256).unwrap();
        for (kid, expected) in [("k1", Ok(())), ("k2", Err(JwtError::UnknownKey))] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#));
            // The header is signed: with k1 named, the signature no longer matches (but the key is found).
            let got = verify_signature(&format!("{header}.{payload}.{sig}"), &keys).map(|_| ());
            match expected {
                Ok(()) => assert_eq!(got, Err(JwtError::Signature)),
                Err(e) => assert_eq!(got, Err(e)),
            }
        }
        // Without a kid, every key of the right type is tried.
        assert!(verify_signature(RFC_RS256, &keys).is_ok());
    }

    #[test]
    fn unusable_keys_are_skipped_and_an_empty_set_refused() {
        assert!(Jwks::from_json(r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#).is_err());
        assert!(Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"RSA","use":"enc","n":"{RFC_RSA_N}","e":"AQAB"}}]}}"#
        ))
        .is_err());
        assert!(Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"RSA","alg":"RS512","n":"{RFC_RSA_N}","e":"AQAB"}}]}}"#
        ))
        .is_err());
        let short = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        assert!(Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"RSA","n":"{short}","e":"AQAB"}}]}}"#
        ))
        .is_err());
        assert!(Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-384","x":"{RFC_EC_X}","y":"{RFC_EC_Y}"}}]}}"#
        ))
        .is_err());
        assert!(Jwks::from_json("not json").is_err());
        assert!(Jwks::from_json(r#"{"keys":[]}"#).is_err());
        // One usable key among unusable ones is enough.
        let mixed = Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"oct","k":"AAAA"}},{{"kty":"EC","crv":"P-256","x":"{RFC_EC_X}","y":"{RFC_EC_Y}"}}]}}"#
        ))
        .unwrap();
        assert_eq!(mixed.len(), 1);
    }

    fn claims(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn registered_claims_are_checked() {
        let audiences = vec!["s3p".to_string()];
        let expected = Expected {
            issuer: "https://idp.example",
            audiences: &audiences,
            now_s: 1_000_000,
        };
        let good = r#""iss":"https://idp.example","aud":"s3p","sub":"u1""#;
        let table: Vec<(String, Result<(), JwtError>)> = vec![
            (format!(r#"{{{good},"exp":1000100}}"#), Ok(())),
            (format!(r#"{{{good},"exp":1000100,"nbf":1000050}}"#), Ok(())),
            // Within the skew, either way.
            (format!(r#"{{{good},"exp":999950}}"#), Ok(())),
            (
                format!(r#"{{{good},"exp":999940}}"#),
                Err(JwtError::Expired),
            ),
            (
                format!(r#"{{{good},"exp":1000100,"nbf":1000061}}"#),
                Err(JwtError::NotYetValid),
            ),
            (format!(r#"{{{good}}}"#), Err(JwtError::Claim("exp"))),
            (
                r#"{"iss":"https://idp.example","aud":["other","s3p"],"sub":"u1","exp":1000100}"#
                    .into(),
                Ok(()),
            ),
            (
                r#"{"iss":"https://idp.example","aud":"other","sub":"u1","exp":1000100}"#.into(),
                Err(JwtError::Claim("aud")),
            ),
            (
                r#"{"iss":"https://idp.example","sub":"u1","exp":1000100}"#.into(),
                Err(JwtError::Claim("aud")),
            ),
            (
                r#"{"iss":"https://idp.example/","aud":"s3p","sub":"u1","exp":1000100}"#.into(),
                Err(JwtError::Claim("iss")),
            ),
            (
                r#"{"iss":"https://idp.example","aud":"s3p","sub":"","exp":1000100}"#.into(),
                Err(JwtError::Claim("sub")),
            ),
        ];
        for (json, result) in table {
            assert_eq!(check_claims(&claims(&json), &expected), result, "{json}");
        }
    }

    #[test]
    fn claim_values_by_name_and_path() {
        let c = claims(
            r#"{"groups":["analysts","ops"],"email":"a@x","admin":true,"realm_access":{"roles":["reader"]},"n":3}"#,
        );
        assert_eq!(claim_values(&c, "groups"), ["analysts", "ops"]);
        assert_eq!(claim_values(&c, "email"), ["a@x"]);
        assert_eq!(claim_values(&c, "admin"), ["true"]);
        assert_eq!(claim_values(&c, "n"), ["3"]);
        assert_eq!(claim_values(&c, "realm_access.roles"), ["reader"]);
        assert!(claim_values(&c, "missing").is_empty());
        assert!(claim_values(&c, "realm_access").is_empty());
        let namespaced = claims(r#"{"https://example.com/roles":["etl"]}"#);
        assert_eq!(
            claim_values(&namespaced, "https://example.com/roles"),
            ["etl"]
        );
    }
}
