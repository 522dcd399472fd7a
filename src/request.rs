//! Parsing a client request into an S3 operation on the virtual bucket: base path, bucket, virtual key,
//! query. Pure.

use crate::error::{S3Error, S3ErrorCode};
use crate::listing::params::ListParams;
use crate::namespace::{decode_once, parse_virtual_key, VirtualKey};
pub use crate::wire::Query;
use crate::wire::RequestPath;

/// What the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    ListObjects(ListParams),
    GetBucketLocation,
    HeadBucket,
    GetObject(VirtualKey),
    HeadObject(VirtualKey),
    /// Answered by s3p: the owner has full control of every object.
    GetObjectAcl(VirtualKey),
    /// GetObjectTagging and GetObjectAttributes: forwarded like a GET.
    GetObjectTagging(VirtualKey),
    GetObjectAttributes(VirtualKey),
    PutObject(VirtualKey),
    /// A PUT naming a copy source (`x-amz-copy-source`, see [`Operation::with_copy_source`]).
    CopyObject(VirtualKey),
    DeleteObject(VirtualKey),
    CreateMultipartUpload(VirtualKey),
    UploadPart(VirtualKey, Part),
    /// A part PUT naming a copy source.
    UploadPartCopy(VirtualKey, Part),
    CompleteMultipartUpload(VirtualKey, String),
    AbortMultipartUpload(VirtualKey, String),
    /// The parts of an upload (needs write on the data source, like the upload itself).
    ListParts(VirtualKey, String),
    /// `POST /<bucket>?delete`: keys of any data sources, each authorised on its own.
    DeleteObjects,
    /// `GET /<bucket>?uploads`: uploads in progress in the data sources the key may write.
    ListMultipartUploads(crate::upload::uploads_list::UploadsParams),
}

/// A part of a multipart upload: the client's (sealed) upload id and the part number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub upload_id: String,
    pub number: u16,
}

/// S3's largest part number.
pub const MAX_PART_NUMBER: u16 = 10_000;

impl Operation {
    /// The S3 operation name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::ListBuckets => "ListBuckets",
            Operation::ListObjects(p) if p.version == crate::listing::params::ListVersion::V2 => {
                "ListObjectsV2"
            }
            Operation::ListObjects(_) => "ListObjects",
            Operation::GetBucketLocation => "GetBucketLocation",
            Operation::HeadBucket => "HeadBucket",
            Operation::GetObject(_) => "GetObject",
            Operation::HeadObject(_) => "HeadObject",
            Operation::GetObjectAcl(_) => "GetObjectAcl",
            Operation::GetObjectTagging(_) => "GetObjectTagging",
            Operation::GetObjectAttributes(_) => "GetObjectAttributes",
            Operation::PutObject(_) => "PutObject",
            Operation::CopyObject(_) => "CopyObject",
            Operation::DeleteObject(_) => "DeleteObject",
            Operation::CreateMultipartUpload(_) => "CreateMultipartUpload",
            Operation::UploadPart(..) => "UploadPart",
            Operation::UploadPartCopy(..) => "UploadPartCopy",
            Operation::CompleteMultipartUpload(..) => "CompleteMultipartUpload",
            Operation::AbortMultipartUpload(..) => "AbortMultipartUpload",
            Operation::ListParts(..) => "ListParts",
            Operation::DeleteObjects => "DeleteObjects",
            Operation::ListMultipartUploads(_) => "ListMultipartUploads",
        }
    }

    /// The operation carried out when the request names a copy source (`x-amz-copy-source`, a header,
    /// which routing by path and query does not see): a PUT copies; every other operation takes no
    /// copy source and is given back (`Err`) to be refused under its own name.
    // The `Err` is the caller's own operation handed back by move, not an error that travels up: no box.
    #[allow(clippy::result_large_err)]
    pub fn with_copy_source(self) -> Result<Operation, Operation> {
        match self {
            Operation::PutObject(k) => Ok(Operation::CopyObject(k)),
            Operation::UploadPart(k, part) => Ok(Operation::UploadPartCopy(k, part)),
            other => Err(other),
        }
    }

    /// The object a read names, if this is an object read.
    pub fn read_object(&self) -> Option<&VirtualKey> {
        match self {
            Operation::GetObject(k)
            | Operation::HeadObject(k)
            | Operation::GetObjectAcl(k)
            | Operation::GetObjectTagging(k)
            | Operation::GetObjectAttributes(k) => Some(k),
            _ => None,
        }
    }

    /// The object a write names, if this is a write.
    pub fn written_object(&self) -> Option<&VirtualKey> {
        match self {
            Operation::PutObject(k)
            | Operation::CopyObject(k)
            | Operation::UploadPartCopy(k, _)
            | Operation::DeleteObject(k)
            | Operation::CreateMultipartUpload(k)
            | Operation::UploadPart(k, _)
            | Operation::CompleteMultipartUpload(k, _)
            | Operation::AbortMultipartUpload(k, _)
            | Operation::ListParts(k, _) => Some(k),
            _ => None,
        }
    }
}

