//! The listing parser against a reference: the general XML reader (quick-xml) that s3p used before its own
//! scanner, fed thousands of generated backend pages in the many ways XML can write the same listing.
//! Both must read the same page; and no cut-short page may parse.

use super::parse_backend_listing;
use crate::listing::merge::{BackendPage, ObjectEntry};
use crate::xml::url_decode_plus as s3p_url_decode_plus;
use bytes::Bytes;
use quick_xml::events::Event;
use quick_xml::Reader;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// The reference reads the same fields as s3p's parser.
use super::Field as OracleField;

/// The reference: the quick-xml parser s3p used before (kept as it was but for CDATA sections, which it
/// ignored; a STANDARD class is compared as absent, the default it stands for).
fn quick_xml_parse(body: &[u8]) -> Result<BackendPage, String> {
    let err = |e: &dyn std::fmt::Display| format!("backend listing XML: {e}");
    let mut reader = Reader::from_reader(body);
    let mut page = BackendPage::default();
    let (mut depth, mut in_contents, mut in_prefixes) = (0usize, false, false);
    let mut field = OracleField::Other;
    let mut current = ObjectEntry::default();
    let (mut size_text, mut encoded, mut truncated) = (String::new(), false, false);
    let mut raw_prefixes: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| err(&e))? {
            Event::Start(start) => {
                let name = start.local_name();
                let name = name.as_ref();
                field = match (depth, in_contents, in_prefixes, name) {
                    (1, _, _, b"Contents") => {
                        in_contents = true;
                        OracleField::Other
                    }
                    (1, _, _, b"CommonPrefixes") => {
                        in_prefixes = true;
                        OracleField::Other
                    }
                    (1, _, _, b"EncodingType") => OracleField::EncodingType,
                    (1, _, _, b"IsTruncated") => OracleField::IsTruncated,
                    (1, _, _, b"NextContinuationToken") => OracleField::NextToken,
                    (2, true, _, b"Key") => OracleField::Key,
                    (2, true, _, b"LastModified") => OracleField::LastModified,
                    (2, true, _, b"ETag") => OracleField::ETag,
                    (2, true, _, b"Size") => OracleField::Size,
                    (2, true, _, b"StorageClass") => OracleField::StorageClass,
                    (2, _, true, b"Prefix") => OracleField::CommonPrefix,
                    _ => OracleField::Other,
                };
                text.clear();
                depth += 1;
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                let value = std::mem::take(&mut text);
                match field {
                    OracleField::Key => current.key = value,
                    OracleField::LastModified => current.last_modified = value.into(),
                    OracleField::ETag => current.etag = value.into(),
                    OracleField::Size => size_text = value,
                    OracleField::StorageClass => current.storage_class = Some(value.into()),
                    OracleField::CommonPrefix => raw_prefixes.push(value),
                    OracleField::EncodingType => encoded = value.trim() == "url",
                    OracleField::IsTruncated => truncated = value.trim() == "true",
                    OracleField::NextToken => page.next_continuation = Some(value),
                    OracleField::Other => {}
                }
                field = OracleField::Other;
                if depth == 1 && in_contents {
                    in_contents = false;
                    let size = std::mem::take(&mut size_text);
                    current.size = match size.trim() {
                        "" => 0,
                        n => n.parse().map_err(|_| format!("bad Size `{n}`"))?,
                    };
                    page.objects.push(std::mem::take(&mut current));
                } else if depth == 1 {
                    in_prefixes = false;
                }
            }
            // Text and references arrive in pieces (text, reference, text): every piece appends.
            Event::Text(t) if field != OracleField::Other => {
                let decoded = t.decode().map_err(|e| err(&e))?;
                text.push_str(&quick_xml::escape::unescape(&decoded).map_err(|e| err(&e))?);
            }
            Event::GeneralRef(r) if field != OracleField::Other => {
                match r.resolve_char_ref().map_err(|e| err(&e))? {
                    Some(c) => text.push(c),
                    None => {
                        let name = r.decode().map_err(|e| err(&e))?;
                        text.push_str(quick_xml::escape::resolve_xml_entity(&name).unwrap_or(""));
                    }
                }
            }
            // (Added for the comparison: the old parser ignored CDATA sections.)
            Event::CData(t) if field != OracleField::Other => {
                text.push_str(&t.decode().map_err(|e| err(&e))?);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let decode = |s: String| {
        if encoded && s.contains(['+', '%']) {
            url_decode_plus(&s)
        } else {
            s
        }
    };
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

/// The URL decoding s3p used before, with the percent-encoding crate.
fn url_decode_plus(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Characters keys are drawn from: XML specials, URL specials, multi-byte and a few controls.
const ALPHABET: &[char] = &[
    'a', 'b', 'Z', '0', '/', '-', '.', ' ', '+', '%', '&', '<', '>', '"', '\'', ';', '#', '=', 'é',
    '😀', '\t', '\u{1}', '\u{7f}',
];

fn random_key(rng: &mut StdRng) -> String {
    let len = rng.gen_range(1..12);
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
        .collect()
}

/// Writes text the way some XML writer might: entities, decimal or hex references, CDATA, or literally
/// where XML allows it.
fn write_text(rng: &mut StdRng, out: &mut String, text: &str) {
    let cdata_ok = !text.contains("]]>") && !text.chars().any(|c| (c as u32) < 0x20);
    if cdata_ok && rng.gen_ratio(1, 8) {
        out.push_str("<![CDATA[");
        out.push_str(text);
        out.push_str("]]>");
        return;
    }
    for c in text.chars() {
        let style = rng.gen_range(0..4);
        match c {
            '&' if style < 3 => out.push_str("&amp;"),
            '<' if style < 3 => out.push_str("&lt;"),
            '&' | '<' => out.push_str(&format!("&#{};", c as u32)),
            '>' if style == 0 => out.push_str("&gt;"),
            '"' if style == 0 => out.push_str("&quot;"),
            '\'' if style == 0 => out.push_str("&apos;"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("&#x{:x};", c as u32)),
            c if style == 3 && !c.is_ascii_alphanumeric() => {
                out.push_str(&format!("&#x{:X};", c as u32))
            }
            c => out.push(c),
        }
    }
}

/// S3's `encoding-type=url` form of a key: `+` for spaces, `%XX` for the rest (but `/` and unreserved).
fn url_encode_plus(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

struct Generated {
    body: String,
    /// Where the root element ends: any cut before it leaves the document unfinished.
    root_end: usize,
}

/// A ListObjectsV2 page as some backend might write it.
fn generate(rng: &mut StdRng) -> Generated {
    let ns = rng.gen_bool(0.3);
    let p = if ns { "s3:" } else { "" };
    let ws =
        |rng: &mut StdRng| -> &'static str { ["", "", "\n", "\n  ", " "][rng.gen_range(0..5)] };
    let encoded = rng.gen_bool(0.5);
    let mut x = String::new();
    if rng.gen_bool(0.7) {
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        x.push_str(ws(rng));
    }
    if ns {
        x.push_str("<s3:ListBucketResult xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    } else {
        x.push_str("<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\" a='x>y'>");
    }
    let elem = |x: &mut String, name: &str, value: &str| {
        x.push_str(&format!("<{p}{name}>{value}</{p}{name}>"));
    };
    elem(&mut x, "Name", "real-bucket");
    x.push_str(ws(rng));
    if rng.gen_bool(0.5) {
        x.push_str(&format!("<{p}Prefix/>"));
    } else {
        elem(&mut x, "Prefix", "");
    }
    // Where the encoding is announced: before the entries as S3 writes it, or after them.
    let encoding_late = rng.gen_bool(0.2);
    if encoded && !encoding_late {
        elem(&mut x, "EncodingType", "url");
    }
    let truncated = rng.gen_bool(0.5);
    elem(
        &mut x,
        "IsTruncated",
        if truncated { "true" } else { "false" },
    );
    if truncated || rng.gen_bool(0.2) {
        elem(&mut x, "NextContinuationToken", "tok/+=");
    }
    if rng.gen_bool(0.2) {
        x.push_str("<!-- a comment with <Contents> in it -->");
    }
    for _ in 0..rng.gen_range(0..6) {
        x.push_str(ws(rng));
        if rng.gen_bool(0.8) {
            x.push_str(&format!("<{p}Contents>"));
            let key = random_key(rng);
            let mut k = String::new();
            if encoded {
                // Also what a sloppy encoder might write: a `%` that starts no escape, bytes that are
                // not UTF-8 once decoded.
                let junk =
                    ["", "", "", "", "%", "%zz", "%FF", "%C3", "%e2%82%ac"][rng.gen_range(0..9)];
                write_text(rng, &mut k, &(url_encode_plus(&key) + junk));
            } else {
                write_text(rng, &mut k, &key);
            }
            elem(&mut x, "Key", &k);
            x.push_str(ws(rng));
            elem(&mut x, "LastModified", "2024-01-01T00:00:00.000Z");
            let mut etag = String::new();
            write_text(rng, &mut etag, "\"0123abcd\"");
            elem(&mut x, "ETag", &etag);
            elem(&mut x, "Size", &rng.gen_range(0..u32::MAX).to_string());
            if rng.gen_bool(0.2) {
                x.push_str(&format!(
                    "<{p}Owner><{p}ID>o</{p}ID><{p}DisplayName>d</{p}DisplayName></{p}Owner>"
                ));
            }
            match rng.gen_range(0..3) {
                0 => elem(&mut x, "StorageClass", "STANDARD"),
                1 => elem(&mut x, "StorageClass", "GLACIER"),
                _ => {}
            }
            x.push_str(&format!("</{p}Contents>"));
        } else {
            let mut cp = String::new();
            let prefix = format!("{}/", random_key(rng));
            if encoded {
                write_text(rng, &mut cp, &url_encode_plus(&prefix));
            } else {
                write_text(rng, &mut cp, &prefix);
            }
            x.push_str(&format!("<{p}CommonPrefixes>"));
            elem(&mut x, "Prefix", &cp);
            x.push_str(&format!("</{p}CommonPrefixes>"));
        }
    }
    if encoded && encoding_late {
        elem(&mut x, "EncodingType", "url");
    }
    x.push_str(ws(rng));
    x.push_str(&format!("</{p}ListBucketResult>"));
    let root_end = x.len();
    x.push_str(ws(rng));
    Generated { body: x, root_end }
}

/// The reference reads a STANDARD class as such; s3p's parser leaves the default out.
fn normalise(mut page: BackendPage) -> BackendPage {
    for o in &mut page.objects {
        if o.storage_class.as_ref().is_some_and(|c| *c == "STANDARD") {
            o.storage_class = None;
        }
    }
    page
}

#[test]
fn the_scanner_reads_every_page_as_the_reference_does() {
    let mut rng = StdRng::seed_from_u64(0x5c4e);
    let (mut objects, mut prefixes) = (0, 0);
    for case in 0..3000 {
        let g = generate(&mut rng);
        let want = quick_xml_parse(g.body.as_bytes()).map(normalise);
        let got = parse_backend_listing(&Bytes::from(g.body.clone()));
        match (&want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(w, g, "case {case}"),
            _ => panic!(
                "case {case}: reference {want:?}, scanner {got:?}\n{}",
                g.body
            ),
        }
        let page = got.unwrap();
        objects += page.objects.len();
        prefixes += page.common_prefixes.len();
    }
    // The generator did produce pages with content (a check that the comparison compared something).
    assert!(
        objects > 3000 && prefixes > 500,
        "{objects} objects, {prefixes} prefixes"
    );
}

#[test]
fn a_page_cut_short_never_parses() {
    let mut rng = StdRng::seed_from_u64(0xc07);
    for case in 0..300 {
        let g = generate(&mut rng);
        let body = g.body.as_bytes();
        for _ in 0..20 {
            let cut = rng.gen_range(0..g.root_end);
            if !g.body.is_char_boundary(cut) {
                continue;
            }
            let page = parse_backend_listing(&Bytes::copy_from_slice(&body[..cut]));
            assert!(
                page.is_err(),
                "case {case}: cut at {cut} parsed: {page:?}\n{}",
                &g.body[..cut]
            );
        }
    }
}

#[test]
fn url_decoding_agrees_with_the_percent_encoding_crate() {
    for s in [
        "",
        "a",
        "a+b",
        "%41%2f%2F",
        "%",
        "%4",
        "%zz",
        "%FF",
        "%C3%A9",
        "%e2%82",
        "100%",
        "+%2B+",
    ] {
        assert_eq!(s3p_url_decode_plus(s), url_decode_plus(s), "{s:?}");
    }
}

#[test]
fn an_object_entry_is_complete() {
    // The fields of one entry land in that entry, also when elements repeat or come in another order.
    let body = b"<ListBucketResult><IsTruncated>false</IsTruncated>\
        <Contents><Size>5</Size><Key>x</Key><Key>a&amp;b</Key><ETag>e</ETag><LastModified>T</LastModified></Contents>\
        <Contents><Key>c</Key></Contents></ListBucketResult>";
    let page = parse_backend_listing(&Bytes::from_static(body)).unwrap();
    assert_eq!(
        page.objects,
        vec![
            ObjectEntry {
                key: "a&b".into(),
                last_modified: "T".into(),
                etag: "e".into(),
                size: 5,
                storage_class: None
            },
            ObjectEntry {
                key: "c".into(),
                last_modified: Default::default(),
                etag: Default::default(),
                size: 0,
                storage_class: None
            },
        ]
    );
}
