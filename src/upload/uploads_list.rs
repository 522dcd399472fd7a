//! ListMultipartUploads over the virtual bucket: the uploads in progress in the data sources the key may
//! write, in virtual keys, with s3p's sealed upload ids, in one key order across data sources. Each data
//! source's backend is asked in turn (data sources in the order of `<name>/`, as the listing walks them)
//! until the page is full; the calls are behind [`UploadsSource`], so the walk here is pure.
//!
//! Served: `prefix`, `key-marker` with `upload-id-marker`, `max-uploads` (at most 1,000),
//! `encoding-type=url`. Not served: `delimiter` (501), which no client tested here sends.

use super::multipart::UploadIds;
use crate::config::{ApiKey, Config, DataSource};
use crate::error::S3Error;
use crate::wire::Query;
use crate::xml::escape;
use async_trait::async_trait;

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// What the client asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadsParams {
    pub prefix: String,
    pub key_marker: Option<String>,
    pub upload_id_marker: Option<String>,
    pub max_uploads: usize,
    pub url_encoding: bool,
}

impl UploadsParams {
    pub fn parse(query: &Query) -> Result<UploadsParams, S3Error> {
        if query.has("delimiter") {
            return Err(S3Error::not_implemented(
                "ListMultipartUploads with a delimiter is not supported by s3p.",
            ));
        }
        let max_uploads = match query.get("max-uploads") {
            None => 1000,
            // Clamped to 1..=1000 as S3 does: 0 would answer "truncated" with no marker to go on from.
            Some(v) => v.parse::<usize>().map(|n| n.clamp(1, 1000)).map_err(|_| {
                S3Error::invalid_argument("max-uploads must be an integer.", "max-uploads", v)
            })?,
        };
        let url_encoding = match query.get("encoding-type") {
            None => false,
            Some("url") => true,
            Some(v) => {
                return Err(S3Error::invalid_argument(
                    "Invalid Encoding Method specified in Request",
                    "encoding-type",
                    v,
                ))
            }
        };
        Ok(UploadsParams {
            prefix: query.get("prefix").unwrap_or("").to_string(),
            key_marker: query
                .get("key-marker")
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            upload_id_marker: query
                .get("upload-id-marker")
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            max_uploads,
            url_encoding,
        })
    }
}

/// One backend call: uploads of a bucket under `prefix`, after the markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUploadsRequest {
    pub prefix: String,
    pub key_marker: Option<String>,
    pub upload_id_marker: Option<String>,
    pub max_uploads: usize,
}

/// An upload as a backend lists it (backend key and upload id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated: String,
    pub storage_class: Option<String>,
}

/// A backend's page of uploads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendUploads {
    pub uploads: Vec<UploadEntry>,
    pub truncated: bool,
}

#[async_trait]
pub trait UploadsSource {
    async fn list_uploads(
        &self,
        ds: &DataSource,
        request: &BackendUploadsRequest,
    ) -> Result<BackendUploads, S3Error>;
}

/// Reads a backend's `ListMultipartUploadsResult` (keys as sent: s3p asks without `encoding-type`).
pub fn parse_backend_uploads(body: &[u8]) -> Result<BackendUploads, String> {
    let (root, records) = crate::xml::records(body)?;
    if root != "ListMultipartUploadsResult" {
        return Err(format!("unexpected root {root}"));
    }
    let mut page = BackendUploads::default();
    for r in &records {
        match r.name.as_str() {
            "IsTruncated" => page.truncated = r.text.trim() == "true",
            "Upload" => page.uploads.push(UploadEntry {
                key: r.field("Key").ok_or("Upload without Key")?.to_string(),
                upload_id: r
                    .field("UploadId")
                    .ok_or("Upload without UploadId")?
                    .to_string(),
                initiated: r.field("Initiated").unwrap_or("").to_string(),
                storage_class: r.field("StorageClass").map(str::to_string),
            }),
            _ => {}
        }
    }
    Ok(page)
}

