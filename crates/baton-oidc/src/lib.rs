#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod accounts;
mod http;
mod plain;
mod seal;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use baton_core::ErrorChain;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreIdToken, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};
use subtle::ConstantTimeEq as _;

pub use accounts::{Accounts, AccountsUnavailable, Link, MemoryAccounts};
pub use http::HttpError;
pub use plain::OAuth2Endpoints;
use seal::{FlowState, Sealer};

/// The prefix of the cookie that carries a flow from its start to its callback
/// (`__Host-baton-oidc-{id}`): `__Host-` so no other host (a sibling subdomain, a plain-HTTP
/// neighbour) can plant one for a victim's browser.
pub const FLOW_COOKIE_PREFIX: &str = "__Host-baton-oidc-";

fn flow_cookie(id: &str) -> String {
    format!("{FLOW_COOKIE_PREFIX}{id}")
}

/// A client of a discovered provider.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A configuration that cannot be used (a bad issuer URL, a provider whose discovery document
/// cannot be fetched or read, a bad root certificate).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The settings themselves.
    #[error("OpenID Connect configuration: {0}")]
    Config(String),
    /// The provider's discovery document (or its keys) could not be fetched or read.
    #[error("OpenID Connect discovery of {issuer}: {reason}")]
    Discovery {
        /// The issuer asked.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
}

/// Why a sign-in did not complete. [`code`](Self::code) is what the page is told.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcFailure {
    /// No provider by that name.
    #[error("unknown provider")]
    UnknownProvider,
    /// The user cancelled at the provider, or the provider refused (`error=...`).
    #[error("the provider answered {0}")]
    Provider(String),
    /// No flow cookie, or one that is not this server's, expired, or for another provider.
    #[error("the sign-in expired or was not started here")]
    NoFlow,
    /// The callback's `state` is not the flow's.
    #[error("the state does not match")]
    StateMismatch,
    /// The callback has no code (or a malformed query).
    #[error("the callback is malformed")]
    BadCallback,
    /// The provider refused the code (used before, expired, or for another client).
    #[error("the provider refused the code: {0}")]
    CodeRefused(String),
    /// The ID token failed a check (signature, issuer, audience, expiry, nonce), or none came.
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    /// The provider could not be reached (or timed out): try again.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// A plain OAuth 2.0 provider's user-info answer was refused or did not name the user.
    #[error("the user info is not usable: {0}")]
    UserInfo(String),
}

impl OidcFailure {
    /// A short code for the page (`?oidc_error=`).
    pub fn code(&self) -> &'static str {
        match self {
            OidcFailure::UnknownProvider => "unknown_provider",
            OidcFailure::Provider(e) if e == "access_denied" => "access_denied",
            OidcFailure::Provider(_) => "provider_error",
            OidcFailure::NoFlow => "expired",
            OidcFailure::StateMismatch => "state_mismatch",
            OidcFailure::BadCallback => "bad_callback",
            OidcFailure::CodeRefused(_) => "code_refused",
            OidcFailure::InvalidIdToken(_) => "invalid_id_token",
            OidcFailure::Unavailable(_) => "provider_unavailable",
            OidcFailure::UserInfo(_) => "invalid_user_info",
        }
    }
}

