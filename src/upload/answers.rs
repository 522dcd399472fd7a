//! The backend's successful answers that s3p rewrites into virtual terms before they reach the client:
//! multipart answers name the backend's bucket, key and upload id; copy answers may be a "200 with an
//! error inside". Pure: the collected answer in, s3p's answer (or the error to give) out.

use super::multipart::{self, UploadIds};
use crate::config::Owner;
use crate::error::{backend_entry_code, S3ErrorCode};
use crate::xml;

/// How a backend's successful answer body is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Passed on as it is (objects: they name no backend bucket or key).
    None,
    /// CreateMultipartUpload: the backend's upload id is sealed for this object.
    Initiate { data_source: String, key: String },
    /// CompleteMultipartUpload: the virtual location, bucket and key replace the backend's.
    Complete { location: String, key: String },
    /// ListParts: the virtual key, the client's upload id and s3p's owner replace the backend's.
    ListParts { key: String, upload_id: String },
    /// CopyObject / UploadPartCopy: s3p writes the result from the backend's ETag and date (a backend
    /// may answer 200 with an `<Error>` naming its bucket and key inside).
    Copy { part: bool },
}

/// What a rewrite needs besides the answer.
pub struct Virtual<'a> {
    pub bucket: &'a str,
    pub owner: &'a Owner,
    pub uploads: &'a UploadIds,
}

/// Why an answer could not be rewritten: the error code the client gets (in a 200, as S3 puts the
/// errors of a CompleteMultipartUpload), and, for operators, what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrewritable {
    pub code: S3ErrorCode,
    /// The code was the backend's (an `<Error>` inside its 200), not s3p's failure to read it.
    pub from_backend: bool,
    pub why: String,
}

/// The checksum elements a multipart or copy answer may carry, passed on by name.
fn checksums(answer: &[u8]) -> Vec<(String, String)> {
    multipart::CHECKSUM_ELEMENTS
        .iter()
        .filter_map(|n| xml::first_text(answer, n).map(|v| (n.to_string(), v)))
        .collect()
}

