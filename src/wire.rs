//! Reading what is on the wire, once, the same way for every reader: the request as sent
//! ([`RequestView`]), the query string and the base path ([`RequestPath`]). The signature check and the
//! code that acts on a request both use these, so they can never read one URL two ways. A leaf module: it
//! imports nothing of s3p's but the error type.

use crate::error::{S3Error, S3ErrorCode};
use percent_encoding::{percent_decode, AsciiSet, NON_ALPHANUMERIC};

/// Everything except the RFC 3986 unreserved characters `A-Za-z0-9-._~` is percent-encoded: SigV4's
/// canonical forms and the query strings s3p sends to backends.
pub const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An RFC 3986 unreserved byte: what [`UNRESERVED`] leaves as it is.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Appends `bytes` percent-encoded with [`UNRESERVED`] (uppercase hex), as
/// `percent_encode(bytes, UNRESERVED)` writes them, without the formatting machinery: SigV4's canonical
/// URI and query are written this way for every signed request.
pub fn push_unreserved(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

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
/// percent-decoding (a `%` that starts no escape stays as sent). Borrowed when there is nothing to
/// decode (most names and many values): every request's query is read this way, several times.
pub fn decode_form(s: &str) -> std::borrow::Cow<'_, [u8]> {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Percent-decoding only: `+` stays a plus (SigV2 values, base64 signatures).
pub fn decode_percent(s: &str) -> std::borrow::Cow<'_, [u8]> {
    percent_decode(s.as_bytes()).into()
}

fn decode_query_part(s: &str) -> Result<String, S3Error> {
    match decode_form(s) {
        std::borrow::Cow::Borrowed(_) => Ok(s.to_string()),
        std::borrow::Cow::Owned(bytes) => {
            String::from_utf8(bytes).map_err(|_| S3Error::new(S3ErrorCode::InvalidURI))
        }
    }
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

/// A request's path read against the base path once, for every reader: routing, the resource the audit
/// names, SigV2's resources and SigV4's base-path tolerance take the part below the base; SigV4 signs
/// the path as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPath<'a> {
    /// The base path it was read against (`/s3p`; empty when the API is mounted at the root).
    pub base: &'a str,
    /// As sent on the wire, still percent-encoded, without the query (what SigV4 signs).
    pub raw: &'a str,
    /// [`strip_base_path`] of `raw`: `/immuta/k`, `` for the base itself, `None` when not under it.
    pub below_base: Option<&'a str>,
}

impl<'a> RequestPath<'a> {
    pub fn new(base: &'a str, raw: &'a str) -> RequestPath<'a> {
        RequestPath {
            base,
            raw,
            below_base: strip_base_path(base, raw),
        }
    }

    /// The part below the base path, or the path as sent when it is not under it (a resource outside
    /// the base path is named as sent).
    pub fn below_base_or_raw(&self) -> &'a str {
        self.below_base.unwrap_or(self.raw)
    }
}

/// The parts of an HTTP request that signatures cover, exactly as the client sent them.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `GET`, `HEAD`, ...
    pub method: &'a str,
    /// The request path as sent on the wire, still percent-encoded, without the query (`/s3p/immuta/a%20b`).
    pub raw_path: &'a str,
    /// The raw query string without the leading `?` (empty when absent).
    pub raw_query: &'a str,
    pub headers: Headers<'a>,
}

/// The request's headers, borrowed as they are: the request's own header map (no copy per request), or
/// pairs (tests, and the rare view that rewrites a header). Names are lowercase; a name may appear more
/// than once. Values that are not UTF-8 are invisible here: `gateway::decide` refuses such requests first.
#[derive(Debug, Clone, Copy)]
pub enum Headers<'a> {
    Map(&'a http::HeaderMap),
    Pairs(&'a [(String, String)]),
}

impl<'a> Headers<'a> {
    /// The name of the first header whose value is not UTF-8 (such values are invisible to `iter`).
    pub fn first_not_utf8(self) -> Option<&'a str> {
        match self {
            Headers::Map(map) => map
                .iter()
                .find(|(_, v)| std::str::from_utf8(v.as_bytes()).is_err())
                .map(|(n, _)| n.as_str()),
            Headers::Pairs(_) => None,
        }
    }

    pub fn iter(self) -> HeaderIter<'a> {
        match self {
            Headers::Map(map) => HeaderIter::Map(map.iter()),
            Headers::Pairs(pairs) => HeaderIter::Pairs(pairs.iter()),
        }
    }
}

/// Iterates `(name, value)` of [`Headers`] without allocating.
pub enum HeaderIter<'a> {
    Map(http::header::Iter<'a, http::HeaderValue>),
    Pairs(std::slice::Iter<'a, (String, String)>),
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            HeaderIter::Map(it) => loop {
                let (name, value) = it.next()?;
                if let Ok(value) = std::str::from_utf8(value.as_bytes()) {
                    return Some((name.as_str(), value));
                }
            },
            HeaderIter::Pairs(it) => it.next().map(|(n, v)| (n.as_str(), v.as_str())),
        }
    }
}

impl<'a> RequestView<'a> {
    /// All values of a header (names compared case-insensitively).
    pub fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        match self.headers {
            // The map's own lookup (a hash), instead of a scan.
            Headers::Map(map) => map
                .get(name)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()),
            Headers::Pairs(_) => self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v),
        }
    }
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
            let read = RequestPath::new(base, path);
            assert_eq!((read.raw, read.below_base), (path, want), "{base} {path}");
            assert_eq!(
                read.below_base_or_raw(),
                want.unwrap_or(path),
                "{base} {path}"
            );
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
        assert_eq!(decode_form("a+b%2Bc%zz").as_ref(), b"a b+c%zz");
        // The hand-written encoder writes what percent_encode(.., UNRESERVED) writes, for every byte.
        let all: Vec<u8> = (0..=255).collect();
        let mut ours = String::new();
        push_unreserved(&mut ours, &all);
        assert_eq!(
            ours,
            percent_encoding::percent_encode(&all, UNRESERVED).to_string()
        );
        // Every escape form, against the percent-encoding crate after `+` became a space.
        for s in [
            "",
            "plain",
            "a+b",
            "%",
            "%2",
            "%2F",
            "%2f%2F",
            "%zz%41",
            "100%",
            "%%41",
            "a%2",
            "%E2%82%AC+x",
            "%+1",
            "%0",
            "+%2B+",
        ] {
            let spaced = s.replace('+', " ");
            let want: Vec<u8> = percent_encoding::percent_decode(spaced.as_bytes()).collect();
            assert_eq!(decode_form(s).as_ref(), want.as_slice(), "{s:?}");
        }
        assert_eq!(&*decode_percent("a+b%2Bc"), b"a+b+c");
    }
}
