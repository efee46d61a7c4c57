//! The claims of a baton access token.

use serde::{Deserialize, Serialize};

/// The claims of an access token: the registered claims of RFC 7519, the session id `sid`, the
/// RFC 9068 `scope` and `roles`, and the application's own claims `C`, flattened into the same
/// JSON object.
///
/// `sub` and `exp` are required: a token without them, or with a claim of the wrong JSON type
/// (`"exp": "9999999999"`), does not verify.
///
/// ```
/// use baton_token::Claims;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// struct Custom {
///     tenant: String,
/// }
///
/// let claims = Claims::new("user-1", 1_700_000_900, Custom { tenant: "acme".into() });
/// let json = serde_json::to_value(&claims).unwrap();
/// assert_eq!(json["tenant"], "acme");
/// assert_eq!(json["sub"], "user-1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims<C = NoCustomClaims> {
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject: the user id.
    pub sub: String,
    /// Audience: one string or an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The session (one login on one device) the token was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Space-separated scopes (RFC 9068 section 2.2.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Roles (RFC 9068 section 2.2.3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// The application's own claims.
    #[serde(flatten)]
    pub custom: C,
}

impl<C> Claims<C> {
    /// Claims with the subject, expiry and the application's claims; everything else empty.
    pub fn new(sub: impl Into<String>, exp: u64, custom: C) -> Self {
        Claims {
            iss: None,
            sub: sub.into(),
            aud: None,
            exp,
            nbf: None,
            iat: None,
            jti: None,
            sid: None,
            scope: None,
            roles: None,
            custom,
        }
    }

    /// Sets the session id.
    #[must_use]
    pub fn with_sid(mut self, sid: impl Into<String>) -> Self {
        self.sid = Some(sid.into());
        self
    }

    /// Sets the space-separated scopes.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sets the roles.
    #[must_use]
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `nbf`.
    #[must_use]
    pub fn with_nbf(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }

    /// The scopes, split on spaces.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }

    /// `true` when `scope` lists `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scopes().any(|s| s == wanted)
    }

    /// `true` when `roles` lists `wanted`.
    pub fn has_role(&self, wanted: &str) -> bool {
        self.roles
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|r| r == wanted)
    }
}

/// No application claims: the default for [`Claims`].
///
/// Unknown claims in a token are ignored when this is the custom type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NoCustomClaims {}

/// The `aud` claim: a single string or an array of strings (RFC 7519 section 4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "api"`.
    One(String),
    /// `"aud": ["api", "admin"]`.
    Many(Vec<String>),
}

impl Audience {
    /// The audiences listed.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Audience::One(a) => (Some(a.as_str()), &[][..]),
            Audience::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }

    /// `true` when `aud` lists `wanted`.
    pub fn contains(&self, wanted: &str) -> bool {
        self.iter().any(|a| a == wanted)
    }
}

impl From<&str> for Audience {
    fn from(value: &str) -> Self {
        Audience::One(value.to_owned())
    }
}

impl From<String> for Audience {
    fn from(value: String) -> Self {
        Audience::One(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_of_the_wrong_type_does_not_deserialize() {
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u","exp":"9999999999"}"#);
        assert!(r.is_err());
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u"}"#);
        assert!(r.is_err(), "exp is required");
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u","exp":5,"nbf":"1"}"#);
        assert!(r.is_err());
    }

    #[test]
    fn audience_is_one_or_many_and_unknown_claims_are_ignored() {
        let c: Claims = serde_json::from_str(r#"{"sub":"u","exp":5,"aud":"a","x":1}"#).unwrap();
        assert!(c.aud.unwrap().contains("a"));
        let c: Claims = serde_json::from_str(r#"{"sub":"u","exp":5,"aud":["a","b"]}"#).unwrap();
        let aud = c.aud.unwrap();
        assert!(aud.contains("b"));
        assert!(!aud.contains("c"));
    }

    #[test]
    fn scopes_and_roles() {
        let c = Claims::new("u", 1, NoCustomClaims {})
            .with_scope("read  write")
            .with_roles(["admin"]);
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["read", "write"]);
        assert!(c.has_scope("write"));
        assert!(!c.has_scope(""));
        assert!(c.has_role("admin"));
        assert!(!c.has_role("root"));
    }
}
