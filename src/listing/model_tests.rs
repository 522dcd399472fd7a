//! Model-based test of the merge: thousands of generated bucket layouts and queries, each listed page by page
//! through [`list_page`] against an in-memory page source (the merge's own input, with short pages), and
//! compared with a brute-force model of "one bucket holding `<ds>/<key>` for the entitled data sources".

use super::merge::*;
use crate::config::DataSource;
use crate::error::S3Error;
use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Backend buckets in memory: bucket -> sorted keys. Pages are cut short at random (but never empty
/// unless the listing is done), the way real backends may.
struct MemorySource {
    buckets: BTreeMap<String, Vec<String>>,
    short_pages: usize,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl PageSource for MemorySource {
    async fn list(&self, ds: &DataSource, r: BackendListRequest) -> Result<BackendPage, S3Error> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let none = Vec::new();
        let keys = self.buckets.get(&ds.bucket).unwrap_or(&none);
        let after = r
            .continuation
            .clone()
            .or(r.start_after.clone())
            .unwrap_or_default();
        let limit = r.max_keys.min(self.short_pages).max(1);
        let mut page = BackendPage::default();
        let mut last_name: Option<String> = None;
        let mut count = 0;
        for k in keys
            .iter()
            .filter(|k| k.starts_with(&r.prefix) && k.as_str() > after.as_str())
        {
            // S3 semantics: filter keys after start-after, then roll up.
            match rollup(k, &r.prefix, r.delimiter.as_deref()) {
                Some(cp) => {
                    if page.common_prefixes.last().map(String::as_str) == Some(cp) {
                        continue;
                    }
                    if count == limit {
                        page.next_continuation = last_name.clone();
                        return Ok(page);
                    }
                    page.common_prefixes.push(cp.to_string());
                    // A continuation after a common prefix skips its whole subtree.
                    last_name = Some(format!("{cp}\u{10FFFF}"));
                }
                None => {
                    if count == limit {
                        page.next_continuation = last_name.clone();
                        return Ok(page);
                    }
                    page.objects.push(ObjectEntry {
                        key: k.clone(),
                        last_modified: "2024-01-01T00:00:00.000Z".into(),
                        etag: format!("\"{}\"", k.len()).into(),
                        size: k.len() as u64,
                        storage_class: None,
                    });
                    last_name = Some(k.clone());
                }
            }
            count += 1;
        }
        Ok(page)
    }
}

/// The reference: every entry of the virtual bucket after `start`, rolled up and in order.
fn model_entries(keys: &[(String, bool)], q: &ListQuery, start: &Position) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (key, phantom) in keys {
        if !key.starts_with(&q.prefix) || !admits(start, key) {
            continue;
        }
        let name = match rollup(key, &q.prefix, q.delimiter.as_deref()) {
            Some(cp) => format!("P:{cp}"),
            None if *phantom => continue,
            None => format!("K:{key}"),
        };
        if out.last() != Some(&name) {
            out.push(name);
        }
    }
    out
}

fn admits(p: &Position, key: &str) -> bool {
    match p {
        Position::Start => true,
        Position::After(k) => key > k.as_str(),
        Position::AfterPrefix(x) => key > x.as_str() && !key.starts_with(x.as_str()),
    }
}

fn show(e: &Entry) -> String {
    match e {
        Entry::Object(o) => format!("K:{}", o.key),
        Entry::CommonPrefix(p) => format!("P:{p}"),
    }
}

const ALPHABET: &[&str] = &["a", "b", "/", "-", "é", "x", " ", "+", "%", "~"];
const NAMES: &[&str] = &[
    "data",
    "data-private",
    "dat",
    "d",
    "sales",
    "salaries",
    "a-b",
];
const DELIMITERS: &[Option<&str>] = &[
    None,
    Some("/"),
    Some("-"),
    Some("a/"),
    Some("/b"),
    Some("é"),
];

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let n = rng.gen_range(1..=max);
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
        .collect()
}