/// One provider to sign in with.
#[derive(Clone)]
pub struct ProviderConfig {
    id: String,
    display_name: String,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    /// For a plain OAuth 2.0 provider: its endpoints and user-info fields.
    plain: Option<OAuth2Endpoints>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("display_name", &self.display_name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ProviderConfig {
    /// The provider `id` (in URLs: `a-z`, `0-9`, `-`, up to 32), shown as `display_name`,
    /// found at `issuer` (its discovery document at
    /// `{issuer}/.well-known/openid-configuration`), where this application is `client_id`.
    /// Scopes: `openid email profile`.
    pub fn new(
        id: impl Into<String>,
        display_name: impl Into<String>,
        issuer: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        ProviderConfig {
            id: id.into(),
            display_name: display_name.into(),
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: vec!["email".to_owned(), "profile".to_owned()],
            plain: None,
        }
    }

    /// A plain OAuth 2.0 provider (no ID token, no discovery: Naver's kind) `id`, shown as
    /// `display_name`, reached at `endpoints`, where this application is `client_id`. Who
    /// signed in comes from its user-info endpoint. No scopes unless
    /// [`with_scopes`](Self::with_scopes) names some.
    pub fn oauth2(
        id: impl Into<String>,
        display_name: impl Into<String>,
        client_id: impl Into<String>,
        endpoints: OAuth2Endpoints,
    ) -> Self {
        ProviderConfig {
            id: id.into(),
            display_name: display_name.into(),
            issuer: endpoints.authorization.clone(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: Vec::new(),
            plain: Some(endpoints),
        }
    }

    /// The client secret (a confidential client: `client_secret_basic`).
    #[must_use]
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// Scopes (besides `openid`, which an OpenID Connect provider is always asked for).
    #[must_use]
    pub fn with_scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

/// Settings for reaching providers and keeping flows.
#[derive(Clone, Debug)]
pub struct OidcOptions {
    roots: Vec<Vec<u8>>,
    timeout: Duration,
    flow_ttl: Duration,
    lazy: bool,
}

impl Default for OidcOptions {
    fn default() -> Self {
        OidcOptions {
            roots: Vec::new(),
            timeout: Duration::from_secs(10),
            flow_ttl: Duration::from_secs(600),
            lazy: true,
        }
    }
}

impl OidcOptions {
    /// The platform's root certificates, 10 s per exchange with a provider, 10 minutes to
    /// finish a sign-in; a provider that cannot be reached at start is tried again at its
    /// sign-ins (see [`require_reachable`](Self::require_reachable)).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts this certificate authority (DER) instead of the platform's roots.
    #[must_use]
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots.push(der.into());
        self
    }

    /// The longest wait for one exchange with a provider.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes [`Oidc::discover`] fail when a provider cannot be reached (by default it starts
    /// without it, logs a warning, answers its sign-ins `provider_unavailable`, and tries it
    /// again at most every 10 s as they come). A document that can be read but not used (a
    /// wrong issuer, no keys) always fails the start.
    #[must_use]
    pub fn require_reachable(mut self) -> Self {
        self.lazy = false;
        self
    }

    /// How long a user has between the start and the callback.
    #[must_use]
    pub fn with_flow_ttl(mut self, ttl: Duration) -> Self {
        self.flow_ttl = ttl;
        self
    }
}

struct Provider {
    config: ProviderConfig,
    redirect: RedirectUrl,
    flavor: Flavor,
}

enum Flavor {
    /// OpenID Connect: discovered, and the ID token says who signed in.
    Oidc {
        /// The discovery document's client, swapped when the provider's keys are fetched
        /// again; `None` while the provider could not be reached (since the start).
        current: std::sync::RwLock<Option<Arc<Discovered>>>,
        /// When the document was last fetched again (keys at most once a minute, a provider
        /// not reached yet at most every 10 s).
        refetched: std::sync::Mutex<Option<std::time::Instant>>,
    },
    /// Plain OAuth 2.0: the user-info endpoint says who signed in.
    Plain {
        client: Box<plain::PlainClient>,
        endpoints: OAuth2Endpoints,
        issuer: String,
    },
}

/// A provider as its discovery document describes it.
struct Discovered {
    client: Client,
    issuer: String,
}

/// How often a provider's discovery document (and keys) may be fetched again when an ID token
/// names a key it does not have (the provider rotated its keys).
const REFETCH_EVERY: Duration = Duration::from_secs(60);

/// How often a provider that could not be reached at start is tried again (at a sign-in).
const RETRY_UNREACHED_EVERY: Duration = Duration::from_secs(10);

/// Why a discovery failed: the provider could not be reached (kept, tried again later), or
/// what it answered cannot be used (a configuration error, refused at start).
enum Undiscovered {
    Unreachable(String),
    Invalid(OidcError),
}

impl Flavor {
    fn current(current: &std::sync::RwLock<Option<Arc<Discovered>>>) -> Option<Arc<Discovered>> {
        current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `true` (and the time noted) when a refetch is allowed now: at most once per `every`.
    fn may_refetch(
        refetched: &std::sync::Mutex<Option<std::time::Instant>>,
        every: Duration,
    ) -> bool {
        let mut last = refetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Fetches `config`'s discovery document and keys.
async fn discover_one(
    config: &ProviderConfig,
    redirect: &RedirectUrl,
    http: &http::HttpsClient,
) -> Result<Discovered, Undiscovered> {
    let discovery = |reason: String| {
        Undiscovered::Invalid(OidcError::Discovery {
            issuer: config.issuer.clone(),
            reason,
        })
    };
    let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|e| discovery(e.to_string()))?;
    let send = sender(http);
    let metadata = CoreProviderMetadata::discover_async(issuer, &send)
        .await
        .map_err(|e| match &e {
            // Not reached, or a server error: the provider may come back.
            openidconnect::DiscoveryError::Request(_) => {
                Undiscovered::Unreachable(ErrorChain(&e).to_string())
            }
            openidconnect::DiscoveryError::Response(status, _, _) if status.is_server_error() => {
                Undiscovered::Unreachable(ErrorChain(&e).to_string())
            }
            _ => discovery(ErrorChain(&e).to_string()),
        })?;
    let issuer = metadata.issuer().to_string();
    // The client secret goes where the provider takes it: HTTP Basic (the default when the
    // document says nothing), or the request body when that is all it lists (Kakao).
    let body_only = metadata
        .token_endpoint_auth_methods_supported()
        .is_some_and(|methods| {
            !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                && methods.contains(&CoreClientAuthMethod::ClientSecretPost)
        });
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(config.client_id.clone()),
        config.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect.clone())
    .set_auth_type(if body_only {
        openidconnect::AuthType::RequestBody
    } else {
        openidconnect::AuthType::BasicAuth
    });
    Ok(Discovered { client, issuer })
}

/// A sign-in's start: send the browser to `redirect` with `set_cookie`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Started {
    /// The provider's authorization URL.
    pub redirect: String,
    /// The `Set-Cookie` value carrying the flow to the callback.
    pub set_cookie: String,
}

/// Who signed in at the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The provider's issuer identifier.
    pub issuer: String,
    /// The user's subject at that issuer (stable, unique per issuer).
    pub subject: String,
    /// The e-mail the provider gives, if any (never used to merge accounts).
    pub email: Option<String>,
    /// Whether the provider verified that e-mail.
    pub email_verified: Option<bool>,
    /// A display name, if any.
    pub name: Option<String>,
    /// How the provider authenticated the user (`amr`), if it says.
    pub amr: Vec<String>,
}

impl Identity {
    /// The identity `subject` at `issuer`, nothing else known (to test an [`Accounts`]).
    ///
    /// ```
    /// use baton_oidc::Identity;
    /// let zoe = Identity::new("https://accounts.example", "s-1").with_name("Zoe");
    /// assert_eq!(zoe.name.as_deref(), Some("Zoe"));
    /// ```
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        Identity {
            issuer: issuer.into(),
            subject: subject.into(),
            email: None,
            email_verified: None,
            name: None,
            amr: Vec::new(),
        }
    }

    /// With this display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// With this e-mail, verified or not (or not said).
    #[must_use]
    pub fn with_email(mut self, email: impl Into<String>, verified: Option<bool>) -> Self {
        self.email = Some(email.into());
        self.email_verified = verified;
        self
    }
}

/// A completed sign-in.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Finished {
    /// Who signed in.
    pub identity: Identity,
    /// The ID token as received (for `id_token_hint` at the provider's logout, say); `None`
    /// from a plain OAuth 2.0 provider.
    pub id_token: Option<String>,
    /// The same-origin path to go to now.
    pub return_to: String,
    /// For a linking flow: the signed-in user that began it.
    pub link_user: Option<String>,
}

