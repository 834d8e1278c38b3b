//! ALPN protocol lists and the upstream HTTP protocols they are chosen for.

use std::fmt;
use std::rc::Rc;

/// The upstream HTTP protocol a request will use, in Istio's config names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http10,
    Http11,
    Http2,
}

impl UpstreamProtocol {
    pub const ALL: [UpstreamProtocol; 3] = [Self::Http10, Self::Http11, Self::Http2];

    /// Istio's enum name (`HTTP10`, `HTTP11`, `HTTP2`), used in config and metadata.
    pub fn config_name(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP10",
            Self::Http11 => "HTTP11",
            Self::Http2 => "HTTP2",
        }
    }

    pub fn from_config_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.config_name() == name)
    }

    /// From Envoy's `request.protocol` property. HTTP/3 has no Istio ALPN
    /// mapping, so it is not an upstream protocol this filter knows.
    pub fn from_request_protocol(protocol: &str) -> Option<Self> {
        match protocol {
            "HTTP/1.0" => Some(Self::Http10),
            "HTTP/1.1" => Some(Self::Http11),
            "HTTP/2" => Some(Self::Http2),
            _ => None,
        }
    }

    /// The token a real (non-mesh) server negotiates for this protocol.
    pub fn plain_alpn(self) -> &'static str {
        match self {
            Self::Http10 => "http/1.0",
            Self::Http11 => "http/1.1",
            Self::Http2 => "h2",
        }
    }

    /// Istio's default override list for this protocol.
    pub fn istio_default_alpn(self) -> AlpnList {
        let first = match self {
            Self::Http10 => "istio-http/1.0",
            Self::Http11 => "istio-http/1.1",
            Self::Http2 => "istio-h2",
        };
        AlpnList(format!("{first},istio,{}", self.plain_alpn()).into())
    }
}

impl fmt::Display for UpstreamProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.config_name())
    }
}

/// Why a list of ALPN tokens cannot be handed to Envoy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlpnError {
    Empty,
    EmptyToken { index: usize },
    TokenTooLong { index: usize, len: usize },
    BadCharacter { index: usize },
    TooLong { wire_len: usize },
}

impl fmt::Display for AlpnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the list is empty"),
            Self::EmptyToken { index } => write!(f, "element {index} is empty"),
            Self::TokenTooLong { index, len } => {
                write!(f, "element {index} is {len} bytes long (at most {MAX_TOKEN_LEN})")
            }
            Self::BadCharacter { index } => {
                write!(f, "element {index} contains whitespace, a comma or a non-printable character")
            }
            Self::TooLong { wire_len } => {
                write!(f, "the list takes {wire_len} bytes on the wire (at most {MAX_WIRE_LEN})")
            }
        }
    }
}

/// TLS: a protocol name is 1..=255 bytes.
pub const MAX_TOKEN_LEN: usize = 255;
/// TLS: the whole ALPN extension list is at most 2^16-1 bytes.
pub const MAX_WIRE_LEN: usize = 65_535;

/// A non-empty list of ALPN tokens that is safe to give Envoy.
///
/// Envoy takes the list as one comma-separated string and does not check it:
/// an empty element aborts the whole Envoy process when the upstream
/// connection is made, spaces are kept, and a token over 255 bytes fails the
/// request. So every list, from config or from cluster metadata, goes through
/// [`AlpnList::new`] first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlpnList(Rc<str>);

