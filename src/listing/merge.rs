//! Merging backend listings into one page of the virtual bucket.
//!
//! The virtual bucket holds `<ds>/<key>` for every data source the caller may read. Because a data source
//! name holds no `/`, each data source is one contiguous block of the virtual key space, so walking the
//! data sources in the order of `<name>/` and each one's backend keys in order yields the virtual keys in
//! S3 (UTF-8 byte) order. The page is filled entry by entry; one entry past the page is looked for so that
//! `IsTruncated` is exact, and backend pages are followed by their own continuation tokens (a short backend
//! page never ends the listing early).
//!
//! Delimiters: rolling keys up into common prefixes is always done here, on virtual keys after the client's
//! prefix. Asking the backend to roll up too is an optimisation, used only when its rollup is guaranteed to
//! be the same (the delimiter cannot straddle the boundary between the data source name and its keys).
//!
//! Directories of data sources: each data source also holds a "phantom" entry `<ds>/` that is never listed
//! as an object but does produce a common prefix, so that with `delimiter=/` at the root every entitled data
//! source shows as `<ds>/` even when it is empty (as Immuta shows them).

use crate::config::DataSource;
use crate::error::{S3Error, S3ErrorCode};
use crate::xml::XmlText;
use async_trait::async_trait;

/// The longest virtual key (or common prefix) a listing shows, in bytes. S3 keys are at most 1,024 bytes,
/// but a backend may hold longer ones (put there directly, not through s3p), and every listed name may
/// become the position a client sends back (v1 marker, v2 sealed token): a walk passes a key only if the
/// position after it comes back. 8 KiB lets every such position (a token is 4/3 of it, a marker of ASCII
/// about its length) fit in a request head of the default `max_header_bytes` (16 KiB), as the key itself
/// must fit there for a GET. Longer keys are left out of listings, so that a walk always reaches its end.
pub const MAX_LISTED_KEY_LEN: usize = 8 * 1024;

/// The longest position s3p emits or accepts, in bytes: a listed name, or a name cut to
/// [`MAX_LISTED_KEY_LEN`] followed by U+10FFFF (the v1 marker for "after everything under it").
pub const MAX_POSITION_LEN: usize = MAX_LISTED_KEY_LEN + char::MAX.len_utf8();

/// Where a listing resumes. Positions are virtual strings, never backend ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    Start,
    /// Everything strictly after this virtual key.
    After(String),
    /// Everything after this common prefix, skipping every key that starts with it (how S3 resumes from a
    /// `NextMarker` that is a common prefix).
    AfterPrefix(String),
}

impl Position {
    /// Whether an entry whose underlying virtual key is `key` lies after the position.
    fn admits_key(&self, key: &str) -> bool {
        match self {
            Position::Start => true,
            Position::After(k) => key > k.as_str(),
            Position::AfterPrefix(p) => key > p.as_str() && !key.starts_with(p.as_str()),
        }
    }

    /// Whether a common prefix reported by a backend (so holding at least one key after the backend's
    /// start-after) can still hold keys after the position.
    fn admits_prefix(&self, cp: &str) -> bool {
        match self {
            Position::Start => true,
            Position::After(k) => cp > k.as_str() || k.starts_with(cp),
            Position::AfterPrefix(p) => {
                !cp.starts_with(p.as_str()) && (cp > p.as_str() || p.starts_with(cp))
            }
        }
    }

    /// True when every key of the block `root...` (all strings starting with `root`) lies before the position.
    fn is_past_block(&self, root: &str) -> bool {
        match self {
            Position::Start => false,
            Position::After(k) => k.as_str() > root && !k.starts_with(root),
            Position::AfterPrefix(p) => {
                root.starts_with(p.as_str()) || (p.as_str() > root && !p.starts_with(root))
            }
        }
    }

