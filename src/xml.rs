//! XML in and out. Rendering of every response body s3p writes itself (ListAllMyBuckets, ListBucketResult
//! v1/v2, LocationConstraint, Error) and parsing of what backends answer (ListObjectsV2 pages, error codes).
//! Pure.

use crate::config::Owner;
use crate::error::S3Error;
use crate::listing::merge::{BackendPage, Entry, ObjectEntry};
use crate::listing::params::{ListParams, ListVersion};
use percent_encoding::percent_decode_str;
use quick_xml::events::Event;
use quick_xml::Reader;
use std::fmt::Write;

pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
/// The virtual bucket's creation date (it exists as long as s3p does; a fixed value keeps responses stable).
pub const BUCKET_CREATION_DATE: &str = "2006-03-19T00:00:00.000Z";

/// Escapes text for XML. Characters XML 1.0 cannot carry literally are written as character references,
/// as S3 does (clients that cannot read them should ask for `encoding-type=url`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "&#x{:X};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `encoding-type=url`: everything but RFC 3986 unreserved characters and `/` is percent-encoded (a space
/// becomes `%20`, which every client's decoder reads, where `+` would be misread by plain URL decoders):
/// the same encoding as a key in a request path.
pub fn url_encode(s: &str) -> String {
    crate::namespace::encode_path(s)
}

/// Decodes a value a backend sent with `encoding-type=url` (S3 itself writes spaces as `+`).
pub fn url_decode_plus(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

fn elem(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(value));
}

pub fn list_buckets(owner: &Owner, bucket: &str) -> String {
    let mut x = String::from(DECL);
    let _ = write!(x, "<ListAllMyBucketsResult xmlns=\"{S3_NS}\"><Owner>");
    elem(&mut x, "ID", &owner.id);
    elem(&mut x, "DisplayName", &owner.display_name);
    x.push_str("</Owner><Buckets><Bucket>");
    elem(&mut x, "Name", bucket);
    elem(&mut x, "CreationDate", BUCKET_CREATION_DATE);
    x.push_str("</Bucket></Buckets></ListAllMyBucketsResult>");
    x
}

/// AWS answers an empty LocationConstraint for us-east-1.
pub fn location(region: &str) -> String {
    if region == "us-east-1" {
        format!("{DECL}<LocationConstraint xmlns=\"{S3_NS}\"/>")
    } else {
        format!(
            "{DECL}<LocationConstraint xmlns=\"{S3_NS}\">{}</LocationConstraint>",
            escape(region)
        )
    }
}

pub fn error(e: &S3Error, request_id: &str) -> String {
    let mut x = String::from(DECL);
    x.push_str("<Error>");
    elem(&mut x, "Code", e.code.as_str());
    elem(&mut x, "Message", &e.message);
    if let Some(r) = &e.resource {
        elem(&mut x, "Resource", r);
    }
    for (name, value) in &e.extra {
        elem(&mut x, name, value);
    }
    elem(&mut x, "RequestId", request_id);
    x.push_str("</Error>");
    x
}

/// What a listing response needs beyond the entries.
pub struct ListingView<'a> {
    pub bucket: &'a str,
    pub params: &'a ListParams,
    pub owner: &'a Owner,
    pub entries: &'a [Entry],
    pub is_truncated: bool,
    /// v1: the NextMarker (only when a delimiter was given, as AWS does).
    pub next_marker: Option<&'a str>,
    /// v2: the sealed token for the next page.
    pub next_token: Option<&'a str>,
}

