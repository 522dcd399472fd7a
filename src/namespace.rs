//! The virtual namespace: `<dataSource>/<key>` inside the one virtual bucket, and its mapping onto
//! (backend, backend bucket, backend key). Pure.
//!
//! The rules that keep one data source from reaching into another live here:
//! - the object part of the path is percent-decoded exactly once (so `%2F` is `/`, as in S3) and never
//!   normalised;
//! - the first segment names the data source, which is only ever compared for equality with configured names;
//! - `.` and `..` segments are refused (backends and the proxies in front of them disagree on whether they
//!   normalise them, so a key holding them could mean a different object on the backend);
//! - a data source's prefix always ends with `/` (config enforces it), so `data` never matches `data-private/`.

use crate::config::DataSource;
use crate::error::{S3Error, S3ErrorCode};
use crate::wire::is_dot_segment;
use crate::wire::S3_PATH;
use percent_encoding::{percent_decode_str, utf8_percent_encode};

/// A key in the virtual bucket, split into its data source and the key inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualKey {
    pub data_source: String,
    /// The key inside the data source; may be empty for a directory probe (`<ds>` or `<ds>/`).
    pub key: String,
}

impl VirtualKey {
    /// The full virtual key, `<ds>/<key>`.
    pub fn full(&self) -> String {
        format!("{}/{}", self.data_source, self.key)
    }
}

/// Where a virtual object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendObject {
    pub backend: String,
    pub bucket: String,
    pub key: String,
}

/// Percent-decodes once into UTF-8. Invalid UTF-8 after decoding → 400 InvalidURI.
pub fn decode_once(raw: &str) -> Result<String, S3Error> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| S3Error::new(S3ErrorCode::InvalidURI))
}

/// Splits a decoded object path (everything after `<bucket>/`) into data source and key.
/// Refuses `.`/`..` segments anywhere with 400 InvalidArgument.
pub fn parse_virtual_key(decoded: &str) -> Result<VirtualKey, S3Error> {
    if decoded.split(['/', '\\']).any(is_dot_segment) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "Object keys with `.` or `..` path segments are not accepted.",
        ));
    }
    let (data_source, key) = match decoded.split_once('/') {
        Some((ds, key)) => (ds, key),
        None => (decoded, ""),
    };
    Ok(VirtualKey {
        data_source: data_source.to_string(),
        key: key.to_string(),
    })
}

/// Maps a virtual key of a data source to the backend object. A directory probe (empty key) never
/// reaches a backend: it is answered like a missing key.
pub fn to_backend(ds: &DataSource, vkey: &VirtualKey) -> Result<BackendObject, S3Error> {
    debug_assert_eq!(ds.name, vkey.data_source);
    if vkey.key.is_empty() {
        return Err(S3Error::new(S3ErrorCode::NoSuchKey));
    }
    Ok(BackendObject {
        backend: ds.backend.clone(),
        bucket: ds.bucket.clone(),
        key: format!("{}{}", ds.prefix, vkey.key),
    })
}

/// Maps a backend key of a data source back into the virtual namespace. `None` when the key is outside
/// the data source's prefix, or is the prefix itself (an object named exactly like the prefix has no
/// virtual name: it would be the data source's own "directory").
pub fn from_backend_key(ds: &DataSource, backend_key: &str) -> Option<String> {
    // Called for every key of every listing page: no formatting machinery, one exact allocation.
    let rel = if ds.prefix.is_empty() {
        backend_key
    } else {
        backend_key.strip_prefix(ds.prefix.as_str())?
    };
    if rel.is_empty() {
        return None;
    }
    let mut vkey = String::with_capacity(ds.name.len() + 1 + rel.len());
    vkey.push_str(&ds.name);
    vkey.push('/');
    vkey.push_str(rel);
    Some(vkey)
}