impl AlpnList {
    pub fn new<I, S>(tokens: I) -> Result<Self, AlpnError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tokens: Vec<String> = tokens.into_iter().map(Into::into).collect();
        if tokens.is_empty() {
            return Err(AlpnError::Empty);
        }
        let mut wire_len = 0usize;
        for (index, token) in tokens.iter().enumerate() {
            if token.is_empty() {
                return Err(AlpnError::EmptyToken { index });
            }
            if token.len() > MAX_TOKEN_LEN {
                return Err(AlpnError::TokenTooLong { index, len: token.len() });
            }
            // Printable ASCII without space; the comma is Envoy's separator.
            if !token.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(AlpnError::BadCharacter { index });
            }
            wire_len = wire_len.saturating_add(token.len() + 1);
        }
        if wire_len > MAX_WIRE_LEN {
            return Err(AlpnError::TooLong { wire_len });
        }
        Ok(AlpnList(tokens.join(",").into()))
    }

    /// Splits Envoy's comma-separated form (as written in metadata strings).
    pub fn from_comma_separated(list: &str) -> Result<Self, AlpnError> {
        Self::new(list.split(','))
    }

    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        // Tokens never contain a comma (`new` refuses it), so this is exact.
        self.0.split(',')
    }

    /// The value for Envoy's `envoy.network.application_protocols` filter
    /// state. Joined once, when the list is made: a request only borrows it.
    pub fn envoy_value(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn istio_defaults_end_with_the_real_protocol() {
        for p in UpstreamProtocol::ALL {
            let list = p.istio_default_alpn();
            assert_eq!(list.tokens().last(), Some(p.plain_alpn()));
        }
        assert_eq!(UpstreamProtocol::Http11.istio_default_alpn().envoy_value(), "istio-http/1.1,istio,http/1.1");
        assert_eq!(UpstreamProtocol::Http10.istio_default_alpn().envoy_value(), "istio-http/1.0,istio,http/1.0");
        assert_eq!(UpstreamProtocol::Http2.istio_default_alpn().envoy_value(), "istio-h2,istio,h2");
    }

    #[test]
    fn request_protocols_map_to_upstream_protocols() {
        assert_eq!(UpstreamProtocol::from_request_protocol("HTTP/1.0"), Some(UpstreamProtocol::Http10));
        assert_eq!(UpstreamProtocol::from_request_protocol("HTTP/1.1"), Some(UpstreamProtocol::Http11));
        assert_eq!(UpstreamProtocol::from_request_protocol("HTTP/2"), Some(UpstreamProtocol::Http2));
        assert_eq!(UpstreamProtocol::from_request_protocol("HTTP/3"), None);
        assert_eq!(UpstreamProtocol::from_request_protocol(""), None);
    }

    #[test]
    fn lists_that_would_crash_or_break_envoy_are_refused() {
        assert_eq!(AlpnList::new(Vec::<String>::new()), Err(AlpnError::Empty));
        assert_eq!(AlpnList::from_comma_separated(""), Err(AlpnError::EmptyToken { index: 0 }));
        assert_eq!(AlpnList::from_comma_separated(",a"), Err(AlpnError::EmptyToken { index: 0 }));
        assert_eq!(AlpnList::from_comma_separated("a,"), Err(AlpnError::EmptyToken { index: 1 }));
        assert_eq!(AlpnList::from_comma_separated("a,,b"), Err(AlpnError::EmptyToken { index: 1 }));
        assert_eq!(AlpnList::from_comma_separated("a, b"), Err(AlpnError::BadCharacter { index: 1 }));
        assert_eq!(AlpnList::new(["a b"]), Err(AlpnError::BadCharacter { index: 0 }));
        assert_eq!(AlpnList::new(["a,b"]), Err(AlpnError::BadCharacter { index: 0 }));
        assert_eq!(AlpnList::new(["h2\n"]), Err(AlpnError::BadCharacter { index: 0 }));
        assert_eq!(AlpnList::new(["é"]), Err(AlpnError::BadCharacter { index: 0 }));
        let long = "x".repeat(256);
        assert_eq!(AlpnList::new([long]), Err(AlpnError::TokenTooLong { index: 0, len: 256 }));
        assert!(AlpnList::new(["x".repeat(255)]).is_ok());
        let many = vec!["x".repeat(255); 300];
        assert!(matches!(AlpnList::new(many), Err(AlpnError::TooLong { .. })));
    }

    proptest! {
        // Whatever a list was made from, an accepted list never carries an
        // empty element, whitespace or an oversized token to Envoy.
        #[test]
        fn accepted_lists_are_always_safe_for_envoy(input in ".{0,600}") {
            if let Ok(list) = AlpnList::from_comma_separated(&input) {
                let value = list.envoy_value();
                prop_assert!(!value.is_empty());
                for token in value.split(',') {
                    prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
                    prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
                }
                prop_assert_eq!(value, input.as_str());
            }
        }
    }
}
