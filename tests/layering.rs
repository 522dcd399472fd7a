//! The layering of `src/` (README "How the code is laid out"): each top-level module imports only modules
//! listed before it, so the code has no import cycle and nothing below imports the glue. Reads the source
//! files; test code (`#[cfg(test)]` modules, `*_tests.rs`, `tests.rs`) may import anything.

use std::collections::BTreeMap;
use std::path::Path;

/// Top-level modules, lowest first, in data-flow order.
const LAYERS: &[&str] = &[
    "error",
    "wire",
    "timefmt",
    "seal",
    "client_addr",
    "proxy_protocol",
    "config",
    "sts",
    "entitlements",
    "auth",
    "namespace",
    "policy",
    "xml",
    "listing",
    "upload",
    "request",
    "backend",
    "state",
    "gateway",
    "server",
    "proxy",
];

/// The source of a file without its inline test module (`#[cfg(test)] mod tests { ... }`, which sits at
/// the end of a file in this code base); test modules in their own files are skipped by name.
fn non_test_source(text: &str) -> &str {
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]\nmod ") {
        let at = from + i;
        let line_end = text[at + "#[cfg(test)]\n".len()..]
            .find('\n')
            .map_or(text.len(), |e| at + "#[cfg(test)]\n".len() + e);
        if text[at..line_end].trim_end().ends_with('{') {
            return &text[..at];
        }
        from = line_end;
    }
    text
}

/// The top-level modules a piece of source names as `crate::<module>`.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `use crate::{a, b}` lists several.
        if name.is_empty() && after.starts_with('{') {
            let end = after.find('}').unwrap_or(after.len());
            for part in after[1..end].split(',') {
                let part: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !part.is_empty() {
                    out.push(part);
                }
            }
        } else if !name.is_empty() {
            out.push(name);
        }
        rest = after;
    }
    out
}

fn module_sources(src: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut by_module: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !rel.ends_with(".rs") || rel.ends_with("_tests.rs") || rel.ends_with("/tests.rs") {
                continue;
            }
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            by_module.entry(top).or_default().push((rel, text));
        }
    }
    by_module
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = module_sources(&src);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut violations = Vec::new();
    for (module, files) in &modules {
        let Some(own) = rank(module) else {
            violations.push(format!(
                "{module}: not placed in LAYERS (add it where it belongs)"
            ));
            continue;
        };
        for (file, text) in files {
            for imported in imports(non_test_source(text)) {
                if imported == *module {
                    continue;
                }
                match rank(&imported) {
                    Some(r) if r < own => {}
                    Some(_) => violations.push(format!(
                        "src/{file}: `{module}` imports `{imported}`, which is not below it"
                    )),
                    None => violations.push(format!("src/{file}: unknown module `{imported}`")),
                }
            }
        }
    }
    for layer in LAYERS {
        assert!(
            modules.contains_key(*layer),
            "LAYERS names a missing module `{layer}`"
        );
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_import_reader_sees_what_it_must() {
    let text = "use crate::{auth, config::Config};\nlet x = crate::proxy::S3Proxy;\n// crate::";
    assert_eq!(imports(text), vec!["auth", "config", "proxy"]);
    let with_tests =
        "use crate::a;\n#[cfg(test)]\nmod model_tests;\nuse crate::c;\n#[cfg(test)]\nmod tests {\n use crate::b;\n}\n";
    assert_eq!(imports(non_test_source(with_tests)), vec!["a", "c"]);
}

/// What a child module of a folder may take from its parent (`mod.rs`) besides its siblings: the
/// folder's shared types, declared here. Anything else a child needs of its parent belongs in a
/// sibling (so that a folder reads top-down: `mod.rs` uses its children, children use each other).
const SHARED_WITH_CHILDREN: &[(&str, &[&str])] = &[
    ("auth", &["RequestView", "SecretLookup"]),
    (
        "backend",
        &[
            "Backend",
            "Backends",
            "ObjectTarget",
            "ToSign",
            "encode_query",
            "internal",
        ],
    ),
    (
        "config",
        &[
            "AddressingStyle",
            "AuditOverflow",
            "CachePolicy",
            "Limits",
            "ServiceAuth",
            "TlsListener",
        ],
    ),
    ("gateway", &["AfterBody", "Answer", "AuthFailure"]),
    ("server", &["Runtime", "InFlight"]),
    ("xml", &["escape"]),
];

/// The names a piece of source takes from `super::` (`super::a::b`, `super::{A, b::C}`), outside
/// comments.
fn super_imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("super::") {
            let after = &rest[i + "super::".len()..];
            let word = |s: &str| -> String {
                s.trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            };
            if let Some(list) = after.strip_prefix('{') {
                let end = list.find('}').unwrap_or(list.len());
                out.extend(list[..end].split(',').map(word).filter(|w| !w.is_empty()));
            } else {
                let w = word(after);
                if !w.is_empty() && w != "super" {
                    out.push(w);
                }
            }
            rest = after;
        }
    }
    out
}

#[test]
fn children_of_a_folder_take_only_declared_shared_types_from_their_parent() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut folders = vec![src.clone()];
    while let Some(dir) = folders.pop() {
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        folders.extend(entries.iter().filter(|p| p.is_dir()).cloned());
        if dir == src || !dir.join("mod.rs").exists() {
            continue;
        }
        let folder = dir
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let shared = SHARED_WITH_CHILDREN
            .iter()
            .find(|(f, _)| *f == folder)
            .map_or(&[][..], |(_, names)| *names);
        let siblings: Vec<String> = entries
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        for child in entries
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        {
            let name = child.file_name().unwrap().to_string_lossy().into_owned();
            if name == "mod.rs" || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(child).unwrap();
            for taken in super_imports(non_test_source(&text)) {
                if !siblings.contains(&taken) && !shared.contains(&taken.as_str()) {
                    violations.push(format!(
                        "src/{folder}/{name}: takes `{taken}` from its parent, which does not declare it shared"
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_super_reader_sees_what_it_must() {
    let text = "use super::{route::ObjectRoute, AfterBody};\nuse super::allow::x;\n// super::Doc\nlet y = super::escape(s);";
    assert_eq!(
        super_imports(text),
        vec!["route", "AfterBody", "allow", "escape"]
    );
}

/// The glue carries out decisions: it reads no HTTP status and names no S3 error code itself (the
/// decision, `gateway`, and the one error table, `error.rs`, do), and stays short enough to read.
#[test]
fn the_proxy_glue_makes_no_decision_of_its_own() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proxy.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().count();
    assert!(lines <= 650, "src/proxy.rs has {lines} lines (at most 650)");
    let mut findings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if code.contains("S3ErrorCode") {
            findings.push(format!("line {}: names an S3 error code: {line}", n + 1));
        }
        for method in [
            "is_informational",
            "is_success",
            "is_client_error",
            "is_server_error",
        ] {
            if code.contains(method) {
                findings.push(format!("line {}: reads a status class: {line}", n + 1));
            }
        }
        // An HTTP status written as a number (100-599), in code.
        let bytes = code.as_bytes();
        for i in 0..bytes.len().saturating_sub(2) {
            let boundary = |j: usize| {
                j >= bytes.len() || !(bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_')
            };
            let starts = i == 0 || boundary(i - 1);
            let three = bytes[i..i + 3].iter().all(u8::is_ascii_digit);
            if starts && three && boundary(i + 3) && (b'1'..=b'5').contains(&bytes[i]) {
                findings.push(format!("line {}: an HTTP status number: {line}", n + 1));
            }
        }
    }
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}