/// An upload in virtual terms.
struct Listed {
    key: String,
    upload_id: String,
    initiated: String,
    storage_class: Option<String>,
}

/// Lists the uploads; returns the answer body.
pub async fn serve(
    source: &(dyn UploadsSource + Sync),
    config: &Config,
    ids: &UploadIds,
    key: &ApiKey,
    params: &UploadsParams,
) -> Result<String, S3Error> {
    let mut data_sources: Vec<&DataSource> = crate::policy::writable_data_sources(config, key);
    data_sources.sort_by(|a, b| format!("{}/", a.name).cmp(&format!("{}/", b.name)));
    let marker = params.key_marker.as_deref().unwrap_or("");
    let mut listed: Vec<Listed> = Vec::new();
    let mut truncated = false;
    for ds in data_sources {
        let root = format!("{}/", ds.name);
        // The part of the prefix inside this data source, if the prefix can match in it at all.
        let inner_prefix = if let Some(rest) = params.prefix.strip_prefix(&root) {
            rest.to_string()
        } else if root.starts_with(&params.prefix) {
            String::new()
        } else {
            continue;
        };
        // Data sources wholly before the marker are done.
        let (key_marker, upload_id_marker) = match marker.strip_prefix(&root) {
            Some(rest) => {
                let backend_id = match &params.upload_id_marker {
                    Some(sealed) => Some(ids.open(&ds.name, rest, sealed)?),
                    None => None,
                };
                (Some(format!("{}{rest}", ds.prefix)), backend_id)
            }
            None if !marker.is_empty() && root.as_str() < marker => continue,
            None => (None, None),
        };
        let want = params.max_uploads - listed.len();
        if want == 0 {
            truncated = true;
            break;
        }
        let page = source
            .list_uploads(
                ds,
                &BackendUploadsRequest {
                    prefix: format!("{}{inner_prefix}", ds.prefix),
                    key_marker,
                    upload_id_marker,
                    max_uploads: want,
                },
            )
            .await?;
        // S3 lists uploads in key order; some backends order a page otherwise (Garage 2.5: by upload
        // id), while paging by key. Sorting each page by key (stably) restores S3's order.
        let mut uploads = page.uploads;
        uploads.sort_by(|a, b| a.key.cmp(&b.key));
        for u in uploads {
            // A backend key outside the data source's prefix is not this data source's.
            let Some(inner) = u.key.strip_prefix(&ds.prefix) else {
                continue;
            };
            listed.push(Listed {
                key: format!("{root}{inner}"),
                upload_id: ids.seal(&ds.name, inner, &u.upload_id),
                initiated: u.initiated,
                storage_class: u.storage_class,
            });
        }
        if page.truncated || listed.len() >= params.max_uploads {
            listed.truncate(params.max_uploads);
            truncated = true;
            break;
        }
    }
    Ok(render(config, params, &listed, truncated))
}

