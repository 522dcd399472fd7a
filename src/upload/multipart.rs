//! Multipart uploads in virtual terms: sealed upload ids, and the answers s3p writes for the
//! operations whose backend answers name backend buckets and keys.

use crate::error::{S3Error, S3ErrorCode};
use crate::seal::{field, Sealer};
use crate::xml::escape;

/// Upload ids are at most a few hundred characters in S3 and its peers.
const MAX_UPLOAD_ID_LEN: usize = 2048;
const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The upload ids clients see: the backend's id, sealed and bound to the data source and the object
/// key, so that an id cannot be used for another object or data source (and a forged one opens
/// nothing). As in S3, any key that may write the data source may complete or abort the upload.
pub struct UploadIds(Sealer);

impl UploadIds {
    pub fn rotated(current: &str, previous: &[&str]) -> UploadIds {
        UploadIds(Sealer::rotated("upload id", current, previous))
    }

    fn binding(data_source: &str, key: &str) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + data_source.len() + key.len());
        field(&mut b, data_source);
        field(&mut b, key);
        b
    }

    pub fn seal(&self, data_source: &str, key: &str, backend_upload_id: &str) -> String {
        self.0.seal(
            &Self::binding(data_source, key),
            backend_upload_id.as_bytes(),
        )
    }

    /// The backend's upload id; NoSuchUpload (as S3 answers an unknown id) for anything not sealed by
    /// s3p for this object.
    pub fn open(&self, data_source: &str, key: &str, upload_id: &str) -> Result<String, S3Error> {
        self.0
            .open(
                upload_id,
                &Self::binding(data_source, key),
                MAX_UPLOAD_ID_LEN,
            )
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| S3Error::new(S3ErrorCode::NoSuchUpload).detail("UploadId", upload_id))
    }
}

/// The version ids clients see: the backend's, sealed and bound to the data source and the object key
/// like upload ids (on some backends the two are the same string, and either names the backend's
/// objects). `null`, S3's version of an unversioned object, passes as it is.
pub struct VersionIds(Sealer);

impl VersionIds {
    pub fn rotated(current: &str, previous: &[&str]) -> VersionIds {
        VersionIds(Sealer::rotated("version id", current, previous))
    }

    pub fn seal(&self, data_source: &str, key: &str, backend_version_id: &str) -> String {
        if backend_version_id == "null" {
            return backend_version_id.to_string();
        }
        self.0.seal(
            &UploadIds::binding(data_source, key),
            backend_version_id.as_bytes(),
        )
    }

    /// The backend's version id; InvalidArgument (as S3 answers a malformed one) for anything not
    /// sealed by s3p for this object.
    pub fn open(&self, data_source: &str, key: &str, version_id: &str) -> Result<String, S3Error> {
        if version_id == "null" {
            return Ok(version_id.to_string());
        }
        self.0
            .open(
                version_id,
                &UploadIds::binding(data_source, key),
                MAX_UPLOAD_ID_LEN,
            )
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                S3Error::invalid_argument("Invalid version id specified", "versionId", version_id)
            })
    }
}

/// `InitiateMultipartUploadResult` in virtual terms.
pub fn initiate_result(bucket: &str, virtual_key: &str, upload_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
        escape(bucket),
        escape(virtual_key),
        escape(upload_id)
    )
}

/// A CompleteMultipartUpload body must name at least one part, as S3 requires (400 MalformedXML):
/// some backends (Garage) answer an empty list otherwise, and clients act on the code.
pub fn check_complete_body(body: &[u8]) -> Result<(), S3Error> {
    let malformed = || S3Error::new(S3ErrorCode::MalformedXML);
    let (root, records) = crate::xml::records(body).map_err(|_| malformed())?;
    if root != "CompleteMultipartUpload" || !records.iter().any(|r| r.name == "Part") {
        return Err(malformed());
    }
    Ok(())
}

/// `CompleteMultipartUploadResult` in virtual terms. `location` is the virtual object's URL.
pub fn complete_result(
    location: &str,
    bucket: &str,
    virtual_key: &str,
    etag: &str,
    checksums: &[(String, String)],
) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult xmlns=\"{XMLNS}\"><Location>{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag>",
        escape(location),
        escape(bucket),
        escape(virtual_key),
        escape(etag)
    );
    for (name, value) in checksums {
        out.push_str(&format!("<{name}>{}</{name}>", escape(value)));
    }
    out.push_str("</CompleteMultipartUploadResult>");
    out
}

