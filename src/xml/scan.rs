//! A pull scanner for the XML that S3 backends answer (listing pages, error bodies). Pure.
//!
//! Why not a general XML reader: a listing page of 1,000 keys is about 200 KB, and parsing it is most of
//! the CPU s3p spends on a listing page (see `cargo bench --bench listing`). This scanner borrows every
//! name and text from the body, finds markup with `memchr`-speed searches and copies only the text a
//! caller keeps. It reads the subset of XML 1.0 that S3 documents use: elements with attributes (quoted
//! values may hold `>`), text, the five predefined entities and character references, CDATA sections,
//! comments and processing instructions (skipped). A DOCTYPE is refused (no entity definitions, ever),
//! as is anything malformed: unclosed markup, unknown entities, end tags that do not match.

/// One piece of a document. Names are local names (any `prefix:` removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// `<name ...>`; `<name .../>` yields a `Start` followed by its `End`.
    Start(&'a str),
    End(&'a str),
    /// Character data as written (entities still escaped; see [`unescape_into`]).
    Text(&'a str),
    /// The content of a CDATA section (literal).
    CData(&'a str),
}

pub struct Scanner<'a> {
    doc: &'a str,
    pos: usize,
    /// Names of the open elements as written (with any prefix), to check that end tags match.
    open: Vec<&'a str>,
    /// The `End` owed by a self-closing tag just returned as `Start`.
    pending_end: Option<&'a str>,
    /// Whether the root element has been closed (a document has exactly one).
    root_closed: bool,
}

/// S3 documents nest four deep; a body nesting far deeper is not one (and would only grow `open`).
const MAX_DEPTH: usize = 64;

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `s` without trailing XML white space.
fn trim_space_end(s: &str) -> &str {
    let end = s.bytes().rposition(|b| !is_space(b)).map_or(0, |i| i + 1);
    &s[..end]
}

/// The local name: what follows a namespace prefix. (A byte loop: names are short.)
fn local(name: &str) -> &str {
    match name.bytes().rposition(|b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

impl<'a> Scanner<'a> {
    pub fn new(body: &'a [u8]) -> Result<Scanner<'a>, String> {
        let doc = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
        // A byte order mark may precede the document.
        let doc = doc.strip_prefix('\u{feff}').unwrap_or(doc);
        Ok(Scanner {
            doc,
            pos: 0,
            open: Vec::with_capacity(8),
            pending_end: None,
            root_closed: false,
        })
    }

    /// How deep the scanner is: the number of elements open after the last token.
    pub fn depth(&self) -> usize {
        self.open.len()
    }

    fn rest(&self) -> &'a str {
        &self.doc[self.pos..]
    }

    /// Skips past `end`, which must occur.
    fn skip_past(&mut self, end: &str, what: &str) -> Result<&'a str, String> {
        let rest = self.rest();
        let i = rest
            .find(end)
            .ok_or_else(|| format!("unterminated {what}"))?;
        self.pos += i + end.len();
        Ok(&rest[..i])
    }

    /// The next token; `None` at the end of a well-formed document.
    pub fn next_token(&mut self) -> Result<Option<Token<'a>>, String> {
        if let Some(name) = self.pending_end.take() {
            self.open.pop();
            self.root_closed = self.open.is_empty();
            return Ok(Some(Token::End(name)));
        }
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return match self.open.last() {
                    None if self.root_closed => Ok(None),
                    None => Err("no root element".into()),
                    Some(name) => Err(format!("element <{name}> is not closed")),
                };
            }
            let bytes = rest.as_bytes();
            if bytes[0] != b'<' {
                let len = memchr::memchr(b'<', bytes).unwrap_or(bytes.len());
                self.pos += len;
                let text = &rest[..len];
                if self.open.is_empty() {
                    if !text.trim_start_matches([' ', '\t', '\r', '\n']).is_empty() {
                        return Err("text outside the root element".into());
                    }
                    continue;
                }
                return Ok(Some(Token::Text(text)));
            }
            // Markup: the byte after `<` says which kind.
            match bytes.get(1) {
                Some(b'/') => {
                    let close = memchr::memchr(b'>', &bytes[2..]).ok_or("unterminated end tag")?;
                    let name = trim_space_end(&rest[2..2 + close]);
                    match self.open.pop() {
                        Some(open) if open == name => {}
                        Some(open) => return Err(format!("</{name}> closes <{open}>")),
                        None => return Err(format!("</{name}> closes nothing")),
                    }
                    self.pos += 2 + close + 1;
                    self.root_closed = self.open.is_empty();
                    return Ok(Some(Token::End(local(name))));
                }
                Some(b'?') => {
                    self.skip_past("?>", "processing instruction")?;
                }
                Some(b'!') if bytes.starts_with(b"<!--") => {
                    self.pos += 4;
                    self.skip_past("-->", "comment")?;
                }
                Some(b'!') if bytes.starts_with(b"<![CDATA[") => {
                    if self.open.is_empty() {
                        return Err("CDATA outside the root element".into());
                    }
                    self.pos += 9;
                    let data = self.skip_past("]]>", "CDATA section")?;
                    return Ok(Some(Token::CData(data)));
                }
                Some(b'!') => return Err("DOCTYPE and other declarations are not accepted".into()),
                _ => return self.start_tag().map(Some),
            }
        }
    }

    /// `<name attr="v" ...>` or `<name .../>`: the name, then a scan to the `>` outside quoted values.
    fn start_tag(&mut self) -> Result<Token<'a>, String> {
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let name_end = bytes[1..]
            .iter()
            .position(|&b| is_space(b) || b == b'/' || b == b'>')
            .map(|i| i + 1)
            .ok_or("unterminated start tag")?;
        if name_end == 1 {
            return Err("start tag without a name".into());
        }
        let name = &rest[1..name_end];
        if self.root_closed {
            return Err("a second root element".into());
        }
        let mut i = name_end;
        let mut quote: Option<u8> = None;
        loop {
            let b = *bytes.get(i).ok_or("unterminated start tag")?;
            match (quote, b) {
                (Some(q), b) if b == q => quote = None,
                (Some(_), b'<') => return Err("`<` inside an attribute value".into()),
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(b),
                (None, b'>') => break,
                (None, b'<') => return Err("`<` inside a start tag".into()),
                _ => {}
            }
            i += 1;
        }
        let self_closing = bytes[i - 1] == b'/';
        if self.open.len() >= MAX_DEPTH {
            return Err(format!("elements nested deeper than {MAX_DEPTH}"));
        }
        self.pos += i + 1;
        self.open.push(name);
        let name = local(name);
        if self_closing {
            self.pending_end = Some(name);
        }
        Ok(Token::Start(name))
    }
}

