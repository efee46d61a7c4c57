//! The revocation hook the layer consults after a token verifies.

/// Who a verified token speaks for, as handed to a [`CheckRevocation`] hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenIdentity<'a> {
    /// `sub`: the user.
    pub sub: &'a str,
    /// `sid`: the session, when the token names one.
    pub sid: Option<&'a str>,
    /// `iat`: when the token was issued (for "revoked before" cut-offs).
    pub iat: Option<u64>,
    /// `jti`: the token's id.
    pub jti: Option<&'a str>,
}

impl<'a> TokenIdentity<'a> {
    /// An identity for `sub` with nothing else known.
    pub fn new(sub: &'a str) -> Self {
        TokenIdentity {
            sub,
            sid: None,
            iat: None,
            jti: None,
        }
    }

    /// An identity with every field given (what a verified token carries).
    pub fn from_parts(
        sub: &'a str,
        sid: Option<&'a str>,
        iat: Option<u64>,
        jti: Option<&'a str>,
    ) -> Self {
        TokenIdentity { sub, sid, iat, jti }
    }

    /// Sets the token id.
    #[must_use]
    pub fn with_jti(mut self, jti: &'a str) -> Self {
        self.jti = Some(jti);
        self
    }

    /// Sets the session id.
    #[must_use]
    pub fn with_sid(mut self, sid: &'a str) -> Self {
        self.sid = Some(sid);
        self
    }

    /// Sets the issue time.
    #[must_use]
    pub fn with_iat(mut self, iat: u64) -> Self {
        self.iat = Some(iat);
        self
    }
}

/// Tells whether a verified token was revoked (its session logged out, its user logged out
/// everywhere).
///
/// Called on every request that carries a valid token, on the request path: it must answer from
/// memory (a set fed by a revocation feed), never with an I/O round trip. A closure
/// `Fn(&TokenIdentity) -> bool` is a `CheckRevocation`.
pub trait CheckRevocation: Send + Sync + 'static {
    /// `true` when the token must be refused.
    fn is_revoked(&self, token: &TokenIdentity<'_>) -> bool;

    /// `false` when this hook cannot tell now whether a token was revoked and tokens must
    /// not be trusted meanwhile (a feed that fails closed while it cannot read its log): the
    /// layer then answers 503 with `Retry-After` rather than 401, so clients wait instead of
    /// refreshing or signing out. `true` by default.
    fn is_known(&self) -> bool {
        true
    }
}

impl<F> CheckRevocation for F
where
    F: Fn(&TokenIdentity<'_>) -> bool + Send + Sync + 'static,
{
    fn is_revoked(&self, token: &TokenIdentity<'_>) -> bool {
        self(token)
    }
}