/// Bucket sub-resources S3 has and s3p does not serve (`location` is served).
const BUCKET_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "delete",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "tagging",
    "uploads",
    "versioning",
    "versions",
    "website",
    "session",
];

/// Object sub-resources S3 has and s3p does not serve (`uploads` and `uploadId` are served on writes).
const OBJECT_SUBRESOURCES: &[&str] = &[
    "acl",
    "attributes",
    "legal-hold",
    "restore",
    "retention",
    "select",
    "select-type",
    "tagging",
    "torrent",
];

/// Where the S3 API is mounted and what the virtual bucket is called.
#[derive(Debug, Clone)]
pub struct Mount<'a> {
    pub base_path: &'a str,
    pub bucket: &'a str,
}

impl<'a> Mount<'a> {
    /// A request's path (as sent) read against the base path, once for every reader.
    pub fn path<'p>(&self, raw_path: &'p str) -> RequestPath<'p>
    where
        'a: 'p,
    {
        RequestPath::new(self.base_path, raw_path)
    }
}

/// The virtual resource a request names, for error messages (`/immuta/<ds>/<key>`), from its path as sent
/// (a request refused before it is decided; `gateway::decide` reads the path once, [`resource_at`]).
pub fn resource_of(mount: &Mount, raw_path: &str, host_bucket: Option<&str>) -> String {
    resource_at(&mount.path(raw_path), host_bucket)
}

/// The virtual resource a request names, for error messages (`/immuta/<ds>/<key>`).
pub fn resource_at(path: &RequestPath, host_bucket: Option<&str>) -> String {
    // A path outside the base path is named as sent (its answer is NoSuchBucket).
    let rest = path.below_base_or_raw();
    let rest = decode_once(rest).unwrap_or_else(|_| rest.to_string());
    match host_bucket {
        Some(b) => format!("/{b}{}", if rest.is_empty() { "/" } else { rest.as_str() }),
        None if rest.is_empty() => "/".into(),
        None => rest,
    }
}

/// The bucket named in the Host header for virtual-hosted requests (`<bucket>.<suffix>[:port]`), when the
/// host ends with one of the configured suffixes. `None` means path style.
pub fn host_bucket(host: Option<&str>, suffixes: &[String]) -> Option<String> {
    let host = host?.trim().to_ascii_lowercase();
    // Strip a port (but not the colons of an IPv6 literal, which never carries a bucket anyway).
    let name = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            h.to_string()
        }
        _ => host,
    };
    suffixes.iter().find_map(|suffix| {
        let bucket = name.strip_suffix(suffix.as_str())?.strip_suffix('.')?;
        (!bucket.is_empty()).then(|| bucket.to_string())
    })
}