/// The character a reference stands for; `name` is what lies between `&` and `;`.
fn resolve_reference(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let (digits, radix) = if let Some(hex) = name.strip_prefix("#x") {
                (hex, 16)
            } else {
                (name.strip_prefix('#')?, 10)
            };
            // Digits only: `from_str_radix` would also take a sign.
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return None;
            }
            u32::from_str_radix(digits, radix)
                .ok()
                .filter(|&c| c != 0)
                .and_then(char::from_u32)
        }
    }
}

/// A run of text without references, or the character of one reference.
enum Piece<'a> {
    Plain(&'a str),
    Char(char),
}

/// Walks `raw` character data piece by piece, in order; errors on a reference that does not resolve.
fn for_each_piece<'a>(raw: &'a str, mut each: impl FnMut(Piece<'a>)) -> Result<(), String> {
    let mut rest = raw;
    while let Some(amp) = memchr::memchr(b'&', rest.as_bytes()) {
        each(Piece::Plain(&rest[..amp]));
        let after = &rest[amp + 1..];
        // References are short (`&#x10FFFF;`), but may carry leading zeros: look a little further.
        let semi = after
            .bytes()
            .take(32)
            .position(|b| b == b';')
            .ok_or("`&` without a reference")?;
        let name = &after[..semi];
        let c = resolve_reference(name).ok_or_else(|| format!("unknown reference `&{name};`"))?;
        each(Piece::Char(c));
        rest = &after[semi + 1..];
    }
    each(Piece::Plain(rest));
    Ok(())
}

/// Appends literal text (character data or CDATA) with its line ends normalised as XML requires: a
/// written CR LF or lone CR is read as LF (a CR sent as `&#xD;` stays a CR).
pub fn push_literal(out: &mut String, s: &str) {
    if memchr::memchr(b'\r', s.as_bytes()).is_none() {
        out.push_str(s);
        return;
    }
    let mut lines = s.split('\r');
    out.push_str(lines.next().unwrap_or(""));
    for line in lines {
        out.push('\n');
        out.push_str(line.strip_prefix('\n').unwrap_or(line));
    }
}

