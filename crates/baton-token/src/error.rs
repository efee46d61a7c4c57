//! Errors of verifying tokens, loading keys and issuing tokens.

use std::error::Error as StdError;
use std::fmt;

/// Why a token was refused.
///
/// Each kind maps to an RFC 6750 error code ([`ErrorKind::rfc6750_code`]); the description that
/// goes back to the client is short and never echoes the token or key material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No token was presented.
    Missing,
    /// The token is not a well-formed JWT, or its header or claims are not acceptable
    /// (wrong JSON types, a missing required claim, a `crit` header).
    Malformed,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// The signature does not match.
    BadSignature,
    /// The `kid` names no key in the key set.
    UnknownKey,
    /// The `alg` header is not the algorithm pinned for the key.
    WrongAlgorithm,
    /// `iss` is missing or not an accepted issuer.
    WrongIssuer,
    /// `aud` is missing or names no accepted audience.
    WrongAudience,
    /// The token is larger than the configured cap; it was not decoded at all.
    TooLarge,
    /// The token's session or user was revoked.
    Revoked,
}

impl ErrorKind {
    /// A stable, lower-case name for logs and metrics (`"expired"`, `"bad_signature"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Missing => "missing",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Expired => "expired",
            ErrorKind::NotYetValid => "not_yet_valid",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::UnknownKey => "unknown_key",
            ErrorKind::WrongAlgorithm => "wrong_algorithm",
            ErrorKind::WrongIssuer => "wrong_issuer",
            ErrorKind::WrongAudience => "wrong_audience",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Revoked => "revoked",
        }
    }

    /// The RFC 6750 section 3.1 error code: none for a missing token (the challenge then
    /// carries no error), `invalid_token` for everything else.
    pub const fn rfc6750_code(self) -> Option<&'static str> {
        match self {
            ErrorKind::Missing => None,
            _ => Some("invalid_token"),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused token: its [`ErrorKind`], a short description safe to send to the client, and the
/// underlying cause (for logs) when there is one.
pub struct VerifyError {
    kind: ErrorKind,
    description: &'static str,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl VerifyError {
    /// A new error of `kind`, with a short description that must not contain token material.
    pub fn new(kind: ErrorKind, description: &'static str) -> Self {
        VerifyError {
            kind,
            description,
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// A short, human-readable description that leaks nothing (for `error_description`).
    pub fn description(&self) -> &'static str {
        self.description
    }
}

impl Clone for VerifyError {
    /// Clones kind and description; the source (a diagnostic only) is not carried over.
    fn clone(&self) -> Self {
        VerifyError::new(self.kind, self.description)
    }
}

impl fmt::Debug for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyError")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description)
    }
}

impl PartialEq for VerifyError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.description == other.description
    }
}

impl StdError for VerifyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A key could not be loaded, generated or added to a key set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key material does not parse as a key for the given algorithm.
    #[error("invalid {alg} key: {reason}")]
    Invalid {
        /// The algorithm the key was meant for.
        alg: crate::Algorithm,
        /// What was wrong (no key material in it).
        reason: String,
    },
    /// An HMAC secret shorter than the hash output (RFC 7518 section 3.2).
    #[error("{alg} secret is {len} bytes; at least {min} are required")]
    SecretTooShort {
        /// The HMAC algorithm.
        alg: crate::Algorithm,
        /// The given length.
        len: usize,
        /// The minimum length.
        min: usize,
    },
    /// The algorithm does not fit the kind of key (an HMAC secret for ES256, say).
    #[error("{alg} does not take {what}")]
    WrongKeyType {
        /// The algorithm asked for.
        alg: crate::Algorithm,
        /// The kind of key that was given.
        what: &'static str,
    },
    /// A `kid` that is empty, too long (over 128 bytes), or holds control characters.
    #[error("invalid kid: {0}")]
    InvalidKid(&'static str),
    /// Two keys with the same `kid` in one set.
    #[error("duplicate kid {0:?} in the key set")]
    DuplicateKid(String),
    /// The operation needs a key that the set does not have.
    #[error("{0}")]
    Missing(&'static str),
    /// The key's private part is needed (to sign) but only the public part is known.
    #[error("key {0:?} has no private part and cannot sign")]
    NotSigning(String),
    /// A JWKS document could not be parsed or holds an unusable key.
    #[error("invalid JWKS: {0}")]
    Jwks(String),
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

/// A token could not be issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The key set has no active signing key.
    #[error("the key set has no active signing key")]
    NoSigningKey,
    /// The claims could not be serialized, or signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The system random generator failed (no `jti`).
    #[error("random generator failed")]
    Random,
}
