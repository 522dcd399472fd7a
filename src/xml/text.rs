//! Character data kept in its XML-escaped form. Pure.
//!
//! A listing page carries a date and an ETag for each of its 1,000 objects, which s3p only passes on.
//! Kept as a slice of the backend's body, still escaped, they cost neither an allocation nor a decode and
//! re-encode: `<ETag>&quot;…&quot;</ETag>` goes from the backend's XML into s3p's as written.

use bytes::Bytes;
use std::fmt;

/// Text that is valid XML character data as it stands: UTF-8, no `<` or `>`, no control characters, and
/// every `&` starts a well-formed reference. Both constructors keep this true, so writing it into a document
/// needs no escaping.
#[derive(Clone, Default)]
pub struct XmlText(Bytes);

/// Whether `raw` (text as found between two tags) can be written out as it stands.
fn is_clean_escaped(raw: &str) -> bool {
    // `>` may stand unescaped in XML text, but not as part of `]]>`: written as `&gt;` by the slow path.
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'>') {
        return false;
    }
    super::scan::references_resolve(raw)
}

impl XmlText {
    /// Text with nothing escaped yet.
    pub fn from_plain(s: &str) -> XmlText {
        XmlText(Bytes::from(super::escape(s)))
    }

    /// `raw`, a part of `body` between two tags, kept as it is when it is clean, else decoded (which
    /// checks it) and escaped again. Errors on references that do not resolve.
    pub fn from_raw(body: &Bytes, raw: &str) -> Result<XmlText, String> {
        if is_clean_escaped(raw) {
            return Ok(XmlText(body.slice_ref(raw.as_bytes())));
        }
        let mut plain = String::new();
        super::scan::unescape_into(&mut plain, raw)?;
        Ok(XmlText::from_plain(&plain))
    }

    /// The text as it is written into a document.
    pub fn escaped(&self) -> &str {
        // Both constructors take their bytes from a `str`: this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The text itself, references resolved.
    pub fn to_plain(&self) -> String {
        let mut plain = String::new();
        // Checked when it was made: this cannot fail.
        let _ = super::scan::unescape_into(&mut plain, self.escaped());
        plain
    }

    /// Copies the text out of the body it is a slice of, so that it no longer keeps that body alive.
    pub fn detach(&mut self) {
        self.0 = Bytes::copy_from_slice(&self.0);
    }
}

impl From<&str> for XmlText {
    fn from(s: &str) -> XmlText {
        XmlText::from_plain(s)
    }
}

impl From<String> for XmlText {
    fn from(s: String) -> XmlText {
        XmlText::from_plain(&s)
    }
}

/// Texts are equal when they say the same thing, however they were escaped.
impl PartialEq for XmlText {
    fn eq(&self, other: &XmlText) -> bool {
        self.0 == other.0 || self.to_plain() == other.to_plain()
    }
}

impl Eq for XmlText {}

impl PartialEq<&str> for XmlText {
    fn eq(&self, other: &&str) -> bool {
        self.to_plain() == *other
    }
}

impl fmt::Debug for XmlText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_plain(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_is_kept_as_written_and_the_rest_is_rewritten() {
        let body = Bytes::from_static(b"&quot;e&quot;|a&#x41;|x\ty|&bogus;|caf\xc3\xa9|a]]>b");
        let doc = std::str::from_utf8(&body).unwrap();
        let table: &[(&str, Option<&str>, &str)] = &[
            // raw, escaped form kept, plain
            ("&quot;e&quot;", Some("&quot;e&quot;"), "\"e\""),
            ("a&#x41;", Some("a&#x41;"), "aA"),
            ("x\ty", Some("x&#x9;y"), "x\ty"),
            ("café", Some("café"), "café"),
            ("a]]>b", Some("a]]&gt;b"), "a]]>b"),
            ("&bogus;", None, ""),
        ];
        for (raw, escaped, plain) in table {
            let start = doc.find(raw).unwrap();
            let t = XmlText::from_raw(&body, &doc[start..start + raw.len()]);
            match escaped {
                Some(e) => {
                    let t = t.unwrap();
                    assert_eq!(t.escaped(), *e, "{raw}");
                    assert_eq!(t.to_plain(), *plain, "{raw}");
                }
                None => assert!(t.is_err(), "{raw}"),
            }
        }
    }

    #[test]
    fn equality_is_on_meaning() {
        let body = Bytes::from_static(b"&#34;e&#x22;");
        let raw = XmlText::from_raw(&body, std::str::from_utf8(&body).unwrap()).unwrap();
        assert_eq!(raw, XmlText::from("\"e\""));
        assert_eq!(raw, "\"e\"");
        assert_eq!(XmlText::from("a<b").escaped(), "a&lt;b");
        assert_ne!(XmlText::from("a"), XmlText::from("b"));
    }
}
