//! What the fuzz targets share: an input splitter and the oracles that do
//! not trust the code under test.

/// Splits fuzz input into the pieces a target needs: a byte at a time, or
/// a length-prefixed slice, never panicking when the input runs out.
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// Up to `len` bytes.
    pub fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// A slice whose length is the next byte.
    pub fn slice(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte());
        self.bytes(len)
    }

    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.slice()).into_owned()
    }

    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// Envoy aborts on an ALPN value with an empty element and refuses tokens
/// over 255 bytes: what reaches `set_envoy_filter_state` must pass this,
/// written without the filter's own validator.
pub fn envoy_accepts_alpn_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 65_535
        && value
            .split(',')
            .all(|t| !t.is_empty() && t.len() <= 255 && t.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
}

/// Istio's well-formed SPIFFE identity, for identity oracles.
pub fn spiffe_namespace(san: &str) -> Option<&str> {
    let parts: Vec<&str> = san.strip_prefix("spiffe://")?.split('/').collect();
    match parts.as_slice() {
        [td, "ns", ns, "sa", sa]
            if [td, ns, sa].iter().all(|p| !p.is_empty() && !p.contains('?') && !p.contains('#')) =>
        {
            Some(ns)
        }
        _ => None,
    }
}
