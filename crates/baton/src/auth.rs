//! The application's side of login: checking credentials.

use std::future::Future;

use baton_store::Authentication;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A user the application vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal<C> {
    /// The user id (the access token's `sub`, the session's owner).
    pub user_id: String,
    /// Extra claims for the access token.
    pub claims: C,
    /// How the user authenticated (the access token's `amr` and `acr`): a password by
    /// default; say more when the check was stronger (a password and a one-time code,
    /// `Authentication::new(["pwd", "otp"])`).
    pub authentication: Authentication,
}

impl<C> Principal<C> {
    /// A principal with these claims.
    pub fn new(user_id: impl Into<String>, claims: C) -> Self {
        Principal {
            user_id: user_id.into(),
            claims,
            authentication: Authentication::password(),
        }
    }

    /// Sets how the user authenticated.
    #[must_use]
    pub fn with_authentication(mut self, authentication: Authentication) -> Self {
        self.authentication = authentication;
        self
    }
}

/// The application's user directory could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authenticator unavailable: {0}")]
pub struct AuthUnavailable(pub String);

/// Checks credentials and says who a user is.
///
/// Implementations must spend the same time on an unknown user as on a wrong password (hash
/// a dummy password), so timing does not tell which names exist.
pub trait Authenticator: Send + Sync + 'static {
    /// Extra claims put into access tokens.
    type Claims: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// The user behind `username` and `password`, or `None` for bad credentials.
    fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> impl Future<Output = Result<Option<Principal<Self::Claims>>, AuthUnavailable>> + Send;

    /// `true` when `password` is `user_id`'s (a user proving who they are again before a
    /// sensitive action, `POST {base}/reauthenticate`). Same timing rules as
    /// [`authenticate`](Self::authenticate).
    fn check_password(
        &self,
        user_id: &str,
        password: &str,
    ) -> impl Future<Output = Result<bool, AuthUnavailable>> + Send;

    /// The claims for `user_id` at a refresh; `None` when the user no longer exists (the
    /// session is then revoked).
    fn claims(
        &self,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<Self::Claims>, AuthUnavailable>> + Send;
}
