//! The one shape every filter refuses a configuration with.

use std::fmt;

/// A plugin configuration (or metadata) error, the one shape both filters
/// refuse a configuration with: the field (empty when the whole input is at
/// fault) and the reason. Shown as `field: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        ConfigError { field: field.into(), reason: reason.to_string() }
    }

    /// An input that is not JSON at all.
    pub fn invalid_json(e: impl fmt::Display) -> Self {
        ConfigError::new("", format!("invalid JSON: {e}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}