/// s3p's answer for a backend's successful (200) answer `answer`.
pub fn rewrite_answer(
    rewrite: &Rewrite,
    answer: &[u8],
    v: &Virtual,
) -> Result<String, Unrewritable> {
    let unreadable = |why: &str| Unrewritable {
        code: S3ErrorCode::InternalError,
        from_backend: false,
        why: why.to_string(),
    };
    if xml::root_name(answer).as_deref() == Some("Error") {
        // S3 may answer a CompleteMultipartUpload (or a copy) 200 and put the error in the body.
        let code = xml::parse_error_code(answer).unwrap_or_default();
        return Err(Unrewritable {
            code: backend_entry_code(&code),
            from_backend: true,
            why: format!("backend error {code} inside a 200"),
        });
    }
    match rewrite {
        Rewrite::Initiate { data_source, key } => {
            match xml::first_text(answer, "UploadId").filter(|id| !id.is_empty()) {
                Some(id) => Ok(multipart::initiate_result(
                    v.bucket,
                    &format!("{data_source}/{key}"),
                    &v.uploads.seal(data_source, key, &id),
                )),
                None => Err(unreadable("no UploadId")),
            }
        }
        Rewrite::ListParts { key, upload_id } => {
            multipart::list_parts_result(answer, v.bucket, key, upload_id, v.owner)
                .map_err(|e| unreadable(&format!("unreadable ListParts answer: {e}")))
        }
        Rewrite::Copy { part } => {
            let root = if *part {
                "CopyPartResult"
            } else {
                "CopyObjectResult"
            };
            match xml::first_text(answer, "ETag") {
                Some(etag) => {
                    let modified = xml::first_text(answer, "LastModified").unwrap_or_default();
                    Ok(multipart::copy_result(
                        root,
                        &etag,
                        &modified,
                        &checksums(answer),
                    ))
                }
                None => Err(unreadable("no ETag in a copy answer")),
            }
        }
        Rewrite::Complete { location, key } => {
            let etag = xml::first_text(answer, "ETag").unwrap_or_default();
            Ok(multipart::complete_result(
                location,
                v.bucket,
                key,
                &etag,
                &checksums(answer),
            ))
        }
        Rewrite::None => Err(unreadable("no rewrite for this answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn virt<'a>(owner: &'a Owner, uploads: &'a UploadIds) -> Virtual<'a> {
        Virtual {
            bucket: "immuta",
            owner,
            uploads,
        }
    }

    #[test]
    fn answers_are_rewritten_into_virtual_terms() {
        let owner = Owner {
            id: "owner-id".into(),
            display_name: "Owner".into(),
        };
        let uploads = UploadIds::rotated("a token secret, long enough", &[]);
        let v = virt(&owner, &uploads);
        let initiate = br#"<InitiateMultipartUploadResult><Bucket>real-bucket</Bucket><Key>box/big</Key><UploadId>backend-id</UploadId></InitiateMultipartUploadResult>"#;
        let out = rewrite_answer(
            &Rewrite::Initiate {
                data_source: "sandbox".into(),
                key: "big".into(),
            },
            initiate,
            &v,
        )
        .unwrap();
        assert!(out.contains("<Bucket>immuta</Bucket>") && out.contains("<Key>sandbox/big</Key>"));
        assert!(
            !out.contains("real-bucket") && !out.contains("backend-id"),
            "{out}"
        );
        let sealed = xml::first_text(out.as_bytes(), "UploadId").unwrap();
        assert_eq!(
            uploads.open("sandbox", "big", &sealed).unwrap(),
            "backend-id"
        );

        let copy = br#"<CopyObjectResult><ETag>"e1"</ETag><LastModified>2026-01-01T00:00:00.000Z</LastModified><ChecksumCRC32>AAAAAA==</ChecksumCRC32></CopyObjectResult>"#;
        let out = rewrite_answer(&Rewrite::Copy { part: true }, copy, &v).unwrap();
        assert!(out.contains("<CopyPartResult") && out.contains("<ChecksumCRC32>AAAAAA=="));

        let complete = br#"<CompleteMultipartUploadResult><Location>http://garage/real-bucket/box/big</Location><Bucket>real-bucket</Bucket><Key>box/big</Key><ETag>"e-2"</ETag></CompleteMultipartUploadResult>"#;
        let out = rewrite_answer(
            &Rewrite::Complete {
                location: "http://s3p/s3p/immuta/sandbox/big".into(),
                key: "sandbox/big".into(),
            },
            complete,
            &v,
        )
        .unwrap();
        assert!(out.contains("<Location>http://s3p/s3p/immuta/sandbox/big</Location>"));
        assert!(
            !out.contains("garage") && !out.contains("real-bucket"),
            "{out}"
        );
    }

    #[test]
    fn errors_inside_a_200_and_unreadable_answers() {
        let owner = Owner {
            id: "o".into(),
            display_name: "O".into(),
        };
        let uploads = UploadIds::rotated("a token secret, long enough", &[]);
        let v = virt(&owner, &uploads);
        let complete = Rewrite::Complete {
            location: "l".into(),
            key: "k".into(),
        };
        #[rustfmt::skip]
        let table: [(&Rewrite, &[u8], S3ErrorCode, bool); 5] = [
            (&complete, b"<Error><Code>InvalidPart</Code><Message>bucket real-bucket</Message></Error>", S3ErrorCode::InvalidPart, true),
            (&complete, b"<Error><Code>WeirdBackendThing</Code></Error>", S3ErrorCode::InternalError, true),
            (&Rewrite::Copy { part: false }, b"<CopyObjectResult></CopyObjectResult>", S3ErrorCode::InternalError, false),
            (&Rewrite::Initiate { data_source: "d".into(), key: "k".into() }, b"<InitiateMultipartUploadResult><UploadId></UploadId></InitiateMultipartUploadResult>", S3ErrorCode::InternalError, false),
            (&Rewrite::None, b"<x/>", S3ErrorCode::InternalError, false),
        ];
        for (rewrite, answer, code, from_backend) in table {
            let e = rewrite_answer(rewrite, answer, &v).unwrap_err();
            assert_eq!(
                (e.code, e.from_backend),
                (code, from_backend),
                "{rewrite:?}"
            );
        }
    }
}