/// Renders ListBucketResult, echoing the client's own parameters (never the backend's).
pub fn list_objects(v: &ListingView) -> String {
    let p = v.params;
    let enc = |s: &str| {
        if p.encoding_url {
            url_encode(s)
        } else {
            s.to_string()
        }
    };
    let mut x = String::with_capacity(512 + v.entries.len() * 256);
    x.push_str(DECL);
    let _ = write!(x, "<ListBucketResult xmlns=\"{S3_NS}\">");
    elem(&mut x, "Name", v.bucket);
    elem(&mut x, "Prefix", &enc(&p.prefix));
    match p.version {
        ListVersion::V1 => {
            elem(&mut x, "Marker", &enc(p.marker.as_deref().unwrap_or("")));
            if let Some(m) = v.next_marker {
                elem(&mut x, "NextMarker", &enc(m));
            }
        }
        ListVersion::V2 => {
            if let Some(t) = &p.continuation_token {
                elem(&mut x, "ContinuationToken", t);
            }
            if let Some(t) = v.next_token {
                elem(&mut x, "NextContinuationToken", t);
            }
            if let Some(s) = &p.start_after {
                elem(&mut x, "StartAfter", &enc(s));
            }
            elem(&mut x, "KeyCount", &v.entries.len().to_string());
        }
    }
    elem(&mut x, "MaxKeys", &p.max_keys.to_string());
    if let Some(d) = &p.delimiter {
        elem(&mut x, "Delimiter", &enc(d));
    }
    if p.encoding_url {
        elem(&mut x, "EncodingType", "url");
    }
    elem(
        &mut x,
        "IsTruncated",
        if v.is_truncated { "true" } else { "false" },
    );
    let with_owner = p.version == ListVersion::V1 || p.fetch_owner;
    for e in v.entries {
        match e {
            Entry::Object(o) => {
                x.push_str("<Contents>");
                elem(&mut x, "Key", &enc(&o.key));
                elem(&mut x, "LastModified", &o.last_modified);
                elem(&mut x, "ETag", &o.etag);
                elem(&mut x, "Size", &o.size.to_string());
                if with_owner {
                    x.push_str("<Owner>");
                    elem(&mut x, "ID", &v.owner.id);
                    elem(&mut x, "DisplayName", &v.owner.display_name);
                    x.push_str("</Owner>");
                }
                elem(
                    &mut x,
                    "StorageClass",
                    o.storage_class.as_deref().unwrap_or("STANDARD"),
                );
                x.push_str("</Contents>");
            }
            Entry::CommonPrefix(cp) => {
                x.push_str("<CommonPrefixes>");
                elem(&mut x, "Prefix", &enc(cp));
                x.push_str("</CommonPrefixes>");
            }
        }
    }
    x.push_str("</ListBucketResult>");
    x
}

/// Parses a backend's ListObjectsV2 answer (asked for with `encoding-type=url`, so keys and prefixes are
/// decoded here when the backend says it encoded them).
pub fn parse_backend_listing(body: &[u8]) -> Result<BackendPage, String> {
    let mut reader = Reader::from_reader(body);
    let mut page = BackendPage::default();
    let mut path: Vec<String> = Vec::new();
    let mut current: Option<ObjectEntry> = None;
    let mut encoded = false;
    let mut truncated = false;
    let mut raw_prefixes = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("backend listing XML: {e}"))?
        {
            Event::Start(s) => {
                let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                if name == "Contents" {
                    current = Some(ObjectEntry {
                        key: String::new(),
                        last_modified: String::new(),
                        etag: String::new(),
                        size: 0,
                        storage_class: None,
                    });
                }
                if name == "Prefix" && path.last().map(String::as_str) == Some("CommonPrefixes") {
                    raw_prefixes.push(String::new());
                }
                path.push(name);
            }
            Event::End(_) if path.pop().as_deref() == Some("Contents") => {
                if let Some(o) = current.take() {
                    page.objects.push(o);
                }
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| format!("backend listing XML: {e}"))?;
                let text = quick_xml::escape::unescape(&text)
                    .map_err(|e| format!("backend listing XML: {e}"))?
                    .into_owned();
                push_text(
                    &path,
                    &text,
                    &mut current,
                    &mut raw_prefixes,
                    &mut page,
                    &mut encoded,
                    &mut truncated,
                )?;
            }
            Event::GeneralRef(r) => {
                // Character and entity references arrive separately from text in quick-xml 0.38.
                let text = match r
                    .resolve_char_ref()
                    .map_err(|e| format!("backend listing XML: {e}"))?
                {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r
                            .decode()
                            .map_err(|e| format!("backend listing XML: {e}"))?;
                        quick_xml::escape::resolve_xml_entity(&name)
                            .unwrap_or("")
                            .to_string()
                    }
                };
                push_text(
                    &path,
                    &text,
                    &mut current,
                    &mut raw_prefixes,
                    &mut page,
                    &mut encoded,
                    &mut truncated,
                )?;
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let decode = |s: String| if encoded { url_decode_plus(&s) } else { s };
    for o in &mut page.objects {
        o.key = decode(std::mem::take(&mut o.key));
    }
    page.common_prefixes = raw_prefixes.into_iter().map(decode).collect();
    if !truncated {
        page.next_continuation = None;
    } else if page.next_continuation.is_none() {
        return Err("backend listing is truncated but has no NextContinuationToken".into());
    }
    Ok(page)
}