fn run_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Data sources: some share a bucket under prefixes `<name>/`, some own a bucket root.
    let mut buckets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut model: Vec<(String, bool)> = Vec::new();
    let mut entitled = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        if rng.gen_bool(0.3) {
            continue;
        }
        let shared = rng.gen_bool(0.5);
        let (bucket, prefix) = if shared {
            ("shared".to_string(), format!("{name}/"))
        } else {
            (format!("b{i}"), String::new())
        };
        let ds = DataSource {
            name: name.to_string(),
            backend: "mem".into(),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            writable: false,
        };
        let n = rng.gen_range(0..8);
        let is_entitled = rng.gen_bool(0.8);
        for _ in 0..n {
            let rel = random_string(&mut rng, 6);
            buckets
                .entry(bucket.clone())
                .or_default()
                .push(format!("{prefix}{rel}"));
            if is_entitled {
                model.push((format!("{name}/{rel}"), false));
            }
        }
        // Noise next to the prefix that must never show (an object named like the prefix, a sibling prefix).
        if shared {
            buckets
                .entry(bucket.clone())
                .or_default()
                .push(prefix.clone());
            buckets
                .entry(bucket.clone())
                .or_default()
                .push(format!("{name}-noise/x"));
        }
        if is_entitled {
            model.push((format!("{name}/"), true));
            entitled.push(ds);
        }
    }
    for keys in buckets.values_mut() {
        keys.sort();
        keys.dedup();
    }
    model.sort();
    model.dedup();

    // Query: a prefix cut from a real key or random, a delimiter, a marker.
    let prefix = match rng.gen_range(0..4) {
        0 => String::new(),
        1 if !model.is_empty() => {
            let k = &model[rng.gen_range(0..model.len())].0;
            let cut: Vec<char> = k.chars().collect();
            cut[..rng.gen_range(0..=cut.len())].iter().collect()
        }
        2 => NAMES[rng.gen_range(0..NAMES.len())]
            .chars()
            .take(2)
            .collect(),
        _ => random_string(&mut rng, 3),
    };
    let delimiter = DELIMITERS[rng.gen_range(0..DELIMITERS.len())].map(str::to_string);
    let start = match rng.gen_range(0..3) {
        0 => Position::Start,
        1 if !model.is_empty() => {
            let k = &model[rng.gen_range(0..model.len())].0;
            Position::from_marker(k, &prefix, delimiter.as_deref())
        }
        _ => Position::from_marker(&random_string(&mut rng, 5), &prefix, delimiter.as_deref()),
    };
    let max_keys = rng.gen_range(0..5);
    let source = MemorySource {
        buckets,
        short_pages: rng.gen_range(1..4),
        calls: Default::default(),
    };
    let ds_refs: Vec<&DataSource> = entitled.iter().collect();

    // Half the cases with a small backend call budget: pages end early, the walk must not change.
    let budget = if rng.gen_bool(0.5) {
        CallBudget::UNLIMITED
    } else {
        let soft = rng.gen_range(1..3);
        CallBudget {
            soft,
            hard: rng.gen_range(soft..4),
        }
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut position = start.clone();
    let want_all = {
        let q = ListQuery {
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            start: start.clone(),
            max_keys,
            budget,
        };
        model_entries(&model, &q, &start)
    };
    let mut walked: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        let q = ListQuery {
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            start: position.clone(),
            max_keys,
            budget,
        };
        let page = rt.block_on(list_page(&source, &ds_refs, &q)).unwrap();
        let want = model_entries(&model, &q, &position);
        let got: Vec<String> = page.entries.iter().map(show).collect();
        let ctx = format!(
            "seed {seed} prefix {prefix:?} delim {delimiter:?} pos {position:?} max {max_keys} {budget:?}"
        );
        if std::env::var("S3P_DEBUG_SEED").ok() == Some(seed.to_string()) && pages < 5 {
            eprintln!("{ctx}: {page:?} want {want:?} model {model:?}");
        }
        assert!(page.backend_calls <= budget.hard, "{ctx}");
        if page.cut_by_budget {
            // A short page, still in order, ending where the next one starts.
            assert!(page.is_truncated, "{ctx}");
            assert!(got.len() <= max_keys, "{ctx}");
            assert_eq!(got, want[..got.len().min(want.len())], "{ctx}");
            assert!(
                !got.is_empty() || page.backend_calls == budget.hard,
                "{ctx}: an empty page before the hard cap"
            );
        } else {
            assert_eq!(
                got,
                want.iter().take(max_keys).cloned().collect::<Vec<_>>(),
                "{ctx}"
            );
            assert_eq!(
                page.is_truncated,
                want.len() > max_keys && max_keys > 0,
                "{ctx}"
            );
        }
        walked.extend(got);
        if !page.is_truncated {
            assert!(page.next.is_none());
            break;
        }
        let next = page
            .next
            .clone()
            .expect("truncated pages say where to go on");
        // A v1 client resumes from the NextMarker string: it must mean the same position.
        let via_marker = Position::from_marker(
            &next.as_marker(&prefix, delimiter.as_deref()),
            &prefix,
            delimiter.as_deref(),
        );
        assert_eq!(
            model_entries(&model, &q, &via_marker),
            model_entries(&model, &q, &next),
            "{ctx}: marker for {next:?}"
        );
        position = next;
        pages += 1;
        assert!(pages < 400, "{ctx}: listing does not end");
    }
    if max_keys > 0 {
        assert_eq!(walked, want_all, "seed {seed}: the whole walk");
    }
}

