//! A status the host returned (a configuration the filters refuse is
//! `filter_common::ConfigError`).

use std::fmt;

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
