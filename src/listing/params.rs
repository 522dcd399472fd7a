//! The client's ListObjects / ListObjectsV2 parameters, validated as S3 validates them.

use super::merge::MAX_POSITION_LEN;
use crate::error::{S3Error, S3ErrorCode};
use crate::wire::Query;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub version: ListVersion,
    pub prefix: String,
    /// `None` when absent or empty (S3 treats an empty delimiter as none).
    pub delimiter: Option<String>,
    /// Capped at 1000, as S3 does.
    pub max_keys: usize,
    /// v1 `marker`.
    pub marker: Option<String>,
    /// v2 `start-after`.
    pub start_after: Option<String>,
    /// v2 `continuation-token`, still sealed.
    pub continuation_token: Option<String>,
    pub encoding_url: bool,
    pub fetch_owner: bool,
}

pub const MAX_KEYS_LIMIT: usize = 1000;

impl ListParams {
    pub fn parse(q: &Query) -> Result<ListParams, S3Error> {
        let version = match q.get("list-type") {
            None => ListVersion::V1,
            Some("2") => ListVersion::V2,
            Some("1") => ListVersion::V1,
            Some(v) => {
                return Err(S3Error::invalid_argument(
                    "Invalid List Type specified in Request",
                    "list-type",
                    v,
                ))
            }
        };
        let max_keys = match q.get("max-keys") {
            None => MAX_KEYS_LIMIT,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => (n.min(MAX_KEYS_LIMIT as i64)) as usize,
                Ok(_) => {
                    return Err(S3Error::invalid_argument(
                        "Argument maxKeys must be an integer between 0 and 2147483647",
                        "maxKeys",
                        v,
                    ))
                }
                Err(_) => {
                    return Err(S3Error::invalid_argument(
                        "Provided max-keys not an integer or within integer range",
                        "max-keys",
                        v,
                    ))
                }
            },
        };
        let encoding_url = match q.get("encoding-type") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("url") => true,
            Some(v) => {
                return Err(S3Error::invalid_argument(
                    "Invalid Encoding Method specified in Request",
                    "encoding-type",
                    v,
                ))
            }
        };
        let fetch_owner = match q.get("fetch-owner") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(S3Error::invalid_argument(
                    "Invalid Argument",
                    "fetch-owner",
                    v,
                ))
            }
        };
        let continuation_token = q.get("continuation-token").map(str::to_string);
        if continuation_token.as_deref() == Some("") {
            return Err(S3Error::invalid_argument(
                "The continuation token provided is incorrect",
                "continuation-token",
                "",
            ));
        }
        let params = ListParams {
            version,
            prefix: q.get("prefix").unwrap_or("").to_string(),
            delimiter: q
                .get("delimiter")
                .filter(|d| !d.is_empty())
                .map(str::to_string),
            max_keys,
            marker: q
                .get("marker")
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            start_after: q
                .get("start-after")
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            continuation_token,
            encoding_url,
            fetch_owner,
        };
        // Anything that names a place among the keys is bounded, but by the longest position a listing
        // emits, not by S3's 1,024-byte keys: a backend may hold longer keys, and a v1 client resumes
        // from the last key it was given (or the NextMarker), a client descends into a common prefix it
        // was given; both must be accepted back, or the walk stops there for every reader.
        for (name, v) in [
            ("prefix", Some(params.prefix.as_str())),
            ("marker", params.marker.as_deref()),
            ("start-after", params.start_after.as_deref()),
        ] {
            if v.is_some_and(|v| v.len() > MAX_POSITION_LEN) {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidArgument,
                    format!("{name} is longer than {MAX_POSITION_LEN} bytes"),
                ));
            }
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_bounded_by_the_longest_a_listing_emits() {
        // Longer than S3's 1,024-byte keys (a backend may hold such keys, and the walk resumes after
        // them), up to the bound; one byte more is refused. `%C3%A9` is two bytes.
        for name in ["prefix", "marker", "start-after"] {
            for (value, ok) in [
                ("a".repeat(1025), true),
                ("a".repeat(3500), true),
                ("a".repeat(MAX_POSITION_LEN), true),
                ("%C3%A9".repeat(MAX_POSITION_LEN / 2), true),
                ("a".repeat(MAX_POSITION_LEN + 1), false),
                (format!("a{}", "%C3%A9".repeat(MAX_POSITION_LEN / 2)), false),
            ] {
                let q = Query::parse(&format!("list-type=2&{name}={value}")).unwrap();
                match ListParams::parse(&q) {
                    Ok(_) => assert!(ok, "{name} of {} bytes", value.len()),
                    Err(e) => {
                        assert!(!ok, "{name} of {} bytes", value.len());
                        assert_eq!(e.code, S3ErrorCode::InvalidArgument, "{name}");
                    }
                }
            }
        }
    }

    fn parse(q: &str) -> Result<ListParams, S3Error> {
        ListParams::parse(&Query::parse(q).unwrap())
    }

    #[test]
    fn defaults_and_values() {
        let p = parse("").unwrap();
        assert_eq!(
            (p.version, p.max_keys, p.delimiter.clone(), p.encoding_url),
            (ListVersion::V1, 1000, None, false)
        );
        let p = parse("list-type=2&prefix=sales%2F&delimiter=%2F&max-keys=5&start-after=a&encoding-type=url&fetch-owner=true").unwrap();
        assert_eq!(p.version, ListVersion::V2);
        assert_eq!(p.prefix, "sales/");
        assert_eq!(p.delimiter.as_deref(), Some("/"));
        assert_eq!(p.max_keys, 5);
        assert_eq!(p.start_after.as_deref(), Some("a"));
        assert!(p.encoding_url && p.fetch_owner);
        assert_eq!(
            parse("max-keys=5000").unwrap().max_keys,
            1000,
            "capped as S3 does"
        );
        assert_eq!(parse("max-keys=0").unwrap().max_keys, 0);
        assert_eq!(parse("delimiter=").unwrap().delimiter, None);
    }

    #[test]
    fn invalid_values_are_400_invalid_argument() {
        for q in [
            "max-keys=-1",
            "max-keys=abc",
            "max-keys=1.5",
            "encoding-type=base64",
            "list-type=3",
            "fetch-owner=maybe",
            "list-type=2&continuation-token=",
        ] {
            let e = parse(q).unwrap_err();
            assert_eq!(
                (e.code, e.status()),
                (S3ErrorCode::InvalidArgument, 400),
                "{q}"
            );
        }
    }
}