/// The providers an application signs in with, and the flows between them and it.
pub struct Oidc {
    providers: Vec<Provider>,
    http: http::HttpsClient,
    sealer: Sealer,
    callback_base: String,
    flow_ttl: Duration,
}

impl fmt::Debug for Oidc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oidc")
            .field(
                "providers",
                &self
                    .providers
                    .iter()
                    .map(|p| &p.config.id)
                    .collect::<Vec<_>>(),
            )
            .field("callback_base", &self.callback_base)
            .finish_non_exhaustive()
    }
}

/// `true` for a provider id usable in paths.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `return_to` when it is a path of this origin, else `/`. Refused: anything not starting with
/// one `/` (`//host`, `/\\host`), backslashes, control characters, and the encoded forms of
/// `/`, `\\` and control characters (`%2F`, `%5C`, `%09`, ...) and dot segments, which a
/// later decoding or normalising step could turn into another origin; at most 512 bytes.
///
/// ```
/// use baton_oidc::same_origin_path;
/// assert_eq!(same_origin_path(Some("/account?tab=devices")), "/account?tab=devices");
/// for bad in ["https://evil.example/", "//evil.example", "/\\evil.example", "/%2F/evil",
///             "/%5cevil", "/./evil", "/a/../evil", "/\tx", "evil", ""] {
///     assert_eq!(same_origin_path(Some(bad)), "/", "{bad:?}");
/// }
/// assert_eq!(same_origin_path(None), "/");
/// ```
pub fn same_origin_path(return_to: Option<&str>) -> String {
    let Some(path) = return_to else {
        return "/".to_owned();
    };
    let lower = path.to_ascii_lowercase();
    let encoded_danger = ["%2f", "%5c", "%09", "%0a", "%0d", "%00"]
        .iter()
        .any(|e| lower.contains(e));
    let route = path.split(['?', '#']).next().unwrap_or_default();
    let dot_segment = route.split('/').any(|segment| {
        segment == "."
            || segment == ".."
            || segment.eq_ignore_ascii_case("%2e")
            || segment.eq_ignore_ascii_case("%2e%2e")
    });
    let fine = path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 512
        && !path.bytes().any(|b| b.is_ascii_control() || b == b'\\')
        && !encoded_danger
        && !dot_segment;
    if fine {
        path.to_owned()
    } else {
        "/".to_owned()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Oidc {
    /// Discovers each provider (its discovery document and keys, over HTTPS) for an
    /// application reached at `public_origin` (`https://app.example`), whose callbacks are
    /// `{public_origin}{base_path}/oidc/{id}/callback` (register exactly that redirect URI at
    /// each provider). `flow_key` (32 random bytes, the same on every instance) seals the
    /// flows.
    ///
    /// # Errors
    /// [`OidcError`] naming the provider or setting that cannot be used.
    pub async fn discover(
        public_origin: &str,
        base_path: &str,
        providers: Vec<ProviderConfig>,
        flow_key: &[u8; 32],
        options: OidcOptions,
    ) -> Result<Self, OidcError> {
        let http = http::HttpsClient::new(&options.roots, options.timeout)?;
        let origin = public_origin.trim_end_matches('/');
        if !(origin.starts_with("https://") || origin.starts_with("http://")) {
            return Err(OidcError::Config(format!(
                "the public origin must be an http(s) origin: {public_origin:?}"
            )));
        }
        let local = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
            .iter()
            .any(|l| origin == *l || origin.starts_with(&format!("{l}:")));
        if origin.starts_with("http://") && !local {
            return Err(OidcError::Config(format!(
                "the public origin must be https (the flow cookie is Secure), or http on \
                 localhost: {public_origin:?}"
            )));
        }
        if !base_path.starts_with('/') {
            return Err(OidcError::Config(format!(
                "the base path must start with /: {base_path:?}"
            )));
        }
        if options.flow_ttl < Duration::from_secs(30)
            || options.flow_ttl > Duration::from_secs(3600)
        {
            return Err(OidcError::Config(
                "the flow lifetime must be between 30 s and one hour".to_owned(),
            ));
        }
        let callback_base = format!("{origin}{}", base_path.trim_end_matches('/'));
        let mut discovered = Vec::new();
        for config in providers {
            if !valid_id(&config.id) {
                return Err(OidcError::Config(format!(
                    "provider id {:?}: use a-z, 0-9 and -, up to 32",
                    config.id
                )));
            }
            if discovered
                .iter()
                .any(|p: &Provider| p.config.id == config.id)
            {
                return Err(OidcError::Config(format!(
                    "provider id {:?} given twice",
                    config.id
                )));
            }
            let redirect = RedirectUrl::new(format!("{callback_base}/oidc/{}/callback", config.id))
                .map_err(|e| OidcError::Config(format!("redirect URI: {e}")))?;
            let flavor = match &config.plain {
                Some(endpoints) => Flavor::Plain {
                    client: Box::new(endpoints.client(
                        &config.client_id,
                        config.client_secret.as_deref(),
                        redirect.clone(),
                    )?),
                    issuer: endpoints.issuer()?,
                    endpoints: endpoints.clone(),
                },
                None => {
                    let current = match discover_one(&config, &redirect, &http).await {
                        Ok(discovered) => Some(Arc::new(discovered)),
                        Err(Undiscovered::Invalid(e)) => return Err(e),
                        // A provider down must not keep the application (and its password
                        // logins) from starting: tried again at its sign-ins.
                        Err(Undiscovered::Unreachable(reason)) if options.lazy => {
                            tracing::warn!(target: "baton::oidc", provider = %config.id, issuer = %config.issuer, %reason, "provider not reachable at start; tried again at its next sign-in");
                            None
                        }
                        Err(Undiscovered::Unreachable(reason)) => {
                            return Err(OidcError::Discovery {
                                issuer: config.issuer.clone(),
                                reason,
                            });
                        }
                    };
                    Flavor::Oidc {
                        current: std::sync::RwLock::new(current),
                        refetched: std::sync::Mutex::new(None),
                    }
                }
            };
            discovered.push(Provider {
                config,
                redirect,
                flavor,
            });
        }
        // Each provider's users are their own namespace: two providers with one issuer would
        // let a user of one sign in as the other's user of the same subject.
        let issuers: Vec<(String, &str)> = discovered
            .iter()
            .map(|p| {
                let issuer = match &p.flavor {
                    Flavor::Oidc { current, .. } => Flavor::current(current)
                        .map_or_else(|| p.config.issuer.clone(), |d| d.issuer.clone()),
                    Flavor::Plain { issuer, .. } => issuer.clone(),
                };
                (issuer, p.config.id.as_str())
            })
            .collect();
        for (i, (issuer, id)) in issuers.iter().enumerate() {
            if let Some((_, other)) = issuers[..i].iter().find(|(seen, _)| seen == issuer) {
                return Err(OidcError::Config(format!(
                    "providers {other:?} and {id:?} share the issuer {issuer:?}: their users \
                     would be one; give a plain provider its own (OAuth2Endpoints::identified_as)"
                )));
            }
        }
        Ok(Oidc {
            providers: discovered,
            http,
            sealer: Sealer::new(flow_key)?,
            callback_base,
            flow_ttl: options.flow_ttl,
        })
    }

    /// The providers, as `(id, display name)`.
    pub fn providers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.providers
            .iter()
            .map(|p| (p.config.id.as_str(), p.config.display_name.as_str()))
    }

    /// The provider's discovered client: as read before, or, for a provider not reached yet,
    /// read now (at most every 10 s).
    async fn discovered(
        &self,
        provider: &Provider,
        current: &std::sync::RwLock<Option<Arc<Discovered>>>,
        refetched: &std::sync::Mutex<Option<std::time::Instant>>,
    ) -> Result<Arc<Discovered>, OidcFailure> {
        if let Some(discovered) = Flavor::current(current) {
            return Ok(discovered);
        }
        if !Flavor::may_refetch(refetched, RETRY_UNREACHED_EVERY) {
            return Err(OidcFailure::Unavailable(
                "the provider was not reachable; trying again shortly".to_owned(),
            ));
        }
        match discover_one(&provider.config, &provider.redirect, &self.http).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fresh.clone());
                tracing::info!(target: "baton::oidc", provider = %provider.config.id, "provider reached");
                Ok(fresh)
            }
            Err(Undiscovered::Unreachable(reason)) => Err(OidcFailure::Unavailable(reason)),
            Err(Undiscovered::Invalid(e)) => Err(OidcFailure::Unavailable(e.to_string())),
        }
    }

    fn provider(&self, id: &str) -> Result<&Provider, OidcFailure> {
        self.providers
            .iter()
            .find(|p| p.config.id == id)
            .ok_or(OidcFailure::UnknownProvider)
    }

    /// Starts a sign-in at provider `id`, to land on `return_to` (a same-origin path; anything
    /// else lands on `/`). For linking, `link_user` is the signed-in user the identity is
    /// for.
    ///
    /// # Errors
    /// [`OidcFailure::UnknownProvider`]; [`OidcFailure::Unavailable`] when the provider has
    /// not been reached yet, or no random numbers.
    pub async fn start(
        &self,
        id: &str,
        return_to: Option<&str>,
        link_user: Option<&str>,
    ) -> Result<Started, OidcFailure> {
        let provider = self.provider(id)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let scopes = provider.config.scopes.iter().cloned().map(Scope::new);
        let (url, state, nonce) = match &provider.flavor {
            Flavor::Oidc { current, refetched } => {
                let (url, state, nonce) = self
                    .discovered(provider, current, refetched)
                    .await?
                    .client
                    .authorize_url(
                        CoreAuthenticationFlow::AuthorizationCode,
                        CsrfToken::new_random,
                        Nonce::new_random,
                    )
                    .add_scopes(scopes)
                    .set_pkce_challenge(challenge)
                    .url();
                (url, state, nonce.secret().clone())
            }
            Flavor::Plain { client, .. } => {
                let (url, state) = client
                    .authorize_url(CsrfToken::new_random)
                    .add_scopes(scopes)
                    .set_pkce_challenge(challenge)
                    .url();
                // No ID token, so no nonce to check it against.
                (url, state, String::new())
            }
        };
        let flow = FlowState {
            provider: id.to_owned(),
            state: state.secret().clone(),
            nonce,
            verifier: verifier.secret().clone(),
            return_to: same_origin_path(return_to),
            link_user: link_user.map(str::to_owned),
            expires: now().saturating_add(self.flow_ttl.as_secs()),
        };
        let sealed = self
            .sealer
            .seal(&flow)
            .map_err(|e| OidcFailure::Unavailable(e.to_string()))?;
        let cookie = cookie::Cookie::build((flow_cookie(id), sealed))
            .path("/")
            .http_only(true)
            .secure(true)
            .same_site(cookie::SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(self.flow_ttl.as_secs()).unwrap_or(600),
            ));
        Ok(Started {
            redirect: url.to_string(),
            set_cookie: cookie.to_string(),
        })
    }

    /// The `Set-Cookie` value that ends provider `id`'s flow cookie.
    pub fn clear_cookie(&self, id: &str) -> String {
        cookie::Cookie::build((flow_cookie(id), ""))
            .path("/")
            .http_only(true)
            .secure(true)
            .same_site(cookie::SameSite::Lax)
            .max_age(cookie::time::Duration::ZERO)
            .to_string()
    }

    /// Finishes a sign-in at provider `id` from its callback: the query string and the
    /// request's `Cookie` header lines. Clear the browser's flow cookie afterwards with
    /// [`clear_cookie`](Self::clear_cookie) (the cookie itself stays valid until it expires,
    /// but the provider takes each code once, so a copy of it finishes nothing).
    ///
    /// # Errors
    /// [`OidcFailure`] naming what failed.
    pub async fn finish(
        &self,
        id: &str,
        query: Option<&str>,
        cookies: &[&str],
    ) -> Result<Finished, OidcFailure> {
        let provider = self.provider(id)?;
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let param = |name: &str| {
            let mut found = params
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            match (found.next(), found.next()) {
                (Some(v), None) => Some(v),
                _ => None,
            }
        };
        let flow = cookies
            .iter()
            .flat_map(|line| cookie::Cookie::split_parse(*line))
            .filter_map(Result::ok)
            .filter(|c| c.name() == flow_cookie(id))
            .find_map(|c| self.sealer.open(c.value(), id, now()));
        // The flow and its state first: a callback that is not this browser's flow (a link
        // anyone can send, `?error=...` included) neither finishes nor cancels it.
        let flow = flow.ok_or(OidcFailure::NoFlow)?;
        let state = param("state").ok_or(OidcFailure::StateMismatch)?;
        if !bool::from(state.as_bytes().ct_eq(flow.state.as_bytes())) {
            return Err(OidcFailure::StateMismatch);
        }
        if let Some(error) = param("error") {
            // The user cancelled, or the provider refused: only a plain error code is kept.
            let code = if error.len() <= 64
                && error
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                error.to_owned()
            } else {
                "invalid".to_owned()
            };
            return Err(OidcFailure::Provider(code));
        }
        let code =
            AuthorizationCode::new(param("code").ok_or(OidcFailure::BadCallback)?.to_owned());
        let verifier = PkceCodeVerifier::new(flow.verifier.clone());
        let (identity, id_token) = match &provider.flavor {
            Flavor::Oidc { current, refetched } => {
                self.finish_oidc(provider, current, refetched, code, verifier, &flow.nonce)
                    .await?
            }
            Flavor::Plain {
                client,
                endpoints,
                issuer,
            } => {
                let identity = self
                    .finish_plain(client, endpoints, issuer, code, verifier)
                    .await?;
                (identity, None)
            }
        };
        Ok(Finished {
            identity,
            id_token,
            return_to: flow.return_to,
            link_user: flow.link_user,
        })
    }

    /// An OpenID Connect provider's code for tokens; the ID token checked.
    async fn finish_oidc(
        &self,
        provider: &Provider,
        current: &std::sync::RwLock<Option<Arc<Discovered>>>,
        refetched: &std::sync::Mutex<Option<std::time::Instant>>,
        code: AuthorizationCode,
        verifier: PkceCodeVerifier,
        nonce: &str,
    ) -> Result<(Identity, Option<String>), OidcFailure> {
        let send = sender(&self.http);
        let discovered = self.discovered(provider, current, refetched).await?;
        let tokens = discovered
            .client
            .exchange_code(code)
            .map_err(|e| OidcFailure::Unavailable(e.to_string()))?
            .set_pkce_verifier(verifier)
            .request_async(&send)
            .await
            .map_err(token_failure)?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| OidcFailure::InvalidIdToken("no ID token".to_owned()))?;
        let identity = match identity_of(&discovered, id_token, nonce) {
            // A key the provider's document did not have when it was read: the provider may
            // have rotated its keys. Read it again (at most once a minute) and check again.
            Err(ClaimsVerificationError::SignatureVerification(_))
                if Flavor::may_refetch(refetched, REFETCH_EVERY) =>
            {
                let fresh = discover_one(&provider.config, &provider.redirect, &self.http)
                    .await
                    .map_err(|e| match e {
                        Undiscovered::Unreachable(reason) => OidcFailure::Unavailable(reason),
                        Undiscovered::Invalid(e) => OidcFailure::Unavailable(e.to_string()),
                    })?;
                let fresh = Arc::new(fresh);
                *current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fresh.clone());
                identity_of(&fresh, id_token, nonce)
            }
            other => other,
        }
        .map_err(|e| OidcFailure::InvalidIdToken(ErrorChain(&e).to_string()))?;
        Ok((identity, Some(id_token.to_string())))
    }

    /// A plain OAuth 2.0 provider's code for an access token, and that for the user info.
    async fn finish_plain(
        &self,
        client: &plain::PlainClient,
        endpoints: &OAuth2Endpoints,
        issuer: &str,
        code: AuthorizationCode,
        verifier: PkceCodeVerifier,
    ) -> Result<Identity, OidcFailure> {
        use openidconnect::OAuth2TokenResponse as _;
        let send = sender(&self.http);
        let tokens = client
            .exchange_code(code)
            .set_pkce_verifier(verifier)
            .request_async(&send)
            .await
            .map_err(token_failure)?;
        let request = ::http::Request::get(&endpoints.userinfo)
            .header(::http::header::ACCEPT, "application/json")
            .header(
                ::http::header::AUTHORIZATION,
                format!("Bearer {}", tokens.access_token().secret()),
            )
            .body(Vec::new())
            .map_err(|e| OidcFailure::Unavailable(e.to_string()))?;
        let answer = self
            .http
            .send(request)
            .await
            .map_err(|e| OidcFailure::Unavailable(e.to_string()))?;
        let status = answer.status();
        if status.is_server_error() {
            return Err(OidcFailure::Unavailable(format!(
                "the user-info endpoint answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(OidcFailure::UserInfo(format!(
                "the user-info endpoint answered {status}"
            )));
        }
        endpoints.identity(issuer, answer.body())
    }

    /// Checks an ID token of provider `id` as the callback does (signature with the
    /// provider's keys, issuer, audience: this client, expiry, and `nonce`), for an
    /// application that receives ID tokens another way (a native client of the same
    /// `client_id`, say). The nonce is the only replay guard here: it must be one this server
    /// issued, used once.
    ///
    /// # Errors
    /// [`OidcFailure::UnknownProvider`], or [`OidcFailure::InvalidIdToken`] naming the check
    /// that failed.
    pub fn check_id_token(
        &self,
        id: &str,
        token: &str,
        nonce: &str,
    ) -> Result<Identity, OidcFailure> {
        let Flavor::Oidc { current, .. } = &self.provider(id)?.flavor else {
            return Err(OidcFailure::InvalidIdToken(
                "a plain OAuth 2.0 provider gives no ID tokens".to_owned(),
            ));
        };
        let Some(discovered) = Flavor::current(current) else {
            return Err(OidcFailure::Unavailable(
                "the provider has not been reached yet".to_owned(),
            ));
        };
        let token: CoreIdToken = token
            .parse()
            .map_err(|e: serde_json::Error| OidcFailure::InvalidIdToken(e.to_string()))?;
        identity_of(&discovered, &token, nonce)
            .map_err(|e| OidcFailure::InvalidIdToken(ErrorChain(&e).to_string()))
    }
}