    /// The position a client marker (v1 `marker`, v2 `start-after`) stands for: a marker that is itself a
    /// common prefix under the query's prefix and delimiter skips everything under it.
    pub fn from_marker(marker: &str, prefix: &str, delimiter: Option<&str>) -> Position {
        if marker.is_empty() {
            return Position::Start;
        }
        if let Some(cp) = rollup(marker, prefix, delimiter) {
            if cp.len() == marker.len() {
                return Position::AfterPrefix(marker.to_string());
            }
        }
        Position::After(marker.to_string())
    }

    /// The v1 marker a client sends back to resume here. A position after a block that is not itself a
    /// common prefix of the query (a data source's root, reached by a page the budget ended) has no exact
    /// marker: the largest character after it stands for "after everything under it".
    pub fn as_marker(&self, prefix: &str, delimiter: Option<&str>) -> String {
        match self {
            Position::Start => String::new(),
            Position::After(k) => k.clone(),
            Position::AfterPrefix(p) => match Position::from_marker(p, prefix, delimiter) {
                Position::AfterPrefix(_) => p.clone(),
                _ => format!("{p}{}", char::MAX),
            },
        }
    }
}

/// The common prefix that `key` rolls up into, if any: the key up to and including the first occurrence of
/// the delimiter after the prefix.
pub fn rollup<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.strip_prefix(prefix)?;
    rest.find(d).map(|i| &key[..prefix.len() + i + d.len()])
}

/// What the client asked for, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub start: Position,
    /// 0..=1000.
    pub max_keys: usize,
    pub budget: CallBudget,
}

/// How many backend calls one client page may cost, so that no query can turn one request into
/// thousands of backend listings (a delimiter s3p must roll up itself, a marker deep in a large subtree,
/// many empty data sources). A page that reaches the budget ends early, truncated, at the position it
/// reached: the walk over all pages is the same, only cut into more pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    /// Once the page holds at least one entry, it ends when this many calls are spent.
    pub soft: usize,
    /// The page ends here even when it holds nothing yet (then at the last position the backends reached).
    pub hard: usize,
}

impl CallBudget {
    /// The hard cap on top of a configured soft budget.
    pub const HARD_CAP: usize = 32;

    pub fn new(soft: usize) -> CallBudget {
        let soft = soft.max(1);
        CallBudget {
            soft,
            hard: soft.max(Self::HARD_CAP),
        }
    }

    /// No limit: for tests and tools that want whole pages whatever they cost.
    pub const UNLIMITED: CallBudget = CallBudget {
        soft: usize::MAX,
        hard: usize::MAX,
    };
}

/// An object as listed, with its key in the virtual namespace (or, inside [`BackendPage`], the backend's).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectEntry {
    pub key: String,
    pub last_modified: XmlText,
    pub etag: XmlText,
    pub size: u64,
    /// `None` for STANDARD.
    pub storage_class: Option<XmlText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Object(ObjectEntry),
    CommonPrefix(String),
}

impl Entry {
    /// The key or prefix the entry is listed under.
    pub fn name(&self) -> &str {
        match self {
            Entry::Object(o) => &o.key,
            Entry::CommonPrefix(p) => p,
        }
    }
}

/// One page of the virtual listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub entries: Vec<Entry>,
    pub is_truncated: bool,
    /// Where the next page starts; set when truncated.
    pub next: Option<Position>,
    /// The page ended because its backend call budget was spent (it may hold fewer than max-keys
    /// entries, or none).
    pub cut_by_budget: bool,
    /// Backend calls the page cost.
    pub backend_calls: usize,
}

/// One ListObjectsV2 call to a backend bucket, in backend terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub start_after: Option<String>,
    pub continuation: Option<String>,
    pub max_keys: usize,
}

/// What a backend answered, keys and prefixes already URL-decoded but still in backend terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendPage {
    pub objects: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
    /// The backend's own continuation token; `None` when the backend has nothing more.
    pub next_continuation: Option<String>,
}