/// Routes a request (its path read against the base path, [`Mount::path`], still encoded) to an operation.
/// `host_bucket` is the bucket named by a virtual-hosted request's Host header. Errors are S3 errors in
/// virtual terms.
pub fn route(
    mount: &Mount,
    method: &str,
    path: &RequestPath,
    query: &Query,
    host_bucket: Option<&str>,
) -> Result<Operation, S3Error> {
    let Some(rest) = path.below_base else {
        return Err(S3Error::new(S3ErrorCode::NoSuchBucket));
    };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let (bucket, raw_object) = match host_bucket {
        Some(b) => (b.to_string(), rest),
        None => {
            if rest.is_empty() {
                return match method {
                    "GET" => Ok(Operation::ListBuckets),
                    _ => Err(S3Error::new(S3ErrorCode::MethodNotAllowed)),
                };
            }
            let (raw_bucket, raw_object) = rest.split_once('/').unwrap_or((rest, ""));
            (decode_once(raw_bucket)?, raw_object)
        }
    };
    if bucket != mount.bucket {
        return Err(S3Error::new(S3ErrorCode::NoSuchBucket).detail("BucketName", bucket));
    }
    if raw_object.is_empty() {
        return match method {
            "GET" if query.has("uploads") => Ok(Operation::ListMultipartUploads(
                crate::upload::uploads_list::UploadsParams::parse(query)?,
            )),
            "GET" | "HEAD" => {
                if let Some(sub) = BUCKET_SUBRESOURCES.iter().find(|s| query.has(s)) {
                    return Err(S3Error::not_implemented(format!(
                        "The bucket sub-resource `{sub}` is not supported by s3p."
                    )));
                }
                if method == "HEAD" {
                    Ok(Operation::HeadBucket)
                } else if query.has("location") {
                    Ok(Operation::GetBucketLocation)
                } else {
                    Ok(Operation::ListObjects(ListParams::parse(query)?))
                }
            }
            "POST" if query.has("delete") => Ok(Operation::DeleteObjects),
            _ => Err(S3Error::new(S3ErrorCode::MethodNotAllowed)),
        };
    }
    let vkey = parse_virtual_key(&decode_once(raw_object)?)?;
    if method == "GET" {
        for (sub, op) in [
            (
                "acl",
                Operation::GetObjectAcl as fn(VirtualKey) -> Operation,
            ),
            ("tagging", Operation::GetObjectTagging),
            ("attributes", Operation::GetObjectAttributes),
        ] {
            if query.has(sub) {
                return Ok(op(vkey));
            }
        }
    }
    if let Some(sub) = OBJECT_SUBRESOURCES.iter().find(|s| query.has(s)) {
        return Err(S3Error::not_implemented(format!(
            "The object sub-resource `{sub}` is not supported by s3p."
        )));
    }
    let upload_id = || {
        query
            .get("uploadId")
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .ok_or_else(|| S3Error::invalid_argument("uploadId must not be empty.", "uploadId", ""))
    };
    match method {
        "GET" if query.has("uploadId") => Ok(Operation::ListParts(vkey, upload_id()?)),
        "GET" | "HEAD" if query.has("uploadId") || query.has("uploads") => Err(
            S3Error::not_implemented("Listing multipart uploads is not supported by s3p."),
        ),
        "GET" => Ok(Operation::GetObject(vkey)),
        "HEAD" => Ok(Operation::HeadObject(vkey)),
        "PUT" if query.has("uploadId") || query.has("partNumber") => {
            let raw = query.get("partNumber").unwrap_or("");
            let number = raw
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
                .ok_or_else(|| {
                    S3Error::invalid_argument(
                        "Part number must be an integer between 1 and 10000, inclusive.",
                        "partNumber",
                        raw,
                    )
                })?;
            Ok(Operation::UploadPart(
                vkey,
                Part {
                    upload_id: upload_id()?,
                    number,
                },
            ))
        }
        "PUT" if query.has("uploads") => Err(S3Error::new(S3ErrorCode::MethodNotAllowed)),
        "PUT" => Ok(Operation::PutObject(vkey)),
        "POST" if query.has("uploads") => Ok(Operation::CreateMultipartUpload(vkey)),
        "POST" if query.has("uploadId") => {
            Ok(Operation::CompleteMultipartUpload(vkey, upload_id()?))
        }
        "DELETE" if query.has("uploadId") => {
            Ok(Operation::AbortMultipartUpload(vkey, upload_id()?))
        }
        "DELETE" => Ok(Operation::DeleteObject(vkey)),
        _ => Err(S3Error::new(S3ErrorCode::MethodNotAllowed)),
    }
}

