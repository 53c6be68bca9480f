//! Configuration: TOML text → validated [`Config`], or every error.
//!
//! Two steps: [`Inputs::gather`] reads what the text refers to (files,
//! environment variables, DNS answers), then [`compile`] — a pure function
//! of text and inputs — returns the model or the complete list of errors,
//! each naming the file, line, column and key path. [`parse`] does both.
//! Nothing here touches running state; callers decide what to do with a
//! result, so a bad file can never apply half a config.

mod check;
mod deployment;
mod dns;
mod edge;
mod error;
mod inputs;
mod jwt;
mod model;
mod quota_backend;
mod raw;
mod secrets;
mod store;
mod tiers;
mod validate;

pub use check::check_tenant_id;
pub use deployment::MAX_ENDPOINTS_PER_DEPLOYMENT;
pub use dns::{resolve, same_addresses, Answer, Answers, DnsName, MAX_DNS_NAMES, MAX_NAMESERVERS};
pub use error::{ConfigError, KeyPath, Problem};
pub use inputs::{read_jwks, Inputs};
pub use jwt::key_set;
pub use model::*;
pub use quota_backend::MAX_EXPECTED_REPLICAS;
pub use raw::StoreKind;
pub use raw::{AccessLogFormat, MigrationPhase, TenantStatus, WritePolicy};
pub use tiers::effective_tenant;

use std::path::{Path, PathBuf};

/// The example config shipped in `conf/`, served when no file is found.
pub const EMBEDDED: &str = include_str!("../../conf/mirador-router.toml");

/// The path used when `--config` is not given.
pub const DEFAULT_PATH: &str = "conf/mirador-router.toml";

/// Where the config text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl Source {
    /// `--config PATH` when given; else the default path if it exists; else the embedded default.
    pub fn choose(explicit: Option<PathBuf>) -> Source {
        match explicit {
            Some(path) => Source::File(path),
            None if Path::new(DEFAULT_PATH).exists() => Source::File(DEFAULT_PATH.into()),
            None => Source::Embedded,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Embedded => "<embedded default config>".to_string(),
        }
    }

    /// The config text.
    pub fn read(&self) -> Result<String, Vec<ConfigError>> {
        match self {
            Source::Embedded => Ok(EMBEDDED.to_string()),
            Source::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    vec![error::Locator::new(&self.name(), "").whole_file(format!("cannot read the file: {e}"))]
                })?;
                text_of(&self.name(), bytes).map_err(|e| vec![e])
            }
        }
    }

    /// Reads and validates the config.
    pub fn load(&self) -> Result<Config, Vec<ConfigError>> {
        parse(&self.name(), &self.read()?)
    }
}

/// The text of config bytes, or an error at the first byte that is not UTF-8.
pub fn text_of(file: &str, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
        error::Locator::new(file, &valid).at_offset(at, format!("the file is not UTF-8 text (byte {at})"))
    })
}

/// Parses config text, gathers what it refers to, and validates it; `file`
/// names the text in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    parse_keeping(file, text, &Answers::new())
}

/// [`parse`], where a `dns` name that fails now keeps its addresses in
/// `kept` (the answers of the config in force): a reload or a refresh during
/// a DNS outage builds the same pools, where a start-up is refused.
pub fn parse_keeping(file: &str, text: &str, kept: &Answers) -> Result<Config, Vec<ConfigError>> {
    let locator = error::Locator::new(file, text);
    let raw = parse_raw(&locator, text)?;
    let inputs = Inputs::gather_keeping(&raw, kept);
    validate_raw(&locator, raw, &inputs)
}

/// Parses and validates config text against `inputs`; reads nothing.
pub fn compile(file: &str, text: &str, inputs: &Inputs) -> Result<Config, Vec<ConfigError>> {
    let locator = error::Locator::new(file, text);
    validate_raw(&locator, parse_raw(&locator, text)?, inputs)
}

/// Tenants and tiers kept outside the config file (in etcd, one entry
/// each): the name errors give (the etcd key), and the TOML of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    pub section: Section,
    pub id: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Tenants,
    Tiers,
}

impl Section {
    pub fn key(self) -> &'static str {
        match self {
            Section::Tenants => "tenants",
            Section::Tiers => "tiers",
        }
    }
}

/// Parses the config file `text` with the tenants and tiers of `layers`
/// (the file itself may then hold none), and validates the whole. An error
/// in a layer is placed in that layer: its name, line and column.
pub fn parse_layered(file: &str, text: &str, layers: &[Layer]) -> Result<Config, Vec<ConfigError>> {
    parse_layered_keeping(file, text, layers, &Answers::new())
}

/// [`parse_layered`], with failing `dns` names keeping their addresses in
/// `kept`, as [`parse_keeping`].
pub fn parse_layered_keeping(
    file: &str,
    text: &str,
    layers: &[Layer],
    kept: &Answers,
) -> Result<Config, Vec<ConfigError>> {
    let locator = error::Locator::new(file, text);
    let mut raw = parse_raw(&locator, text)?;
    let mut errors = Vec::new();
    for section in [Section::Tenants, Section::Tiers] {
        let in_file = match section {
            Section::Tenants => raw.tenants.is_empty(),
            Section::Tiers => raw.tiers.is_empty(),
        };
        if !in_file {
            errors.push(locator.place(Problem {
                path: KeyPath::root().key(section.key()),
                message: format!(
                    "with [store] kind = \"etcd\" {} live in etcd, not in the file: move them with `mirador-router store import`",
                    section.key()
                ),
            }));
        }
    }
    let layer_locators: Vec<error::Locator> = layers.iter().map(|l| error::Locator::new(&l.name, &l.text)).collect();
    for (layer, at) in layers.iter().zip(&layer_locators) {
        let parsed = match layer.section {
            Section::Tenants => toml::from_str(&layer.text).map(|t| drop(raw.tenants.insert(layer.id.clone(), t))),
            Section::Tiers => toml::from_str(&layer.text).map(|t| drop(raw.tiers.insert(layer.id.clone(), t))),
        };
        if let Err(e) = parsed {
            errors.push(at.parse_error(&e));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let inputs = Inputs::gather_keeping(&raw, kept);
    validate::validate(raw, &inputs).map_err(|problems| {
        let place = |problem: Problem| {
            let layer = layers.iter().position(|l| {
                let segments = problem.path.segments();
                segments.len() >= 2
                    && segments[0] == error::Segment::Key(l.section.key().to_string())
                    && segments[1] == error::Segment::Key(l.id.clone())
            });
            match layer {
                Some(i) => layer_locators[i]
                    .place(Problem { path: problem.path.below(2), message: problem.message })
                    .with_key(problem.path.to_string()),
                None => locator.place(problem),
            }
        };
        problems.into_iter().map(place).collect()
    })
}

fn parse_raw(locator: &error::Locator, text: &str) -> Result<raw::RawConfig, Vec<ConfigError>> {
    toml::from_str(text).map_err(|e| vec![locator.parse_error(&e)])
}

fn validate_raw(locator: &error::Locator, raw: raw::RawConfig, inputs: &Inputs) -> Result<Config, Vec<ConfigError>> {
    validate::validate(raw, inputs).map_err(|problems| problems.into_iter().map(|p| locator.place(p)).collect())
}

/// Replaces the file at `path` with `text` so that a reader sees the old
/// file or the new one, never a part: a temporary file in the same
/// directory, fsync, rename over the old one, fsync of the directory.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod dns_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
