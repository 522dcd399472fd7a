//! DeleteObjects (`POST /<bucket>?delete`) over the virtual bucket: one request may name keys of several
//! data sources. Each key is authorised on its own (a key the caller may not delete gets its own
//! AccessDenied entry), the rest are grouped by backend bucket and sent as one backend request per
//! group, and the answers are merged into one, in virtual keys. The calls themselves are behind
//! [`DeleteSource`] (implemented by the backends), so the grouping and merging here are pure.

use crate::config::{ApiKey, Config};
use crate::error::{S3Error, S3ErrorCode};
use crate::namespace;
use crate::policy;
use crate::xml::{self, escape};
use async_trait::async_trait;
use std::collections::BTreeMap;

/// S3's limit of keys per request.
pub const MAX_KEYS: usize = 1000;
/// The largest request body read (1,000 keys of up to 1 KiB, with their markup).
pub const MAX_BODY: usize = 2 << 20;
const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// One object named by a DeleteObjects request (a virtual key, or a backend key in a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    pub key: String,
    pub version_id: Option<String>,
}

/// What the client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// Only errors are reported.
    pub quiet: bool,
    pub objects: Vec<ObjectId>,
}

/// The outcome for one object, as a backend reports it (backend keys) or as s3p answers (virtual keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Ok {
        key: String,
        version_id: Option<String>,
        delete_marker: Option<String>,
        delete_marker_version_id: Option<String>,
    },
    Failed {
        key: String,
        version_id: Option<String>,
        code: String,
        message: String,
    },
}

/// A batch for one backend bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub backend: String,
    pub bucket: String,
    pub objects: Vec<ObjectId>,
}

/// Sends one group to its backend.
#[async_trait]
pub trait DeleteSource {
    async fn delete(&self, group: &Group) -> Result<Vec<Deleted>, S3Error>;
}

fn malformed() -> S3Error {
    S3Error::new(S3ErrorCode::MalformedXML)
}

/// Reads a `<Delete>` request body.
pub fn parse_request(body: &[u8]) -> Result<DeleteRequest, S3Error> {
    let (root, records) = xml::records(body).map_err(|_| malformed())?;
    if root != "Delete" {
        return Err(malformed());
    }
    let mut request = DeleteRequest {
        quiet: false,
        objects: Vec::new(),
    };
    for r in records {
        match r.name.as_str() {
            "Quiet" => request.quiet = r.text.trim() == "true",
            "Object" => {
                let key = r.field("Key").ok_or_else(malformed)?.to_string();
                if key.is_empty() {
                    return Err(malformed());
                }
                let version_id = r.field("VersionId").map(str::to_string);
                request.objects.push(ObjectId { key, version_id });
            }
            _ => return Err(malformed()),
        }
    }
    if request.objects.is_empty() || request.objects.len() > MAX_KEYS {
        return Err(malformed());
    }
    Ok(request)
}

/// The backend request body for a group (never quiet: s3p maps every entry back).
pub fn backend_request(objects: &[ObjectId]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Delete xmlns=\"{XMLNS}\"><Quiet>false</Quiet>"
    );
    for o in objects {
        out.push_str(&format!("<Object><Key>{}</Key>", escape(&o.key)));
        if let Some(v) = &o.version_id {
            out.push_str(&format!("<VersionId>{}</VersionId>", escape(v)));
        }
        out.push_str("</Object>");
    }
    out.push_str("</Delete>");
    out
}

/// Reads a backend's `<DeleteResult>`.
pub fn parse_result(body: &[u8]) -> Result<Vec<Deleted>, String> {
    let (root, records) = xml::records(body)?;
    if root != "DeleteResult" {
        return Err(format!("unexpected root {root}"));
    }
    let text = |r: &xml::Record, n: &str| r.field(n).map(str::to_string);
    records
        .iter()
        .map(|r| match r.name.as_str() {
            "Deleted" => Ok(Deleted::Ok {
                key: text(r, "Key").ok_or("Deleted without Key")?,
                version_id: text(r, "VersionId"),
                delete_marker: text(r, "DeleteMarker"),
                delete_marker_version_id: text(r, "DeleteMarkerVersionId"),
            }),
            "Error" => Ok(Deleted::Failed {
                key: text(r, "Key").ok_or("Error without Key")?,
                version_id: text(r, "VersionId"),
                code: text(r, "Code").unwrap_or_default(),
                message: text(r, "Message").unwrap_or_default(),
            }),
            other => Err(format!("unexpected element {other}")),
        })
        .collect()
}

