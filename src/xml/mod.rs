//! XML in and out. Rendering of every response body s3p writes itself (ListAllMyBuckets, ListBucketResult
//! v1/v2, LocationConstraint, Error) and parsing of what backends answer (ListObjectsV2 pages, error codes).
//! Pure.

use crate::config::Owner;
use crate::error::S3Error;
use scan::{unescape_into, Scanner, Token};
use std::fmt::Write;
pub use text::XmlText;

pub mod scan;
pub mod text;

pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
pub(crate) const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
/// The virtual bucket's creation date (it exists as long as s3p does; a fixed value keeps responses stable).
pub const BUCKET_CREATION_DATE: &str = "2006-03-19T00:00:00.000Z";

/// Escapes text for XML. Control characters XML 1.0 cannot carry literally are written as character
/// references, as S3 does (clients that cannot read them should ask for `encoding-type=url`); NUL, which
/// XML cannot carry at all, becomes U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

/// Whether a byte of UTF-8 text needs escaping (every such character is ASCII, so bytes can be tested).
fn needs_escape(b: u8) -> bool {
    matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'') || b < 0x20 || b == 0x7f
}

/// Appends `s` escaped; text without special characters (nearly every key) is copied as is.
fn escape_into(out: &mut String, s: &str) {
    if !s.bytes().any(needs_escape) {
        out.push_str(s);
        return;
    }
    // Runs of plain text are copied whole; the special characters are all ASCII.
    let mut plain_from = 0;
    for (i, b) in s.bytes().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.push_str(&s[plain_from..i]);
        plain_from = i + 1;
        match b {
            b'&' => out.push_str("&amp;"),
            b'<' => out.push_str("&lt;"),
            b'>' => out.push_str("&gt;"),
            b'"' => out.push_str("&quot;"),
            b'\'' => out.push_str("&apos;"),
            // XML cannot carry NUL at all, not even as a reference.
            0 => out.push('\u{FFFD}'),
            b => {
                let _ = write!(out, "&#x{b:X};");
            }
        }
    }
    out.push_str(&s[plain_from..]);
}

/// `encoding-type=url`: everything but RFC 3986 unreserved characters and `/` is percent-encoded (a space
/// becomes `%20`, which every client's decoder reads, where `+` would be misread by plain URL decoders):
/// the same encoding as a key in a request path.
pub fn url_encode(s: &str) -> String {
    crate::namespace::encode_path(s)
}

/// Decodes a value a backend sent with `encoding-type=url` (S3 itself writes spaces as `+`).
pub(crate) fn url_decode_plus(s: &str) -> String {
    let mut out = String::new();
    url_decode_plus_into(&mut out, s, &mut Vec::new());
    out
}

/// Appends the decoded form of `s` to `out`, using `scratch` for the bytes (a listing page decodes a
/// thousand keys with it). Sequences that are not UTF-8 once decoded become U+FFFD.
pub(crate) fn url_decode_plus_into(out: &mut String, s: &str, scratch: &mut Vec<u8>) {
    let special = |b: &u8| *b == b'+' || *b == b'%';
    let bytes = s.as_bytes();
    // Most keys need no decoding at all: a plain copy then.
    let Some(first) = bytes.iter().position(special) else {
        out.push_str(s);
        return;
    };
    let hex = |b: Option<&u8>| b.and_then(|&h| (h as char).to_digit(16)).map(|v| v as u8);
    scratch.clear();
    scratch.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                scratch.push(b' ');
                i += 1;
            }
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(h), Some(l)) => {
                    scratch.push(h << 4 | l);
                    i += 3;
                }
                // A `%` that starts no escape stands for itself, as percent-decoders read it.
                _ => {
                    scratch.push(b'%');
                    i += 1;
                }
            },
            _ => {
                let run = bytes[i..]
                    .iter()
                    .position(special)
                    .unwrap_or(bytes.len() - i);
                scratch.extend_from_slice(&bytes[i..i + run]);
                i += run;
            }
        }
    }
    match std::str::from_utf8(scratch) {
        Ok(decoded) => out.push_str(decoded),
        Err(_) => out.push_str(&String::from_utf8_lossy(scratch)),
    }
}

