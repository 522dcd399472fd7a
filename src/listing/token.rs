//! Sealed continuation tokens.
//!
//! A token carries only a position in the virtual namespace, and is bound to the API key and to the listing
//! parameters that shape the key space (prefix, delimiter). It is stateless, so any s3p replica sharing the
//! `token_secret` resumes it. The sealing itself is [`crate::seal`]: a tampered token, or one issued to
//! another key or for another prefix, is refused.

use super::merge::{Position, MAX_POSITION_LEN};
use crate::error::S3Error;
use crate::seal::{field, Sealer};

/// The longest token s3p seals: base64 (4 characters per 3 bytes) of the sealed form of the longest
/// position (the seal's version byte and 16-byte tag, the kind byte, the position). Anything longer is not
/// a token of ours and is refused before any work; anything s3p sealed opens again, however long the key
/// a backend holds (positions are bounded by [`MAX_POSITION_LEN`], not by S3's 1,024-byte keys).
pub const MAX_TOKEN_LEN: usize = (1 + 16 + 1 + MAX_POSITION_LEN).div_ceil(3) * 4;

/// What a token is bound to.
#[derive(Debug, Clone, Copy)]
pub struct TokenBinding<'a> {
    /// The API key's id (hashed into the tag, never stored in the token).
    pub api_key: &'a str,
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
}

impl TokenBinding<'_> {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.api_key.len() + self.prefix.len());
        field(&mut b, self.api_key);
        field(&mut b, self.prefix);
        match self.delimiter {
            Some(d) => {
                b.push(b'D');
                field(&mut b, d);
            }
            None => b.push(b'N'),
        }
        b
    }
}

/// Seals tokens with keys derived from the configured secret, and opens them with it or with a secret
/// of an earlier rotation.
pub struct TokenSealer(Sealer);

impl TokenSealer {
    pub fn new(secret: &str) -> Self {
        TokenSealer::rotated(secret, &[])
    }

    /// Seals with `current`; opens tokens sealed with `current` or any of `previous`.
    pub fn rotated(current: &str, previous: &[&str]) -> Self {
        TokenSealer(Sealer::rotated("continuation token", current, previous))
    }

    /// Seals a position. `Start` is never sealed (a listing that starts over needs no token).
    pub fn seal(&self, position: &Position, binding: &TokenBinding) -> String {
        let (kind, key) = match position {
            Position::Start => (b'S', ""),
            Position::After(k) => (b'A', k.as_str()),
            Position::AfterPrefix(p) => (b'P', p.as_str()),
        };
        // The merge never makes a longer position (see MAX_LISTED_KEY_LEN): a token it could not
        // open again would end the walk for every reader.
        debug_assert!(
            key.len() <= MAX_POSITION_LEN,
            "position of {} bytes",
            key.len()
        );
        let mut plaintext = Vec::with_capacity(1 + key.len());
        plaintext.push(kind);
        plaintext.extend_from_slice(key.as_bytes());
        self.0.seal(&binding.bytes(), &plaintext)
    }

