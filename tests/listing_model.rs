//! Model-based, differential end-to-end test of the virtual bucket listing (issue 4).
//!
//! A real Garage holds seeded, generated key sets (awkward characters, keys ending in `/`, data sources whose
//! names share prefixes: `d`/`data`/`data-private`, `sal`/`sales`/`salaries`, one at a bucket root, one with
//! no objects) and a real s3p process serves them. Hundreds of seeded random ListObjects v1/v2 queries are
//! walked page by page over raw HTTP and every page is compared with an independent reference model: one
//! bucket holding `<ds>/<key>` for the entitled data sources (written here from S3 semantics, not s3p's
//! merge code), plus the documented rule that each entitled data source holds a phantom `<ds>/` that only
//! ever shows through a common prefix.
//!
//! Targeted tests: walks across data-source boundaries and across backend pages (a second s3p in front of a
//! data source with more than 1000 keys), continuation tokens bound to the key, prefix and delimiter
//! (another key, a changed prefix or delimiter, a tampered token: 400 InvalidArgument), markers inside denied
//! data sources, every prefix of a denied data source for the subset key, every key and its common prefix
//! as a marker, markers below the prefix, max-keys edges, and the aws CLI (`s3 ls --recursive`, `s3 sync`);
//! walks past keys longer than S3 allows, put on Garage directly (a third s3p in front of them).
//!
//! Reproduce: `S3P_LISTING_SEED=<seed> cargo test --test listing_model` (the seed is printed, and is part of
//! every failure message); one random case alone: `S3P_LISTING_CASE=<n>`; more cases:
//! `S3P_LISTING_CASES=<count>` (default 300).

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// Secret-less keys, for the legacy `AWS <key>:immuta` header of the raw requests (a key with a secret never
/// accepts it); each has a signing twin with the same entitlements, for the aws CLI.
const ALL_KEY: &str = "model-all-key";
const ALL_SIGNING: &str = "model-all-signing-key";
const ALL_SECRET: &str = "model-all-secret-0123456789";
const SUBSET_KEY: &str = "model-subset-key";
const SUBSET_SIGNING: &str = "model-subset-signing-key";
const SUBSET_SECRET: &str = "model-subset-secret-0123456789";
/// common::assert_no_leak, plus the backend buckets only this test's data sources use.
fn assert_no_backend_name(what: &str, received: &str) {
    assert_no_leak(what, received);
    for bucket in [GAMMA_BUCKET, DELTA_BUCKET, BULK_BUCKET, LONG_BUCKET] {
        assert!(
            !received.contains(bucket),
            "{what}: leaked `{bucket}` in:\n{received}"
        );
    }
}

const GAMMA_BUCKET: &str = "gamma-real-bucket";
const BULK_BUCKET: &str = "bulk-real-bucket";
const BULK_KEY: &str = "model-bulk-key";
const BULK_SIGNING: &str = "model-bulk-signing-key";
const BULK_SECRET: &str = "model-bulk-secret-0123456789";
/// More keys than one backend page (Garage, like S3, answers at most 1000 per page).
const BULK_COUNT: usize = 1050;
const DELTA_BUCKET: &str = "delta-real-bucket";
const LONG_BUCKET: &str = "long-real-bucket";
const LONG_KEY: &str = "model-long-key";
const LONG_SIGNING: &str = "model-long-signing-key";
const LONG_SECRET: &str = "model-long-secret-0123456789";
/// Ordinary keys around the long ones (more than a backend page).
const LONG_COUNT: usize = 1100;
/// The long backend keys' length: more than S3's 1,024 bytes, put on Garage directly.
const LONG_KEY_LEN: usize = 3500;
const DEFAULT_SEED: u64 = 0x5333_7004;
const DEFAULT_CASES: usize = 300;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Keys that also make a valid local file tree (for `aws s3 sync`): no empty path segments, no key that
    /// is both a file and a directory, directory markers (`.../`) are empty.
    Safe,
    /// Anything: empty segments (`a//b`, leading `/`), a key that is both `x` and `x/...`, non-empty
    /// directory markers.
    Wild,
    /// No objects at all (only the phantom directory).
    Empty,
}

struct DsSpec {
    name: &'static str,
    bucket: &'static str,
    prefix: &'static str,
    kind: Kind,
    /// Whether the subset key may read it.
    subset: bool,
    /// Fixed awkward keys added to the generated ones.
    awkward: bool,
}

const DATA_SOURCES: &[DsSpec] = &[
    DsSpec {
        name: "sales",
        bucket: ALPHA_BUCKET,
        prefix: "",
        kind: Kind::Safe,
        subset: true,
        awkward: true,
    },
    DsSpec {
        name: "data",
        bucket: BETA_BUCKET,
        prefix: "data/",
        kind: Kind::Safe,
        subset: true,
        awkward: true,
    },
    DsSpec {
        name: "data-private",
        bucket: BETA_BUCKET,
        prefix: "data-private/",
        kind: Kind::Wild,
        subset: false,
        awkward: false,
    },
    DsSpec {
        name: "d",
        bucket: GAMMA_BUCKET,
        prefix: "d/",
        kind: Kind::Safe,
        subset: false,
        awkward: false,
    },
    DsSpec {
        name: "sal",
        bucket: GAMMA_BUCKET,
        prefix: "x/sal/",
        kind: Kind::Safe,
        subset: true,
        awkward: false,
    },
    DsSpec {
        name: "salaries",
        bucket: GAMMA_BUCKET,
        prefix: "x/salaries/",
        kind: Kind::Safe,
        subset: false,
        awkward: false,
    },
    DsSpec {
        name: "a-b",
        bucket: BETA_BUCKET,
        prefix: "deep/a-b/",
        kind: Kind::Safe,
        subset: true,
        awkward: false,
    },
    DsSpec {
        name: "empty",
        bucket: GAMMA_BUCKET,
        prefix: "nothing/",
        kind: Kind::Empty,
        subset: true,
        awkward: false,
    },
    DsSpec {
        name: "\u{fc}ber",
        bucket: DELTA_BUCKET,
        prefix: "",
        kind: Kind::Safe,
        subset: true,
        awkward: false,
    },
    DsSpec {
        name: "wild",
        bucket: GAMMA_BUCKET,
        prefix: "w/",
        kind: Kind::Wild,
        subset: false,
        awkward: false,
    },
];

/// Backend objects outside every data source, or named exactly like a data source's prefix: never listed.
const NOISE: &[(&str, &str)] = &[
    (BETA_BUCKET, "data"),
    (BETA_BUCKET, "data/"),
    (BETA_BUCKET, "data-privateer/x"),
    (BETA_BUCKET, "data-private"),
    (BETA_BUCKET, "outside/x.txt"),
    (BETA_BUCKET, "deep/a-b"),
    (BETA_BUCKET, "deep/a-bc/x"),
    (BETA_BUCKET, "deep/x"),
    (GAMMA_BUCKET, "x/sal"),
    (GAMMA_BUCKET, "x/sal/"),
    (GAMMA_BUCKET, "x/salx/y"),
    (GAMMA_BUCKET, "x/salaries/"),
    (GAMMA_BUCKET, "nothing"),
    (GAMMA_BUCKET, "nothing/"),
    (GAMMA_BUCKET, "w/"),
    (GAMMA_BUCKET, "dx/y"),
    (GAMMA_BUCKET, "d"),
];

/// Keys with characters that break naive proxies and XML/URL handling.
const AWKWARD: &[&str] = &[
    "with space.txt",
    "plus+sign.txt",
    "equals=sign&amp.txt",
    "percent%20literal.txt",
    "100%.txt",
    "caf\u{e9}/\u{fc}ber \u{2603}.txt",
    "(parens) [brackets].txt",
    "tilde~star*at@.txt",
    "dir/",
    "dir/inner (1).txt",
    "a b/c d/",
    "a b/c d/e f.csv",
    "trailing space ",
    "x-y-z.csv",
    "semi;colon,comma.txt",
    "quote'and\"dq.txt",
    "lt<gt>.txt",
    "#hash?q=1.txt",
    "dollar$!^`{}|.txt",
];

/// Pieces of generated path segments: few enough that keys share prefixes, and containing the delimiters
/// the queries use (`-`, `ta`, `a/` across a segment end, `é`, ` `, `+`, `%`).
const PIECES: &[&str] = &[
    "a", "b", "x", "0", "-", " ", "+", "%", "=", "&", "\u{e9}", "\u{2603}", "(", ")", "~", "ta",
    "sal", "%20", "*",
];

#[derive(Clone, Debug)]
struct Obj {
    ds: usize,
    vkey: String,
    body: Vec<u8>,
    etag: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Key(String),
    Prefix(String),
}

impl Item {
    fn name(&self) -> &str {
        match self {
            Item::Key(k) | Item::Prefix(k) => k,
        }
    }
}

/// Where a listing resumes, in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pos {
    Start,
    /// Keys strictly greater.
    After(String),
    /// Keys strictly greater that do not start with the common prefix.
    AfterPrefix(String),
}

impl Pos {
    fn admits(&self, key: &str) -> bool {
        match self {
            Pos::Start => true,
            Pos::After(m) => key > m.as_str(),
            Pos::AfterPrefix(p) => key > p.as_str() && !key.starts_with(p.as_str()),
        }
    }
}

/// The common prefix `key` rolls up into: the key through the first delimiter after the prefix.
fn model_rollup(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let d = delimiter?;
    let rest = key.strip_prefix(prefix)?;
    let i = rest.find(d)?;
    Some(key[..prefix.len() + i + d.len()].to_string())
}