fn push_text(
    path: &[String],
    text: &str,
    current: &mut Option<ObjectEntry>,
    raw_prefixes: &mut [String],
    page: &mut BackendPage,
    encoded: &mut bool,
    truncated: &mut bool,
) -> Result<(), String> {
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    match names.as_slice() {
        [_, "Contents", field] => {
            if let Some(o) = current.as_mut() {
                match *field {
                    "Key" => o.key.push_str(text),
                    "LastModified" => o.last_modified.push_str(text),
                    "ETag" => o.etag.push_str(text),
                    "Size" => {
                        o.size = text
                            .trim()
                            .parse()
                            .map_err(|_| format!("bad Size `{text}`"))?
                    }
                    "StorageClass" => o
                        .storage_class
                        .get_or_insert_with(String::new)
                        .push_str(text),
                    _ => {}
                }
            }
        }
        // Text may arrive in pieces (text, reference, text): every field appends.
        [_, "CommonPrefixes", "Prefix"] => {
            if let Some(last) = raw_prefixes.last_mut() {
                last.push_str(text);
            }
        }
        [_, "EncodingType"] => *encoded = text.trim() == "url",
        [_, "IsTruncated"] => *truncated = text.trim() == "true",
        [_, "NextContinuationToken"] => page
            .next_continuation
            .get_or_insert_with(String::new)
            .push_str(text),
        _ => {}
    }
    Ok(())
}

