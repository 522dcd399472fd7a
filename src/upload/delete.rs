//! DeleteObjects (`POST /<bucket>?delete`) over the virtual bucket: one request may name keys of several
//! data sources. Each key is authorised on its own (a key the caller may not delete gets its own
//! AccessDenied entry), the rest are grouped by backend bucket and sent as one backend request per
//! group, and the answers are merged into one, in virtual keys. The calls themselves are behind
//! [`DeleteSource`] (implemented by the backends), so the grouping and merging here are pure.

use crate::config::{ApiKey, Config};
use crate::error::{S3Error, S3ErrorCode};
use crate::namespace;
use crate::policy;
use crate::upload::multipart::VersionIds;
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

fn failed(key: &str, version_id: &Option<String>, code: S3ErrorCode) -> Deleted {
    let e = S3Error::new(code);
    Deleted::Failed {
        key: key.to_string(),
        version_id: version_id.clone(),
        code: code.as_str().to_string(),
        message: e.message,
    }
}

/// What became of one object of a DeleteObjects request (for its audit line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOutcome {
    /// The virtual key as the client named it.
    pub key: String,
    /// Its data source, when the key names one the caller may write.
    pub data_source: Option<String>,
    /// Why it was not deleted.
    pub error: Option<S3ErrorCode>,
}

/// s3p's answer to a DeleteObjects request, and the outcome of each object in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub body: String,
    pub outcomes: Vec<ObjectOutcome>,
}

/// Carries out a DeleteObjects request: authorises each key, sends each group, merges the answers (in
/// the request's order). Version ids are s3p's sealed form both ways (`versions`).
pub async fn serve(
    source: &(dyn DeleteSource + Sync),
    config: &Config,
    versions: &VersionIds,
    key: &ApiKey,
    request: &DeleteRequest,
) -> Served {
    // (backend, bucket) -> the group.
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    // Per requested object, in order: its answer once known.
    let mut answers: Vec<Option<Deleted>> = vec![None; request.objects.len()];
    let mut data_sources: Vec<Option<String>> = vec![None; request.objects.len()];
    // Per requested object: why it was not deleted (for the audit).
    let mut errors: Vec<Option<S3ErrorCode>> = vec![None; request.objects.len()];
    let mut pending: Vec<(usize, (String, String), String)> = Vec::new();
    for (i, object) in request.objects.iter().enumerate() {
        let routed = namespace::parse_virtual_key(&object.key).and_then(|vkey| {
            let ds = policy::writable_data_source(config, key, &vkey.data_source)?;
            if vkey.key.is_empty() {
                return Err(S3Error::new(S3ErrorCode::AccessDenied));
            }
            data_sources[i] = Some(ds.name.clone());
            let version = match &object.version_id {
                Some(v) => Some(versions.open(&vkey.data_source, &vkey.key, v)?),
                None => None,
            };
            Ok((namespace::to_backend(ds, &vkey)?, version, vkey))
        });
        match routed {
            Ok((obj, version_id, _)) => {
                let slot = (obj.backend.clone(), obj.bucket.clone());
                let group = groups.entry(slot.clone()).or_insert_with(|| Group {
                    backend: obj.backend.clone(),
                    bucket: obj.bucket.clone(),
                    objects: Vec::new(),
                });
                group.objects.push(ObjectId {
                    key: obj.key.clone(),
                    version_id,
                });
                pending.push((i, slot, obj.key));
            }
            Err(e) => {
                errors[i] = Some(e.code);
                answers[i] = Some(failed(&object.key, &object.version_id, e.code));
            }
        }
    }
    // One call per group; each backend answer entry is found again by its backend key.
    let mut results: BTreeMap<(String, String), Result<Vec<Deleted>, S3Error>> = BTreeMap::new();
    for (slot, group) in &groups {
        results.insert(slot.clone(), source.delete(group).await);
    }
    for (i, slot, backend_key) in pending {
        let object = &request.objects[i];
        let sent_version = groups[&slot]
            .objects
            .iter()
            .find(|o| o.key == backend_key)
            .and_then(|o| o.version_id.clone());
        let seal = |v: &Option<String>| -> Option<String> {
            let vkey = namespace::parse_virtual_key(&object.key).ok()?;
            v.as_ref()
                .map(|v| versions.seal(&vkey.data_source, &vkey.key, v))
        };
        let mut fail = |code: S3ErrorCode| {
            errors[i] = Some(code);
            failed(&object.key, &object.version_id, code)
        };
        let entry = match &results[&slot] {
            Err(e) => fail(e.code),
            Ok(entries) => {
                let found = entries.iter().find(|d| match d {
                    Deleted::Ok {
                        key, version_id, ..
                    }
                    | Deleted::Failed {
                        key, version_id, ..
                    } => {
                        same_key(key, &backend_key)
                            && (sent_version.is_none() || *version_id == sent_version)
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
                        version_id: seal(version_id).or_else(|| object.version_id.clone()),
                        delete_marker: delete_marker.clone(),
                        delete_marker_version_id: seal(delete_marker_version_id),
                    },
                    Some(Deleted::Failed { code, .. }) => {
                        fail(crate::error::backend_entry_code(code))
                    }
                    // The backend did not mention it: not known to be deleted.
                    None => fail(S3ErrorCode::InternalError),
                }
            }
        };
        answers[i] = Some(entry);
    }
    let entries: Vec<Deleted> = answers.into_iter().flatten().collect();
    let outcomes = request
        .objects
        .iter()
        .zip(data_sources)
        .zip(errors)
        .map(|((object, data_source), error)| ObjectOutcome {
            key: object.key.clone(),
            data_source,
            error,
        })
        .collect();
    Served {
        body: render_result(&entries, request.quiet),
        outcomes,
    }
}

/// A key as the backend reported it is the key sent: the same text, or the same once line ends are
/// normalised. An XML reader turns a raw CR into LF (XML 1.0, 2.11), and backends write CR in keys
/// raw, so a key with a CR comes back as LF.
fn same_key(reported: &str, sent: &str) -> bool {
    reported == sent
        || (sent.contains('\r') && reported == sent.replace("\r\n", "\n").replace('\r', "\n"))
}

#[cfg(test)]
#[path = "delete_tests.rs"]
mod tests;