/// What a v1 marker / v2 start-after means: S3 lists keys after it; a marker that is itself a common prefix
/// under the query's prefix and delimiter (as a NextMarker that is a common prefix is) skips its subtree.
fn model_position(marker: &str, prefix: &str, delimiter: Option<&str>) -> Pos {
    if marker.is_empty() {
        return Pos::Start;
    }
    if model_rollup(marker, prefix, delimiter).as_deref() == Some(marker) {
        return Pos::AfterPrefix(marker.to_string());
    }
    Pos::After(marker.to_string())
}

/// Where the next page starts after a page whose last entry is `item`.
fn position_after(item: &Item) -> Pos {
    match item {
        Item::Key(k) => Pos::After(k.clone()),
        Item::Prefix(p) => Pos::AfterPrefix(p.clone()),
    }
}

/// The reference: one bucket holding `<ds>/<key>` for the entitled data sources, plus a phantom `<ds>/` per
/// entitled data source that is never an object but rolls up into common prefixes.
struct Model {
    /// (virtual key, phantom), sorted by UTF-8 bytes.
    entries: Vec<(String, bool)>,
    objects: BTreeMap<String, Obj>,
}

impl Model {
    fn new(objects: &[Obj], entitled: &[usize]) -> Model {
        let names: Vec<&str> = entitled.iter().map(|&i| DATA_SOURCES[i].name).collect();
        let objects: Vec<Obj> = objects
            .iter()
            .filter(|o| entitled.contains(&o.ds))
            .cloned()
            .collect();
        Model::of(&names, &objects)
    }

    /// The bucket of the given data sources holding the given objects.
    fn of(names: &[&str], objects: &[Obj]) -> Model {
        let mut entries: Vec<(String, bool)> = Vec::new();
        let mut map = BTreeMap::new();
        for name in names {
            entries.push((format!("{name}/"), true));
        }
        for o in objects {
            entries.push((o.vkey.clone(), false));
            map.insert(o.vkey.clone(), o.clone());
        }
        entries.sort();
        Model {
            entries,
            objects: map,
        }
    }

    /// Every entry of the listing after `pos`, rolled up, in order.
    fn list(&self, prefix: &str, delimiter: Option<&str>, pos: &Pos) -> Vec<Item> {
        let mut out: Vec<Item> = Vec::new();
        let mut seen = BTreeSet::new();
        for (key, phantom) in &self.entries {
            if !key.starts_with(prefix) || !pos.admits(key) {
                continue;
            }
            match model_rollup(key, prefix, delimiter) {
                Some(cp) => {
                    if seen.insert(cp.clone()) {
                        out.push(Item::Prefix(cp));
                    }
                }
                None if *phantom => {}
                None => out.push(Item::Key(key.clone())),
            }
        }
        out
    }

    fn keys(&self) -> Vec<&Obj> {
        self.objects.values().collect()
    }
}

struct Fx {
    seed: u64,
    dir: PathBuf,
    garage: Garage,
    s3p: S3p,
    objects: Vec<Obj>,
    all: Model,
    subset: Model,
}

impl Fx {
    fn model(&self, api_key: &str) -> &Model {
        match api_key {
            ALL_KEY => &self.all,
            SUBSET_KEY => &self.subset,
            BULK_KEY => &bulk().model,
            LONG_KEY => &long().model,
            k => panic!("unknown API key {k}"),
        }
    }
}

fn seed() -> u64 {
    match std::env::var("S3P_LISTING_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("S3P_LISTING_SEED={s} is not a u64")),
        Err(_) => DEFAULT_SEED,
    }
}

fn segment(rng: &mut StdRng) -> String {
    (0..rng.gen_range(1..=3))
        .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
        .collect()
}

fn relative_key(rng: &mut StdRng, kind: Kind) -> String {
    let n = rng.gen_range(1..=3);
    let segs: Vec<String> = (0..n)
        .map(|_| {
            if kind == Kind::Wild && rng.gen_bool(0.15) {
                String::new()
            } else {
                segment(rng)
            }
        })
        .collect();
    let mut k = segs.join("/");
    if rng.gen_bool(0.15) {
        k.push('/');
    }
    if k.is_empty() {
        k = "a".into();
    }
    k
}

/// The generated objects of every data source (relative keys), deterministic for a seed.
fn generate(seed: u64) -> Vec<(usize, String, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (i, ds) in DATA_SOURCES.iter().enumerate() {
        let mut rels: BTreeSet<String> = BTreeSet::new();
        let n = match ds.kind {
            Kind::Empty => 0,
            Kind::Safe => rng.gen_range(6..=16),
            Kind::Wild => rng.gen_range(8..=16),
        };
        for _ in 0..n {
            rels.insert(relative_key(&mut rng, ds.kind));
        }
        if ds.awkward {
            rels.extend(AWKWARD.iter().map(|k| k.to_string()));
        }
        if ds.kind == Kind::Wild {
            // Shapes the generator may miss: a file that is also a directory, empty segments.
            for k in ["a", "a/b", "/lead", "a//b", "x-/"] {
                rels.insert(k.to_string());
            }
        }
        if ds.kind == Kind::Safe {
            // A key that is a file cannot also be a directory of other files on a local disk.
            let all: Vec<String> = rels.iter().cloned().collect();
            rels.retain(|k| {
                k.ends_with('/')
                    || !all
                        .iter()
                        .any(|o| !o.ends_with('/') && o.starts_with(&format!("{k}/")))
            });
        }
        for rel in rels {
            let vkey = format!("{}/{}", ds.name, rel);
            // Directory markers are empty (always in safe data sources), as are a few other objects.
            let empty = (rel.ends_with('/') && (ds.kind == Kind::Safe || rng.gen_bool(0.5)))
                || rng.gen_bool(0.05);
            let body: Vec<u8> = if empty {
                Vec::new()
            } else {
                let extra = rng.gen_range(0..40);
                let mut b = format!("{vkey}\n").into_bytes();
                b.extend((0..extra).map(|_| rng.gen::<u8>()));
                b
            };
            out.push((i, rel, body));
        }
    }
    out
}

fn config(garage: &Garage) -> String {
    let mut y = format!(
        "listen: 127.0.0.1:{{PORT}}\nbase_path: /s3p\nbucket: immuta\ntoken_secret: model-token-secret-0123456789\n\
         backends:\n  garage:\n    endpoint: {}\n    region: garage\n    access_key_id: {GARAGE_KEY_ID}\n    \
         secret_access_key: {GARAGE_SECRET}\ndata_sources:\n",
        garage.endpoint()
    );
    for ds in DATA_SOURCES {
        y.push_str(&format!(
            "  \"{}\": {{ backend: garage, bucket: {}, prefix: \"{}\" }}\n",
            ds.name, ds.bucket, ds.prefix
        ));
    }
    let subset: Vec<String> = DATA_SOURCES
        .iter()
        .filter(|d| d.subset)
        .map(|d| format!("\"{}\"", d.name))
        .collect();
    y.push_str(&format!(
        "api_keys:\n  - id: {ALL_KEY}\n    name: All\n    data_sources: all\n  \
         - id: {ALL_SIGNING}\n    secret: {ALL_SECRET}\n    name: All (signing)\n    data_sources: all\n  \
         - id: {SUBSET_KEY}\n    name: Subset\n    data_sources: [{subset}]\n  \
         - id: {SUBSET_SIGNING}\n    secret: {SUBSET_SECRET}\n    name: Subset (signing)\n    \
         data_sources: [{subset}]\n",
        subset = subset.join(", ")
    ));
    // This suite checks S3's page semantics (full pages of max-keys); a page the backend call budget
    // ends early is checked by the pure model test and tests/hostile_load.rs.
    y.push_str("limits:\n  max_backend_calls_per_list: 1000\n");
    y
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        let seed = seed();
        eprintln!("listing_model: seed {seed} (S3P_LISTING_SEED={seed} reproduces this run)");
        let dir = std::env::temp_dir().join(format!(
            "s3p-listing-model-{}-{}",
            std::process::id(),
            free_port()
        ));
        let garage = Garage::start(&dir.join("garage"));
        for b in [GAMMA_BUCKET, DELTA_BUCKET] {
            garage.cli(&["bucket", "create", b]);
            garage.cli(&[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                b,
                "--key",
                GARAGE_KEY_ID,
            ]);
        }
        let generated = generate(seed);
        let client = garage.client();
        let objects: Vec<Obj> = runtime().block_on(async {
            let mut puts = tokio::task::JoinSet::new();
            let mut uploads: Vec<(String, String, Vec<u8>, Option<usize>)> = generated
                .iter()
                .enumerate()
                .map(|(n, (i, rel, body))| {
                    let ds = &DATA_SOURCES[*i];
                    (
                        ds.bucket.to_string(),
                        format!("{}{}", ds.prefix, rel),
                        body.clone(),
                        Some(n),
                    )
                })
                .collect();
            for (b, k) in NOISE {
                uploads.push((b.to_string(), k.to_string(), b"noise".to_vec(), None));
            }
            let mut etags: BTreeMap<usize, String> = BTreeMap::new();
            let mut pending = uploads.into_iter();
            loop {
                while puts.len() < 8 {
                    let Some((bucket, key, body, n)) = pending.next() else {
                        break;
                    };
                    let c = client.clone();
                    puts.spawn(async move {
                        let out = c
                            .put_object()
                            .bucket(&bucket)
                            .key(&key)
                            .body(ByteStream::from(body))
                            .send()
                            .await
                            .unwrap_or_else(|e| panic!("seeding {bucket}/{key}: {e:?}"));
                        (n, out.e_tag().expect("Garage returns an ETag").to_string())
                    });
                }
                match puts.join_next().await {
                    Some(r) => {
                        let (n, etag) = r.unwrap();
                        if let Some(n) = n {
                            etags.insert(n, etag);
                        }
                    }
                    None => break,
                }
            }
            generated
                .iter()
                .enumerate()
                .map(|(n, (i, rel, body))| Obj {
                    ds: *i,
                    vkey: format!("{}/{}", DATA_SOURCES[*i].name, rel),
                    body: body.clone(),
                    etag: etags[&n].clone(),
                })
                .collect()
        });
        let s3p = S3p::start(&dir.join("s3p"), &config(&garage));
        let all_ds: Vec<usize> = (0..DATA_SOURCES.len()).collect();
        let subset_ds: Vec<usize> = (0..DATA_SOURCES.len())
            .filter(|&i| DATA_SOURCES[i].subset)
            .collect();
        let all = Model::new(&objects, &all_ds);
        let subset = Model::new(&objects, &subset_ds);
        eprintln!(
            "listing_model: {} objects in {} data sources ({} readable by the subset key)",
            objects.len(),
            DATA_SOURCES.len(),
            subset.objects.len()
        );
        Fx {
            seed,
            dir,
            garage,
            s3p,
            objects,
            all,
            subset,
        }
    })
}

