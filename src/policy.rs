//! Which data sources an API key may read and write. Deny by default: a data source the key may not read
//! behaves exactly like one that does not exist; one it may read but not write answers AccessDenied to
//! every write. Pure.

use crate::config::{ApiKey, Config, DataSource};
use crate::error::{S3Error, S3ErrorCode};

/// The data source named by an object request, if the key may read it. Unknown and forbidden data sources
/// get the same answer, so a key cannot probe for names it is not entitled to.
pub fn readable_data_source<'c>(
    config: &'c Config,
    key: &ApiKey,
    name: &str,
) -> Result<&'c DataSource, S3Error> {
    match config.data_sources.get(name) {
        Some(ds) if key.data_sources.allows(name) => Ok(ds),
        _ => Err(S3Error::new(S3ErrorCode::AccessDenied)),
    }
}

/// The data source named by a write, if the key may write it: the data source is `writable` and the
/// key is granted write on it. Every refusal is the same AccessDenied.
pub fn writable_data_source<'c>(
    config: &'c Config,
    key: &ApiKey,
    name: &str,
) -> Result<&'c DataSource, S3Error> {
    match config.data_sources.get(name) {
        Some(ds) if ds.writable && key.data_sources.grants_write(name) => Ok(ds),
        _ => Err(S3Error::new(S3ErrorCode::AccessDenied)),
    }
}

/// Every data source the key may read (for listings).
pub fn readable_data_sources<'c>(config: &'c Config, key: &ApiKey) -> Vec<&'c DataSource> {
    config
        .data_sources
        .values()
        .filter(|ds| key.data_sources.allows(&ds.name))
        .collect()
}

/// Every data source the key may write (ListMultipartUploads; DeleteObjects is refused before its body
/// is read when there is none).
pub fn writable_data_sources<'c>(config: &'c Config, key: &ApiKey) -> Vec<&'c DataSource> {
    config
        .data_sources
        .values()
        .filter(|ds| ds.writable && key.data_sources.grants_write(&ds.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_forbidden_look_the_same() {
        let yaml = r#"
token_secret: 0123456789abcdef
backends:
  b: { endpoint: "http://127.0.0.1:1", access_key_id: a, secret_access_key: s }
data_sources:
  sales: { backend: b, bucket: bucket-a }
  hr: { backend: b, bucket: bucket-b }
api_keys:
  - { id: k, name: K, data_sources: [sales] }
"#;
        let c = Config::from_yaml_str(yaml, &|_| None).unwrap();
        let k = &c.api_keys[0];
        assert_eq!(
            readable_data_source(&c, k, "sales").unwrap().bucket,
            "bucket-a"
        );
        let forbidden = readable_data_source(&c, k, "hr").unwrap_err();
        let unknown = readable_data_source(&c, k, "nope").unwrap_err();
        assert_eq!(forbidden, unknown);
        assert_eq!(forbidden.code, S3ErrorCode::AccessDenied);
        let names: Vec<_> = readable_data_sources(&c, k)
            .iter()
            .map(|d| d.name.clone())
            .collect();
        assert_eq!(names, vec!["sales"]);
    }

    #[test]
    fn writes_need_a_writable_data_source_and_a_write_grant() {
        let yaml = r#"
token_secret: 0123456789abcdef
backends:
  b: { endpoint: "http://127.0.0.1:1", access_key_id: a, secret_access_key: s }
data_sources:
  sales: { backend: b, bucket: bucket-a }
  sandbox: { backend: b, bucket: bucket-b, writable: true }
  scratch: { backend: b, bucket: bucket-c, writable: true }
api_keys:
  - { id: reader, name: R, data_sources: all }
  - { id: listed, name: L, data_sources: [sales, sandbox] }
  - { id: writer, name: W, data_sources: { sales: read, sandbox: write } }
  - { id: star, name: S, data_sources: { "*": write } }
"#;
        let c = Config::from_yaml_str(yaml, &|_| None).unwrap();
        let key = |id: &str| c.api_keys.iter().find(|k| k.id.expose() == id).unwrap();
        // (key, data source, may read, may write)
        let table = [
            ("reader", "sales", true, false),
            ("reader", "sandbox", true, false),
            ("listed", "sandbox", true, false),
            ("listed", "scratch", false, false),
            ("writer", "sales", true, false),
            ("writer", "sandbox", true, true),
            ("writer", "scratch", false, false),
            // `*: write` writes where writing is possible, and reads everything.
            ("star", "sales", true, false),
            ("star", "sandbox", true, true),
            ("star", "scratch", true, true),
            ("star", "nope", false, false),
        ];
        for (id, ds, read, write) in table {
            assert_eq!(
                readable_data_source(&c, key(id), ds).is_ok(),
                read,
                "{id} reads {ds}"
            );
            let w = writable_data_source(&c, key(id), ds);
            assert_eq!(w.is_ok(), write, "{id} writes {ds}");
            if let Err(e) = w {
                assert_eq!(e, S3Error::new(S3ErrorCode::AccessDenied));
            }
        }
    }
}