/// The `<Code>` of a backend's error body, if it has one.
pub fn parse_error_code(body: &[u8]) -> Option<String> {
    let mut reader = Reader::from_reader(body);
    let mut in_code = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(s) => in_code = s.local_name().as_ref() == b"Code",
            Event::Text(t) if in_code => return Some(t.decode().ok()?.trim().to_string()),
            Event::End(_) => in_code = false,
            Event::Eof => return None,
            _ => {}
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::S3ErrorCode;
    use crate::listing::params::ListParams;
    use crate::request::Query;

    fn owner() -> Owner {
        Owner {
            id: "immuta".into(),
            display_name: "Immuta".into(),
        }
    }

    #[test]
    fn list_buckets_uses_the_aws_namespace() {
        let x = list_buckets(&owner(), "immuta");
        assert_eq!(
            x,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Owner><ID>immuta</ID><DisplayName>Immuta</DisplayName></Owner><Buckets><Bucket><Name>immuta</Name>\
             <CreationDate>2006-03-19T00:00:00.000Z</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>"
        );
    }

    #[test]
    fn errors_escape_and_carry_details() {
        let e = S3Error::new(S3ErrorCode::NoSuchKey).resource("/immuta/a&b<c>");
        let x = error(&e, "REQ1");
        assert!(x.contains("<Code>NoSuchKey</Code>"));
        assert!(x.contains("<Resource>/immuta/a&amp;b&lt;c&gt;</Resource>"));
        assert!(x.contains("<RequestId>REQ1</RequestId>"));
    }

    #[test]
    fn location_is_empty_for_us_east_1() {
        assert!(location("us-east-1")
            .ends_with("<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"));
        assert!(location("eu-west-1").contains(">eu-west-1</LocationConstraint>"));
    }

    #[test]
    fn listing_echoes_the_client_and_encodes_when_asked() {
        let params = ListParams::parse(
            &Query::parse(
                "list-type=2&prefix=a%20b&delimiter=%2F&encoding-type=url&start-after=a%20b%2Bc",
            )
            .unwrap(),
        )
        .unwrap();
        let entries = vec![
            Entry::CommonPrefix("a b/x y/".into()),
            Entry::Object(ObjectEntry {
                key: "a b/c+d&".into(),
                last_modified: "T".into(),
                etag: "\"e\"".into(),
                size: 3,
                storage_class: None,
            }),
        ];
        let x = list_objects(&ListingView {
            bucket: "immuta",
            params: &params,
            owner: &owner(),
            entries: &entries,
            is_truncated: true,
            next_marker: None,
            next_token: Some("TOK"),
        });
        for want in [
            "<Prefix>a%20b</Prefix>",
            "<Delimiter>/</Delimiter>",
            "<StartAfter>a%20b%2Bc</StartAfter>",
            "<EncodingType>url</EncodingType>",
            "<KeyCount>2</KeyCount>",
            "<IsTruncated>true</IsTruncated>",
            "<NextContinuationToken>TOK</NextContinuationToken>",
            "<CommonPrefixes><Prefix>a%20b/x%20y/</Prefix></CommonPrefixes>",
            "<Key>a%20b/c%2Bd%26</Key>",
            "<ETag>&quot;e&quot;</ETag>",
        ] {
            assert!(x.contains(want), "missing {want} in {x}");
        }
        assert!(
            !x.contains("<Owner>"),
            "v2 without fetch-owner has no Owner"
        );
        assert!(!x.contains("<Marker>"));
    }

    #[test]
    fn v1_always_has_marker_and_owner() {
        let params = ListParams::parse(&Query::parse("").unwrap()).unwrap();
        let entries = vec![Entry::Object(ObjectEntry {
            key: "k".into(),
            last_modified: "T".into(),
            etag: "e".into(),
            size: 1,
            storage_class: None,
        })];
        let x = list_objects(&ListingView {
            bucket: "immuta",
            params: &params,
            owner: &owner(),
            entries: &entries,
            is_truncated: false,
            next_marker: None,
            next_token: None,
        });
        assert!(x.contains("<Marker></Marker>"));
        assert!(x.contains("<Owner><ID>immuta</ID>"));
        assert!(x.contains("<IsTruncated>false</IsTruncated>"));
    }

    #[test]
    fn parses_backend_pages() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>real-bucket</Name><Prefix>data%2F</Prefix>
<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated><NextContinuationToken>abc==</NextContinuationToken>
<Contents><Key>data/a+b%2Bc%25</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>&quot;x&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
<CommonPrefixes><Prefix>data/dir%20x/</Prefix></CommonPrefixes></ListBucketResult>"#;
        let p = parse_backend_listing(body).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].key, "data/a b+c%");
        assert_eq!(p.objects[0].etag, "\"x\"");
        assert_eq!(p.objects[0].size, 12);
        assert_eq!(p.common_prefixes, vec!["data/dir x/"]);
        assert_eq!(p.next_continuation.as_deref(), Some("abc=="));
        let done = br#"<ListBucketResult><IsTruncated>false</IsTruncated><NextContinuationToken>zz</NextContinuationToken></ListBucketResult>"#;
        assert_eq!(parse_backend_listing(done).unwrap().next_continuation, None);
    }

    #[test]
    fn parses_error_codes() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>m</Message><Resource>/real-bucket/data/x</Resource></Error>";
        assert_eq!(parse_error_code(body).as_deref(), Some("NoSuchKey"));
        assert_eq!(parse_error_code(b"garbage"), None);
    }
}
