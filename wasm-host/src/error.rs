//! The two errors the crate hands out: a configuration the filters refuse,
//! and a status the host returned.

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

/// A proxy-wasm status other than `Ok`, as the host returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    pub(crate) const NOT_FOUND: HostError = HostError(1);
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            12 => "Unimplemented",
            _ => "status",
        };
        write!(f, "{name}({})", self.0)
    }
}

pub type HostResult<T> = Result<T, HostError>;

/// A raw proxy-wasm status as a result.
pub(crate) fn status(raw: u32) -> HostResult<()> {
    if raw == 0 {
        Ok(())
    } else {
        Err(HostError(raw))
    }
}
