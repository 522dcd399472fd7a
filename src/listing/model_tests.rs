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
        let keys = self.buckets.get(&ds.bucket).cloned().unwrap_or_default();
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
