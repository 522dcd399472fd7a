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

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut position = start.clone();
    let mut pages = 0;
    loop {
        let q = ListQuery {
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            start: position.clone(),
            max_keys,
        };
        let page = rt.block_on(list_page(&source, &ds_refs, &q)).unwrap();
        let want = model_entries(&model, &q, &position);
        let got: Vec<String> = page.entries.iter().map(show).collect();
        let ctx = format!(
            "seed {seed} prefix {prefix:?} delim {delimiter:?} pos {position:?} max {max_keys}"
        );
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
        if !page.is_truncated {
            assert!(page.next.is_none());
            break;
        }
        position = page
            .next
            .clone()
            .expect("truncated pages say where to go on");
        pages += 1;
        assert!(pages < 200, "{ctx}: listing does not end");
    }
}

#[test]
fn merge_matches_the_one_bucket_model() {
    for seed in 0..5000 {
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