/// A source of backend pages. The real one sends HTTP requests; tests use an in-memory one.
#[async_trait]
pub trait PageSource: Sync {
    async fn list(
        &self,
        data_source: &DataSource,
        request: BackendListRequest,
    ) -> Result<BackendPage, S3Error>;
}

/// Collects entries, merging equal adjacent common prefixes, until it holds `limit` entries.
struct Collector {
    entries: Vec<Entry>,
    limit: usize,
}

impl Collector {
    fn push(&mut self, entry: Entry) {
        if let (Entry::CommonPrefix(new), Some(Entry::CommonPrefix(last))) =
            (&entry, self.entries.last())
        {
            if new == last {
                return;
            }
        }
        self.entries.push(entry);
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= self.limit
    }
}

/// Backend pages are asked for in this size at most (S3's own maximum).
const BACKEND_PAGE: usize = 1000;

/// Lists one page of the virtual bucket over the given (entitled) data sources.
pub async fn list_page<S: PageSource + ?Sized>(
    source: &S,
    data_sources: &[&DataSource],
    query: &ListQuery,
) -> Result<ListPage, S3Error> {
    if query.max_keys == 0 {
        return Ok(ListPage {
            entries: Vec::new(),
            is_truncated: false,
            next: None,
            cut_by_budget: false,
            backend_calls: 0,
        });
    }
    // `data-private/` sorts before `data/`: order by the block's root, not by the bare name.
    let mut sorted: Vec<&DataSource> = data_sources.to_vec();
    sorted.sort_by_cached_key(|ds| format!("{}/", ds.name));

    let mut out = Collector {
        entries: Vec::with_capacity(query.max_keys + 1),
        limit: query.max_keys + 1,
    };
    let prefix = query.prefix.as_str();
    let delimiter = query.delimiter.as_deref().filter(|d| !d.is_empty());
    let budget = query.budget;
    let mut calls = 0usize;
    // How far the walk has gone, for a page the budget ends before it holds any entry.
    let mut reached: Option<Position> = None;
    let mut cut_by_budget = false;

    let mut more_after_page = false;
    'sources: for ds in sorted {
        if out.is_full() {
            break;
        }
        let root = format!("{}/", ds.name);
        if query.start.is_past_block(&root) {
            continue;
        }
        // The part of the client's prefix inside the data source, or the part of the root after the prefix.
        let (inside_prefix, root_rest) = if let Some(inside) = prefix.strip_prefix(root.as_str()) {
            (inside, "")
        } else if let Some(rest) = root.strip_prefix(prefix) {
            ("", rest)
        } else {
            continue;
        };

        // The whole data source rolls up into one common prefix when the delimiter occurs in the root itself.
        let whole_ds_prefix = delimiter.and_then(|d| {
            root_rest
                .find(d)
                .map(|i| format!("{prefix}{}", &root_rest[..i + d.len()]))
        });
        if let Some(cp) = &whole_ds_prefix {
            if query.start.admits_key(&root) {
                // The phantom `<ds>/` entry is after the position: no backend call needed.
                out.push(Entry::CommonPrefix(cp.clone()));
                continue;
            }
        }

        let straddles = delimiter.is_some_and(|d| {
            (1..d.len()).any(|j| d.is_char_boundary(j) && root_rest.ends_with(&d[..j]))
        });
        let backend_delimiter = if whole_ds_prefix.is_none() && !straddles {
            delimiter.map(str::to_string)
        } else {
            None
        };
        let backend_prefix = format!("{}{}", ds.prefix, inside_prefix);
        // A start-after below the prefix excludes nothing under it, so it is not sent: some backends
        // (Garage 2.5) answer an empty page when keys outside the prefix lie between the two. A position
        // after a common prefix resumes after its whole subtree (U+10FFFF is the largest character), not
        // at the prefix itself, which would page through everything under it only to skip it.
        let start_after = match &query.start {
            Position::After(k) => k
                .strip_prefix(root.as_str())
                .map(|inside| format!("{}{}", ds.prefix, inside)),
            Position::AfterPrefix(p) => p
                .strip_prefix(root.as_str())
                .map(|inside| format!("{}{}{}", ds.prefix, inside, char::MAX)),
            Position::Start => None,
        }
        .filter(|s| s.as_str() >= backend_prefix.as_str());
        let mut request = BackendListRequest {
            prefix: backend_prefix,
            delimiter: backend_delimiter,
            start_after,
            continuation: None,
            max_keys: if whole_ds_prefix.is_some() {
                1
            } else {
                BACKEND_PAGE
            },
        };

        'pages: loop {
            if calls >= budget.hard || (calls >= budget.soft && !out.entries.is_empty()) {
                cut_by_budget = true;
                break 'sources;
            }
            calls += 1;
            let page = source.list(ds, request.clone()).await?;
            // The last name the backend listed, in virtual terms (even one the merge drops, such as an
            // object named like the data source's prefix): how far this call moved the walk.
            let last_item = [
                page.objects.last().map(|o| o.key.as_str()),
                page.common_prefixes.last().map(String::as_str),
            ]
            .into_iter()
            .flatten()
            .max()
            .and_then(|k| k.strip_prefix(ds.prefix.as_str()))
            .map(|inside| format!("{root}{inside}"));
            let items = virtual_entries(ds, page.objects, page.common_prefixes);
            let mut filled_here = false;
            // The common prefix s3p itself rolled the latest keys into (the backend did not).
            let mut rolled_locally: Option<String> = None;
            for item in items {
                let is_prefix = matches!(item, Entry::CommonPrefix(_));
                let name = item.name();
                if !prefix.is_empty() && !name.starts_with(prefix) {
                    continue;
                }
                let admitted = if is_prefix {
                    query.start.admits_prefix(name)
                } else {
                    query.start.admits_key(name)
                };
                if !admitted {
                    continue;
                }
                let rolled = rollup(name, prefix, delimiter).map(str::to_string);
                let rolled_here = !is_prefix && rolled.is_some();
                let entry = match rolled {
                    Some(cp) => Entry::CommonPrefix(cp),
                    None => item,
                };
                if rolled_here && request.delimiter.is_none() {
                    if let Entry::CommonPrefix(cp) = &entry {
                        if rolled_locally.as_deref() != Some(cp.as_str()) {
                            rolled_locally = Some(cp.clone());
                        }
                    }
                }
                out.push(entry);
                filled_here |= out.entries.len() == query.max_keys;
                if out.is_full() || whole_ds_prefix.is_some() {
                    break 'pages;
                }
            }
            if let Some(name) = last_item {
                reached = Some(reached_after(&name, prefix, delimiter, &query.start));
            }
            // Rolled up here, not by the backend: when the page ends inside that common prefix, the rest
            // of its subtree rolls into it too, so ask the backend to go on after the whole subtree
            // instead of paging through it. (Keys under it that follow U+10FFFF, the largest character,
            // are still returned, and skipped as duplicates.)
            if let (Some(cp), Some(Position::AfterPrefix(last))) = (&rolled_locally, &reached) {
                if last == cp {
                    if let Some(inside) = cp.strip_prefix(root.as_str()) {
                        let skip = format!("{}{inside}{}", ds.prefix, char::MAX);
                        if page.next_continuation.is_some() {
                            request.start_after = Some(skip);
                            request.continuation = None;
                            continue 'pages;
                        }
                    }
                }
            }
            match page.next_continuation {
                // The page is full and the backend has more: when the backend rolls up (or there is no
                // delimiter), its next entry is after every entry of this page, hence admitted and a new
                // entry of ours. The page is then truncated without fetching one entry more, which
                // would cost a second backend call per page. (Unless all that follows is too long to
                // list: then the next page is empty, and not truncated.)
                Some(_) if filled_here && request.delimiter.as_deref() == delimiter => {
                    more_after_page = true;
                    break 'sources;
                }
                // A backend answering with the token it was sent would be asked forever.
                Some(token) if request.continuation.as_ref() == Some(&token) => {
                    log::warn!(
                        "the backend of data source {} repeats its listing token",
                        ds.name
                    );
                    return Err(S3Error::with_message(
                        S3ErrorCode::InternalError,
                        "The data source's storage sent an unreadable listing.",
                    ));
                }
                Some(token) => {
                    request.continuation = Some(token);
                    request.start_after = None;
                }
                None => break,
            }
        }
        reached = Some(Position::AfterPrefix(root));
    }

    let is_truncated = out.entries.len() > query.max_keys || more_after_page || cut_by_budget;
    let mut entries = out.entries;
    entries.truncate(query.max_keys);
    let next = if is_truncated {
        match entries.last() {
            Some(Entry::Object(o)) => Some(Position::After(o.key.clone())),
            Some(Entry::CommonPrefix(p)) => Some(Position::AfterPrefix(p.clone())),
            // Cut before any entry: go on where the backends stopped.
            None => reached.or_else(|| Some(query.start.clone())),
        }
    } else {
        None
    };
    Ok(ListPage {
        entries,
        is_truncated,
        next,
        cut_by_budget,
        backend_calls: calls,
    })
}

