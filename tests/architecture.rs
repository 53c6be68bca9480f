//! The house stays one-way: the `crate::`/`super::` imports between the
//! library's modules follow the layering that ARCHITECTURE.md writes down,
//! and no files import each other in a cycle.
//!
//! Read from the source text: every `crate::a::b` and `super::x` path
//! outside comments and `#[cfg(test)]` modules is an edge from its file to
//! the file it names (a name re-exported by a `mod.rs` counts as the file
//! that defines it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// A source file as a module path: `proxy::retry`, `proxy` for
/// `proxy/mod.rs`, `api` for `api/mod.rs`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(SRC).unwrap().with_extension("");
    let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts = match parts.split_last() {
        Some((last, rest)) if last == "mod" => rest.to_vec(),
        _ => parts,
    };
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The identifiers after each `prefix::` in `code`, e.g. `["upstream", "Pool"]`
/// for `crate::upstream::Pool`, one list per occurrence; `{a, b}` groups
/// give one list per name.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut segments = Vec::new();
        let mut tail = rest;
        loop {
            let name: String = tail.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.is_empty() {
                if let Some(group) = tail.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',') {
                        let item: String =
                            item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if !item.is_empty() {
                            found.push(segments.iter().cloned().chain([item]).collect());
                        }
                    }
                }
                break;
            }
            tail = &tail[name.len()..];
            segments.push(name);
            match tail.strip_prefix("::") {
                Some(next) => tail = next,
                None => {
                    found.push(segments.clone());
                    break;
                }
            }
            if tail.starts_with('{') {
                continue;
            }
        }
    }
    found
}

struct Tree {
    /// Module path → the code of its file.
    code: BTreeMap<String, String>,
    /// `mod.rs` module → (re-exported name → the child that defines it).
    reexports: BTreeMap<String, BTreeMap<String, String>>,
}

impl Tree {
    fn read() -> Tree {
        let mut files = Vec::new();
        rust_files(Path::new(SRC), &mut files);
        let mut code = BTreeMap::new();
        let mut reexports = BTreeMap::new();
        for file in files {
            let name = module_of(&file);
            if name == "lib" || name == "main" || name.ends_with("tests") {
                continue;
            }
            let text = code_of(&std::fs::read_to_string(&file).unwrap());
            if file.ends_with("mod.rs") {
                let mut names = BTreeMap::new();
                for line in text.lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
                    let child = line.split("::").next().unwrap_or("").to_string();
                    for path in paths_after(&format!("x::{line}"), "x::") {
                        if let Some(last) = path.last() {
                            names.insert(last.clone(), format!("{name}::{child}"));
                        }
                    }
                }
                reexports.insert(name.clone(), names);
            }
            code.insert(name, text);
        }
        Tree { code, reexports }
    }

    /// The file a path names: the deepest module it reaches, or the child
    /// that a `mod.rs` re-exports the name from.
    fn target(&self, mut base: String, path: &[String]) -> String {
        for segment in path {
            let deeper = if base.is_empty() { segment.clone() } else { format!("{base}::{segment}") };
            if self.code.contains_key(&deeper) {
                base = deeper;
                continue;
            }
            if let Some(child) = self.reexports.get(&base).and_then(|names| names.get(segment)) {
                return child.clone();
            }
            break;
        }
        base
    }

    /// Every edge between files: (from, to).
    fn edges(&self) -> BTreeSet<(String, String)> {
        let mut edges = BTreeSet::new();
        for (module, code) in &self.code {
            let parent = match module.rsplit_once("::") {
                Some((parent, _)) => parent.to_string(),
                None => String::new(),
            };
            let is_mod_rs = self.reexports.contains_key(module);
            let super_base = if is_mod_rs { String::new() } else { parent };
            let targets = paths_after(code, "crate::")
                .into_iter()
                .map(|p| self.target(String::new(), &p))
                .chain(paths_after(code, "super::").into_iter().map(|p| self.target(super_base.clone(), &p)));
            for target in targets {
                if !target.is_empty() && target != *module {
                    edges.insert((module.clone(), target));
                }
            }
        }
        edges
    }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

/// `module → modules it may import`, from ARCHITECTURE.md's table rows
/// ``| `module` | what it owns | `a`, `b` |``.
fn allowed_layers() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md")).unwrap();
    let mut layers = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_string();
        let imports = cells.last().unwrap().split(',').map(|c| c.trim().trim_matches('`').to_string());
        layers.insert(name, imports.filter(|c| !c.is_empty() && c != "—").collect());
    }
    layers
}

/// A cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeSet<(String, String)>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].iter().cloned().chain([node.to_string()]).collect());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for (_, to) in edges.iter().filter(|(from, _)| from == node) {
            if let Some(cycle) = visit(to, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.iter().find_map(|(from, _)| visit(from, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_two_files_import_each_other_in_a_cycle() {
    let edges = Tree::read().edges();
    assert!(edges.len() > 30, "the scan found too few imports to be reading the code: {edges:?}");
    assert_eq!(find_cycle(&edges), None, "an import cycle between files");
}

#[test]
fn modules_import_only_what_architecture_md_allows() {
    let tree = Tree::read();
    let layers = allowed_layers();
    let modules: BTreeSet<&str> = tree.code.keys().map(|m| top(m)).collect();
    let listed: BTreeSet<&str> = layers.keys().map(String::as_str).collect();
    assert_eq!(modules, listed, "ARCHITECTURE.md lists exactly the crate's modules");
    let allowed: BTreeSet<(String, String)> =
        layers.iter().flat_map(|(from, to)| to.iter().map(move |to| (from.clone(), to.clone()))).collect();
    assert_eq!(find_cycle(&allowed), None, "the layering in ARCHITECTURE.md itself has a cycle");
    let against: Vec<String> = tree
        .edges()
        .into_iter()
        .filter(|(from, to)| top(from) != top(to))
        .filter(|(from, to)| !allowed.contains(&(top(from).to_string(), top(to).to_string())))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(against.is_empty(), "imports against ARCHITECTURE.md's layering: {against:#?}");
}

#[test]
fn the_scan_sees_a_known_edge_and_a_known_cycle() {
    // The parser must find what is there, or the two tests above pass on nothing.
    let edges = Tree::read().edges();
    assert!(edges.contains(&("proxy::resolve".into(), "routing::identity".into())), "{edges:#?}");
    assert!(edges.contains(&("upstream::schedule".into(), "upstream::health".into())), "{edges:#?}");
    let cyclic: BTreeSet<(String, String)> =
        [("a", "b"), ("b", "c"), ("c", "a")].map(|(x, y)| (x.into(), y.into())).into();
    assert!(find_cycle(&cyclic).is_some());
}
