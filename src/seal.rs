//! Sealed strings: what s3p hands a client to give back later (listing continuation tokens, multipart
//! upload ids) without keeping any state, so that any replica sharing the `token_secret` opens them.
//!
//! Construction (a deterministic AEAD in the SIV style, built from HMAC-SHA256 alone):
//! `tag = HMAC(k_mac, version || binding || plaintext)[..16]`,
//! `ciphertext = plaintext XOR HMAC-stream(k_enc, tag)`, sealed = base64url(version || tag || ciphertext).
//! Opening recomputes the tag and compares in constant time, so a tampered string, or one bound to
//! something else (another key, prefix, data source or object), is refused. Each purpose derives its own
//! keys from the secret, so a token can never be used as an upload id or the other way round.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// Seals with keys derived from the current secret; opens with it or with a secret of an earlier
/// rotation.
pub struct Sealer {
    current: Keys,
    previous: Vec<Keys>,
}

struct Keys {
    mac_key: [u8; 32],
    enc_key: [u8; 32],
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// A binding field, length-prefixed so that no two bindings serialise alike.
pub fn field(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Sealer {
    /// `purpose` names what is sealed (`continuation token`, `upload id`): keys differ per purpose.
    pub fn rotated(purpose: &str, current: &str, previous: &[&str]) -> Sealer {
        Sealer {
            current: Keys::new(purpose, current),
            previous: previous.iter().map(|s| Keys::new(purpose, s)).collect(),
        }
    }

    pub fn seal(&self, binding: &[u8], plaintext: &[u8]) -> String {
        self.current.seal(binding, plaintext)
    }

    /// The plaintext, if `sealed` was sealed (with this purpose) for this binding. At most `max_len`
    /// characters are looked at: anything longer is not ours.
    pub fn open(&self, sealed: &str, binding: &[u8], max_len: usize) -> Option<Vec<u8>> {
        if sealed.is_empty() || sealed.len() > max_len {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < 1 + TAG_LEN || raw[0] != VERSION {
            return None;
        }
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find_map(|keys| keys.open(&raw, binding))
    }
}

impl Keys {
    fn new(purpose: &str, secret: &str) -> Keys {
        Keys {
            mac_key: hmac(
                secret.as_bytes(),
                &[format!("s3p {purpose}: mac").as_bytes()],
            ),
            enc_key: hmac(
                secret.as_bytes(),
                &[format!("s3p {purpose}: enc").as_bytes()],
            ),
        }
    }

    fn tag(&self, binding: &[u8], plaintext: &[u8]) -> [u8; TAG_LEN] {
        let full = hmac(&self.mac_key, &[&[VERSION], binding, plaintext]);
        full[..TAG_LEN].try_into().expect("16 of 32 bytes")
    }

    fn keystream_xor(&self, tag: &[u8], data: &mut [u8]) {
        for (block, chunk) in data.chunks_mut(32).enumerate() {
            let stream = hmac(&self.enc_key, &[tag, &(block as u64).to_be_bytes()]);
            for (b, s) in chunk.iter_mut().zip(stream.iter()) {
                *b ^= s;
            }
        }
    }

    fn seal(&self, binding: &[u8], plaintext: &[u8]) -> String {
        let tag = self.tag(binding, plaintext);
        let mut out = Vec::with_capacity(1 + TAG_LEN + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&tag);
        out.extend_from_slice(plaintext);
        self.keystream_xor(&tag, &mut out[1 + TAG_LEN..]);
        URL_SAFE_NO_PAD.encode(out)
    }

    fn open(&self, raw: &[u8], binding: &[u8]) -> Option<Vec<u8>> {
        let tag = &raw[1..1 + TAG_LEN];
        let mut plaintext = raw[1 + TAG_LEN..].to_vec();
        self.keystream_xor(tag, &mut plaintext);
        let expected = self.tag(binding, &plaintext);
        bool::from(expected.ct_eq(tag)).then_some(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_what_it_sealed_for_that_binding_and_purpose() {
        let s = Sealer::rotated("upload id", "a secret long enough", &[]);
        let sealed = s.seal(b"binding", b"backend-upload-id");
        assert_eq!(
            s.open(&sealed, b"binding", 4096).as_deref(),
            Some(&b"backend-upload-id"[..])
        );
        assert!(!sealed.contains("backend"), "{sealed}");
        assert_eq!(s.open(&sealed, b"other", 4096), None);
        let other_purpose = Sealer::rotated("continuation token", "a secret long enough", &[]);
        assert_eq!(other_purpose.open(&sealed, b"binding", 4096), None);
        // Every single-character change is refused.
        for i in 0..sealed.len() {
            let mut bytes = sealed.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert_eq!(s.open(&tampered, b"binding", 4096), None, "position {i}");
        }
        assert_eq!(s.open(&sealed, b"binding", 10), None);
        assert_eq!(s.open("", b"binding", 4096), None);
        // A rotation opens what the previous secret sealed.
        let rotated = Sealer::rotated("upload id", "the next secret", &["a secret long enough"]);
        assert!(rotated.open(&sealed, b"binding", 4096).is_some());
    }
}
