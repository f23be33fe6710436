//! `key=value,key=value` option strings, Cloud Hypervisor style: the
//! `--hyperv-flush`, `--api-socket` and `--event-monitor` arguments and
//! `hvflush-remote set`.

use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::{ConfigError, ConfigKey, HypervFlushConfig, HypervFlushUpdate, OptionValue};

/// Errors of an option string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// Nothing was given.
    #[error("No option given (expected: {expected})")]
    Empty {
        /// The accepted syntax.
        expected: &'static str,
    },
    /// An item without `=`.
    #[error("Option `{0}` is not of the form key=value")]
    NotKeyValue(String),
    /// A `"` without its closing partner.
    #[error("Unterminated quote in `{0}`")]
    UnterminatedQuote(String),
    /// A key this option does not have.
    #[error("Unknown option `{key}` (allowed: {allowed})")]
    UnknownKey {
        /// The key given.
        key: String,
        /// The keys allowed.
        allowed: String,
    },
    /// The same key twice.
    #[error("Option `{0}` given more than once")]
    Duplicate(String),
    /// A value outside the key's set.
    #[error("Invalid value `{value}` for `{key}` (allowed: {allowed})")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// The values allowed.
        allowed: String,
    },
    /// Keys that exclude each other.
    #[error("Options `{0}` and `{1}` exclude each other")]
    Conflict(&'static str, &'static str),
    /// A value of the right form that the configuration cannot use.
    #[error("Invalid configuration")]
    Config(#[source] ConfigError),
}

/// Splits `a=1,b="x,y"` into `[("a","1"), ("b","x,y")]`; keys are unique.
fn split(input: &str, keys: &[&str]) -> Result<Vec<(String, String)>, OptionError> {
    let mut items: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for ch in input.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(ch),
        }
    }
    if quoted {
        return Err(OptionError::UnterminatedQuote(input.to_owned()));
    }
    items.push(current);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in items.into_iter().filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| OptionError::NotKeyValue(item.clone()))?;
        if !keys.contains(&key) {
            return Err(OptionError::UnknownKey {
                key: key.to_owned(),
                allowed: keys.join(", "),
            });
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(OptionError::Duplicate(key.to_owned()));
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

pub(crate) fn parse_named<T: OptionValue>(key: &str, value: &str) -> Result<T, OptionError> {
    // Cloud Hypervisor's toggles also take true/false.
    let alias = match value {
        "true" if T::NAMES.contains(&"on") => "on",
        "false" if T::NAMES.contains(&"off") => "off",
        v => v,
    };
    T::from_name(alias).ok_or_else(|| OptionError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        allowed: T::NAMES.join(", "),
    })
}

/// Parses a decimal or `0x` hexadecimal number.
pub(crate) fn parse_number<T: TryFrom<u64>>(
    key: &str,
    value: &str,
    allowed: &str,
) -> Result<T, OptionError> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse::<u64>().ok(),
    };
    parsed
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| OptionError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            allowed: allowed.to_owned(),
        })
}

impl HypervFlushUpdate {
    /// Parses `KEY=VAL[,KEY=VAL...]` with the keys of [`ConfigKey::ALL`];
    /// only the keys given are set. Values are validated.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let names: Vec<&str> = ConfigKey::ALL.iter().map(|k| k.name()).collect();
        let mut update = Self::default();
        for (key, value) in split(input, &names)? {
            // `split` accepts only the names above.
            if let Some(key) = ConfigKey::from_name(&key) {
                update.set(key, &value)?;
            }
        }
        update.validate().map_err(OptionError::Config)?;
        Ok(update)
    }
}

impl HypervFlushConfig {
    /// Parses the `--hyperv-flush` option string; keys not given keep their defaults.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        HypervFlushUpdate::parse(input)?
            .apply_to(&Self::default())
            .map_err(OptionError::Config)
    }
}

/// Where a Unix-socket or file endpoint comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A filesystem path.
    Path(PathBuf),
    /// A file descriptor inherited from the parent process.
    Fd(RawFd),
}

fn parse_endpoint(input: &str, expected: &'static str) -> Result<Endpoint, OptionError> {
    let pairs = split(input, &["path", "fd"])?;
    match pairs.as_slice() {
        [] => Err(OptionError::Empty { expected }),
        [(key, value)] if key == "path" => {
            if value.is_empty() {
                return Err(OptionError::InvalidValue {
                    key: key.clone(),
                    value: value.clone(),
                    allowed: "a non-empty path".to_owned(),
                });
            }
            Ok(Endpoint::Path(PathBuf::from(value)))
        }
        [(key, value)] => {
            // fds 0-2 are the VMM's stdio, never an inherited endpoint.
            let fd: i32 = parse_number(key, value, "a file descriptor number from 3 up")?;
            if fd < 3 {
                return Err(OptionError::InvalidValue {
                    key: key.clone(),
                    value: value.clone(),
                    allowed: "a file descriptor number from 3 up".to_owned(),
                });
            }
            Ok(Endpoint::Fd(fd))
        }
        _ => Err(OptionError::Conflict("path", "fd")),
    }
}

/// `--api-socket path=PATH|fd=N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSocketConfig(pub Endpoint);

impl ApiSocketConfig {
    /// Option-string syntax, for `--help`.
    pub const SYNTAX: &'static str =
        "HTTP API Unix socket \"path=<socket_path>|fd=<inherited_listening_socket_fd>\"";

    /// Parses the option string.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        parse_endpoint(input, Self::SYNTAX).map(Self)
    }
}

/// `--event-monitor path=FILE|fd=N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMonitorConfig(pub Endpoint);

impl EventMonitorConfig {
    /// Option-string syntax, for `--help`.
    pub const SYNTAX: &'static str =
        "File to report events on \"path=<file_path>|fd=<inherited_writable_fd>\"";

    /// Parses the option string.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        parse_endpoint(input, Self::SYNTAX).map(Self)
    }
}