/// `CopyObjectResult` (and `CopyPartResult`) in s3p's own words, with the backend's checksums.
pub fn copy_result(
    root: &str,
    etag: &str,
    last_modified: &str,
    checksums: &[(String, String)],
) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{XMLNS}\"><ETag>{}</ETag><LastModified>{}</LastModified>",
        escape(etag),
        escape(last_modified)
    );
    for (name, value) in checksums {
        out.push_str(&format!("<{name}>{}</{name}>", escape(value)));
    }
    out.push_str(&format!("</{root}>"));
    out
}

/// `ListPartsResult` in virtual terms, from the backend's: its parts, markers and truncation pass; the
/// bucket, key, upload id, initiator and owner are s3p's.
pub fn list_parts_result(
    backend_answer: &[u8],
    bucket: &str,
    virtual_key: &str,
    upload_id: &str,
    owner: &crate::config::Owner,
) -> Result<String, String> {
    let (root, records) = crate::xml::records(backend_answer)?;
    if root != "ListPartsResult" {
        return Err(format!("unexpected root {root}"));
    }
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId>",
        escape(bucket),
        escape(virtual_key),
        escape(upload_id)
    );
    for who in ["Initiator", "Owner"] {
        out.push_str(&format!(
            "<{who}><ID>{}</ID><DisplayName>{}</DisplayName></{who}>",
            escape(&owner.id),
            escape(&owner.display_name)
        ));
    }
    const SCALARS: [&str; 6] = [
        "PartNumberMarker",
        "NextPartNumberMarker",
        "MaxParts",
        "IsTruncated",
        "StorageClass",
        "ChecksumAlgorithm",
    ];
    const PART_FIELDS: [&str; 9] = [
        "PartNumber",
        "LastModified",
        "ETag",
        "Size",
        "ChecksumCRC32",
        "ChecksumCRC32C",
        "ChecksumCRC64NVME",
        "ChecksumSHA1",
        "ChecksumSHA256",
    ];
    for r in &records {
        if SCALARS.contains(&r.name.as_str()) {
            out.push_str(&format!("<{0}>{1}</{0}>", r.name, escape(r.text.trim())));
        } else if r.name == "Part" {
            out.push_str("<Part>");
            for f in PART_FIELDS {
                if let Some(v) = r.field(f) {
                    out.push_str(&format!("<{f}>{}</{f}>", escape(v)));
                }
            }
            out.push_str("</Part>");
        }
    }
    out.push_str("</ListPartsResult>");
    Ok(out)
}