#[test]
fn merge_matches_the_one_bucket_model() {
    for seed in 0..5000 {
        if let Ok(only) = std::env::var("S3P_DEBUG_SEED") {
            if only != seed.to_string() {
                continue;
            }
        }
        run_case(seed);
    }
}

#[test]
fn data_sources_show_as_directories_at_the_root_even_when_empty() {
    let ds = |n: &str| DataSource {
        name: n.into(),
        backend: "m".into(),
        bucket: format!("b-{n}"),
        prefix: String::new(),
        writable: false,
    };
    let (a, b) = (ds("sales"), ds("data"));
    let mut buckets = BTreeMap::new();
    buckets.insert("b-sales".to_string(), vec!["q1.csv".to_string()]);
    let source = MemorySource {
        buckets,
        short_pages: 1000,
        calls: Default::default(),
    };
    let q = ListQuery {
        prefix: String::new(),
        delimiter: Some("/".into()),
        start: Position::Start,
        max_keys: 1000,
        budget: CallBudget::UNLIMITED,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let page = rt.block_on(list_page(&source, &[&a, &b], &q)).unwrap();
    let got: Vec<String> = page.entries.iter().map(show).collect();
    assert_eq!(got, vec!["P:data/", "P:sales/"]);
    assert_eq!(
        source.calls.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "root directories need no backend call"
    );
}

#[test]
fn a_locally_rolled_prefix_is_skipped_not_paged_through() {
    // `/2` straddles `sales/` and the keys, so the backend cannot roll up: s3p does, and must then jump
    // past the subtree instead of reading all 500 keys 10 at a time.
    let ds = DataSource {
        name: "sales".into(),
        backend: "m".into(),
        bucket: "b".into(),
        prefix: String::new(),
        writable: false,
    };
    let mut keys: Vec<String> = (0..500).map(|i| format!("2/x{i:04}")).collect();
    keys.push("3-last".into());
    keys.sort();
    let mut buckets = BTreeMap::new();
    buckets.insert("b".to_string(), keys);
    let source = MemorySource {
        buckets,
        short_pages: 10,
        calls: Default::default(),
    };
    let q = ListQuery {
        prefix: String::new(),
        delimiter: Some("/2".into()),
        start: Position::Start,
        max_keys: 1000,
        budget: CallBudget::UNLIMITED,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let page = rt.block_on(list_page(&source, &[&ds], &q)).unwrap();
    let got: Vec<String> = page.entries.iter().map(show).collect();
    assert_eq!(got, vec!["P:sales/2", "K:sales/3-last"]);
    let calls = source.calls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(calls <= 3, "{calls} backend calls");
}

#[test]
fn a_full_page_costs_one_backend_call() {
    let ds = DataSource {
        name: "sales".into(),
        backend: "m".into(),
        bucket: "b".into(),
        prefix: "p/".into(),
        writable: false,
    };
    let keys: Vec<String> = (0..2500).map(|i| format!("p/k{i:05}")).collect();
    let mut buckets = BTreeMap::new();
    buckets.insert("b".to_string(), keys);
    let source = MemorySource {
        buckets,
        short_pages: 1000,
        calls: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut start = Position::Start;
    let mut pages = 0;
    loop {
        let q = ListQuery {
            prefix: String::new(),
            delimiter: None,
            start: start.clone(),
            max_keys: 1000,
            budget: CallBudget::UNLIMITED,
        };
        let page = rt.block_on(list_page(&source, &[&ds], &q)).unwrap();
        pages += 1;
        match page.next {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        source.calls.load(std::sync::atomic::Ordering::Relaxed),
        3,
        "one backend call per page"
    );
}

/// Walks a whole listing page by page; returns the entries and the backend calls of each page.
fn walk(
    source: &MemorySource,
    data_sources: &[&DataSource],
    mut query: ListQuery,
) -> (Vec<String>, Vec<usize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (mut entries, mut calls) = (Vec::new(), Vec::new());
    loop {
        let page = rt
            .block_on(list_page(source, data_sources, &query))
            .unwrap();
        entries.extend(page.entries.iter().map(show));
        calls.push(page.backend_calls);
        match page.next {
            Some(next) => query.start = next,
            None => return (entries, calls),
        }
        assert!(calls.len() < 10_000, "the listing does not end");
    }
}

fn raw_source(keys: Vec<String>, short_pages: usize) -> (DataSource, MemorySource) {
    let ds = DataSource {
        name: "raw".into(),
        backend: "m".into(),
        bucket: "b".into(),
        prefix: String::new(),
        writable: false,
    };
    let mut keys = keys;
    keys.sort();
    let mut buckets = BTreeMap::new();
    buckets.insert("b".to_string(), keys);
    let source = MemorySource {
        buckets,
        short_pages,
        calls: Default::default(),
    };
    (ds, source)
}

#[test]
fn a_delimiter_straddling_the_root_costs_few_backend_calls() {
    // The hostile-load finding: `/x` straddles `raw/`, so s3p rolls up itself; each key is its own
    // common prefix. Before the fix, every one of them cost a fresh 1,000-key backend page.
    let keys: Vec<String> = (0..2000).map(|i| format!("amp/{i:04}/x")).collect();
    let (ds, source) = raw_source(keys, 1000);
    let query = ListQuery {
        prefix: "raw".into(),
        delimiter: Some("/x".into()),
        start: Position::Start,
        max_keys: 1000,
        budget: CallBudget::new(3),
    };
    let (entries, calls) = walk(&source, &[&ds], query);
    assert_eq!(entries.len(), 2000);
    assert_eq!(entries[0], "P:raw/amp/0000/x");
    assert!(calls.iter().all(|c| *c <= 3), "{calls:?}");
    let total: usize = calls.iter().sum();
    assert!(
        total <= 4,
        "{total} backend calls for 2,000 entries: {calls:?}"
    );
}

#[test]
fn a_marker_on_a_large_common_prefix_resumes_after_its_subtree() {
    // `delimiter=/k&marker=raw/many/k&max-keys=1` over 20,000 keys: the marker stands for everything
    // under `raw/many/k`, which the backend must skip in one call, not page through.
    let mut keys: Vec<String> = (0..20_000).map(|i| format!("many/k{i:05}")).collect();
    keys.push("more".into());
    let (ds, source) = raw_source(keys, 1000);
    let query = ListQuery {
        prefix: String::new(),
        delimiter: Some("/k".into()),
        start: Position::from_marker("raw/many/k", "", Some("/k")),
        max_keys: 1,
        budget: CallBudget::new(3),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let page = rt.block_on(list_page(&source, &[&ds], &query)).unwrap();
    let got: Vec<String> = page.entries.iter().map(show).collect();
    assert_eq!(got, vec!["K:raw/more"]);
    assert!(!page.is_truncated);
    assert_eq!(page.backend_calls, 1);
}

#[test]
fn pages_over_many_empty_data_sources_stop_at_the_hard_cap_and_go_on() {
    // 100 empty data sources before one with a key: each costs a call, so no page can visit them all;
    // pages end empty at the hard cap and the walk still reaches the key.
    let mut data_sources: Vec<DataSource> = (0..100)
        .map(|i| DataSource {
            name: format!("e{i:03}"),
            backend: "m".into(),
            bucket: format!("empty{i}"),
            prefix: String::new(),
            writable: false,
        })
        .collect();
    data_sources.push(DataSource {
        name: "z".into(),
        backend: "m".into(),
        bucket: "b".into(),
        prefix: String::new(),
        writable: false,
    });
    let (_, source) = raw_source(vec!["last".into()], 1000);
    let refs: Vec<&DataSource> = data_sources.iter().collect();
    let budget = CallBudget::new(3);
    let query = ListQuery {
        prefix: String::new(),
        delimiter: None,
        start: Position::Start,
        max_keys: 1000,
        budget,
    };
    let (entries, calls) = walk(&source, &refs, query);
    assert_eq!(entries, vec!["K:z/last"]);
    assert!(calls.iter().all(|c| *c <= budget.hard), "{calls:?}");
    assert_eq!(calls.len(), 4, "{calls:?}");
}

// ---------------------------------------------------------------------------------------------------------
// Keys longer than S3 allows (issue 21): a backend may hold them (put there directly), and every walk
// must pass them, as a client walks: through `serve`, with the query string written and parsed as on the
// wire, the XML read back, and each next page asked for with what the client was given.

const LONG_YAML: &str = r#"
token_secret: long-keys-token-secret-0123456789
backends:
  b: { endpoint: "http://127.0.0.1:9", access_key_id: a, secret_access_key: s }
data_sources:
  long: { backend: b, bucket: long-bucket, prefix: "in/" }
  next: { backend: b, bucket: next-bucket }
api_keys:
  - { id: READER, name: Reader, data_sources: all }
limits:
  max_backend_calls_per_list: BUDGET
"#;

/// Backend keys of the two data sources: 110 ordinary keys with a 3,500-byte one at position 100, keys
/// of exactly the longest listed length (one ending in a 2-byte character, one in 4-byte ones), keys
/// longer than that (left out of listings) among listed neighbours, and one whose cut at the bound falls
/// inside a character, next to listed keys that share that cut. Returns (bucket, backend key, virtual key).
fn long_keys() -> Vec<(&'static str, String, String)> {
    let mut rels: Vec<String> = (0..110).map(|i| format!("k/{i:04}")).collect();
    // The 3,500-byte virtual key of the issue, between k/0099 and k/0100.
    rels.push(format!(
        "k/0099-{}",
        "x".repeat(3500 - "long/k/0099-".len())
    ));
    // Exactly at the bound.
    let at = MAX_LISTED_KEY_LEN - "long/m/a".len();
    rels.push(format!("m/a{}\u{e9}", "y".repeat(at - 2)));
    rels.push(format!("m/b{}", "\u{10FFFF}".repeat(at / 4)));
    // One byte over the bound: left out.
    rels.push(format!("m/c{}", "y".repeat(at + 1)));
    rels.extend(["m/0", "m/d"].map(String::from));
    // A cut that falls inside `é`: `cut` and `cut` + "a" are listed, before the overlong key.
    let cut = format!("o/{}", "y".repeat(MAX_LISTED_KEY_LEN - 1 - "long/o/".len()));
    rels.push(format!("{cut}\u{e9}{}", "z".repeat(100)));
    rels.extend([cut.clone(), format!("{cut}a"), "o/0".into(), "o/zz".into()]);
    // 40 overlong keys sharing their cut, then 40 with cuts of their own, each among listed keys: more
    // than a page of the hard call cap with short backend pages.
    for i in 0..40 {
        rels.push(format!("p/{}{i:02}", "q".repeat(MAX_LISTED_KEY_LEN)));
        rels.push(format!("r/{i:02}{}", "q".repeat(MAX_LISTED_KEY_LEN)));
    }
    rels.extend(["p/a", "p/zz", "r/a", "r/zz"].map(String::from));
    let mut out: Vec<(&str, String, String)> = rels
        .into_iter()
        .map(|r| ("long-bucket", format!("in/{r}"), format!("long/{r}")))
        .collect();
    out.extend(["after", "z/1"].map(|k| ("next-bucket", k.to_string(), format!("next/{k}"))));
    // Noise next to the data source's prefix, never listed.
    out.push(("long-bucket", "in".into(), String::new()));
    out.push(("long-bucket", "out/x".into(), String::new()));
    out
}

/// What a client reads in one ListBucketResult (values decoded when `encoding-type=url`).
#[derive(Default, Debug)]
struct ClientPage {
    entries: Vec<String>,
    truncated: bool,
    next_marker: Option<String>,
    next_token: Option<String>,
}

fn read_result(body: &str, url_encoded: bool) -> ClientPage {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut path: Vec<String> = Vec::new();
    let mut page = ClientPage::default();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                path.push(String::from_utf8(e.local_name().as_ref().to_vec()).unwrap())
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let raw = t.xml_content().unwrap().into_owned();
                let value = if url_encoded {
                    String::from_utf8(crate::wire::decode_form(&raw).into_owned()).unwrap()
                } else {
                    raw
                };
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                match names.as_slice() {
                    [_, "Contents", "Key"] => page.entries.push(format!("K:{value}")),
                    [_, "CommonPrefixes", "Prefix"] => page.entries.push(format!("P:{value}")),
                    [_, "IsTruncated"] => page.truncated = value == "true",
                    [_, "NextMarker"] => page.next_marker = Some(value),
                    [_, "NextContinuationToken"] => page.next_token = Some(value),
                    _ => {}
                }
            }
            Event::Eof => return page,
            _ => {}
        }
    }
}

/// One way a client walks a listing.
#[derive(Debug, Clone, Copy)]
struct Walk {
    v2: bool,
    url_encoded: bool,
    prefix: &'static str,
    delimiter: Option<&'static str>,
    max_keys: usize,
    /// Keys per backend page.
    short_pages: usize,
    /// `limits.max_backend_calls_per_list`.
    budget: usize,
}

/// Walks the whole listing as a client: v2 resumes with the NextContinuationToken, v1 with the
/// NextMarker or else the last key. Every page must be accepted (the bug: a token or marker s3p emitted
/// after a long key was refused) and every cursor must stay within its bound.
fn client_walk(w: Walk, keys: &[(&str, String, String)]) -> Vec<String> {
    let config = crate::config::Config::from_yaml_str(
        &LONG_YAML.replace("BUDGET", &w.budget.to_string()),
        &|_| None,
    )
    .expect("test config");
    let tokens = super::token::TokenSealer::new(config.token_secret.expose());
    let mut buckets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (bucket, key, _) in keys {
        buckets
            .entry(bucket.to_string())
            .or_default()
            .push(key.clone());
    }
    buckets.values_mut().for_each(|k| k.sort());
    let source = MemorySource {
        buckets,
        short_pages: w.short_pages,
        calls: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let enc = |s: &str| {
        let mut out = String::new();
        crate::wire::push_unreserved(&mut out, s.as_bytes());
        out
    };
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 10_000, "{w:?}: the listing does not end");
        let mut q = format!("prefix={}&max-keys={}", enc(w.prefix), w.max_keys);
        if w.v2 {
            q.push_str("&list-type=2");
        }
        if let Some(d) = w.delimiter {
            q.push_str(&format!("&delimiter={}", enc(d)));
        }
        if w.url_encoded {
            q.push_str("&encoding-type=url");
        }
        if let Some(c) = &cursor {
            let name = if w.v2 { "continuation-token" } else { "marker" };
            q.push_str(&format!("&{name}={}", enc(c)));
        }
        let params = super::params::ListParams::parse(&crate::wire::Query::parse(&q).unwrap())
            .unwrap_or_else(|e| panic!("{w:?}: page {pages} refused: {e:?}"));
        let served = rt
            .block_on(super::serve(
                &source,
                &config,
                &tokens,
                &config.api_keys[0],
                &params,
            ))
            .unwrap_or_else(|e| panic!("{w:?}: page {pages} refused: {e:?}"));
        let page = read_result(&served.body, w.url_encoded);
        walked.extend(page.entries.iter().cloned());
        if !page.truncated {
            return walked;
        }
        cursor = Some(if w.v2 {
            let t = page.next_token.expect("a truncated v2 page has a token");
            assert!(
                t.len() <= super::token::MAX_TOKEN_LEN,
                "{w:?}: token of {}",
                t.len()
            );
            t
        } else {
            let m = match page.next_marker {
                Some(m) => m,
                None => page
                    .entries
                    .last()
                    .expect("a page without NextMarker has keys")[2..]
                    .into(),
            };
            assert!(m.len() <= MAX_POSITION_LEN, "{w:?}: marker of {}", m.len());
            m
        });
    }
}

#[test]
fn walks_pass_keys_longer_than_s3_allows() {
    let keys = long_keys();
    let long: Vec<&str> = keys
        .iter()
        .map(|(_, _, v)| v.as_str())
        .filter(|v| v.len() > 1024)
        .collect();
    assert!(long.iter().any(|v| v.len() == 3500));
    // The expected walk: every virtual key up to the bound, in order, rolled up.
    let want = |prefix: &str, delimiter: Option<&str>| -> Vec<String> {
        let mut listed: Vec<&str> = keys
            .iter()
            .map(|(_, _, v)| v.as_str())
            .filter(|v| !v.is_empty() && v.len() <= MAX_LISTED_KEY_LEN && v.starts_with(prefix))
            .collect();
        listed.sort();
        let mut out: Vec<String> = Vec::new();
        for v in listed {
            let e = match rollup(v, prefix, delimiter) {
                Some(cp) => format!("P:{cp}"),
                None => format!("K:{v}"),
            };
            if out.last() != Some(&e) {
                out.push(e);
            }
        }
        out
    };
    // Backend pages of 7 keys: the walk crosses backend pages too.
    let base = Walk {
        v2: true,
        url_encoded: false,
        prefix: "",
        delimiter: None,
        max_keys: 1000,
        short_pages: 7,
        budget: 1000,
    };
    let mut walks = Vec::new();
    for v2 in [true, false] {
        for url_encoded in [false, true] {
            for (prefix, delimiter) in [
                ("", None),
                ("long/", None),
                ("long/k/", Some("/")),
                ("long/", Some("/")),
                // `/z` straddles `long/`: s3p rolls up itself.
                ("lon", Some("/z")),
            ] {
                for max_keys in [1000, 7, 1] {
                    walks.push(Walk {
                        v2,
                        url_encoded,
                        prefix,
                        delimiter,
                        max_keys,
                        ..base
                    });
                }
            }
        }
        // One key per backend page and one call per client page: pages end where the budget does,
        // and pages over 32 overlong keys end empty at the hard cap, after them.
        for (prefix, delimiter) in [("long/", None), ("long/", Some("/")), ("lon", Some("/z"))] {
            walks.push(Walk {
                v2,
                delimiter,
                prefix,
                short_pages: 1,
                budget: 1,
                ..base
            });
        }
    }
    for w in walks {
        let got = client_walk(w, &keys);
        assert_eq!(got, want(w.prefix, w.delimiter), "{w:?}");
        if w.prefix.is_empty() && w.delimiter.is_none() {
            for v in &long {
                let listed = got.iter().filter(|e| &e[2..] == *v).count();
                assert_eq!(listed, usize::from(v.len() <= MAX_LISTED_KEY_LEN), "{w:?}");
            }
        }
    }
}

#[test]
fn positions_after_overlong_names_skip_no_listed_key() {
    // A page that ends before holding any entry resumes after the last name a backend gave; a name too
    // long to list is cut to the bound. Table: names whose cut falls on and inside characters of every
    // width, and the listed keys that share the cut (each must sort before the name, so none is skipped).
    for tail in ["", "\u{e9}", "\u{20ac}", "\u{10FFFF}"] {
        for pad in 0..4 {
            let stem = format!("d/{}", "y".repeat(MAX_LISTED_KEY_LEN - 2 - pad));
            let name = format!("{stem}{tail}{}", "z".repeat(MAX_LISTED_KEY_LEN));
            let position = reached_after_for_tests(&name);
            let Position::AfterPrefix(cut) = &position else {
                panic!("{position:?}")
            };
            assert!(cut.len() <= MAX_LISTED_KEY_LEN && name.starts_with(cut.as_str()));
            let room = MAX_LISTED_KEY_LEN - cut.len();
            // Every listed key under the cut: the cut plus up to `room` bytes of any character.
            for c in [
                '\u{0}',
                'a',
                '\u{7f}',
                '\u{80}',
                '\u{e9}',
                '\u{7ff}',
                '\u{800}',
                '\u{ffff}',
                '\u{10000}',
                '\u{10FFFF}',
            ] {
                for n in 1..=room {
                    let k = format!("{cut}{}", c.to_string().repeat(n));
                    if k.len() > MAX_LISTED_KEY_LEN {
                        break;
                    }
                    assert!(k.as_str() < name.as_str(), "{tail:?} {pad}: {c:?} x{n}");
                }
            }
        }
    }
}