/// s3p's answer.
pub fn render_result(entries: &[Deleted], quiet: bool) -> String {
    let mut out =
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"{XMLNS}\">");
    let opt = |out: &mut String, name: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.push_str(&format!("<{name}>{}</{name}>", escape(v)));
        }
    };
    for e in entries {
        match e {
            Deleted::Ok { .. } if quiet => {}
            Deleted::Ok {
                key,
                version_id,
                delete_marker,
                delete_marker_version_id,
            } => {
                out.push_str(&format!("<Deleted><Key>{}</Key>", escape(key)));
                opt(&mut out, "VersionId", version_id);
                opt(&mut out, "DeleteMarker", delete_marker);
                opt(&mut out, "DeleteMarkerVersionId", delete_marker_version_id);
                out.push_str("</Deleted>");
            }
            Deleted::Failed {
                key,
                version_id,
                code,
                message,
            } => {
                out.push_str(&format!("<Error><Key>{}</Key>", escape(key)));
                opt(&mut out, "VersionId", version_id);
                out.push_str(&format!(
                    "<Code>{}</Code><Message>{}</Message></Error>",
                    escape(code),
                    escape(message)
                ));
            }
        }
    }
    out.push_str("</DeleteResult>");
    out
}

/// The codes of a backend's per-key errors that pass to the client; anything else is InternalError
/// (a backend's own words never reach the client).
fn virtual_error(code: &str) -> S3ErrorCode {
    match code {
        "AccessDenied" => S3ErrorCode::AccessDenied,
        "NoSuchKey" => S3ErrorCode::NoSuchKey,
        "SlowDown" => S3ErrorCode::SlowDown,
        _ => S3ErrorCode::InternalError,
    }
}

fn failed(key: &str, version_id: &Option<String>, code: S3ErrorCode) -> Deleted {
    let e = S3Error::new(code);
    Deleted::Failed {
        key: key.to_string(),
        version_id: version_id.clone(),
        code: code.as_str().to_string(),
        message: e.message,
    }
}

/// Carries out a DeleteObjects request: authorises each key, sends each group, merges the answers (in
/// the request's order). Returns the answer body.
pub async fn serve(
    source: &(dyn DeleteSource + Sync),
    config: &Config,
    key: &ApiKey,
    request: &DeleteRequest,
) -> String {
    // (backend, bucket) -> the group.
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    // Per requested object, in order: its answer once known.
    let mut answers: Vec<Option<Deleted>> = vec![None; request.objects.len()];
    let mut pending: Vec<(usize, (String, String), String)> = Vec::new();
    for (i, object) in request.objects.iter().enumerate() {
        let routed = namespace::parse_virtual_key(&object.key).and_then(|vkey| {
            let ds = policy::writable_data_source(config, key, &vkey.data_source)?;
            if vkey.key.is_empty() {
                return Err(S3Error::new(S3ErrorCode::AccessDenied));
            }
            namespace::to_backend(ds, &vkey)
        });
        match routed {
            Ok(obj) => {
                let slot = (obj.backend.clone(), obj.bucket.clone());
                let group = groups.entry(slot.clone()).or_insert_with(|| Group {
                    backend: obj.backend.clone(),
                    bucket: obj.bucket.clone(),
                    objects: Vec::new(),
                });
                group.objects.push(ObjectId {
                    key: obj.key.clone(),
                    version_id: object.version_id.clone(),
                });
                pending.push((i, slot, obj.key));
            }
            Err(e) => answers[i] = Some(failed(&object.key, &object.version_id, e.code)),
        }
    }
    // One call per group; each backend answer entry is found again by its backend key.
    let mut results: BTreeMap<(String, String), Result<Vec<Deleted>, S3Error>> = BTreeMap::new();
    for (slot, group) in &groups {
        results.insert(slot.clone(), source.delete(group).await);
    }
    for (i, slot, backend_key) in pending {
        let object = &request.objects[i];
        let entry = match &results[&slot] {
            Err(e) => failed(&object.key, &object.version_id, e.code),
            Ok(entries) => {
                let found = entries.iter().find(|d| match d {
                    Deleted::Ok {
                        key, version_id, ..
                    }
                    | Deleted::Failed {
                        key, version_id, ..
                    } => {
                        *key == backend_key
                            && (object.version_id.is_none() || *version_id == object.version_id)
                    }
                });
                match found {
                    Some(Deleted::Ok {
                        version_id,
                        delete_marker,
                        delete_marker_version_id,
                        ..
                    }) => Deleted::Ok {
                        key: object.key.clone(),
                        version_id: version_id.clone().or_else(|| object.version_id.clone()),
                        delete_marker: delete_marker.clone(),
                        delete_marker_version_id: delete_marker_version_id.clone(),
                    },
                    Some(Deleted::Failed { code, .. }) => {
                        failed(&object.key, &object.version_id, virtual_error(code))
                    }
                    // The backend did not mention it: not known to be deleted.
                    None => failed(&object.key, &object.version_id, S3ErrorCode::InternalError),
                }
            }
        };
        answers[i] = Some(entry);
    }
    let entries: Vec<Deleted> = answers.into_iter().flatten().collect();
    render_result(&entries, request.quiet)
}

#[cfg(test)]
#[path = "delete_tests.rs"]
mod tests;
