//! Configuration errors and where they point.
//!
//! Every error names the file, the line and column where the TOML text has
//! the offending key, and the key path (`tenants.acme.metrics.endpoints[1]`).
//! Validation works on key paths only; [`Locator`] turns a path (or, for
//! parse errors, a byte offset) into a position afterwards, so the serde
//! structs never carry spans.

use std::fmt;
use std::ops::Range;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path to a value in the config, rendered as `tenants.acme.metrics.endpoints[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        KeyPath(segments)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        KeyPath(segments)
    }

    /// The path below its first `n` segments.
    pub fn below(&self, n: usize) -> KeyPath {
        KeyPath(self.0.iter().skip(n).cloned().collect())
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare =
                        !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One configuration error, as a sentence with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column of the key, when the text has it.
    pub position: Option<(usize, usize)>,
    /// Key path; empty for errors of the whole document (TOML syntax).
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// The same error under another key path (a layer's error under its
    /// full path in the config).
    pub fn with_key(mut self, key: String) -> Self {
        self.key = key;
        self
    }

    fn render(&self) -> String {
        let place = match self.position {
            Some((line, column)) => format!("{}:{line}:{column}", self.file),
            None => self.file.clone(),
        };
        if self.key.is_empty() {
            format!("{place}: {}", self.message)
        } else {
            format!("{place}: {}: {}", self.key, self.message)
        }
    }
}

/// An error found by validation, before it is placed in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: KeyPath,
    pub message: String,
}

/// Finds key paths and byte offsets in the TOML text.
pub struct Locator<'a> {
    file: &'a str,
    text: &'a str,
    /// Parsed only when there is an error to place: a valid 2 MB config
    /// would otherwise pay a second, spanned parse on every reload.
    doc: std::cell::OnceCell<Option<toml_edit::Document<String>>>,
}

impl<'a> Locator<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Locator { file, text, doc: std::cell::OnceCell::new() }
    }

    fn doc(&self) -> Option<&toml_edit::Document<String>> {
        self.doc.get_or_init(|| spanned_document(self.text)).as_ref()
    }

    /// Places a validation problem at its key in the file.
    pub fn place(&self, problem: Problem) -> ConfigError {
        let span = self.doc().and_then(|doc| span_of(doc.as_table(), problem.path.segments()));
        ConfigError {
            file: self.file.to_string(),
            position: span.map(|s| self.line_column(s.start)),
            key: problem.path.to_string(),
            message: problem.message,
        }
    }

    /// Turns a TOML/serde error into a config error at the key under it.
    pub fn parse_error(&self, err: &toml::de::Error) -> ConfigError {
        let span = err.span();
        let key = match (self.doc(), &span) {
            (Some(doc), Some(span)) => path_at(doc.as_table(), span.start).to_string(),
            _ => String::new(),
        };
        ConfigError {
            file: self.file.to_string(),
            position: span.map(|s| self.line_column(s.start)),
            key,
            message: err.message().trim().to_string(),
        }
    }

    /// An error at a byte offset of the text (past its end: at its end).
    pub fn at_offset(&self, offset: usize, message: String) -> ConfigError {
        let position = Some(self.line_column(offset));
        ConfigError { file: self.file.to_string(), position, key: String::new(), message }
    }

    /// An error that belongs to no key: the file could not be read.
    pub fn whole_file(&self, message: String) -> ConfigError {
        ConfigError { file: self.file.to_string(), position: None, key: String::new(), message }
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

/// Most number literals [`spanned_document`] blanks in one text.
const MAX_BLANKED_NUMBERS: usize = 64;

/// The text as a document with spans, for placing errors. `toml_edit`
/// refuses the whole text for a number no `i64` or `f64` holds
/// (`18446744073709551615`, `1e400`), which the deserializer reads and then
/// refuses with an error that needs a key path — that error's, or another
/// key's elsewhere in the file. So each such literal is blanked to `0` padded
/// with spaces, which keeps every span where it was, and the text parsed again.
fn spanned_document(text: &str) -> Option<toml_edit::Document<String>> {
    let mut text = text.to_string();
    for _ in 0..MAX_BLANKED_NUMBERS {
        let error = match toml_edit::Document::parse(text.clone()) {
            Ok(doc) => return Some(doc),
            Err(error) => error,
        };
        let span = error.span()?;
        let literal = text.get(span.clone())?;
        let number = literal.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-')
            && literal.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b));
        if !number || literal.trim_end() == "0" {
            return None;
        }
        text.replace_range(span.clone(), &format!("0{}", " ".repeat(span.len() - 1)));
    }
    None
}

/// The span of the deepest part of `path` found in `table`: the key where a
/// key was written, the value for an array element.
fn span_of(table: &dyn toml_edit::TableLike, path: &[Segment]) -> Option<Range<usize>> {
    let (Segment::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (key, item) = table.get_key_value(first)?;
    let here = key.span().or_else(|| item.span());
    let deeper = match rest.first() {
        None => None,
        Some(Segment::Key(_)) => item.as_table_like().and_then(|t| span_of(t, rest)),
        Some(Segment::Index(i)) => {
            let value = item.as_array().and_then(|a| a.get(*i));
            let element = value.and_then(|v| v.span());
            let inner = match (value.and_then(|v| v.as_inline_table()), rest.get(1)) {
                (Some(t), Some(_)) => span_of(t, &rest[1..]),
                _ => None,
            };
            inner.or(element)
        }
    };
    deeper.or(here)
}

/// The key path of the deepest key or value whose text contains `offset`.
fn path_at(table: &dyn toml_edit::TableLike, offset: usize) -> KeyPath {
    fn walk(table: &dyn toml_edit::TableLike, offset: usize, path: KeyPath) -> Option<KeyPath> {
        for (name, item) in table.iter() {
            let path = path.key(name);
            if let Some(t) = item.as_table_like() {
                if let Some(found) = walk(t, offset, path.clone()) {
                    return Some(found);
                }
            }
            if let Some(array) = item.as_array() {
                for (i, value) in array.iter().enumerate() {
                    if value.span().is_some_and(|s| s.contains(&offset)) {
                        return Some(path.index(i));
                    }
                }
            }
            let (key, _) = table.get_key_value(name)?;
            let contains = |s: Option<Range<usize>>| s.is_some_and(|s| s.contains(&offset));
            if contains(key.span()) || (item.is_value() && contains(item.span())) {
                return Some(path);
            }
        }
        None
    }
    walk(table, offset, KeyPath::root()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_render_like_toml() {
        let path = KeyPath::root().key("tenants").key("acme").key("metrics").key("endpoints").index(1);
        assert_eq!(path.to_string(), "tenants.acme.metrics.endpoints[1]");
        assert_eq!(KeyPath::root().key("tenants").key("a.b").to_string(), "tenants.\"a.b\"");
    }

    #[test]
    fn locator_finds_nested_keys_and_array_elements() {
        let text = "[tenants.acme.metrics]\nendpoints = [\n  \"http://a:1\",\n  \"http://b:2\",\n]\n";
        let locator = Locator::new("t.toml", text);
        let path = KeyPath::root().key("tenants").key("acme").key("metrics").key("endpoints").index(1);
        let err = locator.place(Problem { path, message: "bad".into() });
        assert_eq!(err.to_string(), "t.toml:4:3: tenants.acme.metrics.endpoints[1]: bad");
    }

    #[test]
    fn a_number_no_integer_holds_does_not_hide_the_key_paths() {
        let text = "[server]\nmax_connections = 18446744073709551615\nidle_timeuot = \"5s\"\n\
                    [health_check]\ninterval = { ms = 1e400 }\n";
        let doc = spanned_document(text).expect("the rest of the text parses");
        let at = |needle: &str| path_at(doc.as_table(), text.find(needle).unwrap()).to_string();
        assert_eq!(at("18446744073709551615"), "server.max_connections");
        assert_eq!(at("idle_timeuot"), "server.idle_timeuot");
        assert_eq!(at("1e400"), "health_check.interval.ms");
        assert!(spanned_document("[server]\nthreads = 1 2\n").is_none(), "a syntax error stays one");
    }
}
