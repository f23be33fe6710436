//! The configuration types read from JSON objects only.
//!
//! serde's derive reads a struct from a map *or* from a sequence of its
//! fields in declaration order, so `[null, null]` was a valid
//! `PUT /api/v1/vm.hyperv-flush` body (an empty update: 204) and
//! `"hyperv_flush": [...]` a valid VM config section. No documented form
//! is an array, and a client that sends one means something else, so
//! these types accept a map and refuse anything else with serde's
//! "invalid type" error (found by fuzzing and schemathesis; see
//! docs/reliability.md). A VMM's own configuration types that embed the
//! section can do the same with [`Fields`] and [`from_object`].

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};

/// A type with a derived field-by-field deserializer
/// (`#[serde(remote = "Self")]`), read through [`from_object`].
pub trait Fields<'de>: Sized {
    /// What the error says was expected, e.g. "a JSON object".
    const EXPECTING: &'static str;
    /// The derived deserializer.
    fn from_fields<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

/// Deserializes `T` from a map only.
pub fn from_object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Fields<'de>,
{
    struct ObjectOnly<T>(PhantomData<T>);

    impl<'de, T: Fields<'de>> Visitor<'de> for ObjectOnly<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::EXPECTING)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            // The same map access goes on to the derived code, so errors
            // still name the field (serde_path_to_error wraps this access).
            T::from_fields(MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectOnly(PhantomData))
}

/// A field of an update that was given: its value, never `null` (serde
/// reads `null` into an `Option` as `None`, which would silently mean
/// "unchanged" for `{"l1": null}`; found by schemathesis). Absent fields
/// stay `None` through the container's `#[serde(default)]`.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}