    /// Opens a token; any failure is the same 400 InvalidArgument, so that a prober learns nothing.
    pub fn open(&self, token: &str, binding: &TokenBinding) -> Result<Position, S3Error> {
        let invalid = || {
            S3Error::invalid_argument(
                "The continuation token provided is incorrect",
                "continuation-token",
                token,
            )
        };
        let plaintext = self
            .0
            .open(token, &binding.bytes(), MAX_TOKEN_LEN)
            .ok_or_else(invalid)?;
        let (&kind, key) = plaintext.split_first().ok_or_else(invalid)?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| invalid())?;
        match kind {
            b'S' => Ok(Position::Start),
            b'A' => Ok(Position::After(key)),
            b'P' => Ok(Position::AfterPrefix(key)),
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    #[test]
    fn tokens_of_a_previous_secret_open_during_a_rotation() {
        let b = binding("alice", "sales/", Some("/"));
        let p = Position::After("sales/q1.csv".into());
        let old = TokenSealer::new("the old secret, long enough");
        let token = old.seal(&p, &b);
        // A replica with the new secret and the old one as previous: old tokens still open...
        let rotating = TokenSealer::rotated(
            "the new secret, long enough",
            &["the old secret, long enough"],
        );
        assert_eq!(rotating.open(&token, &b).unwrap(), p);
        // ...and what it seals opens on an old replica only once that one has the new secret too.
        let fresh = rotating.seal(&p, &b);
        assert!(old.open(&fresh, &b).is_err());
        assert_eq!(
            TokenSealer::new("the new secret, long enough")
                .open(&fresh, &b)
                .unwrap(),
            p
        );
        // Once the old secret is dropped, its tokens are refused.
        assert!(TokenSealer::new("the new secret, long enough")
            .open(&token, &b)
            .is_err());
        // The binding still holds whatever the secret.
        assert!(rotating
            .open(&token, &binding("bob", "sales/", Some("/")))
            .is_err());
    }

    fn binding<'a>(key: &'a str, prefix: &'a str, delimiter: Option<&'a str>) -> TokenBinding<'a> {
        TokenBinding {
            api_key: key,
            prefix,
            delimiter,
        }
    }

    #[test]
    fn round_trips() {
        let s = TokenSealer::new("a secret of enough length");
        let b = binding("alice", "sales/", Some("/"));
        for p in [
            Position::After("sales/2024/q1.csv".into()),
            Position::AfterPrefix("sales/2024/".into()),
            Position::After("sales/caf\u{e9} +%/x".into()),
            Position::After("x".repeat(1024)),
            // Keys longer than S3 allows, as a backend may hold them, up to the longest position,
            // in characters of every width.
            Position::After(format!("sales/{}", "k".repeat(3500))),
            Position::AfterPrefix(format!("sales/{}/", "\u{e9}".repeat(2000))),
            Position::After("\u{10FFFF}".repeat(MAX_POSITION_LEN / 4)),
            Position::After("x".repeat(MAX_POSITION_LEN)),
        ] {
            let t = s.seal(&p, &b);
            assert!(t.len() <= MAX_TOKEN_LEN, "{} > {MAX_TOKEN_LEN}", t.len());
            assert!(
                t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "{t}"
            );
            assert_eq!(s.open(&t, &b).unwrap(), p);
        }
    }

    #[test]
    fn tokens_are_opaque() {
        let s = TokenSealer::new("a secret of enough length");
        let t = s.seal(
            &Position::After("sales/visible-key".into()),
            &binding("alice", "", None),
        );
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        assert!(
            !raw.windows(7).any(|w| w == b"visible"),
            "the position is encrypted"
        );
    }

    #[test]
    fn tampered_foreign_and_rebound_tokens_are_refused() {
        let s = TokenSealer::new("a secret of enough length");
        let b = binding("alice", "sales/", Some("/"));
        let t = s.seal(&Position::After("sales/a".into()), &b);
        // Every single-byte change of the decoded token is detected.
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let e = s.open(&URL_SAFE_NO_PAD.encode(&bad), &b).unwrap_err();
            assert_eq!(e.code, crate::error::S3ErrorCode::InvalidArgument);
        }
        // Another key, another prefix, another delimiter, another secret.
        assert!(s.open(&t, &binding("bob", "sales/", Some("/"))).is_err());
        assert!(s.open(&t, &binding("alice", "secret/", Some("/"))).is_err());
        assert!(s.open(&t, &binding("alice", "sales/", None)).is_err());
        assert!(s.open(&t, &binding("alice", "sales/", Some("-"))).is_err());
        assert!(TokenSealer::new("another secret entirely")
            .open(&t, &b)
            .is_err());
        // Junk.
        for junk in [
            "",
            "!!!",
            "AAAA",
            &"A".repeat(5000),
            &"A".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(s.open(junk, &b).is_err(), "{junk}");
        }
    }

    #[test]
    fn bindings_do_not_collide_by_concatenation() {
        let s = TokenSealer::new("a secret of enough length");
        let t = s.seal(&Position::After("k".into()), &binding("ab", "c", None));
        assert!(s.open(&t, &binding("a", "bc", None)).is_err());
    }
}