/// The position just after a listed name `name` (the last one a backend page held), for a page that ends
/// before holding any entry. A name that rolls up stands for its whole common prefix, unless that is
/// where the walk started (keys under it after U+10FFFF): then only for itself, so the walk moves on.
/// A name too long to list stands for everything under its first [`MAX_LISTED_KEY_LEN`] bytes (see
/// [`after_overlong`]), so that the position stays short enough to come back.
fn reached_after(name: &str, prefix: &str, delimiter: Option<&str>, start: &Position) -> Position {
    if name.len() > MAX_LISTED_KEY_LEN {
        return after_overlong(name);
    }
    match rollup(name, prefix, delimiter) {
        Some(cp) if !matches!(start, Position::AfterPrefix(p) if p == cp) => {
            Position::AfterPrefix(cp.to_string())
        }
        _ => Position::After(name.to_string()),
    }
}

/// The position after a name longer than [`MAX_LISTED_KEY_LEN`], in at most [`MAX_LISTED_KEY_LEN`] bytes:
/// after everything under `cut`, its longest prefix of whole characters within the bound. That skips no
/// listed name after `name`: a listed name under `cut` is `cut` plus fewer bytes than the character that
/// `name` has next (it straddles the bound), so its next character has a smaller first byte (UTF-8 lead
/// bytes grow with the width), and it sorts before `name`. The names under `cut` up to `name` were passed.
fn after_overlong(name: &str) -> Position {
    Position::AfterPrefix(head(name, MAX_LISTED_KEY_LEN).to_string())
}

