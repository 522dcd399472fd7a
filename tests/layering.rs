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