// ---------------------------------------------------------------------------------------------------------
// A tiny XML reader (independent of s3p's own XML code).

#[derive(Debug, Default, Clone)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn all(&self, name: &str) -> Vec<&Node> {
        self.children.iter().filter(|c| c.name == name).collect()
    }
    /// The text of the one child `name`, if present (more than one is an error).
    fn field(&self, name: &str) -> Option<String> {
        let v = self.all(name);
        assert!(v.len() <= 1, "<{name}> appears {} times", v.len());
        v.first().map(|n| n.text.clone())
    }
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').expect("entity ends with ;") + i;
        let ent = &rest[i + 1..end];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&e[2..], 16).unwrap()).unwrap()
            }
            e if e.starts_with('#') => char::from_u32(e[1..].parse().unwrap()).unwrap(),
            e => panic!("unknown entity &{e};"),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn parse_xml(doc: &str) -> Node {
    let mut s = doc.trim_start();
    if s.starts_with("<?xml") {
        s = &s[s.find("?>").unwrap() + 2..];
    }
    let mut stack: Vec<Node> = vec![Node::default()];
    while let Some(lt) = s.find('<') {
        let text = &s[..lt];
        if stack.len() > 1 {
            stack.last_mut().unwrap().text.push_str(&xml_unescape(text));
        }
        let gt = s[lt..].find('>').unwrap() + lt;
        let tag = &s[lt + 1..gt];
        s = &s[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let node = stack.pop().unwrap();
            assert_eq!(node.name, name.trim(), "mismatched end tag in {doc}");
            stack.last_mut().unwrap().children.push(node);
        } else {
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().unwrap().to_string();
            let node = Node {
                name,
                ..Default::default()
            };
            if self_closing {
                stack.last_mut().unwrap().children.push(node);
            } else {
                stack.push(node);
            }
        }
    }
    assert_eq!(stack.len(), 1, "unclosed elements in {doc}");
    let mut root = stack.pop().unwrap();
    assert_eq!(root.children.len(), 1, "one root element in {doc}");
    root.children.pop().unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// URL encoding.

/// Encodes a query parameter value (everything but RFC 3986 unreserved characters).
fn qenc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a value a listing sent with `encoding-type=url`, checking that it is encoded: only unreserved
/// characters, `/`, `*` and `%XX` escapes (or `+` for a space, as AWS writes it) may appear literally.
fn url_decoded(raw: &str) -> Result<String, String> {
    let b = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|x| x.is_ascii_hexdigit()))
                .ok_or_else(|| format!("bad escape in {raw:?}"))?;
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else if c == b'+' {
            out.push(b' ');
            i += 1;
        } else if c.is_ascii_alphanumeric() || b"-._~/*".contains(&c) {
            out.push(c);
            i += 1;
        } else {
            return Err(format!(
                "{raw:?} is not URL-encoded (literal {:?})",
                c as char
            ));
        }
    }
    String::from_utf8(out).map_err(|_| format!("{raw:?} decodes to invalid UTF-8"))
}

// ---------------------------------------------------------------------------------------------------------
// Walking listings.

#[derive(Clone, Debug)]
struct Query {
    api_key: &'static str,
    v2: bool,
    enc: bool,
    /// `None`: max-keys not sent.
    max_keys: Option<u64>,
    delimiter: Option<String>,
    prefix: String,
    /// v1 marker / v2 start-after of the first request.
    start: Option<String>,
    fetch_owner: Option<bool>,
    /// v2: send start-after again with every continuation token (as some SDK paginators do).
    resend_start_after: bool,
}

impl Query {
    fn effective_max(&self) -> usize {
        self.max_keys.map(|m| m.min(1000) as usize).unwrap_or(1000)
    }
}

/// The query string of one request. `cursor` is the v1 marker or the v2 continuation token.
fn target(q: &Query, cursor: Option<&str>, first: bool) -> String {
    let mut p: Vec<String> = Vec::new();
    if q.v2 {
        p.push("list-type=2".into());
    }
    p.push(format!("prefix={}", qenc(&q.prefix)));
    if let Some(d) = &q.delimiter {
        p.push(format!("delimiter={}", qenc(d)));
    }
    if let Some(m) = q.max_keys {
        p.push(format!("max-keys={m}"));
    }
    if q.enc {
        p.push("encoding-type=url".into());
    }
    if q.v2 {
        if let Some(t) = cursor {
            p.push(format!("continuation-token={}", qenc(t)));
        }
        if let Some(s) = &q.start {
            if first || q.resend_start_after {
                p.push(format!("start-after={}", qenc(s)));
            }
        }
        if let Some(f) = q.fetch_owner {
            p.push(format!("fetch-owner={f}"));
        }
    } else if let Some(m) = cursor {
        p.push(format!("marker={}", qenc(m)));
    }
    format!("/s3p/immuta?{}", p.join("&"))
}

/// One parsed, checked page.
#[derive(Debug)]
struct Page {
    items: Vec<Item>,
    truncated: bool,
    next_marker: Option<String>,
    next_token: Option<String>,
    body: String,
}

fn get(api_key: &str, target: &str) -> RawResponse {
    let addr = match api_key {
        BULK_KEY => bulk().s3p.addr(),
        LONG_KEY => long().s3p.addr(),
        _ => fx().s3p.addr(),
    };
    raw(addr, "GET", target, &[("Authorization", &legacy(api_key))])
}

const TOP_FIELDS: &[&str] = &[
    "Name",
    "Prefix",
    "Marker",
    "NextMarker",
    "ContinuationToken",
    "NextContinuationToken",
    "StartAfter",
    "KeyCount",
    "MaxKeys",
    "Delimiter",
    "EncodingType",
    "IsTruncated",
    "Contents",
    "CommonPrefixes",
];