/// Query parameters of an object GET/HEAD that are forwarded to the backend. Everything else (auth
/// parameters, `x-id`, unknown names) stays here.
pub fn forwarded_object_param(name: &str) -> bool {
    matches!(
        name,
        "tagging"
            | "attributes"
            | "response-cache-control"
            | "response-content-disposition"
            | "response-content-encoding"
            | "response-content-language"
            | "response-content-type"
            | "response-expires"
            | "partNumber"
            | "versionId"
    )
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    #[test]
    fn only_puts_take_a_copy_source() {
        let k = || VirtualKey {
            data_source: "sandbox".into(),
            key: "a".into(),
        };
        let part = || Part {
            upload_id: "u".into(),
            number: 1,
        };
        let copy = Operation::PutObject(k()).with_copy_source().unwrap();
        assert_eq!(
            (copy.name(), copy.written_object()),
            ("CopyObject", Some(&k()))
        );
        let copy = Operation::UploadPart(k(), part())
            .with_copy_source()
            .unwrap();
        assert_eq!(copy.name(), "UploadPartCopy");
        for op in [
            Operation::DeleteObject(k()),
            Operation::CreateMultipartUpload(k()),
            Operation::GetObject(k()),
            Operation::CompleteMultipartUpload(k(), "u".into()),
        ] {
            let name = op.name();
            let given_back = op
                .with_copy_source()
                .map(|o| o.name())
                .map_err(|o| o.name());
            assert_eq!(given_back, Err(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Mount = Mount {
        base_path: "/s3p",
        bucket: "immuta",
    };

    fn op(method: &str, path: &str, q: &str) -> Result<Operation, S3Error> {
        route(&M, method, &M.path(path), &Query::parse(q).unwrap(), None)
    }

    fn key(ds: &str, k: &str) -> VirtualKey {
        VirtualKey {
            data_source: ds.into(),
            key: k.into(),
        }
    }

    #[test]
    fn resource_names_the_virtual_path() {
        let table = [
            ("/s3p/immuta/sales/a%20b", None, "/immuta/sales/a b"),
            ("/s3p", None, "/"),
            ("/s3p/", None, "/"),
            // Not under the base path (a segment boundary): named as sent, never with the base cut short.
            ("/s3px/immuta", None, "/s3px/immuta"),
            ("/s3p/sales/k", Some("immuta"), "/immuta/sales/k"),
            ("/s3p", Some("immuta"), "/immuta/"),
        ];
        for (path, host_bucket, want) in table {
            assert_eq!(resource_of(&M, path, host_bucket), want, "{path}");
        }
    }

    #[test]
    fn routes() {
        assert_eq!(op("GET", "/s3p", "").unwrap(), Operation::ListBuckets);
        assert_eq!(op("GET", "/s3p/", "").unwrap(), Operation::ListBuckets);
        assert!(matches!(
            op("GET", "/s3p/immuta", "").unwrap(),
            Operation::ListObjects(_)
        ));
        assert!(matches!(
            op("GET", "/s3p/immuta/", "list-type=2&x-id=ListObjectsV2").unwrap(),
            Operation::ListObjects(_)
        ));
        assert_eq!(
            op("GET", "/s3p/immuta", "location").unwrap(),
            Operation::GetBucketLocation
        );
        assert_eq!(
            op("HEAD", "/s3p/immuta", "").unwrap(),
            Operation::HeadBucket
        );
        assert_eq!(
            op("GET", "/s3p/immuta/sales/a%20b.csv", "x-id=GetObject").unwrap(),
            Operation::GetObject(key("sales", "a b.csv"))
        );
        assert_eq!(
            op("HEAD", "/s3p/immuta/sales%2Fx", "").unwrap(),
            Operation::HeadObject(key("sales", "x"))
        );
        assert_eq!(
            op("GET", "/s3p/immuta/sales", "").unwrap(),
            Operation::GetObject(key("sales", ""))
        );
        let root = Mount {
            base_path: "",
            bucket: "immuta",
        };
        assert_eq!(
            route(
                &root,
                "GET",
                &root.path("/immuta/sales/k"),
                &Query::default(),
                None
            )
            .unwrap(),
            Operation::GetObject(key("sales", "k"))
        );
        assert_eq!(
            route(&root, "GET", &root.path("/"), &Query::default(), None).unwrap(),
            Operation::ListBuckets
        );
    }

    #[test]
    fn refusals() {
        let table: &[(&str, &str, &str, S3ErrorCode)] = &[
            ("GET", "/s3p/other", "", S3ErrorCode::NoSuchBucket),
            ("GET", "/s3p/other/x/y", "", S3ErrorCode::NoSuchBucket),
            ("GET", "/s3px/immuta", "", S3ErrorCode::NoSuchBucket),
            ("GET", "/elsewhere", "", S3ErrorCode::NoSuchBucket),
            (
                "PATCH",
                "/s3p/immuta/sales/x",
                "",
                S3ErrorCode::MethodNotAllowed,
            ),
            (
                "POST",
                "/s3p/immuta/sales/x",
                "",
                S3ErrorCode::MethodNotAllowed,
            ),
            (
                "PUT",
                "/s3p/immuta/sales/x",
                "partNumber=0&uploadId=u",
                S3ErrorCode::InvalidArgument,
            ),
            (
                "PUT",
                "/s3p/immuta/sales/x",
                "partNumber=10001&uploadId=u",
                S3ErrorCode::InvalidArgument,
            ),
            (
                "PUT",
                "/s3p/immuta/sales/x",
                "partNumber=1&uploadId=",
                S3ErrorCode::InvalidArgument,
            ),
            (
                "PUT",
                "/s3p/immuta/sales/x",
                "tagging",
                S3ErrorCode::NotImplemented,
            ),
            (
                "HEAD",
                "/s3p/immuta/sales/x",
                "uploadId=u",
                S3ErrorCode::NotImplemented,
            ),
            ("DELETE", "/s3p/immuta", "", S3ErrorCode::MethodNotAllowed),
            (
                "POST",
                "/s3p/immuta",
                "uploads",
                S3ErrorCode::MethodNotAllowed,
            ),
            ("PUT", "/s3p/immuta", "", S3ErrorCode::MethodNotAllowed),
            ("GET", "/s3p/immuta", "acl", S3ErrorCode::NotImplemented),
            (
                "HEAD",
                "/s3p/immuta",
                "uploads",
                S3ErrorCode::NotImplemented,
            ),
            (
                "GET",
                "/s3p/immuta",
                "uploads&delimiter=/",
                S3ErrorCode::NotImplemented,
            ),
            (
                "GET",
                "/s3p/immuta",
                "versioning",
                S3ErrorCode::NotImplemented,
            ),
            ("GET", "/s3p/immuta", "policy", S3ErrorCode::NotImplemented),
            (
                "PUT",
                "/s3p/immuta/sales/x",
                "acl",
                S3ErrorCode::NotImplemented,
            ),
            (
                "HEAD",
                "/s3p/immuta/sales/x",
                "tagging",
                S3ErrorCode::NotImplemented,
            ),
            (
                "GET",
                "/s3p/immuta/sales/../data/x",
                "",
                S3ErrorCode::InvalidArgument,
            ),
            (
                "GET",
                "/s3p/immuta/sales/%2e%2e/data/x",
                "",
                S3ErrorCode::InvalidArgument,
            ),
            ("GET", "/s3p/immuta/sales/%FF", "", S3ErrorCode::InvalidURI),
            (
                "GET",
                "/s3p/immuta",
                "max-keys=x",
                S3ErrorCode::InvalidArgument,
            ),
        ];
        for (m, p, q, code) in table {
            assert_eq!(op(m, p, q).unwrap_err().code, *code, "{m} {p}?{q}");
        }
    }

    #[test]
    fn writes_route_to_their_operation() {
        let k = || key("sandbox", "a b");
        let table: &[(&str, &str, Operation)] = &[
            ("PUT", "", Operation::PutObject(k())),
            ("PUT", "x-id=PutObject", Operation::PutObject(k())),
            ("DELETE", "", Operation::DeleteObject(k())),
            ("POST", "uploads", Operation::CreateMultipartUpload(k())),
            (
                "PUT",
                "partNumber=7&uploadId=U%2B1",
                Operation::UploadPart(
                    k(),
                    Part {
                        upload_id: "U+1".into(),
                        number: 7,
                    },
                ),
            ),
            (
                "POST",
                "uploadId=U1",
                Operation::CompleteMultipartUpload(k(), "U1".into()),
            ),
            (
                "DELETE",
                "uploadId=U1",
                Operation::AbortMultipartUpload(k(), "U1".into()),
            ),
            (
                "GET",
                "uploadId=U1&max-parts=2",
                Operation::ListParts(k(), "U1".into()),
            ),
        ];
        for (m, q, want) in table {
            assert_eq!(
                &op(m, "/s3p/immuta/sandbox/a%20b", q).unwrap(),
                want,
                "{m} ?{q}"
            );
            assert_eq!(want.written_object(), Some(&k()));
        }
        assert_eq!(
            op("GET", "/s3p/immuta/sandbox/k", "")
                .unwrap()
                .written_object(),
            None
        );
    }

    #[test]
    fn virtual_hosted_requests() {
        let suffixes = vec!["s3p.example.com".to_string(), "localhost".to_string()];
        let table: &[(&str, Option<&str>)] = &[
            ("immuta.s3p.example.com", Some("immuta")),
            ("IMMUTA.s3p.example.com:8443", Some("immuta")),
            ("immuta.localhost:8080", Some("immuta")),
            ("s3p.example.com", None),
            ("localhost:8080", None),
            ("immuta.evil-s3p.example.com", None),
            ("immutas3p.example.com", None),
            ("127.0.0.1:8080", None),
            ("[::1]:8080", None),
        ];
        for (host, want) in table {
            assert_eq!(
                host_bucket(Some(host), &suffixes).as_deref(),
                *want,
                "{host}"
            );
        }
        let q = Query::default();
        let vh = |path: &str, bucket: &str| route(&M, "GET", &M.path(path), &q, Some(bucket));
        assert_eq!(
            vh("/s3p/sales/a%20b", "immuta").unwrap(),
            Operation::GetObject(key("sales", "a b"))
        );
        assert!(matches!(
            vh("/s3p/", "immuta").unwrap(),
            Operation::ListObjects(_)
        ));
        assert!(matches!(
            vh("/s3p", "immuta").unwrap(),
            Operation::ListObjects(_)
        ));
        assert_eq!(
            vh("/s3p/sales/x", "other").unwrap_err().code,
            S3ErrorCode::NoSuchBucket
        );
        let root = Mount {
            base_path: "",
            bucket: "immuta",
        };
        assert_eq!(
            route(&root, "GET", &root.path("/sales/k"), &q, Some("immuta")).unwrap(),
            Operation::GetObject(key("sales", "k"))
        );
        assert_eq!(
            route(&root, "GET", &root.path("/sales/../x"), &q, Some("immuta"))
                .unwrap_err()
                .code,
            S3ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse("prefix=a+b%2Bc&delimiter=%2F&flag&prefix=ignored").unwrap();
        assert_eq!(q.get("prefix"), Some("a b+c"));
        assert_eq!(q.get("delimiter"), Some("/"));
        assert!(q.has("flag"));
        assert_eq!(q.get("flag"), Some(""));
    }

    #[test]
    fn only_allow_listed_object_params_are_forwarded() {
        assert!(forwarded_object_param("response-content-type"));
        assert!(forwarded_object_param("versionId"));
        for p in [
            "X-Amz-Signature",
            "AWSAccessKeyId",
            "Signature",
            "x-id",
            "prefix",
            "acl",
        ] {
            assert!(!forwarded_object_param(p), "{p}");
        }
    }
}
