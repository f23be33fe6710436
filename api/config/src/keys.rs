//! The configuration keys, defined once: [`config_keys!`] turns the one
//! table in `lib.rs` into [`HypervFlushConfig`](crate::HypervFlushConfig),
//! [`HypervFlushUpdate`](crate::HypervFlushUpdate), [`ConfigKey`], the
//! option-string parser and printer, the diff, and what the docs table
//! and the runtime-change rules read.

use crate::option::OptionError;
use crate::{OptionValue, hypercall_port};

/// How a key's value is spelled in an option string.
pub(crate) trait KeyValue: Sized + Copy + PartialEq {
    /// The values, for `--help`: `auto|on|off`, `<port>`.
    fn syntax() -> String;
    /// The values, for the docs table.
    fn allowed() -> String;
    /// Parses `value` given for `key`.
    fn parse(key: &str, value: &str) -> Result<Self, OptionError>;
    /// The option-string spelling.
    fn format(&self) -> String;
}

impl<T: OptionValue + PartialEq> KeyValue for T {
    fn syntax() -> String {
        T::NAMES.join("|")
    }
    fn allowed() -> String {
        T::NAMES
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    fn parse(key: &str, value: &str) -> Result<Self, OptionError> {
        crate::option::parse_named(key, value)
    }
    fn format(&self) -> String {
        self.name().to_owned()
    }
}

/// The one number-valued key, `hypercall_port`.
impl KeyValue for u16 {
    fn syntax() -> String {
        "<port>".to_owned()
    }
    fn allowed() -> String {
        "a free port in 0x00-0xff, decimal or `0x` hex".to_owned()
    }
    fn parse(key: &str, value: &str) -> Result<Self, OptionError> {
        let allowed = format!(
            "a free port in 0x00-0xff: {}",
            hypercall_port::free_port_ranges()
        );
        crate::option::parse_number(key, value, &allowed)
    }
    fn format(&self) -> String {
        format!("{self:#x}")
    }
}

/// When a changed key reaches a running guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeScope {
    /// The userspace engine applies it to the next hypercall.
    Runtime,
    /// It shapes the guest's CPUID or hypercall page: next boot only.
    Reboot,
}

/// The serde trait impls of a `#[serde(remote = "Self")]` type: serialize
/// as derived, deserialize from a JSON object only.
macro_rules! object_only {
    ($t:ident, $expecting:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                // The derived (inherent) function.
                $t::serialize(self, serializer)
            }
        }

        impl<'de> $crate::object::Fields<'de> for $t {
            const EXPECTING: &'static str = $expecting;
            fn from_fields<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $t::deserialize(d)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::object::from_object(d)
            }
        }
    };
}

/// Builds the configuration types from the key table (see `lib.rs`).
macro_rules! config_keys {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident : $ty:ty = $default:expr, $scope:ident, $meaning:literal;
    )*) => {
        /// The `hyperv_flush` section of a VM configuration. Deserialized
        /// from a JSON object only (`object.rs`).
        #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        // The derived code becomes inherent functions; the trait impls
        // below route deserialization through `from_object`.
        #[serde(remote = "Self")]
        #[serde(default, deny_unknown_fields)]
        pub struct HypervFlushConfig {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl Default for HypervFlushConfig {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        /// A partial update of [`HypervFlushConfig`]: the keys given replace
        /// the current values, the others keep them. Used by
        /// `PUT /api/v1/vm.hyperv-flush`, `hvflush-remote set` and the
        /// "command line overrides file" merge.
        ///
        /// Deserialized from a JSON object only (`object.rs`).
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(remote = "Self")]
        #[serde(default, deny_unknown_fields)]
        pub struct HypervFlushUpdate {
            $(
                #[doc = concat!("New `", stringify!($field), "`.")]
                // Absent is `None`; `null` is refused, like any value
                // outside the key's type (it would read as "unchanged").
                #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "crate::object::present")]
                pub $field: Option<$ty>,
            )*
        }

        object_only!(HypervFlushConfig, "a JSON object of hyperv_flush keys");
        object_only!(HypervFlushUpdate, "a JSON object of hyperv_flush keys");

        /// A configuration key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum ConfigKey {
            $( #[doc = concat!("`", stringify!($field), "`")] $field, )*
        }

        impl ConfigKey {
            /// Every key, in option-string order.
            pub const ALL: &'static [ConfigKey] = &[$( ConfigKey::$field, )*];

            /// The key's name (option string, JSON, API).
            pub fn name(self) -> &'static str {
                match self { $( Self::$field => stringify!($field), )* }
            }

            /// Looks a key up by name.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|k| k.name() == name)
            }

            /// The values, for `--help` (`on|off`).
            pub fn values_syntax(self) -> String {
                match self { $( Self::$field => <$ty as $crate::keys::KeyValue>::syntax(), )* }
            }

            /// The values, for the docs table (`` `on`, `off` ``).
            pub fn allowed(self) -> String {
                match self { $( Self::$field => <$ty as $crate::keys::KeyValue>::allowed(), )* }
            }

            /// The default, as an option-string value.
            pub fn default_value(self) -> String {
                let d = HypervFlushConfig::default();
                match self { $( Self::$field => $crate::keys::KeyValue::format(&d.$field), )* }
            }

            /// What the key does, for the docs table.
            pub fn meaning(self) -> &'static str {
                match self { $( Self::$field => $meaning, )* }
            }

            /// When a change of this key reaches a running guest.
            pub fn scope(self) -> $crate::keys::ChangeScope {
                match self { $( Self::$field => $crate::keys::ChangeScope::$scope, )* }
            }
        }

        impl From<&HypervFlushConfig> for HypervFlushUpdate {
            fn from(c: &HypervFlushConfig) -> Self {
                Self { $( $field: Some(c.$field), )* }
            }
        }

        impl HypervFlushUpdate {
            /// `base` with the given keys replaced (not validated).
            fn merged(&self, base: &HypervFlushConfig) -> HypervFlushConfig {
                HypervFlushConfig { $( $field: self.$field.unwrap_or(base.$field), )* }
            }

            /// The keys of `new` that differ from `old`, as an update.
            pub fn diff(old: &HypervFlushConfig, new: &HypervFlushConfig) -> Self {
                Self { $( $field: (old.$field != new.$field).then_some(new.$field), )* }
            }

            /// The keys given, with their option-string values, in order.
            pub fn entries(&self) -> impl Iterator<Item = (ConfigKey, String)> {
                [$(
                    (ConfigKey::$field, self.$field.map(|v| $crate::keys::KeyValue::format(&v))),
                )*]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
            }

            /// Sets `key` from its option-string spelling.
            fn set(&mut self, key: ConfigKey, value: &str) -> Result<(), $crate::OptionError> {
                match key {
                    $( ConfigKey::$field => {
                        self.$field = Some($crate::keys::KeyValue::parse(key.name(), value)?)
                    } )*
                }
                Ok(())
            }
        }
    };
}