fn is_timestamp(s: &str) -> bool {
    // 2024-01-02T03:04:05.000Z
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Requests one page and checks everything but the order of the entries against the query: status, echoed
/// fields, URL encoding, per-object metadata (Size, ETag as Garage gave it, LastModified, StorageClass,
/// Owner), sorted keys and prefixes. `cursor`: the v1 marker or the v2 continuation token sent; `first`: whether
/// this is the first request of a walk (v2 start-after is sent then, and on every page if `resend_start_after`).
fn fetch_page(q: &Query, cursor: Option<&str>, first: bool, ctx: &str) -> Page {
    let t = target(q, cursor, first);
    let r = get(q.api_key, &t);
    let ctx = format!("{ctx}\n  request {t}");
    let body = r.text();
    assert_eq!(r.status, 200, "{ctx}\n  {body}");
    assert_no_backend_name(&ctx, &r.all_bytes());
    let root = parse_xml(&body);
    assert_eq!(root.name, "ListBucketResult", "{ctx}\n  {body}");
    for c in &root.children {
        assert!(
            TOP_FIELDS.contains(&c.name.as_str()),
            "{ctx}: unexpected <{}> in\n  {body}",
            c.name
        );
    }
    let dec = |what: &str, raw: String| -> String {
        if q.enc {
            url_decoded(&raw).unwrap_or_else(|e| panic!("{ctx}: {what}: {e}\n  {body}"))
        } else {
            raw
        }
    };
    let field = |name: &str| root.field(name);
    assert_eq!(field("Name").as_deref(), Some("immuta"), "{ctx}");
    let prefix = field("Prefix").unwrap_or_else(|| panic!("{ctx}: no <Prefix>\n  {body}"));
    assert_eq!(dec("Prefix", prefix), q.prefix, "{ctx}: Prefix echo");
    assert_eq!(
        field("MaxKeys"),
        Some(q.effective_max().to_string()),
        "{ctx}: MaxKeys echo"
    );
    assert_eq!(
        field("Delimiter").map(|d| dec("Delimiter", d)),
        q.delimiter,
        "{ctx}: Delimiter echo"
    );
    assert_eq!(
        field("EncodingType"),
        q.enc.then(|| "url".to_string()),
        "{ctx}: EncodingType"
    );
    let truncated = match field("IsTruncated").as_deref() {
        Some("true") => true,
        Some("false") => false,
        other => panic!("{ctx}: IsTruncated {other:?}"),
    };

    let mut keys = Vec::new();
    let with_owner = !q.v2 || q.fetch_owner == Some(true);
    let model = fx().model(q.api_key);
    for c in root.all("Contents") {
        let key = dec(
            "Key",
            c.field("Key").unwrap_or_else(|| panic!("{ctx}: no Key")),
        );
        let obj = model.objects.get(&key).unwrap_or_else(|| {
            panic!("{ctx}: listed key {key:?} does not exist for this API key\n  {body}")
        });
        assert_eq!(
            c.field("Size"),
            Some(obj.body.len().to_string()),
            "{ctx}: Size of {key:?}"
        );
        assert_eq!(
            c.field("ETag"),
            Some(obj.etag.clone()),
            "{ctx}: ETag of {key:?}"
        );
        let lm = c.field("LastModified").unwrap_or_default();
        assert!(is_timestamp(&lm), "{ctx}: LastModified {lm:?} of {key:?}");
        assert_eq!(
            c.field("StorageClass").as_deref(),
            Some("STANDARD"),
            "{ctx}: StorageClass of {key:?}"
        );
        match c.all("Owner").as_slice() {
            [] => assert!(!with_owner, "{ctx}: no Owner for {key:?}"),
            [o] => {
                assert!(with_owner, "{ctx}: Owner without fetch-owner for {key:?}");
                assert_eq!(o.field("ID").as_deref(), Some("immuta"), "{ctx}");
                assert_eq!(o.field("DisplayName").as_deref(), Some("Immuta"), "{ctx}");
            }
            _ => panic!("{ctx}: several Owner"),
        }
        keys.push(key);
    }
    let prefixes: Vec<String> = root
        .all("CommonPrefixes")
        .iter()
        .map(|c| {
            dec(
                "CommonPrefixes/Prefix",
                c.field("Prefix")
                    .unwrap_or_else(|| panic!("{ctx}: CommonPrefixes without Prefix")),
            )
        })
        .collect();
    for w in keys.windows(2) {
        assert!(w[0] < w[1], "{ctx}: keys out of order: {keys:?}");
    }
    for w in prefixes.windows(2) {
        assert!(
            w[0] < w[1],
            "{ctx}: common prefixes out of order: {prefixes:?}"
        );
    }
    let mut items: Vec<Item> = keys
        .into_iter()
        .map(Item::Key)
        .chain(prefixes.into_iter().map(Item::Prefix))
        .collect();
    items.sort_by(|a, b| a.name().cmp(b.name()));

    let mut next_marker = None;
    let mut next_token = None;
    if q.v2 {
        for f in ["Marker", "NextMarker"] {
            assert!(field(f).is_none(), "{ctx}: v2 has <{f}>");
        }
        assert_eq!(
            field("KeyCount"),
            Some(items.len().to_string()),
            "{ctx}: KeyCount"
        );
        assert_eq!(
            field("ContinuationToken").as_deref(),
            cursor,
            "{ctx}: ContinuationToken echo"
        );
        let sent_start = q.start.as_ref().filter(|_| first || q.resend_start_after);
        assert_eq!(
            field("StartAfter").map(|s| dec("StartAfter", s)).as_ref(),
            sent_start,
            "{ctx}: StartAfter echo"
        );
        next_token = field("NextContinuationToken");
        assert_eq!(
            next_token.is_some(),
            truncated,
            "{ctx}: NextContinuationToken iff truncated"
        );
    } else {
        for f in [
            "KeyCount",
            "ContinuationToken",
            "NextContinuationToken",
            "StartAfter",
        ] {
            assert!(field(f).is_none(), "{ctx}: v1 has <{f}>");
        }
        let marker = field("Marker").unwrap_or_else(|| panic!("{ctx}: v1 without <Marker>"));
        assert_eq!(
            dec("Marker", marker),
            cursor.unwrap_or(""),
            "{ctx}: Marker echo"
        );
        next_marker = field("NextMarker").map(|m| dec("NextMarker", m));
        // AWS returns NextMarker only when a delimiter is given (and the listing is truncated).
        assert_eq!(
            next_marker.is_some(),
            truncated && q.delimiter.is_some(),
            "{ctx}: NextMarker presence"
        );
    }
    Page {
        items,
        truncated,
        next_marker,
        next_token,
        body,
    }
}

/// Walks the whole paginated listing, comparing every page with the model. Returns the pages.
fn walk(q: &Query, ctx: &str) -> Vec<Vec<Item>> {
    let model = fx().model(q.api_key);
    let delim = q.delimiter.as_deref();
    let max = q.effective_max();
    let start = q.start.clone().unwrap_or_default();
    let initial = model_position(&start, &q.prefix, delim);
    let mut pos = initial.clone();
    let mut cursor: Option<String> = if q.v2 { None } else { q.start.clone() };
    let mut pages = Vec::new();
    let mut first = true;
    loop {
        let want_all = model.list(&q.prefix, delim, &pos);
        let want: Vec<Item> = want_all.iter().take(max).cloned().collect();
        let want_truncated = max > 0 && want_all.len() > max;
        let pctx = format!("{ctx}\n  page {} from model position {pos:?}", pages.len());
        let page = fetch_page(q, cursor.as_deref(), first, &pctx);
        if page.items != want || page.truncated != want_truncated {
            panic!(
                "{pctx}\n  want (truncated {want_truncated}) {want:?}\n  got  (truncated {}) {:?}\n  body {}",
                page.truncated, page.items, page.body
            );
        }
        pages.push(page.items.clone());
        if !page.truncated {
            break;
        }
        let last = page.items.last().expect("a truncated page has entries");
        if q.v2 {
            cursor = page.next_token.clone();
            pos = position_after(last);
        } else {
            let marker = match &page.next_marker {
                Some(m) => {
                    assert_eq!(m, last.name(), "{pctx}: NextMarker is the last entry");
                    m.clone()
                }
                None => match last {
                    Item::Key(k) => k.clone(),
                    Item::Prefix(p) => panic!("{pctx}: a common prefix {p:?} without delimiter"),
                },
            };
            pos = model_position(&marker, &q.prefix, delim);
            assert_eq!(pos, position_after(last), "{pctx}");
            cursor = Some(marker);
        }
        first = false;
        assert!(pages.len() < 5000, "{ctx}: the listing does not end");
    }
    let got: Vec<Item> = pages.iter().flatten().cloned().collect();
    let want = if max == 0 {
        Vec::new()
    } else {
        model.list(&q.prefix, delim, &initial)
    };
    assert_eq!(got, want, "{ctx}: the whole walk");
    pages
}

// ---------------------------------------------------------------------------------------------------------
// Random queries.

const DELIMITERS: &[&str] = &[
    "/", "/", "/", "-", "a/", "/b", "ta", "\u{e9}", " ", "+", "sal", "%",
];
const SHORT_PREFIXES: &[&str] = &[
    "", "s", "sal", "sale", "d", "da", "data", "data-", "data/", "data-p", "w", "\u{fc}", "a", "e",
    "x", "z",
];

fn cut(rng: &mut StdRng, s: &str) -> String {
    let bounds: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
    s[..bounds[rng.gen_range(0..bounds.len())]].to_string()
}

fn random_text(rng: &mut StdRng) -> String {
    let mut s: String = (0..rng.gen_range(1..=4))
        .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
        .collect();
    if rng.gen_bool(0.3) {
        s.insert_str(0, DATA_SOURCES[rng.gen_range(0..DATA_SOURCES.len())].name);
    }
    s
}

fn gen_query(rng: &mut StdRng, f: &Fx) -> Query {
    let api_key = if rng.gen_bool(0.65) {
        ALL_KEY
    } else {
        SUBSET_KEY
    };
    let v2 = rng.gen_bool(0.5);
    let delimiter = match rng.gen_range(0..10) {
        0..=2 => None,
        _ => Some(DELIMITERS[rng.gen_range(0..DELIMITERS.len())].to_string()),
    };
    // Any object (of any data source, readable or not) as material for prefixes and markers.
    let pick = |rng: &mut StdRng| f.objects[rng.gen_range(0..f.objects.len())].vkey.clone();
    let prefix = match rng.gen_range(0..20) {
        0..=4 => String::new(),
        5..=7 => SHORT_PREFIXES[rng.gen_range(0..SHORT_PREFIXES.len())].to_string(),
        8 | 9 => format!(
            "{}/",
            DATA_SOURCES[rng.gen_range(0..DATA_SOURCES.len())].name
        ),
        10..=13 => {
            let k = pick(rng);
            cut(rng, &k)
        }
        14 | 15 => {
            // Up to a `/` of a real key.
            let k = pick(rng);
            let ends: Vec<usize> = k.match_indices('/').map(|(i, _)| i + 1).collect();
            k[..ends[rng.gen_range(0..ends.len())]].to_string()
        }
        16 => pick(rng),
        _ => random_text(rng),
    };
    // Markers are mostly drawn from the keys under the prefix, so that they fall inside common prefixes,
    // on them, between keys, and in data sources the key may not read.
    let under: Vec<&str> = f
        .objects
        .iter()
        .map(|o| o.vkey.as_str())
        .filter(|k| k.starts_with(&prefix))
        .collect();
    let near = |rng: &mut StdRng| -> String {
        if under.is_empty() {
            pick(rng)
        } else {
            under[rng.gen_range(0..under.len())].to_string()
        }
    };
    let d = delimiter.as_deref();
    let start = match rng.gen_range(0..44) {
        0..=13 => None,
        14..=19 => Some(near(rng)),
        20..=25 => {
            // Strictly inside the common prefix of a key (between the common prefix and the key's end).
            let k = near(rng);
            match model_rollup(&k, &prefix, d) {
                Some(c) if c.len() < k.len() => {
                    let inner: Vec<usize> = (c.len() + 1..=k.len())
                        .filter(|&i| k.is_char_boundary(i))
                        .collect();
                    Some(k[..inner[rng.gen_range(0..inner.len())]].to_string())
                }
                _ => Some(k),
            }
        }
        26..=29 => {
            // The common prefix of a key: a marker that skips its subtree.
            let k = near(rng);
            Some(model_rollup(&k, &prefix, d).unwrap_or(k))
        }
        30 | 31 => {
            // Inside a common prefix, between keys.
            let k = near(rng);
            Some(format!(
                "{}{}",
                model_rollup(&k, &prefix, d).unwrap_or(k),
                PIECES[rng.gen_range(0..PIECES.len())]
            ))
        }
        32 => {
            // Cut after the prefix.
            let k = near(rng);
            let c = cut(rng, &k);
            Some(if c.len() > prefix.len() { c } else { k })
        }
        33 | 34 => Some(format!(
            "{}/",
            DATA_SOURCES[rng.gen_range(0..DATA_SOURCES.len())].name
        )),
        35 | 36 => Some(pick(rng)),
        37 => Some(format!("{}{}", prefix, random_text(rng))),
        38 | 39 => Some(random_text(rng)),
        40 | 41 => {
            // Before the prefix, in the same data source: a key, or the data source's root.
            let ds = prefix.split('/').next().unwrap_or("");
            let before: Vec<&str> = f
                .objects
                .iter()
                .map(|o| o.vkey.as_str())
                .filter(|k| k.split('/').next() == Some(ds) && *k < prefix.as_str())
                .collect();
            if before.is_empty() || rng.gen_bool(0.2) {
                Some(format!("{ds}/"))
            } else {
                Some(before[rng.gen_range(0..before.len())].to_string())
            }
        }
        _ => Some(cut(rng, &prefix)).filter(|c| !c.is_empty()),
    };
    let max_keys = match rng.gen_range(0..24) {
        0 | 1 => Some(0),
        2..=6 => Some(1),
        7..=11 => Some(2),
        12..=14 => Some(3),
        15 | 16 => Some(rng.gen_range(4..=7)),
        17 => Some(rng.gen_range(8..=40)),
        18 | 19 => None,
        20 => Some(1000),
        21 => Some(rng.gen_range(1001..=2_147_483_647)),
        _ => Some(rng.gen_range(1..=3)),
    };
    Query {
        api_key,
        v2,
        enc: rng.gen_bool(0.4),
        max_keys,
        delimiter,
        prefix,
        start,
        fetch_owner: if v2 {
            [None, Some(true), Some(false)][rng.gen_range(0..3)]
        } else {
            None
        },
        resend_start_after: v2 && rng.gen_bool(0.5),
    }
}

fn case_rng(seed: u64, case: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (case as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[test]
fn random_listings_match_the_one_bucket_model() {
    let f = fx();
    let cases: usize = std::env::var("S3P_LISTING_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let only: Option<usize> = std::env::var("S3P_LISTING_CASE")
        .ok()
        .and_then(|s| s.parse().ok());
    let started = Instant::now();
    let (mut requests, mut entries, mut truncated_walks) = (0usize, 0usize, 0usize);
    let mut v2_cases = 0;
    let mut features: BTreeMap<&str, usize> = BTreeMap::new();
    for case in 0..cases {
        if only.is_some_and(|o| o != case) {
            continue;
        }
        let mut rng = case_rng(f.seed, case);
        let q = gen_query(&mut rng, f);
        let ctx = format!(
            "seed {} case {case} (S3P_LISTING_SEED={} S3P_LISTING_CASE={case}): {q:?}",
            f.seed, f.seed
        );
        let pages = walk(&q, &ctx);
        let model = f.model(q.api_key);
        let initial = model_position(
            q.start.as_deref().unwrap_or(""),
            &q.prefix,
            q.delimiter.as_deref(),
        );
        let listed = model.list(&q.prefix, q.delimiter.as_deref(), &initial);
        *features.entry("non-empty listing").or_default() += usize::from(!listed.is_empty());
        *features.entry("with common prefixes").or_default() +=
            usize::from(listed.iter().any(|i| matches!(i, Item::Prefix(_))));
        *features
            .entry("marker skipping a common prefix")
            .or_default() +=
            usize::from(matches!(initial, Pos::AfterPrefix(_)) && !listed.is_empty());
        *features
            .entry("marker inside a listed common prefix")
            .or_default() += usize::from(
            matches!((&initial, listed.first()), (Pos::After(m), Some(Item::Prefix(c))) if m.starts_with(c.as_str())),
        );
        *features.entry("url encoding").or_default() += usize::from(q.enc);
        *features.entry("subset key").or_default() += usize::from(q.api_key == SUBSET_KEY);
        requests += pages.len();
        entries += pages.iter().map(Vec::len).sum::<usize>();
        truncated_walks += usize::from(pages.len() > 1);
        v2_cases += usize::from(q.v2);
    }
    eprintln!(
        "listing_model: seed {} — {cases} cases ({v2_cases} v2), {requests} pages, {entries} entries, \
         {truncated_walks} paginated walks, {:.1} s",
        f.seed,
        started.elapsed().as_secs_f64()
    );
    eprintln!("listing_model: cases with {features:?}");
    assert!(
        requests > 0,
        "no listing was walked (S3P_LISTING_CASES={cases}, S3P_LISTING_CASE={only:?})"
    );
    // A full default-sized run must exercise every feature it counts, or it compared too little.
    if only.is_none() && cases >= 300 {
        for (feature, n) in &features {
            assert!(*n > 0, "no case with {feature} (seed {})", f.seed);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Targeted tests.

fn query(
    api_key: &'static str,
    v2: bool,
    prefix: &str,
    delimiter: Option<&str>,
    max: u64,
) -> Query {
    Query {
        api_key,
        v2,
        enc: false,
        max_keys: Some(max),
        delimiter: delimiter.map(str::to_string),
        prefix: prefix.to_string(),
        start: None,
        fetch_owner: None,
        resend_start_after: false,
    }
}

fn data_source_of(item: &Item) -> &str {
    item.name().split('/').next().unwrap()
}

#[test]
fn pagination_walks_cross_data_source_boundaries() {
    let f = fx();
    let mut crossings = 0;
    for (v2, prefix, delimiter, max) in [
        (true, "", None, 3),
        (false, "", None, 2),
        (true, "sal", None, 2),
        (false, "sal", None, 3),
        (true, "d", None, 4),
        (false, "d", Some("/"), 1),
        (true, "", Some("/"), 1),
        (true, "", Some("-"), 1),
        (false, "data", Some("-"), 1),
        (true, "sal", Some("a"), 2),
    ] {
        for api_key in [ALL_KEY, SUBSET_KEY] {
            let q = query(api_key, v2, prefix, delimiter, max);
            let ctx = format!("seed {}: {q:?}", f.seed);
            let pages = walk(&q, &ctx);
            crossings += pages
                .iter()
                .filter(|p| p.iter().map(data_source_of).collect::<BTreeSet<_>>().len() > 1)
                .count();
        }
    }
    assert!(
        crossings >= 10,
        "pages drawing from several data sources: {crossings}"
    );
    // At the root with `/`, every entitled data source is a directory, the empty one included.
    let q = query(ALL_KEY, true, "", Some("/"), 1000);
    let pages = walk(&q, "root directories");
    let mut want: Vec<Item> = DATA_SOURCES
        .iter()
        .map(|d| Item::Prefix(format!("{}/", d.name)))
        .collect();
    want.sort();
    assert_eq!(pages, vec![want]);
}

fn first_token(
    api_key: &'static str,
    prefix: &str,
    delimiter: Option<&str>,
) -> (Query, String, Vec<Item>) {
    let q = query(api_key, true, prefix, delimiter, 2);
    let p = fetch_page(&q, None, true, "first page");
    let token = p.next_token.clone().expect("a truncated first page");
    (q, token, p.items)
}

fn assert_invalid_argument(r: &RawResponse, ctx: &str) {
    assert_eq!(r.status, 400, "{ctx}: {}", r.text());
    assert!(
        r.text().contains("<Code>InvalidArgument</Code>"),
        "{ctx}: {}",
        r.text()
    );
    assert_no_backend_name(ctx, &r.all_bytes());
}

#[test]
fn continuation_tokens_are_bound_to_the_key_and_the_query() {
    let f = fx();
    let (q, token, first) = first_token(ALL_KEY, "", None);
    // The token itself carries nothing readable.
    for ds in DATA_SOURCES.iter().filter(|d| d.name.len() >= 5) {
        assert!(!token.contains(ds.name), "token {token} shows {}", ds.name);
    }
    // Resumed as issued, it continues right after the first page.
    let p = fetch_page(&q, Some(&token), false, "resume");
    let want: Vec<Item> = f
        .all
        .list("", None, &position_after(first.last().unwrap()))
        .into_iter()
        .take(2)
        .collect();
    assert_eq!(p.items, want);
    // max-keys and encoding-type may change between pages (they do not shape the key space).
    let mut q5 = q.clone();
    q5.max_keys = Some(5);
    q5.enc = true;
    let p = fetch_page(&q5, Some(&token), false, "resume with other max-keys");
    let want: Vec<Item> = f
        .all
        .list("", None, &position_after(first.last().unwrap()))
        .into_iter()
        .take(5)
        .collect();
    assert_eq!(p.items, want);

    // Another API key.
    let mut other = q.clone();
    other.api_key = SUBSET_KEY;
    let r = get(SUBSET_KEY, &target(&other, Some(&token), false));
    assert_invalid_argument(&r, "token of the all key used by the subset key");
    let (sq, stoken, _) = first_token(SUBSET_KEY, "", None);
    let mut sq_all = sq.clone();
    sq_all.api_key = ALL_KEY;
    let r = get(ALL_KEY, &target(&sq_all, Some(&stoken), false));
    assert_invalid_argument(&r, "token of the subset key used by the all key");

    // Another key with the very same entitlements (the signing twin, through the aws CLI): refused too.
    let (ok, out, err) = aws(
        ALL_SIGNING,
        ALL_SECRET,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "immuta",
            "--max-keys",
            "2",
            "--continuation-token",
            &token,
            "--no-paginate",
        ],
    );
    assert!(
        !ok && err.contains("InvalidArgument"),
        "token of the all key used by its signing twin: {out}{err}"
    );

    // Another prefix or delimiter.
    for (prefix, delimiter) in [
        ("d", None),
        ("data", None),
        ("", Some("/")),
        ("", Some("-")),
    ] {
        let mut other = q.clone();
        other.prefix = prefix.to_string();
        other.delimiter = delimiter.map(str::to_string);
        let r = get(ALL_KEY, &target(&other, Some(&token), false));
        assert_invalid_argument(
            &r,
            &format!("token reused with prefix {prefix:?} delimiter {delimiter:?}"),
        );
    }
    let (dq, dtoken, _) = first_token(ALL_KEY, "d", Some("/"));
    for (prefix, delimiter) in [
        ("d", None),
        ("", Some("/")),
        ("da", Some("/")),
        ("d", Some("-")),
    ] {
        let mut other = dq.clone();
        other.prefix = prefix.to_string();
        other.delimiter = delimiter.map(str::to_string);
        let r = get(ALL_KEY, &target(&other, Some(&dtoken), false));
        assert_invalid_argument(
            &r,
            &format!("token of d,/ reused with prefix {prefix:?} delimiter {delimiter:?}"),
        );
    }

    // Tampered: every position of the token, one character changed; truncated; extended; garbage.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let chars: Vec<char> = token.chars().collect();
    let last_full = chars.len() - 1; // the last character may carry padding bits only
    for i in 0..last_full {
        let c = chars[i];
        let flipped = alphabet
            .chars()
            .find(|&a| a != c && ((a as u8) ^ (c as u8)) & 1 == 1)
            .unwrap();
        let mut t: Vec<char> = chars.clone();
        t[i] = flipped;
        let t: String = t.into_iter().collect();
        let r = get(ALL_KEY, &target(&q, Some(&t), false));
        assert_invalid_argument(
            &r,
            &format!("token {token} with character {i} changed: {t}"),
        );
    }
    for t in [
        token[..token.len() - 4].to_string(),
        format!("{token}AAAA"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
        "not a token".to_string(),
        "data/q1.csv".to_string(),
    ] {
        let r = get(ALL_KEY, &target(&q, Some(&t), false));
        assert_invalid_argument(&r, &format!("token {t:?}"));
    }
}

#[test]
fn markers_inside_denied_data_sources_reveal_nothing() {
    let f = fx();
    let denied_roots: Vec<String> = DATA_SOURCES
        .iter()
        .filter(|d| !d.subset)
        .map(|d| format!("{}/", d.name))
        .collect();
    let check = |q: &Query| {
        let ctx = format!("seed {}: marker in a denied data source: {q:?}", f.seed);
        let pages = walk(q, &ctx);
        for item in pages.iter().flatten() {
            assert!(
                !denied_roots
                    .iter()
                    .any(|r| item.name().starts_with(r.as_str())),
                "{ctx}: {item:?}"
            );
        }
        pages.concat()
    };
    for (ds_index, ds) in DATA_SOURCES.iter().enumerate() {
        if ds.subset {
            continue;
        }
        let mut probes = vec![
            ds.name.to_string(),
            format!("{}/", ds.name),
            format!("{}/zzz-no-such-key", ds.name),
            format!("{}/\u{10FFFF}", ds.name),
        ];
        probes.extend(
            f.objects
                .iter()
                .filter(|o| o.ds == ds_index)
                .take(4)
                .map(|o| o.vkey.clone()),
        );
        for (prefix, delimiter) in [
            ("", None),
            ("", Some("/")),
            ("", Some("-")),
            ("d", None),
            ("data", Some("-")),
            ("sal", Some("/")),
            ("w", None),
        ] {
            for v2 in [false, true] {
                // Every marker in (or right before) the denied data source answers the same entries: the
                // subset key cannot tell an existing denied key from a missing one.
                let mut answers = BTreeSet::new();
                for marker in &probes {
                    let mut q = query(SUBSET_KEY, v2, prefix, delimiter, 1000);
                    q.start = Some(marker.clone());
                    answers.insert(check(&q));
                }
                assert_eq!(
                    answers.len(),
                    1,
                    "{} {prefix:?} {delimiter:?}: {answers:?}",
                    ds.name
                );
            }
        }
        // Paginated walks from such markers.
        for (prefix, delimiter) in [
            ("", Some("/")),
            ("data", Some("-")),
            ("sal", Some("/")),
            ("", Some("a")),
        ] {
            for v2 in [false, true] {
                for marker in probes.iter().take(6) {
                    let mut q = query(SUBSET_KEY, v2, prefix, delimiter, 1);
                    q.start = Some(marker.clone());
                    check(&q);
                }
            }
        }
    }
}

#[test]
fn the_subset_key_never_sees_denied_data_sources() {
    let f = fx();
    let mut prefixes: BTreeSet<String> = BTreeSet::new();
    for (i, ds) in DATA_SOURCES.iter().enumerate() {
        if ds.subset {
            continue;
        }
        let root = format!("{}/", ds.name);
        for end in 0..=root.len() {
            if root.is_char_boundary(end) {
                prefixes.insert(root[..end].to_string());
            }
        }
        for o in f.objects.iter().filter(|o| o.ds == i).take(3) {
            prefixes.insert(o.vkey.clone());
            prefixes.insert(o.vkey[..root.len() + 1].to_string());
        }
    }
    let denied_roots: Vec<String> = DATA_SOURCES
        .iter()
        .filter(|d| !d.subset)
        .map(|d| format!("{}/", d.name))
        .collect();
    let mut checked = 0;
    for prefix in &prefixes {
        for delimiter in [None, Some("/"), Some("-"), Some("a")] {
            for v2 in [false, true] {
                let q = query(SUBSET_KEY, v2, prefix, delimiter, 1000);
                let ctx = format!("seed {}: {q:?}", f.seed);
                let pages = walk(&q, &ctx);
                for item in pages.iter().flatten() {
                    assert!(
                        !denied_roots
                            .iter()
                            .any(|r| item.name().starts_with(r.as_str())),
                        "{ctx}: {item:?}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 50);
}

/// Every key as a marker, and its common prefix as a marker, for a few prefixes and delimiters: markers inside
/// common prefixes (which still list the common prefix when keys after the marker roll up into it) and markers
/// that are common prefixes (which skip them).
#[test]
fn every_key_and_its_common_prefix_as_marker() {
    let f = fx();
    let mut n = 0;
    for (i, (prefix, delimiter)) in [
        ("", "/"),
        ("", "-"),
        ("data/", "/"),
        ("sales/", "/"),
        ("sal", "a"),
        ("d", "-"),
        ("\u{fc}ber/", " "),
    ]
    .into_iter()
    .enumerate()
    {
        let keys: Vec<String> = f
            .all
            .objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for (j, k) in keys.iter().enumerate() {
            let mut markers = vec![k.clone()];
            if let Some(cp) = model_rollup(k, prefix, Some(delimiter)) {
                markers.push(cp);
            }
            for marker in markers {
                let api_key = if (i + j) % 3 == 0 {
                    SUBSET_KEY
                } else {
                    ALL_KEY
                };
                let mut q = query(api_key, (i + j) % 2 == 0, prefix, Some(delimiter), 1000);
                q.start = Some(marker);
                q.enc = j % 4 == 0;
                walk(&q, &format!("seed {}: {q:?}", f.seed));
                n += 1;
            }
        }
    }
    assert!(n > 200, "{n} markers");
}

/// A marker / start-after that sorts before the prefix, with keys in between that do not match the prefix: S3
/// lists everything under the prefix (the marker is below all of it). Garage 2.5.0 itself answers nothing for
/// such a start-after, so s3p must not pass one to a backend.
#[test]
fn markers_below_the_prefix_list_everything_under_it() {
    let f = fx();
    let mut n = 0;
    for (prefix, markers) in [
        (
            "data/dir/",
            &[
                "data/",
                "data/ ",
                "data/#",
                "data/(parens) [brackets].txt",
                "d",
                "data",
            ][..],
        ),
        (
            "sales/dir/",
            &["sales/", "sales/#hash?q=1.txt", "sales/a", "s"][..],
        ),
        ("sales/tilde", &["sales/dir/", "sales/a b/c d/e f.csv"][..]),
        ("data/with", &["data/", "data/dir/inner (1).txt"][..]),
    ] {
        for marker in markers {
            for delimiter in [None, Some("/")] {
                for v2 in [false, true] {
                    let mut q = query(ALL_KEY, v2, prefix, delimiter, 1000);
                    q.start = Some(marker.to_string());
                    let ctx = format!("seed {}: {q:?}", f.seed);
                    let pages = walk(&q, &ctx);
                    assert!(!pages.concat().is_empty(), "{ctx}");
                    n += 1;
                }
            }
        }
    }
    assert!(n >= 40);
}

/// A second s3p on the same Garage, in front of a data source holding more keys than one backend page, so
/// that s3p follows the backend's own continuation tokens (and a virtual page spans two backend pages).
struct Bulk {
    s3p: S3p,
    model: Model,
}

fn bulk() -> &'static Bulk {
    static BULK: OnceLock<Bulk> = OnceLock::new();
    BULK.get_or_init(|| {
        let f = fx();
        f.garage.cli(&["bucket", "create", BULK_BUCKET]);
        f.garage.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BULK_BUCKET,
            "--key",
            GARAGE_KEY_ID,
        ]);
        let mut rels: Vec<String> = (0..BULK_COUNT).map(|i| format!("k/{i:04}")).collect();
        rels.extend(["a", "m/x", "k/0500/inner", "k0"].map(String::from));
        let client = f.garage.client();
        let etags: Vec<String> = runtime().block_on(async {
            let mut puts = tokio::task::JoinSet::new();
            let mut etags = vec![String::new(); rels.len()];
            let mut pending = rels.iter().cloned().enumerate();
            loop {
                while puts.len() < 16 {
                    let Some((n, rel)) = pending.next() else { break };
                    let c = client.clone();
                    puts.spawn(async move {
                        let out = c
                            .put_object()
                            .bucket(BULK_BUCKET)
                            .key(&rel)
                            .body(ByteStream::from(format!("bulk/{rel}\n").into_bytes()))
                            .send()
                            .await
                            .unwrap_or_else(|e| panic!("seeding {rel}: {e:?}"));
                        (n, out.e_tag().unwrap().to_string())
                    });
                }
                match puts.join_next().await {
                    Some(r) => {
                        let (n, e) = r.unwrap();
                        etags[n] = e;
                    }
                    None => break,
                }
            }
            etags
        });
        let mut objects: Vec<Obj> = rels
            .iter()
            .zip(etags)
            .map(|(rel, etag)| Obj {
                ds: usize::MAX,
                vkey: format!("bulk/{rel}"),
                body: format!("bulk/{rel}\n").into_bytes(),
                etag,
            })
            .collect();
        // Alongside two data sources of the main fixture, so that walks cross from one into the others.
        objects.extend(
            f.objects
                .iter()
                .filter(|o| ["data", "sales"].contains(&DATA_SOURCES[o.ds].name))
                .cloned(),
        );
        let yaml = format!(
            "listen: 127.0.0.1:{{PORT}}\nbase_path: /s3p\nbucket: immuta\ntoken_secret: bulk-token-secret-0123456789\n\
             backends:\n  garage:\n    endpoint: {}\n    region: garage\n    access_key_id: {GARAGE_KEY_ID}\n    \
             secret_access_key: {GARAGE_SECRET}\ndata_sources:\n  bulk: {{ backend: garage, bucket: {BULK_BUCKET} }}\n  \
             data: {{ backend: garage, bucket: {BETA_BUCKET}, prefix: data/ }}\n  \
             sales: {{ backend: garage, bucket: {ALPHA_BUCKET} }}\n\
             api_keys:\n  - id: {BULK_KEY}\n    name: Bulk\n    data_sources: all\n  \
             - id: {BULK_SIGNING}\n    secret: {BULK_SECRET}\n    name: Bulk (signing)\n    data_sources: all\n\
             limits:\n  max_backend_calls_per_list: 1000\n",
            f.garage.endpoint()
        );
        let s3p = S3p::start(&f.dir.join("s3p-bulk"), &yaml);
        Bulk {
            s3p,
            model: Model::of(&["bulk", "data", "sales"], &objects),
        }
    })
}

#[test]
fn listings_span_backend_pages() {
    let f = fx();
    bulk();
    for (v2, prefix, delimiter, max, start) in [
        (true, "", None, Some(1000), None),
        (false, "", None, None, None),
        (true, "bulk/", None, Some(999), None),
        (false, "bulk/k/", None, Some(1000), None),
        (true, "", None, Some(1000), Some("bulk/k/0001")),
        (false, "b", None, Some(400), Some("bulk/a")),
        (true, "bulk/", Some("/"), Some(2), None),
        (false, "", Some("5"), Some(1000), None),
        (true, "bulk/k/", Some("0"), Some(1), None),
        (true, "", Some("/"), Some(1), Some("bulk/k/0600")),
    ] {
        let mut q = query(BULK_KEY, v2, prefix, delimiter, 0);
        q.max_keys = max;
        q.start = start.map(str::to_string);
        let ctx = format!("seed {}: {q:?}", f.seed);
        let pages = walk(&q, &ctx);
        assert!(!pages.concat().is_empty(), "{ctx}");
    }
    // The aws CLI pages through it too (1000 keys a page by default, and 7).
    let b = bulk();
    let want: Vec<(String, u64)> = b
        .model
        .keys()
        .iter()
        .map(|o| (o.vkey.clone(), o.body.len() as u64))
        .collect();
    for extra in [&[][..], &["--page-size", "7"][..]] {
        let mut args = vec!["s3", "ls", "s3://immuta/", "--recursive"];
        args.extend_from_slice(extra);
        let (ok, out, err) = aws_at(&b.s3p, BULK_SIGNING, BULK_SECRET, &args);
        assert!(ok, "aws {args:?}: {err}");
        assert_eq!(parse_ls(&out), want, "aws {args:?}");
    }
}

#[test]
fn max_keys_edges() {
    let f = fx();
    for v2 in [false, true] {
        // 0: nothing, not truncated, whatever there is to list.
        let q = query(ALL_KEY, v2, "", Some("/"), 0);
        let p = fetch_page(&q, None, true, "max-keys=0");
        assert!(p.items.is_empty() && !p.truncated, "{}", p.body);
        // Above 1000: capped in the echo.
        for m in [1001u64, 5000, 2_147_483_647] {
            let q = query(ALL_KEY, v2, "", None, m);
            let p = fetch_page(&q, None, true, "max-keys>1000");
            assert_eq!(p.items.len(), f.all.objects.len());
        }
        // Invalid values.
        for m in ["-1", "abc", "1.5"] {
            let prefix = if v2 { "list-type=2&" } else { "" };
            let r = get(ALL_KEY, &format!("/s3p/immuta?{prefix}max-keys={m}"));
            assert_invalid_argument(&r, &format!("max-keys={m}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The aws CLI.

fn aws(api_key: &str, secret: &str, args: &[&str]) -> (bool, String, String) {
    aws_at(&fx().s3p, api_key, secret, args)
}

fn aws_at(s3p: &S3p, api_key: &str, secret: &str, args: &[&str]) -> (bool, String, String) {
    let f = fx();
    let dir = f.dir.join("awscli");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    std::fs::write(&config, "[default]\ns3 =\n    addressing_style = path\n").unwrap();
    let cli = std::env::var("S3P_AWS_CLI").unwrap_or_else(|_| "aws".into());
    let out = std::process::Command::new(&cli)
        .args(args)
        .args(["--endpoint-url", &s3p.endpoint()])
        .env("AWS_ACCESS_KEY_ID", api_key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONUTF8", "1")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("the aws CLI is required ({cli}): {e}"));
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("UTF-8 output"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `aws s3 ls --recursive` lines: `2024-01-02 03:04:05     123456 key` (the key may hold spaces).
fn parse_ls(out: &str) -> Vec<(String, u64)> {
    out.split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let rest = l[19..].trim_start();
            let (size, key) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("ls line {l:?}"));
            (key.to_string(), size.parse().unwrap())
        })
        .collect()
}

#[test]
fn aws_cli_recursive_ls_lists_every_key() {
    let f = fx();
    let want: Vec<(String, u64)> = f
        .all
        .keys()
        .iter()
        .map(|o| (o.vkey.clone(), o.body.len() as u64))
        .collect();
    for extra in [&[][..], &["--page-size", "7"][..]] {
        let mut args = vec!["s3", "ls", "s3://immuta/", "--recursive"];
        args.extend_from_slice(extra);
        let (ok, out, err) = aws(ALL_SIGNING, ALL_SECRET, &args);
        assert!(ok, "aws {args:?}: {err}");
        assert_eq!(parse_ls(&out), want, "seed {}: aws {args:?}\n{out}", f.seed);
    }
    // The subset key: only its data sources.
    let (ok, out, err) = aws(
        SUBSET_SIGNING,
        SUBSET_SECRET,
        &["s3", "ls", "s3://immuta/", "--recursive"],
    );
    assert!(ok, "{err}");
    let want: Vec<(String, u64)> = f
        .subset
        .keys()
        .iter()
        .map(|o| (o.vkey.clone(), o.body.len() as u64))
        .collect();
    assert_eq!(parse_ls(&out), want, "seed {}", f.seed);
    // Top level: one directory per entitled data source, the empty one included.
    let (ok, out, err) = aws(SUBSET_SIGNING, SUBSET_SECRET, &["s3", "ls", "s3://immuta/"]);
    assert!(ok, "{err}");
    let got: Vec<&str> = out.lines().map(str::trim).collect();
    let mut want: Vec<String> = DATA_SOURCES
        .iter()
        .filter(|d| d.subset)
        .map(|d| format!("PRE {}/", d.name))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

fn local_tree(root: &Path) -> (BTreeMap<String, Vec<u8>>, BTreeSet<String>) {
    let mut files = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .expect("UTF-8 file name")
                .to_string();
            if e.file_type().unwrap().is_dir() {
                dirs.insert(rel);
                stack.push(e.path());
            } else {
                files.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    (files, dirs)
}

#[test]
fn aws_cli_sync_downloads_exactly_the_expected_tree() {
    let f = fx();
    let dest = f.dir.join("sync");
    std::fs::create_dir_all(&dest).unwrap();
    let dest_s = dest.to_str().unwrap().to_string();
    let args = [
        "s3",
        "sync",
        "s3://immuta/",
        dest_s.as_str(),
        "--no-progress",
    ];
    let (ok, out, err) = aws(SUBSET_SIGNING, SUBSET_SECRET, &args);
    assert!(ok, "aws {args:?}: {err}\n{out}");
    // Directory markers (empty objects whose key ends in `/`) are not downloaded: aws s3 sync skips them
    // and creates directories only for the files under them.
    let markers: Vec<&Obj> = f
        .subset
        .keys()
        .into_iter()
        .filter(|o| o.vkey.ends_with('/'))
        .collect();
    assert!(!markers.is_empty(), "the key set has directory markers");
    let lone: Vec<&str> = markers
        .iter()
        .map(|o| o.vkey.as_str())
        .filter(|m| {
            !f.subset
                .objects
                .keys()
                .any(|k| k.len() > m.len() && k.starts_with(m) && !k.ends_with('/'))
        })
        .collect();
    eprintln!(
        "listing_model: {} directory markers, {} with no file under them: {lone:?}",
        markers.len(),
        lone.len()
    );
    let want_files: BTreeMap<String, Vec<u8>> = f
        .subset
        .keys()
        .into_iter()
        .filter(|o| !o.vkey.ends_with('/'))
        .map(|o| (o.vkey.clone(), o.body.clone()))
        .collect();
    let mut want_dirs = BTreeSet::new();
    for k in want_files.keys() {
        let mut p = k.as_str();
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            want_dirs.insert(p.to_string());
        }
    }
    let (files, dirs) = local_tree(&dest);
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&files),
        names(&want_files),
        "seed {}: synced files\n{out}",
        f.seed
    );
    for (k, body) in &want_files {
        assert_eq!(&files[k], body, "content of {k}");
    }
    assert_eq!(dirs, want_dirs, "seed {}: local directories", f.seed);
    // Nothing changed, nothing to do: sizes and dates listed by s3p match what was downloaded.
    let (ok, out, err) = aws(SUBSET_SIGNING, SUBSET_SECRET, &args);
    assert!(ok, "second sync: {err}");
    assert_eq!(out.trim(), "", "a second sync downloads nothing");
}

// ---------------------------------------------------------------------------------------------------------
// Keys longer than S3 allows (issue 21): put on Garage directly, never through s3p. Every walk must pass
// them, and the tokens and markers s3p emits after them must come back.

/// A third s3p on the same Garage, in front of a data source holding 1,100 ordinary keys, two 3,500-byte
/// backend keys (one ASCII at about position 1,000, one of awkward characters at about 500) and one of
/// 20,000 bytes (more than s3p lists).
struct Long {
    s3p: S3p,
    model: Model,
    /// The long keys, virtual.
    long_keys: Vec<String>,
}

/// A backend key of exactly `len` bytes: `stem` then `fill` repeated (and `x` to the exact length).
fn long_backend_key(stem: &str, fill: &str, len: usize) -> String {
    let mut k = stem.to_string();
    while k.len() + fill.len() <= len {
        k.push_str(fill);
    }
    while k.len() < len {
        k.push('x');
    }
    k
}

fn long() -> &'static Long {
    static LONG: OnceLock<Long> = OnceLock::new();
    LONG.get_or_init(|| {
        let f = fx();
        f.garage.cli(&["bucket", "create", LONG_BUCKET]);
        f.garage.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            LONG_BUCKET,
            "--key",
            GARAGE_KEY_ID,
        ]);
        // Backend keys under `in/`: `in/k/0999-xxx...` sorts between k/0999 and k/1000.
        let long_backend = [
            long_backend_key("in/k/0999-", "x", LONG_KEY_LEN),
            long_backend_key("in/k/0500 ", "caf\u{e9} +%&=?#/\u{2603} ", LONG_KEY_LEN),
        ];
        // Longer than s3p lists (8 KiB; Garage takes keys up to its 64 KiB URI limit): left out of every
        // listing, and the walks over it still end.
        let too_long = long_backend_key("in/k/0700-", "y", 20_000);
        let mut backend: Vec<String> = (0..LONG_COUNT).map(|i| format!("in/k/{i:04}")).collect();
        backend.extend(long_backend.iter().cloned());
        backend.push(too_long.clone());
        let client = f.garage.client();
        let etags: Vec<String> = runtime().block_on(async {
            let mut puts = tokio::task::JoinSet::new();
            let mut etags = vec![String::new(); backend.len()];
            let mut pending = backend.iter().cloned().enumerate();
            loop {
                while puts.len() < 16 {
                    let Some((n, key)) = pending.next() else { break };
                    let c = client.clone();
                    puts.spawn(async move {
                        let out = c
                            .put_object()
                            .bucket(LONG_BUCKET)
                            .key(&key)
                            .body(ByteStream::from(format!("{}\n", key.len()).into_bytes()))
                            .send()
                            .await
                            .unwrap_or_else(|e| {
                                panic!("Garage refused a key of {} bytes: {e:?}", key.len())
                            });
                        (n, out.e_tag().unwrap().to_string())
                    });
                }
                match puts.join_next().await {
                    Some(r) => {
                        let (n, e) = r.unwrap();
                        etags[n] = e;
                    }
                    None => break,
                }
            }
            etags
        });
        // Garage lists them as they were put (directly, with the backend's credentials).
        let direct: Vec<String> = runtime().block_on(async {
            let mut keys = Vec::new();
            let mut token = None;
            loop {
                let page = client
                    .list_objects_v2()
                    .bucket(LONG_BUCKET)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                keys.extend(page.contents().iter().filter_map(|o| o.key().map(String::from)));
                token = page.next_continuation_token().map(String::from);
                if token.is_none() {
                    return keys;
                }
            }
        });
        for k in long_backend.iter().chain([&too_long]) {
            assert!(direct.contains(k), "Garage lists its {}-byte key", k.len());
        }
        let vkey = |k: &str| format!("long/{}", k.strip_prefix("in/").unwrap());
        let mut objects: Vec<Obj> = backend
            .iter()
            .zip(etags)
            .filter(|(key, _)| **key != too_long)
            .map(|(key, etag)| Obj {
                ds: usize::MAX,
                vkey: vkey(key),
                body: format!("{}\n", key.len()).into_bytes(),
                etag,
            })
            .collect();
        // Alongside a data source of the main fixture, so that walks go on past the long keys' one.
        objects.extend(
            f.objects
                .iter()
                .filter(|o| DATA_SOURCES[o.ds].name == "sales")
                .cloned(),
        );
        let yaml = format!(
            "listen: 127.0.0.1:{{PORT}}\nbase_path: /s3p\nbucket: immuta\ntoken_secret: long-token-secret-0123456789\n\
             backends:\n  garage:\n    endpoint: {}\n    region: garage\n    access_key_id: {GARAGE_KEY_ID}\n    \
             secret_access_key: {GARAGE_SECRET}\ndata_sources:\n  long: {{ backend: garage, bucket: {LONG_BUCKET}, prefix: in/ }}\n  \
             sales: {{ backend: garage, bucket: {ALPHA_BUCKET} }}\n\
             api_keys:\n  - id: {LONG_KEY}\n    name: Long\n    data_sources: all\n  \
             - id: {LONG_SIGNING}\n    secret: {LONG_SECRET}\n    name: Long (signing)\n    data_sources: all\n\
             limits:\n  max_backend_calls_per_list: 1000\n",
            f.garage.endpoint()
        );
        let s3p = S3p::start(&f.dir.join("s3p-long"), &yaml);
        let model = Model::of(&["long", "sales"], &objects);
        let long_keys: Vec<String> = long_backend.iter().map(|k| vkey(k)).collect();
        // Where the ASCII one sits in the walk.
        let position = model.keys().iter().position(|o| o.vkey == long_keys[0]);
        eprintln!(
            "listing_model: keys of {:?} bytes on Garage, the first at position {position:?} of {}",
            long_backend.map(|k| k.len()),
            objects.len()
        );
        Long {
            s3p,
            model,
            long_keys,
        }
    })
}

#[test]
fn walks_pass_keys_longer_than_s3_allows() {
    let f = fx();
    let l = long();
    let mut walks = 0;
    for v2 in [true, false] {
        for enc in [false, true] {
            for (prefix, delimiter, max, start) in [
                ("", None, 1000, None),
                ("", None, 7, None),
                ("long/", None, 1, Some("long/k/0998")),
                ("long/k/", Some("/"), 3, None),
                ("long/k/0", Some("9"), 2, None),
                ("", Some("/"), 1000, Some(l.long_keys[0].as_str())),
                ("", None, 1000, Some(l.long_keys[1].as_str())),
            ] {
                let mut q = query(LONG_KEY, v2, prefix, delimiter, max);
                q.enc = enc;
                q.start = start.map(str::to_string);
                let ctx = format!("seed {}: {q:?}", f.seed);
                let pages = walk(&q, &ctx);
                let items = pages.concat();
                // Whatever walks over them lists each exactly once (the model walk checks the rest).
                for k in &l.long_keys {
                    let listed = items.iter().filter(|i| **i == Item::Key(k.clone())).count();
                    let want = l
                        .model
                        .list(
                            prefix,
                            delimiter,
                            &model_position(start.unwrap_or(""), prefix, delimiter),
                        )
                        .contains(&Item::Key(k.clone()));
                    assert_eq!(listed, usize::from(want), "{ctx}: {} bytes", k.len());
                }
                walks += 1;
            }
        }
    }
    assert_eq!(walks, 28);
    // The aws CLI lists every key exactly once, 1000 a page and 7.
    let want: Vec<(String, u64)> = l
        .model
        .keys()
        .iter()
        .map(|o| (o.vkey.clone(), o.body.len() as u64))
        .collect();
    assert!(want.iter().any(|(k, _)| k == &l.long_keys[0]));
    for extra in [&[][..], &["--page-size", "7"][..]] {
        let mut args = vec!["s3", "ls", "s3://immuta/", "--recursive"];
        args.extend_from_slice(extra);
        let (ok, out, err) = aws_at(&l.s3p, LONG_SIGNING, LONG_SECRET, &args);
        assert!(ok, "aws {args:?}: {err}");
        assert_eq!(parse_ls(&out), want, "aws {args:?}");
    }
}
