//! Reading what is on the wire, once, the same way for every reader: the query string and the base path.
//! The signature check and the code that acts on a request both use these, so they can never read one
//! URL two ways. A leaf module: it imports nothing of s3p's but the error type.

use crate::error::{S3Error, S3ErrorCode};
use percent_encoding::{percent_decode, AsciiSet, NON_ALPHANUMERIC};

/// Everything except the RFC 3986 unreserved characters `A-Za-z0-9-._~` is percent-encoded: SigV4's
/// canonical forms and the query strings s3p sends to backends.
pub const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters kept literally in an S3 path: RFC 3986 unreserved plus `/`. Everything else is encoded, so the
/// backend decodes exactly the key we mean (and the SigV4 canonical URI equals the path we send).
pub const S3_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// A decoded query string. Names and values are percent-decoded once, with `+` meaning a space (as S3
/// reads query strings). The first occurrence of a name wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

/// A query string as sent, split once for every reader: its `name[=value]` pieces in order, still
/// encoded (`a&&b` has no empty piece; `a` has no value, `a=` an empty one). Decoding is each reader's,
/// because S3 and SigV4 read `+` as a space ([`decode_form`]) where SigV2 keeps it in values
/// ([`decode_percent`]); what they split is always the same.
#[derive(Debug, Clone, Copy)]
pub struct RawQuery<'a>(pub &'a str);

impl<'a> RawQuery<'a> {
    pub fn pairs(self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        self.0
            .split('&')
            .filter(|piece| !piece.is_empty())
            .map(|piece| match piece.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (piece, None),
            })
    }

    /// The raw value of the first piece whose raw name is `name` (empty when it has no `=`).
    pub fn get_raw(self, name: &str) -> Option<&'a str> {
        self.pairs()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.unwrap_or(""))
    }
}

/// Form decoding, as S3 reads its query and SigV4 canonicalises it: `+` is a space, then
/// percent-decoding (a `%` that starts no escape stays as sent).
pub fn decode_form(s: &str) -> Vec<u8> {
    let spaced: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced).collect()
}

/// Percent-decoding only: `+` stays a plus (SigV2 values, base64 signatures).
pub fn decode_percent(s: &str) -> std::borrow::Cow<'_, [u8]> {
    percent_decode(s.as_bytes()).into()
}

fn decode_query_part(s: &str) -> Result<String, S3Error> {
    String::from_utf8(decode_form(s)).map_err(|_| S3Error::new(S3ErrorCode::InvalidURI))
}

impl Query {
    pub fn parse(raw: &str) -> Result<Query, S3Error> {
        let mut pairs = Vec::new();
        for (n, v) in RawQuery(raw).pairs() {
            pairs.push((decode_query_part(n)?, decode_query_part(v.unwrap_or(""))?));
        }
        Ok(Query { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// The part of a request path below the base path (`/s3p` + `/immuta/k` -> `/immuta/k`; the base itself
/// -> ``), or `None` when the path is not under it. The base ends at a segment boundary: `/s3px/...` is
/// not under `/s3p`. An empty base path holds every path.
pub fn strip_base_path<'p>(base: &str, raw_path: &'p str) -> Option<&'p str> {
    let rest = raw_path.strip_prefix(base)?;
    (base.is_empty() || rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// `.` and `..`, also as some servers read them: with a `;parameter` suffix (Java servlet path
/// parameters). Segments are split on `\\` as well as `/` by the caller, for backends on Windows.
pub fn is_dot_segment(seg: &str) -> bool {
    let bare = seg.split(';').next().unwrap_or(seg);
    bare == "." || bare == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_ends_at_a_segment_boundary() {
        let table = [
            ("/s3p", "/s3p/immuta/k", Some("/immuta/k")),
            ("/s3p", "/s3p", Some("")),
            ("/s3p", "/s3p/", Some("/")),
            ("/s3p", "/s3px/immuta", None),
            ("/s3p", "/immuta/k", None),
            ("/s3p", "/S3P/immuta", None),
            ("", "/immuta/k", Some("/immuta/k")),
            ("", "/", Some("/")),
            ("/a/b", "/a/b/c", Some("/c")),
            ("/a/b", "/a/bc", None),
        ];
        for (base, path, want) in table {
            assert_eq!(strip_base_path(base, path), want, "{base} {path}");
        }
    }

    #[test]
    fn query_decodes_once_and_first_name_wins() {
        let q = Query::parse("prefix=a%2Fb+c&prefix=x&flag&=v").unwrap();
        assert_eq!(q.get("prefix"), Some("a/b c"));
        assert!(q.has("flag"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get(""), Some("v"));
        assert!(Query::parse("a=%ff").is_err());
        assert!(Query::parse("a=%2").is_ok(), "a lone % is kept as sent");
    }

    #[test]
    fn raw_query_splits_once_for_every_reader() {
        let q = RawQuery("a=1&&b&c=&a=2&X-Amz-Credential=K%2F2024");
        assert_eq!(
            q.pairs().collect::<Vec<_>>(),
            vec![
                ("a", Some("1")),
                ("b", None),
                ("c", Some("")),
                ("a", Some("2")),
                ("X-Amz-Credential", Some("K%2F2024"))
            ]
        );
        assert_eq!(q.get_raw("a"), Some("1"));
        assert_eq!(q.get_raw("b"), Some(""));
        assert_eq!(q.get_raw("z"), None);
        assert_eq!(decode_form("a+b%2Bc%zz"), b"a b+c%zz");
        assert_eq!(&*decode_percent("a+b%2Bc"), b"a+b+c");
    }
}