/// Appends `raw` character data with its entity and character references resolved.
pub fn unescape_into(out: &mut String, raw: &str) -> Result<(), String> {
    // Resolved text is never longer than its source: one allocation at most.
    out.reserve(raw.len());
    for_each_piece(raw, |piece| match piece {
        Piece::Plain(s) => push_literal(out, s),
        Piece::Char(c) => out.push(c),
    })
}

/// Whether every reference in `raw` character data resolves (no copy made).
pub fn references_resolve(raw: &str) -> bool {
    for_each_piece(raw, |_| {}).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(doc: &str) -> Result<Vec<String>, String> {
        let mut s = Scanner::new(doc.as_bytes())?;
        let mut out = Vec::new();
        while let Some(t) = s.next_token()? {
            out.push(match t {
                Token::Start(n) => format!("<{n}>"),
                Token::End(n) => format!("</{n}>"),
                Token::Text(t) => format!("T{t}"),
                Token::CData(t) => format!("C{t}"),
            });
        }
        Ok(out)
    }

    #[test]
    fn well_formed_documents() {
        let table: &[(&str, &[&str])] = &[
            ("<a/>", &["<a>", "</a>"]),
            (
                "<?xml version=\"1.0\"?>\n<a>x</a>\n",
                &["<a>", "Tx", "</a>"],
            ),
            ("\u{feff}<a></a>", &["<a>", "</a>"]),
            (
                "<s3:a xmlns:s3=\"u\"><s3:b>1</s3:b></s3:a>",
                &["<a>", "<b>", "T1", "</b>", "</a>"],
            ),
            ("<a k=\"x>y\" j='/'>t</a >", &["<a>", "Tt", "</a>"]),
            (
                "<a><b k='1'/><c /></a>",
                &["<a>", "<b>", "</b>", "<c>", "</c>", "</a>"],
            ),
            (
                "<a><!-- <b> --><![CDATA[<&]]>&amp;</a>",
                &["<a>", "C<&", "T&amp;", "</a>"],
            ),
            (
                "<a>\n  <b>x y</b>\n</a>",
                &["<a>", "T\n  ", "<b>", "Tx y", "</b>", "T\n", "</a>"],
            ),
            ("<a><?pi x?>é</a><!-- end -->", &["<a>", "Té", "</a>"]),
            ("<x:a xmlns:x='u'></x:a >", &["<a>", "</a>"]),
        ];
        for (doc, want) in table {
            assert_eq!(tokens(doc).unwrap(), *want, "{doc}");
        }
    }

    #[test]
    fn malformed_documents_are_refused() {
        for doc in [
            "",
            "<?xml version=\"1.0\"?>",
            "<a>",
            "<a></b>",
            "</a>",
            "<a><b></a></b>",
            "<a",
            "<a k=\"x>",
            "<a><!-- x</a>",
            "<a><![CDATA[x</a>",
            "<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>",
            "x<a/>",
            "<a/>x",
            "<a/><b/>",
            "<a></a><b></b>",
            "<>",
            "<a <b>",
            "<s3:a></x:a>",
            "<a></s3:a>",
            "<a k=\"<b>\"></a>",
        ] {
            assert!(
                tokens(doc).is_err(),
                "{doc:?} was accepted: {:?}",
                tokens(doc)
            );
        }
        assert!(Scanner::new(b"<a>\xff</a>").is_err(), "not UTF-8");
        let deep = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        assert!(tokens(&deep(MAX_DEPTH)).is_ok());
        assert!(tokens(&deep(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn references() {
        let table: &[(&str, Option<&str>)] = &[
            ("plain", Some("plain")),
            ("&quot;e&quot;", Some("\"e\"")),
            ("a&amp;b&lt;c&gt;d&apos;", Some("a&b<c>d'")),
            ("&#x41;&#66;&#x1F600;&#xD;", Some("AB\u{1F600}\r")),
            ("a\r\nb\rc\n", Some("a\nb\nc\n")),
            ("&#xD;&#10;", Some("\r\n")),
            ("&#0;", None),
            ("&#0000000065;&#x000000041;", Some("AA")),
            ("&#x+41;", None),
            ("&#+65;", None),
            ("&#x;", None),
            ("&#;", None),
            ("&#xD800;", None),
            ("&nbsp;", None),
            ("a & b", None),
            ("&amp", None),
        ];
        for (raw, want) in table {
            let mut out = String::new();
            let got = unescape_into(&mut out, raw).map(|_| out);
            assert_eq!(got.ok().as_deref(), *want, "{raw}");
        }
    }
}
