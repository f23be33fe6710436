//! The VM config JSON file (`hvflush-vmm run --config FILE`) and the
//! "command line overrides file" merge.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use hvflush_config::object::{Fields, from_object};
use hvflush_config::option::OptionError;
use hvflush_config::{ConfigError, HypervFlushConfig, HypervFlushUpdate};

/// Errors of loading and merging the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("Cannot read VM config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A value of the file does not parse.
    #[error("Invalid `{field}` in VM config file {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Dotted path of the offending field, e.g. `hyperv_flush.mode`.
        field: String,
        /// What serde found (value given and values allowed).
        #[source]
        source: serde_json::Error,
    },
    /// The section parses but is not usable.
    #[error("Invalid `hyperv_flush` section in VM config file {}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The problem.
        #[source]
        source: ConfigError,
    },
    /// The `--hyperv-flush` option string does not parse.
    #[error("Invalid --hyperv-flush option")]
    Option(#[source] OptionError),
    /// The option string's values, applied over the file, are not usable.
    #[error("Invalid --hyperv-flush option over VM config file")]
    Merge(#[source] ConfigError),
}

/// The part of the VM config file this crate owns. Other top-level
/// sections belong to the VMM and are ignored here; inside `hyperv_flush`
/// unknown fields are rejected. The document is a JSON object, never an
/// array (serde's derive would read one as the fields in order).
#[derive(Deserialize)]
#[serde(remote = "Self")]
struct VmConfigFile {
    #[serde(default)]
    hyperv_flush: HypervFlushConfig,
}

impl<'de> Fields<'de> for VmConfigFile {
    const EXPECTING: &'static str = "a JSON object (a VM configuration)";
    fn from_fields<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        VmConfigFile::deserialize(d)
    }
}

impl<'de> Deserialize<'de> for VmConfigFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_object(d)
    }
}

/// Parses the `hyperv_flush` section of VM config JSON text; `origin`
/// names the source in errors. A missing section means the defaults.
pub fn parse_vm_config(text: &str, origin: &Path) -> Result<HypervFlushConfig, ConfigFileError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let file: VmConfigFile = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." || p.is_empty() => "(document)".to_owned(),
            p => p,
        };
        ConfigFileError::Parse {
            path: origin.to_owned(),
            field,
            source: e.into_inner(),
        }
    })?;
    // Nothing may follow the document: `{} x` is not a VM config (found by
    // fuzzing, tests/fuzz `config`).
    de.end().map_err(|source| ConfigFileError::Parse {
        path: origin.to_owned(),
        field: "(document)".to_owned(),
        source,
    })?;
    file.hyperv_flush
        .validate()
        .map_err(|source| ConfigFileError::Invalid {
            path: origin.to_owned(),
            source,
        })?;
    Ok(file.hyperv_flush)
}

/// Reads the `hyperv_flush` section of the VM config file at `path`.
pub fn load_vm_config(path: &Path) -> Result<HypervFlushConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_vm_config(&text, path)
}

/// The effective configuration: defaults, then the file's section (if a
/// file is given), then the keys of the `--hyperv-flush` option string
/// (if given). Keys absent from the option string keep the file's values.
pub fn merge_config(
    file: Option<&Path>,
    option_string: Option<&str>,
) -> Result<HypervFlushConfig, ConfigFileError> {
    let base = match file {
        Some(path) => load_vm_config(path)?,
        None => HypervFlushConfig::default(),
    };
    match option_string {
        Some(s) => HypervFlushUpdate::parse(s)
            .map_err(ConfigFileError::Option)?
            .apply_to(&base)
            .map_err(ConfigFileError::Merge),
        None => Ok(base),
    }
}
