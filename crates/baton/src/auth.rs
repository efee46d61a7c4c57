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

/// What a login's JSON body holds, as the application's [`Authenticator`] takes it: a
/// username and a password ([`UsernamePassword`]), an e-mail address and a password, a name
/// and a one-time code. Any `Deserialize` type; unknown fields are the type's own business
/// (`#[serde(deny_unknown_fields)]` refuses them).
///
/// ```
/// use baton::LoginRequest;
/// use serde::Deserialize;
///
/// /// `{"email": "...", "code": "123456"}`
/// #[derive(Deserialize)]
/// struct EmailCode {
///     email: String,
///     code: String,
/// }
///
/// impl LoginRequest for EmailCode {
///     fn account(&self) -> &str {
///         &self.email
///     }
///     fn expected() -> &'static str {
///         "the body must be a JSON object with string fields email and code"
///     }
/// }
/// ```
pub trait LoginRequest: DeserializeOwned + Send + Sync + 'static {
    /// The account this login is for, as the user typed it: the key of the per-account
    /// failure limits (in its [canonical](crate::canonical_username) form, so a change of
    /// case or width spends the same budget), what the device cookie is minted for, and the
    /// name in audit records of failed logins (cut to 64 characters).
    fn account(&self) -> &str;

    /// What the body must hold, the description of the 400 for a body of another shape.
    fn expected() -> &'static str {
        "the body must be a JSON object with the login's fields"
    }
}

/// `{"username": "...", "password": "..."}`, the usual login.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct UsernamePassword {
    /// The name the user typed.
    pub username: String,
    /// The password the user typed.
    pub password: String,
}

impl UsernamePassword {
    /// A username and a password (an application testing its own [`Authenticator`]).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        UsernamePassword {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for UsernamePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsernamePassword")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl LoginRequest for UsernamePassword {
    fn account(&self) -> &str {
        &self.username
    }

    fn expected() -> &'static str {
        "the body must be a JSON object with string fields username and password"
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

    /// What a login's body holds: [`UsernamePassword`], or the application's own
    /// [`LoginRequest`].
    type Credentials: LoginRequest;

    /// The user these credentials prove, or `None` for bad credentials.
    fn authenticate(
        &self,
        credentials: &Self::Credentials,
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