#[cfg(test)]
pub(crate) fn reached_after_for_tests(name: &str) -> Position {
    reached_after(name, "", None, &Position::Start)
}

/// The longest prefix of `s` of whole characters in at most `max` bytes.
fn head(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether a name may be listed; see [`MAX_LISTED_KEY_LEN`]. Logged, since the key then exists on its
/// backend but in no listing: the first time as a warning, then at debug level, because every page that
/// passes over the key drops it again (thousands of lines for one key in a walk of small pages).
fn listable(ds: &DataSource, name: &str) -> bool {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let ok = name.len() <= MAX_LISTED_KEY_LEN;
    if !ok {
        let level = match WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            false => log::Level::Warn,
            true => log::Level::Debug,
        };
        log::log!(
            level,
            "data source {}: a key of {} bytes is left out of listings (more than {MAX_LISTED_KEY_LEN}; \
             further ones are logged at debug level): {:?}...",
            ds.name,
            name.len(),
            head(name, 64)
        );
    }
    ok
}

/// A backend page in virtual terms and in key order: its objects and common prefixes (each list already in
/// order) merged, entries outside the data source's prefix or too long to list dropped.
fn virtual_entries(
    ds: &DataSource,
    objects: Vec<ObjectEntry>,
    prefixes: Vec<String>,
) -> Vec<Entry> {
    let mut out = Vec::with_capacity(objects.len() + prefixes.len());
    let objects = objects.into_iter().filter_map(|o| {
        let key = crate::namespace::from_backend_key(ds, &o.key).filter(|k| listable(ds, k))?;
        Some(Entry::Object(ObjectEntry { key, ..o }))
    });
    if prefixes.is_empty() {
        out.extend(objects);
        return out;
    }
    let mut objects = objects.peekable();
    let mut prefixes = prefixes
        .iter()
        .filter_map(|p| crate::namespace::from_backend_key(ds, p))
        .filter(|p| listable(ds, p))
        .map(Entry::CommonPrefix)
        .peekable();
    loop {
        let take_object = match (objects.peek(), prefixes.peek()) {
            (Some(o), Some(p)) => o.name() <= p.name(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        let next = if take_object {
            objects.next()
        } else {
            prefixes.next()
        };
        out.extend(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_table() {
        let table: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            ("a/b/c", "", Some("/"), Some("a/")),
            ("a/b/c", "a/", Some("/"), Some("a/b/")),
            ("a/b", "a/", Some("/"), None),
            ("a/b", "a/", None, None),
            ("data-private/x", "", Some("-"), Some("data-")),
            ("abXYcd", "", Some("XY"), Some("abXY")),
            ("other/x", "a/", Some("/"), None),
        ];
        for (key, prefix, d, want) in table {
            assert_eq!(rollup(key, prefix, *d), *want, "{key} {prefix} {d:?}");
        }
    }

    #[test]
    fn markers_that_are_common_prefixes_skip_their_subtree() {
        assert_eq!(
            Position::from_marker("a/", "", Some("/")),
            Position::AfterPrefix("a/".into())
        );
        assert_eq!(
            Position::from_marker("a/b", "", Some("/")),
            Position::After("a/b".into())
        );
        assert_eq!(
            Position::from_marker("a/", "", None),
            Position::After("a/".into())
        );
        assert_eq!(Position::from_marker("", "", Some("/")), Position::Start);
    }

    /// Always the same short page and the same token, whatever it is asked.
    struct StuckBackend;

    #[async_trait]
    impl PageSource for StuckBackend {
        async fn list(
            &self,
            _: &DataSource,
            _: BackendListRequest,
        ) -> Result<BackendPage, S3Error> {
            Ok(BackendPage {
                objects: Vec::new(),
                common_prefixes: vec!["skipped/".into()],
                next_continuation: Some("same".into()),
            })
        }
    }

    #[test]
    fn a_backend_repeating_its_token_ends_the_listing_with_an_error() {
        let ds = DataSource {
            name: "data".into(),
            backend: "b".into(),
            bucket: "real".into(),
            prefix: String::new(),
            writable: false,
        };
        let query = ListQuery {
            prefix: "data/other".into(),
            delimiter: Some("/".into()),
            start: Position::Start,
            max_keys: 10,
            budget: CallBudget::UNLIMITED,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let page = rt.block_on(list_page(&StuckBackend, &[&ds], &query));
        assert_eq!(page.unwrap_err().code, S3ErrorCode::InternalError);
    }

    #[test]
    fn blocks_before_the_position_are_skipped() {
        assert!(Position::After("sales/z".into()).is_past_block("data/"));
        assert!(!Position::After("data".into()).is_past_block("data/"));
        assert!(!Position::After("data/x".into()).is_past_block("data/"));
        assert!(Position::AfterPrefix("data-".into()).is_past_block("data-private/"));
        assert!(!Position::AfterPrefix("data-".into()).is_past_block("data/"));
    }
}
