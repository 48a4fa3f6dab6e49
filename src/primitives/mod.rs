//! Config primitives every part's config is made of: [`units`] (durations and sizes, one
//! parser for all), [`Problems`] (validation errors with their field path), [`Secret`] (never
//! printed) and [`expand`] (`${VAR:-default}`).
//!
//! **Invariant:** a leaf: this module imports nothing of vigil's, so every part can use it and
//! `config` can assemble every part's config without an import cycle. `crate::config`
//! re-exports all of it.

pub mod expand;
pub mod units;

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret string (password, token, API key): never printed, never logged. YAML null (what
/// `key: ${UNSET:-}` expands to) is the empty secret, i.e. not set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(Option::<String>::deserialize(d)?.unwrap_or_default()))
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// Collects validation problems, each as `path: problem; fix`.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn push(&mut self, path: impl fmt::Display, msg: impl fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }

    /// Checks that `value` is an http(s) URL with a host.
    pub fn url(&mut self, path: impl fmt::Display, value: &str) {
        let ok = reqwest::Url::parse(value)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
            .unwrap_or(false);
        if !ok {
            self.push(path, format!("'{value}' is not a URL; expected http(s)://host:port"));
        }
    }
}