fn render(config: &Config, params: &UploadsParams, listed: &[Listed], truncated: bool) -> String {
    let enc = |s: &str| {
        if params.url_encoding {
            crate::xml::url_encode(s)
        } else {
            s.to_string()
        }
    };
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><KeyMarker>{}</KeyMarker><UploadIdMarker>{}</UploadIdMarker>",
        escape(&config.bucket),
        escape(&enc(params.key_marker.as_deref().unwrap_or(""))),
        escape(params.upload_id_marker.as_deref().unwrap_or(""))
    );
    if let (true, Some(last)) = (truncated, listed.last()) {
        out.push_str(&format!(
            "<NextKeyMarker>{}</NextKeyMarker><NextUploadIdMarker>{}</NextUploadIdMarker>",
            escape(&enc(&last.key)),
            escape(&last.upload_id)
        ));
    }
    if !params.prefix.is_empty() {
        out.push_str(&format!(
            "<Prefix>{}</Prefix>",
            escape(&enc(&params.prefix))
        ));
    }
    if params.url_encoding {
        out.push_str("<EncodingType>url</EncodingType>");
    }
    out.push_str(&format!(
        "<MaxUploads>{}</MaxUploads><IsTruncated>{truncated}</IsTruncated>",
        params.max_uploads
    ));
    let owner = format!(
        "<ID>{}</ID><DisplayName>{}</DisplayName>",
        escape(&config.owner.id),
        escape(&config.owner.display_name)
    );
    for u in listed {
        out.push_str(&format!(
            "<Upload><Key>{}</Key><UploadId>{}</UploadId><Initiator>{owner}</Initiator><Owner>{owner}</Owner><StorageClass>{}</StorageClass><Initiated>{}</Initiated></Upload>",
            escape(&enc(&u.key)),
            escape(&u.upload_id),
            escape(u.storage_class.as_deref().unwrap_or("STANDARD")),
            escape(&u.initiated)
        ));
    }
    out.push_str("</ListMultipartUploadsResult>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::S3ErrorCode;
    use std::sync::Mutex;

    const YAML: &str = r#"
token_secret: 0123456789abcdef0123456789abcdef
backends:
  b: { endpoint: "http://127.0.0.1:1", access_key_id: a, secret_access_key: s }
data_sources:
  sales: { backend: b, bucket: bucket-a }
  sandbox: { backend: b, bucket: bucket-b, prefix: box, writable: true }
  sand: { backend: b, bucket: bucket-c, writable: true }
  other: { backend: b, bucket: bucket-d, writable: true }
api_keys:
  - { id: k, name: K, data_sources: { sales: read, sandbox: write, sand: write } }
"#;

    /// Three uploads per writable data source, listed by prefix and markers as a backend would.
    struct Backend(Mutex<Vec<(String, BackendUploadsRequest)>>);

    #[async_trait]
    impl UploadsSource for Backend {
        async fn list_uploads(
            &self,
            ds: &DataSource,
            r: &BackendUploadsRequest,
        ) -> Result<BackendUploads, S3Error> {
            self.0.lock().unwrap().push((ds.name.clone(), r.clone()));
            let all: Vec<UploadEntry> = ["a", "b/c", "d"]
                .iter()
                .map(|k| UploadEntry {
                    key: format!("{}{k}", ds.prefix),
                    upload_id: format!("{}-{k}", ds.bucket),
                    initiated: "2026-12-02T00:00:00.000Z".into(),
                    storage_class: None,
                })
                .filter(|u| u.key.starts_with(&r.prefix))
                .filter(|u| {
                    r.key_marker
                        .as_ref()
                        .is_none_or(|m| u.key.as_str() > m.as_str())
                })
                .collect();
            let truncated = all.len() > r.max_uploads;
            // Pages by key, but answers each page in another order (as Garage does: by upload id).
            let mut uploads: Vec<UploadEntry> = all.into_iter().take(r.max_uploads).collect();
            uploads.reverse();
            Ok(BackendUploads { uploads, truncated })
        }
    }

    fn run(q: &str) -> (String, Vec<(String, BackendUploadsRequest)>) {
        let config = Config::from_yaml_str(YAML, &|_| None).unwrap();
        let ids = UploadIds::rotated("0123456789abcdef0123456789abcdef", &[]);
        let source = Backend(Mutex::new(Vec::new()));
        let params = UploadsParams::parse(&Query::parse(q).unwrap()).unwrap();
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(serve(&source, &config, &ids, &config.api_keys[0], &params))
            .unwrap();
        (body, source.0.into_inner().unwrap())
    }

    fn keys(body: &str) -> Vec<String> {
        body.split("<Key>")
            .skip(1)
            .map(|s| s.split("</Key>").next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn only_writable_data_sources_in_virtual_key_order() {
        let (body, calls) = run("uploads");
        // `sand/` sorts before `sandbox/`; `sales` is read-only, `other` not granted.
        assert_eq!(
            keys(&body),
            [
                "sand/a",
                "sand/b/c",
                "sand/d",
                "sandbox/a",
                "sandbox/b/c",
                "sandbox/d"
            ]
        );
        assert_eq!(
            calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
            ["sand", "sandbox"]
        );
        for gone in ["bucket-", "<Key>box/"] {
            assert!(!body.contains(gone), "{gone} in {body}");
        }
        assert!(body.contains("<IsTruncated>false</IsTruncated>"));
    }

    #[test]
    fn prefix_markers_and_pages() {
        let (body, calls) = run("uploads&prefix=sandbox/b");
        assert_eq!(keys(&body), ["sandbox/b/c"]);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].1.prefix, "box/b");
        // A page of 2, then the rest from its markers: the sealed upload id opens for its key only.
        let (body, _) = run("uploads&max-uploads=2");
        assert_eq!(keys(&body), ["sand/a", "sand/b/c"]);
        assert!(body.contains("<IsTruncated>true</IsTruncated>"), "{body}");
        let element = |name: &str| {
            let open = format!("<{name}>");
            let text = body
                .split(open.as_str())
                .nth(1)
                .expect("the element is there");
            text.split('<').next().unwrap().to_string()
        };
        let next_key = element("NextKeyMarker");
        let next_id = element("NextUploadIdMarker");
        assert_eq!(next_key, "sand/b/c");
        let q = format!(
            "uploads&key-marker={}&upload-id-marker={}",
            crate::backend::encode_query_value(&next_key),
            crate::backend::encode_query_value(&next_id)
        );
        let (body, calls) = run(&q);
        assert_eq!(
            keys(&body),
            ["sand/d", "sandbox/a", "sandbox/b/c", "sandbox/d"]
        );
        assert_eq!(calls[0].1.key_marker.as_deref(), Some("b/c"));
        assert_eq!(calls[0].1.upload_id_marker.as_deref(), Some("bucket-c-b/c"));
        assert_eq!(calls[1].1.key_marker, None);
        // A marker past a data source skips it.
        let (body, calls) = run("uploads&key-marker=sandbox/a");
        assert_eq!(keys(&body), ["sandbox/b/c", "sandbox/d"]);
        assert_eq!(calls.len(), 1);
        // A forged upload-id marker is no upload.
        let config = Config::from_yaml_str(YAML, &|_| None).unwrap();
        let ids = UploadIds::rotated("0123456789abcdef0123456789abcdef", &[]);
        let params = UploadsParams::parse(
            &Query::parse("uploads&key-marker=sand/a&upload-id-marker=forged").unwrap(),
        )
        .unwrap();
        let source = Backend(Mutex::new(Vec::new()));
        let e = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(serve(&source, &config, &ids, &config.api_keys[0], &params))
            .unwrap_err();
        assert_eq!(e.code, S3ErrorCode::NoSuchUpload);
        assert_eq!(
            UploadsParams::parse(&Query::parse("uploads&delimiter=/").unwrap())
                .unwrap_err()
                .code,
            S3ErrorCode::NotImplemented
        );
    }

    #[test]
    fn backend_pages_parse() {
        let body = br#"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>true</IsTruncated>
          <Upload><Key>box/a</Key><UploadId>u1</UploadId><Initiator><ID>x</ID></Initiator>
          <Initiated>2026-12-02T00:00:00.000Z</Initiated><StorageClass>STANDARD</StorageClass></Upload>
          </ListMultipartUploadsResult>"#;
        let page = parse_backend_uploads(body).unwrap();
        assert!(page.truncated);
        assert_eq!(page.uploads.len(), 1);
        assert_eq!(page.uploads[0].key, "box/a");
        assert_eq!(page.uploads[0].upload_id, "u1");
        assert!(parse_backend_uploads(b"<Error/>").is_err());
    }
}