/// The checksum elements a backend may put into a CompleteMultipartUploadResult, passed on as they are.
pub const CHECKSUM_ELEMENTS: [&str; 5] = [
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_bound_to_their_object() {
        let ids = UploadIds::rotated("a token secret, long enough", &[]);
        let sealed = ids.seal("sandbox", "big/file.bin", "backend-id-123");
        assert!(!sealed.contains("backend"));
        assert_eq!(
            ids.open("sandbox", "big/file.bin", &sealed).unwrap(),
            "backend-id-123"
        );
        for (ds, key, id) in [
            ("other", "big/file.bin", sealed.as_str()),
            ("sandbox", "big/file.bin2", sealed.as_str()),
            ("sandbox", "big/file.bin", "backend-id-123"),
            ("sandbox", "big/file.bin", ""),
        ] {
            let e = ids.open(ds, key, id).unwrap_err();
            assert_eq!(e.code, S3ErrorCode::NoSuchUpload, "{ds} {key} {id}");
        }
        // The binding is length-prefixed: moving a character from key to data source changes it.
        let a = ids.seal("ab", "c", "x");
        assert!(ids.open("a", "bc", &a).is_err());
    }

    #[test]
    fn complete_bodies_name_at_least_one_part() {
        let ok = br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"a"</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>"#;
        assert!(check_complete_body(ok).is_ok());
        for bad in [
            &b"<CompleteMultipartUpload></CompleteMultipartUpload>"[..],
            b"<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>",
            b"<Other><Part><PartNumber>1</PartNumber></Part></Other>",
            b"<CompleteMultipartUpload><Part>",
            b"",
            b"not xml",
        ] {
            let e = check_complete_body(bad).unwrap_err();
            assert_eq!(
                e.code,
                S3ErrorCode::MalformedXML,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn version_ids_are_sealed_apart_from_upload_ids_and_bound_to_their_object() {
        let secret = "a token secret, long enough";
        let versions = VersionIds::rotated(secret, &[]);
        let uploads = UploadIds::rotated(secret, &[]);
        // Garage's version ids are its upload ids: the two sealed forms must not be interchangeable.
        let v = versions.seal("sandbox", "k", "backend-id-123");
        let u = uploads.seal("sandbox", "k", "backend-id-123");
        assert!(!v.contains("backend"));
        assert_ne!(v, u);
        assert_eq!(versions.open("sandbox", "k", &v).unwrap(), "backend-id-123");
        assert!(uploads.open("sandbox", "k", &v).is_err());
        assert!(versions.open("sandbox", "k", &u).is_err());
        for (ds, key, id) in [
            ("other", "k", v.as_str()),
            ("sandbox", "k2", v.as_str()),
            ("sandbox", "k", "backend-id-123"),
            ("sandbox", "k", ""),
        ] {
            let e = versions.open(ds, key, id).unwrap_err();
            assert_eq!(e.code, S3ErrorCode::InvalidArgument, "{ds} {key} {id}");
        }
        // S3's `null` version passes both ways.
        assert_eq!(versions.seal("sandbox", "k", "null"), "null");
        assert_eq!(versions.open("sandbox", "k", "null").unwrap(), "null");
    }

    #[test]
    fn list_parts_keep_the_parts_and_drop_the_backend_names() {
        let backend = br#"<?xml version="1.0"?><ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Bucket>real-bucket</Bucket><Key>prefix/big</Key><UploadId>backend-id</UploadId>
            <Initiator><ID>GKbackendkey</ID><DisplayName>GKbackendkey</DisplayName></Initiator>
            <Owner><ID>GKbackendkey</ID><DisplayName>GKbackendkey</DisplayName></Owner>
            <StorageClass>STANDARD</StorageClass><PartNumberMarker>0</PartNumberMarker>
            <NextPartNumberMarker>2</NextPartNumberMarker><MaxParts>2</MaxParts><IsTruncated>true</IsTruncated>
            <Part><PartNumber>1</PartNumber><LastModified>2026-12-02T00:00:00.000Z</LastModified>
              <ETag>"e1"</ETag><Size>5242880</Size><ChecksumCRC32>AAAA</ChecksumCRC32></Part>
            <Part><PartNumber>2</PartNumber><ETag>"e2"</ETag><Size>1</Size></Part></ListPartsResult>"#;
        let owner = crate::config::Owner {
            id: "immuta".into(),
            display_name: "Immuta".into(),
        };
        let x = list_parts_result(backend, "immuta", "sandbox/big", "sealed-id", &owner).unwrap();
        for gone in ["real-bucket", "prefix/", "backend-id", "GKbackendkey"] {
            assert!(!x.contains(gone), "{gone} in {x}");
        }
        for kept in [
            "<Key>sandbox/big</Key>",
            "<UploadId>sealed-id</UploadId>",
            "<Owner><ID>immuta</ID>",
            "<IsTruncated>true</IsTruncated>",
            "<NextPartNumberMarker>2</NextPartNumberMarker>",
            "<Part><PartNumber>1</PartNumber><LastModified>2026-12-02T00:00:00.000Z</LastModified><ETag>&quot;e1&quot;</ETag><Size>5242880</Size><ChecksumCRC32>AAAA</ChecksumCRC32></Part>",
        ] {
            assert!(x.contains(kept), "{kept} not in {x}");
        }
        assert!(list_parts_result(b"<Error/>", "b", "k", "u", &owner).is_err());
    }

    #[test]
    fn answers_escape_what_they_carry() {
        let x = initiate_result("immuta", "sandbox/a&b<c>", "id");
        assert!(x.contains("<Key>sandbox/a&amp;b&lt;c&gt;</Key>"), "{x}");
        assert!(x.contains(XMLNS));
        let c = complete_result(
            "http://h/s3p/immuta/sandbox/k",
            "immuta",
            "sandbox/k",
            "\"e-2\"",
            &[("ChecksumCRC32".into(), "AAAA".into())],
        );
        assert!(
            c.contains("<ETag>&quot;e-2&quot;</ETag><ChecksumCRC32>AAAA</ChecksumCRC32>"),
            "{c}"
        );
    }
}
