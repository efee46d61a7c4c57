//! [`RecentLogin`]: step-up authentication for sensitive actions (RFC 9470).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use baton_token::Claims;

use crate::ConfigError;

/// What a sensitive route requires of how the user authenticated (RFC 9470): a login (or a
/// re-authentication) within `max_age`, and/or one of the given `acr` values.
///
/// A token that does not meet it gets 401 with
/// `WWW-Authenticate: Bearer error="insufficient_user_authentication", max_age=300` (and
/// `acr_values="..."` when asked): the client has the user prove who they are again (in
/// baton's facade, `POST {base}/reauthenticate`) and retries. A refresh does not help: it
/// keeps the session's `auth_time`.
///
/// ```
/// use baton_bearer::RecentLogin;
/// use baton_token::{Claims, NoCustomClaims};
/// use std::time::Duration;
///
/// let recent = RecentLogin::within(Duration::from_secs(300));
/// let claims = Claims::new("alice", 2_000, NoCustomClaims {}).with_authentication(1_000, ["pwd"], None);
/// assert!(recent.is_met(&claims, 1_300));
/// assert!(!recent.is_met(&claims, 1_301));
/// // No `auth_time` at all: not met.
/// assert!(!recent.is_met(&Claims::new("alice", 2_000, NoCustomClaims {}), 1_000));
///
/// let strong = RecentLogin::acr(["urn:example:mfa"]).unwrap();
/// assert!(!strong.is_met(&claims, 1_000));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RecentLogin {
    max_age: Option<u64>,
    acr_values: Vec<String>,
    /// `acr_values` as the challenge carries them: space-separated.
    challenge_acr: Option<Arc<str>>,
}

impl fmt::Debug for RecentLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecentLogin")
            .field("max_age", &self.max_age)
            .field("acr_values", &self.acr_values)
            .finish()
    }
}

impl RecentLogin {
    /// Requires an authentication at most `max_age` ago (whole seconds, rounded down).
    pub fn within(max_age: Duration) -> Self {
        RecentLogin {
            max_age: Some(max_age.as_secs()),
            acr_values: Vec::new(),
            challenge_acr: None,
        }
    }

    /// Requires one of `values` as the token's `acr`, however long ago.
    ///
    /// # Errors
    /// [`ConfigError::InvalidAcr`] for a value the challenge cannot carry.
    pub fn acr<I, S>(values: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RecentLogin {
            max_age: None,
            acr_values: Vec::new(),
            challenge_acr: None,
        }
        .with_acr_values(values)
    }

    /// Also requires one of `values` as the token's `acr`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidAcr`] for a value the challenge cannot carry.
    pub fn with_acr_values<I, S>(mut self, values: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for value in values {
            let value = value.into();
            if !crate::layer::is_scope_token(&value) {
                return Err(ConfigError::InvalidAcr(value));
            }
            self.acr_values.push(value);
        }
        self.challenge_acr =
            (!self.acr_values.is_empty()).then(|| Arc::from(self.acr_values.join(" ")));
        Ok(self)
    }

    /// The longest time since the authentication, in seconds.
    pub fn max_age(&self) -> Option<u64> {
        self.max_age
    }

    /// The `acr` values accepted (any one of them).
    pub fn acr_values(&self) -> &[String] {
        &self.acr_values
    }

    /// `true` when `claims` meet the requirement at `now` (seconds since the epoch). An
    /// `auth_time` in the future by more than a minute does not count.
    pub fn is_met<C>(&self, claims: &Claims<C>, now: u64) -> bool {
        let recent = self.max_age.is_none_or(|max_age| {
            claims
                .auth_time
                .is_some_and(|at| at <= now.saturating_add(60) && now.saturating_sub(at) <= max_age)
        });
        let class = self.acr_values.is_empty()
            || claims
                .acr
                .as_deref()
                .is_some_and(|acr| self.acr_values.iter().any(|v| v == acr));
        recent && class
    }

    pub(crate) fn challenge_acr(&self) -> Option<Arc<str>> {
        self.challenge_acr.clone()
    }
}
