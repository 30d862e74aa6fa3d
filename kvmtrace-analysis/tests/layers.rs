//! The import direction is the architecture (docs/architecture.md): a module imports only
//! from layers below its own, and there is no circle of imports. Checked here on the source
//! text of both crates: every `crate::MODULE` path in a module's files is an import of
//! `MODULE` (the `kvmtrace` crate's `kvmtrace_analysis::MODULE` paths too). Test code is
//! left out: a test may drive the whole pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first; modules of one layer may use each other (without a circle).
const ANALYSIS: &[&[&str]] = &[
    &["names", "threads", "hist", "host", "format", "ksyms"],
    &["capture", "import"],
    &["engine"],
    &["report"],
];

/// The `kvmtrace` crate's layers; `kvmtrace_analysis` sits below all of them.
const KVMTRACE: &[&[&str]] = &[
    &["host", "housekeeping"],
    &["probes"],
    &["source"],
    &["record", "tui", "exporter", "check"],
    &["cli"],
];

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join(krate)
        .join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("source dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`engine/window.rs` -> `engine`).
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The modules named after `prefix` (`crate::`) in `text`, comments and string literals
/// included (a doc link to a higher layer is a dependency of the reader too).
fn uses(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Module -> the modules of the same crate it uses (through `prefix`).
fn graph(root: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut fs = Vec::new();
    files(root, &mut fs);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in fs {
        let Some(m) = module_of(root, &f) else {
            continue;
        };
        // Tests may use any layer (they exercise the whole pipeline): test-only files and
        // the `#[cfg(test)] mod tests` at the end of a file are left out.
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name == "tests.rs" || name == "proptests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        let text = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let used = uses(text, prefix);
        let entry = g.entry(m.clone()).or_default();
        entry.extend(used.into_iter().filter(|u| *u != m));
    }
    g
}

fn layer_of(layers: &[&[&str]], m: &str) -> usize {
    layers
        .iter()
        .position(|l| l.contains(&m))
        .unwrap_or_else(|| panic!("module {m} is in no layer: add it to tests/layers.rs"))
}

/// Panics on an import of a higher layer, or on a circle within a layer.
fn check(layers: &[&[&str]], g: &BTreeMap<String, BTreeSet<String>>) {
    for (m, used) in g {
        let lm = layer_of(layers, m);
        for u in used {
            let lu = layer_of(layers, u);
            assert!(
                lu <= lm,
                "{m} (layer {lm}) imports {u} (layer {lu}), a layer above it"
            );
        }
    }
    // No circle: depth-first search with colours.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) {
        match state.get(m) {
            Some(2) => return,
            Some(1) => panic!("import circle: {} -> {m}", path.join(" -> ")),
            _ => {}
        }
        state.insert(m, 1);
        path.push(m);
        for u in g.get(m).into_iter().flatten() {
            visit(u, g, state, path);
        }
        path.pop();
        state.insert(m, 2);
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        visit(m, g, &mut state, &mut Vec::new());
    }
}

#[test]
fn analysis_modules_import_only_lower_layers() {
    let g = graph(&src("kvmtrace-analysis"), "crate::");
    check(ANALYSIS, &g);
    for low in ["engine", "import", "capture"] {
        assert!(
            !g[low].contains("report"),
            "{low} must not import report: {:?}",
            g[low]
        );
    }
}

#[test]
fn kvmtrace_modules_import_only_lower_layers() {
    let g = graph(&src("kvmtrace"), "crate::");
    check(KVMTRACE, &g);
    let source = &g["source"];
    assert!(
        !source.contains("tui") && !source.contains("record"),
        "{source:?}"
    );
    // The live source produces events; it does not read the report.
    let mut fs = Vec::new();
    files(&src("kvmtrace").join("source"), &mut fs);
    for f in fs {
        let text = std::fs::read_to_string(&f).expect("read");
        let used = uses(&text, "kvmtrace_analysis::");
        assert!(
            !used.contains("report") && !used.contains("engine"),
            "{}: {used:?}",
            f.display()
        );
    }
}

#[test]
fn the_checker_finds_an_upward_import_and_a_circle() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("names".to_string(), ["engine".to_string()].into()),
        ("engine".to_string(), BTreeSet::new()),
    ]
    .into();
    assert!(std::panic::catch_unwind(|| check(ANALYSIS, &g)).is_err());
    let circle: BTreeMap<String, BTreeSet<String>> = [
        ("capture".to_string(), ["import".to_string()].into()),
        ("import".to_string(), ["capture".to_string()].into()),
    ]
    .into();
    assert!(std::panic::catch_unwind(|| check(ANALYSIS, &circle)).is_err());
    assert_eq!(
        uses(
            "use crate::engine::{A}; x::crate::no; crate::hist::f()",
            "crate::"
        ),
        ["engine".to_string(), "hist".to_string()].into()
    );
}
