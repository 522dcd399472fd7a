//! Which data sources an API key may read. Deny by default: a data source the key may not read behaves
//! exactly like one that does not exist. Pure.

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

/// Every data source the key may read (for listings).
pub fn readable_data_sources<'c>(config: &'c Config, key: &ApiKey) -> Vec<&'c DataSource> {
    config
        .data_sources
        .values()
        .filter(|ds| key.data_sources.allows(&ds.name))
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
}