/// Encodes a key for a request path.
pub fn encode_path(key: &str) -> String {
    utf8_percent_encode(key, S3_PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(name: &str, prefix: &str) -> DataSource {
        DataSource {
            name: name.into(),
            backend: "b".into(),
            bucket: "real-bucket".into(),
            prefix: prefix.into(),
            writable: false,
        }
    }

    #[test]
    fn virtual_keys_split_on_the_first_slash_after_one_decoding() {
        let table: &[(&str, &str, &str)] = &[
            ("sales/2024/q1.csv", "sales", "2024/q1.csv"),
            ("sales%2F2024%2Fq1.csv", "sales", "2024/q1.csv"),
            ("sales", "sales", ""),
            ("sales/", "sales", ""),
            ("sales/a%20b+c=d", "sales", "a b+c=d"),
            ("sales/100%2525.txt", "sales", "100%25.txt"),
            ("sales/caf%C3%A9/%28x%29", "sales", "café/(x)"),
            ("sales//double", "sales", "/double"),
            ("sales/dir/", "sales", "dir/"),
        ];
        for (raw, want_ds, want_key) in table {
            let vk = parse_virtual_key(&decode_once(raw).unwrap()).unwrap();
            assert_eq!(
                (vk.data_source.as_str(), vk.key.as_str()),
                (*want_ds, *want_key),
                "{raw}"
            );
        }
    }

    #[test]
    fn dot_segments_are_refused_however_encoded() {
        for raw in [
            "sales/../data/x",
            "sales/%2E%2E/data/x",
            "sales%2F..%2Fdata%2Fx",
            "sales/./x",
            "../x",
            "sales/a/..",
            "sales/%2e",
            "..",
            "sales/..\\data\\x",
            "sales\\..\\data",
            "sales/..;x/data",
            "sales/.;/x",
        ] {
            let err = parse_virtual_key(&decode_once(raw).unwrap()).unwrap_err();
            assert_eq!(err.code, S3ErrorCode::InvalidArgument, "{raw}");
        }
        // Dots inside a segment are ordinary characters.
        assert!(parse_virtual_key("sales/..hidden/a.b..c").is_ok());
    }

    #[test]
    fn invalid_utf8_is_an_invalid_uri() {
        assert_eq!(
            decode_once("sales/%FF").unwrap_err().code,
            S3ErrorCode::InvalidURI
        );
    }

    #[test]
    fn backend_keys_stay_inside_bucket_and_prefix() {
        let table: &[(&str, &str, &str)] = &[
            ("", "file.csv", "file.csv"),
            ("data/", "file.csv", "data/file.csv"),
            ("data/", "a/b/c", "data/a/b/c"),
            ("data/", "/lead", "data//lead"),
        ];
        for (prefix, key, want) in table {
            let d = ds("ds", prefix);
            let obj = to_backend(
                &d,
                &VirtualKey {
                    data_source: "ds".into(),
                    key: key.to_string(),
                },
            )
            .unwrap();
            assert_eq!(obj.key, *want);
            assert_eq!(obj.bucket, "real-bucket");
            assert!(obj.key.starts_with(prefix));
        }
    }

    #[test]
    fn directory_probes_never_reach_a_backend() {
        let d = ds("ds", "data/");
        let err = to_backend(
            &d,
            &VirtualKey {
                data_source: "ds".into(),
                key: String::new(),
            },
        )
        .unwrap_err();
        assert_eq!(err.code, S3ErrorCode::NoSuchKey);
    }

    #[test]
    fn backend_keys_map_back_only_from_inside_the_prefix() {
        let d = ds("data", "data/");
        assert_eq!(
            from_backend_key(&d, "data/x.csv").as_deref(),
            Some("data/x.csv")
        );
        assert_eq!(
            from_backend_key(&d, "data-private/x.csv"),
            None,
            "prefix boundary holds"
        );
        assert_eq!(
            from_backend_key(&d, "data/"),
            None,
            "the prefix itself has no virtual name"
        );
        assert_eq!(from_backend_key(&d, "other"), None);
        let root = ds("sales", "");
        assert_eq!(
            from_backend_key(&root, "q1.csv").as_deref(),
            Some("sales/q1.csv")
        );
    }

    #[test]
    fn path_encoding_round_trips_awkward_keys() {
        for key in [
            "a b",
            "a+b",
            "x=y&z",
            "100%.txt",
            "100%25.txt",
            "café/ü",
            "(1)",
            "dir/",
            "*@!$'",
            "a//b",
        ] {
            let enc = encode_path(key);
            assert!(
                enc.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~/%".contains(&b)),
                "{enc}"
            );
            assert_eq!(decode_once(&enc).unwrap(), key);
        }
        assert_eq!(encode_path("a b/c+d"), "a%20b/c%2Bd");
    }
}