pub(crate) fn elem(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// An element whose text is already escaped.
pub(crate) fn elem_escaped(out: &mut String, name: &str, value: &XmlText) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(value.escaped());
    out.push_str("</");
    out.push_str(name);
    out.push('>');
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

/// GetObjectAcl: every object of the virtual bucket belongs to its one owner, with full control (s3p
/// has no per-object ACLs, as S3 buckets with ACLs disabled).
pub fn object_acl(owner: &Owner) -> String {
    let mut x = String::from(DECL);
    let _ = write!(x, "<AccessControlPolicy xmlns=\"{S3_NS}\"><Owner>");
    elem(&mut x, "ID", &owner.id);
    elem(&mut x, "DisplayName", &owner.display_name);
    x.push_str("</Owner><AccessControlList><Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\">");
    elem(&mut x, "ID", &owner.id);
    elem(&mut x, "DisplayName", &owner.display_name);
    x.push_str("</Grantee><Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>");
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

/// The `<Code>` of a backend's error body, if it has one.
pub fn parse_error_code(body: &[u8]) -> Option<String> {
    first_text(body, "Code")
}

/// The text of the first element named `name` in an XML body (trimmed), for the few fields s3p reads
/// from a backend's small answers (an error's code, an upload id, an ETag).
pub fn first_text(body: &[u8], name: &str) -> Option<String> {
    let mut scanner = Scanner::new(body).ok()?;
    let mut inside = false;
    let mut text = String::new();
    while let Some(token) = scanner.next_token().ok()? {
        match token {
            Token::Start(n) => inside = n == name,
            Token::Text(raw) if inside => unescape_into(&mut text, raw).ok()?,
            Token::CData(raw) if inside => scan::push_literal(&mut text, raw),
            Token::End(_) if inside => return Some(text.trim().to_string()),
            _ => {}
        }
    }
    None
}

/// A child of the root element, with the text of its own children (`<Object><Key>k</Key></Object>`), or
/// its text when it has none (`<Quiet>true</Quiet>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub name: String,
    pub text: String,
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// The text of the first field named `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A document read two levels deep: its root's name and the root's children as records (elements
/// nested deeper, such as an upload's `<Initiator>` details, are skipped).
pub fn records(body: &[u8]) -> Result<(String, Vec<Record>), String> {
    let mut scanner = Scanner::new(body)?;
    let mut root = None;
    let mut out: Vec<Record> = Vec::new();
    let mut field: Option<(String, String)> = None;
    while let Some(token) = scanner.next_token()? {
        let depth = scanner.depth();
        match token {
            Token::Start(name) => match depth {
                1 => root = Some(name.to_string()),
                2 => out.push(Record {
                    name: name.to_string(),
                    ..Record::default()
                }),
                3 => field = Some((name.to_string(), String::new())),
                _ => {}
            },
            Token::Text(raw) | Token::CData(raw) => {
                let target = match (depth, &mut field, out.last_mut()) {
                    (3, Some((_, text)), _) => text,
                    (2, None, Some(record)) => &mut record.text,
                    _ => continue,
                };
                if matches!(token, Token::CData(_)) {
                    scan::push_literal(target, raw);
                } else {
                    unescape_into(target, raw)?;
                }
            }
            Token::End(_) => {
                if depth == 2 {
                    if let (Some(f), Some(record)) = (field.take(), out.last_mut()) {
                        record.fields.push(f);
                    }
                }
            }
        }
    }
    Ok((root.ok_or("no root element")?, out))
}

/// The name of the root element of an XML body.
pub fn root_name(body: &[u8]) -> Option<String> {
    let mut scanner = Scanner::new(body).ok()?;
    while let Some(token) = scanner.next_token().ok()? {
        if let Token::Start(n) = token {
            return Some(n.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::S3ErrorCode;

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
    fn escaping() {
        let table = [
            ("plain key/é", "plain key/é"),
            ("a&b<c>\"'", "a&amp;b&lt;c&gt;&quot;&apos;"),
            ("tab\there\u{1}\u{7f}", "tab&#x9;here&#x1;&#x7F;"),
            ("nul\0", "nul\u{FFFD}"),
        ];
        for (plain, escaped) in table {
            assert_eq!(escape(plain), escaped, "{plain:?}");
        }
    }

    #[test]
    fn parses_error_codes() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>m</Message><Resource>/real-bucket/data/x</Resource></Error>";
        assert_eq!(parse_error_code(body).as_deref(), Some("NoSuchKey"));
        assert_eq!(parse_error_code(b"garbage"), None);
    }
}
