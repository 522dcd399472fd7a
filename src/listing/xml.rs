//! The listing on the wire: ListBucketResult rendered for the client (echoing the client's own
//! parameters, never the backend's), and a backend's ListObjectsV2 page parsed into a [`BackendPage`].
//! The XML building blocks (escaping, the scanner, [`XmlText`]) are in `xml/`.

use super::merge::{BackendPage, Entry, ObjectEntry};
use super::params::{ListParams, ListVersion};
use crate::config::Owner;
use crate::xml::scan::{self, unescape_into, Scanner, Token};
use crate::xml::{
    elem, elem_escaped, url_decode_plus, url_decode_plus_into, url_encode, XmlText, DECL, S3_NS,
};
use bytes::Bytes;
use std::fmt::Write;

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
pub fn list_objects<'a>(v: &ListingView<'a>) -> String {
    let p = v.params;
    let enc = |s: &'a str| -> std::borrow::Cow<'a, str> {
        if p.encoding_url {
            url_encode(s).into()
        } else {
            s.into()
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
                elem_escaped(&mut x, "LastModified", &o.last_modified);
                elem_escaped(&mut x, "ETag", &o.etag);
                let _ = write!(x, "<Size>{}</Size>", o.size);
                if with_owner {
                    x.push_str("<Owner>");
                    elem(&mut x, "ID", &v.owner.id);
                    elem(&mut x, "DisplayName", &v.owner.display_name);
                    x.push_str("</Owner>");
                }
                match &o.storage_class {
                    Some(class) => elem_escaped(&mut x, "StorageClass", class),
                    None => x.push_str("<StorageClass>STANDARD</StorageClass>"),
                }
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

/// Which text field of a ListBucketResult the parser is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    Key,
    LastModified,
    ETag,
    Size,
    StorageClass,
    CommonPrefix,
    EncodingType,
    IsTruncated,
    NextToken,
}

/// The text of one element as it is read: kept as a slice of the body when it comes in one piece (the
/// usual case), resolved into `plain` when CDATA or comments split it.
#[derive(Default)]
struct ElementText<'a> {
    raw: Option<&'a str>,
    plain: String,
    pieces: usize,
}

impl<'a> ElementText<'a> {
    fn start(&mut self) {
        self.raw = None;
        self.plain.clear();
        self.pieces = 0;
    }

    /// Moves a first piece kept raw into `plain`, as more pieces follow.
    fn resolve_first(&mut self) -> Result<(), String> {
        match self.raw.take() {
            Some(first) => unescape_into(&mut self.plain, first),
            None => Ok(()),
        }
    }

    fn text(&mut self, raw: &'a str) -> Result<(), String> {
        self.pieces += 1;
        if self.pieces == 1 {
            self.raw = Some(raw);
            return Ok(());
        }
        self.resolve_first()?;
        unescape_into(&mut self.plain, raw)
    }

    fn cdata(&mut self, data: &str) -> Result<(), String> {
        self.pieces += 1;
        self.resolve_first()?;
        scan::push_literal(&mut self.plain, data);
        Ok(())
    }

    fn finish(&self, body: &Bytes) -> Result<XmlText, String> {
        match self.raw {
            Some(raw) => XmlText::from_raw(body, raw),
            None => Ok(XmlText::from_plain(&self.plain)),
        }
    }

    /// The text resolved (for the few fields that are read, not passed on).
    fn resolved(&mut self) -> Result<&str, String> {
        self.resolve_first()?;
        Ok(&self.plain)
    }
}

/// Above this many body bytes per entry, a page's kept texts are copied out of the body.
const COMPACT_ABOVE_BYTES_PER_ENTRY: usize = 4096;

/// Parses a backend's ListObjectsV2 answer (asked for with `encoding-type=url`, so keys and prefixes are
/// decoded here when the backend says it encoded them). A state machine over the element depth. Keys are
/// decoded into their entry (one allocation each); dates and ETags stay slices of `body`.
pub fn parse_backend_listing(body: &Bytes) -> Result<BackendPage, String> {
    let err = |e: String| format!("backend listing XML: {e}");
    let mut scanner = Scanner::new(body).map_err(err)?;
    let mut page = BackendPage::default();
    // Room for every entry up front (each takes well over 160 bytes of XML): no regrowing of the list.
    page.objects.reserve((body.len() / 160).min(1000));
    let (mut in_contents, mut in_prefixes) = (false, false);
    let mut field = Field::Other;
    let mut current = ObjectEntry::default();
    let (mut encoded, mut truncated) = (false, false);
    let mut text = ElementText::default();
    // The bytes of a key being URL-decoded.
    let mut bytes = Vec::new();
    while let Some(token) = scanner.next_token().map_err(err)? {
        match token {
            Token::Start(name) => {
                // The depth of the element's parent: 1 is inside ListBucketResult.
                let parent = scanner.depth() - 1;
                if parent == 0 && name != "ListBucketResult" {
                    // An `<Error>` sent with a 2xx status, say: not an empty page.
                    return Err(err(format!("<{name}> is not a listing")));
                }
                field = match (parent, in_contents, in_prefixes, name) {
                    (1, _, _, "Contents") => {
                        in_contents = true;
                        Field::Other
                    }
                    (1, _, _, "CommonPrefixes") => {
                        in_prefixes = true;
                        Field::Other
                    }
                    (1, _, _, "EncodingType") => Field::EncodingType,
                    (1, _, _, "IsTruncated") => Field::IsTruncated,
                    (1, _, _, "NextContinuationToken") => Field::NextToken,
                    (2, true, _, "Key") => Field::Key,
                    (2, true, _, "LastModified") => Field::LastModified,
                    (2, true, _, "ETag") => Field::ETag,
                    (2, true, _, "Size") => Field::Size,
                    (2, true, _, "StorageClass") => Field::StorageClass,
                    (2, _, true, "Prefix") => Field::CommonPrefix,
                    _ => Field::Other,
                };
                text.start();
            }
            Token::Text(raw) if field != Field::Other => text.text(raw).map_err(err)?,
            Token::CData(data) if field != Field::Other => text.cdata(data).map_err(err)?,
            Token::End(_) => {
                // A repeated element replaces the earlier value: the last one read wins.
                match field {
                    Field::Key => {
                        current.key.clear();
                        let key = text.resolved().map_err(err)?;
                        if encoded {
                            url_decode_plus_into(&mut current.key, key, &mut bytes);
                        } else {
                            current.key.push_str(key);
                        }
                    }
                    Field::LastModified => {
                        current.last_modified = text.finish(body).map_err(err)?
                    }
                    Field::ETag => current.etag = text.finish(body).map_err(err)?,
                    // STANDARD is what an absent class stands for.
                    Field::StorageClass => {
                        let class = text.finish(body).map_err(err)?;
                        current.storage_class = (class.escaped() != "STANDARD").then_some(class);
                    }
                    Field::Size => {
                        current.size = match text.resolved().map_err(err)?.trim() {
                            "" => 0,
                            n => n.parse().map_err(|_| format!("bad Size `{n}`"))?,
                        }
                    }
                    Field::CommonPrefix => {
                        let mut prefix = String::new();
                        let raw = text.resolved().map_err(err)?;
                        if encoded {
                            url_decode_plus_into(&mut prefix, raw, &mut bytes);
                        } else {
                            prefix.push_str(raw);
                        }
                        page.common_prefixes.push(prefix);
                    }
                    Field::EncodingType => {
                        if !encoded && text.resolved().map_err(err)?.trim() == "url" {
                            encoded = true;
                            // Keys read before the encoding was announced are decoded now.
                            for o in &mut page.objects {
                                o.key = url_decode_plus(&o.key);
                            }
                            for p in &mut page.common_prefixes {
                                *p = url_decode_plus(p);
                            }
                        }
                    }
                    Field::IsTruncated => {
                        truncated = text.resolved().map_err(err)?.trim() == "true"
                    }
                    // An empty token is no token (and would restart the listing).
                    Field::NextToken => {
                        let token = text.resolved().map_err(err)?;
                        page.next_continuation = (!token.is_empty()).then(|| token.to_string());
                    }
                    Field::Other => {}
                }
                field = Field::Other;
                if scanner.depth() == 1 && in_contents {
                    in_contents = false;
                    page.objects.push(std::mem::take(&mut current));
                } else if scanner.depth() == 1 {
                    in_prefixes = false;
                }
            }
            _ => {}
        }
    }
    if !truncated {
        page.next_continuation = None;
    } else if page.next_continuation.is_none() {
        return Err("backend listing is truncated but has no NextContinuationToken".into());
    }
    // Kept texts are slices that hold the whole body alive. A body of ordinary entries (about 200 bytes
    // each) is worth keeping; one padded around a few entries is not: their texts are copied out, so that
    // what a page's entries hold is bounded by their number, whatever a backend sends.
    if body.len() > COMPACT_ABOVE_BYTES_PER_ENTRY * page.objects.len().max(1) {
        for o in &mut page.objects {
            o.last_modified.detach();
            o.etag.detach();
            if let Some(class) = &mut o.storage_class {
                class.detach();
            }
        }
    }
    Ok(page)
}

#[cfg(test)]
#[path = "parse_oracle_tests.rs"]
mod parse_oracle_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Query;

    fn owner() -> Owner {
        Owner {
            id: "immuta".into(),
            display_name: "Immuta".into(),
        }
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
        let p = parse_backend_listing(&Bytes::from_static(body)).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.objects[0].key, "data/a b+c%");
        assert_eq!(p.objects[0].etag, "\"x\"");
        assert_eq!(p.objects[0].size, 12);
        assert_eq!(p.common_prefixes, vec!["data/dir x/"]);
        assert_eq!(p.next_continuation.as_deref(), Some("abc=="));
        let done = br#"<ListBucketResult><IsTruncated>false</IsTruncated><NextContinuationToken>zz</NextContinuationToken></ListBucketResult>"#;
        assert_eq!(
            parse_backend_listing(&Bytes::from_static(done))
                .unwrap()
                .next_continuation,
            None
        );
    }

    #[test]
    fn refuses_pages_that_are_not_listings() {
        let refused: &[&[u8]] = &[
            // An error sent with a 2xx status is not an empty page.
            b"<Error><Code>InternalError</Code></Error>",
            // Truncated with an empty token: resuming would restart the listing.
            b"<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken/></ListBucketResult>",
            b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
            b"<ListBucketResult><Contents><Key>a</Key></Contents>",
        ];
        for body in refused {
            assert!(
                parse_backend_listing(&Bytes::from_static(body)).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn texts_of_a_padded_page_do_not_hold_its_body() {
        let entry = "<Contents><Key>k</Key><LastModified>T</LastModified><ETag>e</ETag>\
                     <StorageClass>GLACIER</StorageClass></Contents>";
        let within =
            |body: &Bytes, t: &XmlText| body.as_ptr_range().contains(&t.escaped().as_ptr());
        // Ordinary entries: slices of the body. One entry padded with 100 KB of comment: copies.
        for (padding, kept_in_body) in [(0, true), (100_000, false)] {
            let body = Bytes::from(format!(
                "<ListBucketResult><IsTruncated>false</IsTruncated>{entry}<!--{}--></ListBucketResult>",
                " ".repeat(padding)
            ));
            let page = parse_backend_listing(&body).unwrap();
            let o = &page.objects[0];
            assert_eq!(o.etag, "e");
            for t in [&o.last_modified, &o.etag, o.storage_class.as_ref().unwrap()] {
                assert_eq!(within(&body, t), kept_in_body, "padding {padding}");
            }
        }
    }
}