/// A token request's failure: the provider refusing the code, or not answering.
fn token_failure<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
    e: openidconnect::RequestTokenError<RE, T>,
) -> OidcFailure {
    match e {
        openidconnect::RequestTokenError::ServerResponse(r) => {
            OidcFailure::CodeRefused(r.to_string())
        }
        other => OidcFailure::Unavailable(ErrorChain(&other).to_string()),
    }
}

/// The identity in `token`, once every check passed.
fn identity_of(
    provider: &Discovered,
    token: &CoreIdToken,
    nonce: &str,
) -> Result<Identity, ClaimsVerificationError> {
    let claims = token.claims(
        &provider.client.id_token_verifier(),
        &Nonce::new(nonce.to_owned()),
    )?;
    Ok(Identity {
        issuer: provider.issuer.clone(),
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified(),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string()),
        amr: claims
            .auth_method_refs()
            .map(|amr| amr.iter().map(|m| m.to_string()).collect())
            .unwrap_or_default(),
    })
}

/// The exchange function `openidconnect` calls: each call's future owns its client (a
/// borrowed one would make the sign-in's future `Send` for one lifetime only).
fn sender(
    http: &http::HttpsClient,
) -> impl Fn(
    openidconnect::HttpRequest,
) -> std::pin::Pin<
    Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send>,
> + use<> {
    let http = http.clone();
    move |req| {
        let http = http.clone();
        Box::pin(async move { http.send(req).await })
    }
}

#[cfg(test)]
mod send_check {
    #[allow(dead_code)]
    fn finish_is_send(o: &super::Oidc) {
        fn is_send<T: Send>(_: T) {}
        is_send(o.finish("x", None, &[]));
        is_send(o.start("x", None, None));
    }
}
