//! Sign-in with OpenID Connect providers (feature `oidc`): `GET {base}/oidc/providers`,
//! `GET {base}/oidc/{id}/start?return_to=/path` and `GET {base}/oidc/{id}/callback`. A
//! completed sign-in opens an ordinary session (the refresh cookie) and sends the browser to
//! `return_to`; every failure sends it to the page with `?oidc_error=<code>`. A signed-in
//! user links another provider with `POST {base}/oidc/{id}/link?return_to=/path` (a bearer
//! token, and a recent login when the facade asks for one): the answer names the provider
//! URL to go to, and the callback links the identity instead of opening a session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use baton_oidc::{Accounts, AccountsUnavailable, Identity, Link, Oidc, OidcFailure};
use baton_store::RefreshStore;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};

use super::json_response;
use crate::{Authenticator, Inner};

type LinkFuture<'a> = Pin<Box<dyn Future<Output = Result<Link, AccountsUnavailable>> + Send + 'a>>;
type AccountsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, AccountsUnavailable>> + Send + 'a>>;

/// [`Accounts`] behind a pointer (its methods return `impl Future`).
trait DynAccounts: Send + Sync {
    fn sign_in<'a>(&'a self, identity: &'a Identity) -> AccountsFuture<'a>;
    fn link<'a>(&'a self, user_id: &'a str, identity: &'a Identity) -> LinkFuture<'a>;
}

impl<T: Accounts> DynAccounts for T {
    fn sign_in<'a>(&'a self, identity: &'a Identity) -> AccountsFuture<'a> {
        Box::pin(Accounts::sign_in(self, identity))
    }

    fn link<'a>(&'a self, user_id: &'a str, identity: &'a Identity) -> LinkFuture<'a> {
        Box::pin(Accounts::link(self, user_id, identity))
    }
}

/// The providers and the account directory the facade signs in with.
pub(crate) struct OidcSetup {
    oidc: Oidc,
    accounts: Arc<dyn DynAccounts>,
}

impl OidcSetup {
    pub(crate) fn new(oidc: Oidc, accounts: impl Accounts) -> Self {
        OidcSetup {
            oidc,
            accounts: Arc::new(accounts),
        }
    }
}

/// The request's `return_to` query parameter, if any.
fn return_to<B>(req: &Request<B>) -> Option<String> {
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "return_to")
            .map(|(_, v)| v.into_owned())
    })
}

/// A `303 See Other` to `location`, never cached.
fn see_other(location: &str) -> Response<Bytes> {
    let mut res = Response::new(Bytes::new());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::try_from(location) {
        res.headers_mut().insert(LOCATION, value);
    }
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

impl<S: RefreshStore, A: Authenticator> Inner<S, A> {
    /// `POST {base}/oidc/{id}/link`.
    pub(super) async fn oidc_link<B>(&self, req: Request<B>, rest: &str) -> Response<Bytes> {
        let (Some(setup), Some((id, "link"))) = (&self.oidc, rest.split_once('/')) else {
            return self.error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
        };
        let claims = match self.bearer_sensitive(&req).await {
            Ok(claims) => claims,
            Err(res) => return res,
        };
        let back = return_to(&req);
        match setup
            .oidc
            .start(id, back.as_deref(), Some(&claims.sub))
            .await
        {
            Ok(started) => {
                let mut res = json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "redirect": started.redirect }),
                );
                if let Ok(cookie) = HeaderValue::try_from(started.set_cookie) {
                    res.headers_mut().insert(SET_COOKIE, cookie);
                }
                res.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res
            }
            Err(OidcFailure::UnknownProvider) => {
                self.error(StatusCode::NOT_FOUND, "not_found", "no such provider")
            }
            Err(_) => self.unavailable("the provider cannot be reached; retry shortly"),
        }
    }

    /// `GET {base}/oidc/...`.
    pub(super) async fn oidc<B>(&self, req: Request<B>, rest: &str) -> Response<Bytes> {
        let Some(setup) = &self.oidc else {
            return self.error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
        };
        if rest == "providers" {
            let list: Vec<serde_json::Value> = setup
                .oidc
                .providers()
                .map(|(id, name)| {
                    serde_json::json!({
                        "id": id,
                        "name": name,
                        "start": format!("{}/oidc/{id}/start", self.base),
                    })
                })
                .collect();
            return json_response(StatusCode::OK, &serde_json::json!({ "providers": list }));
        }
        match rest.split_once('/') {
            Some((id, "start")) => {
                let back = return_to(&req);
                self.oidc_start(setup, back, id).await
            }
            Some((id, "callback")) => self.oidc_callback(setup, req, id).await,
            _ => self.error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        }
    }

    async fn oidc_start(
        &self,
        setup: &OidcSetup,
        back: Option<String>,
        id: &str,
    ) -> Response<Bytes> {
        match setup.oidc.start(id, back.as_deref(), None).await {
            Ok(started) => {
                let mut res = see_other(&started.redirect);
                if let Ok(cookie) = HeaderValue::try_from(started.set_cookie) {
                    res.headers_mut().insert(SET_COOKIE, cookie);
                }
                res
            }
            Err(failure) => self.oidc_failed(setup, id, &failure),
        }
    }

    async fn oidc_callback<B>(
        &self,
        setup: &OidcSetup,
        req: Request<B>,
        id: &str,
    ) -> Response<Bytes> {
        let device = self.device_of(&req);
        let (ip, agent) = (device.ip, device.user_agent.clone());
        // Each callback may cost an exchange with the provider: the login limit applies (and
        // a refusal lands on the page like every other failure).
        if self
            .limit(
                "login-ip",
                &Self::ip_key(ip),
                self.limits.login_per_ip,
                true,
                ip,
            )
            .await
            .is_err()
        {
            return self.oidc_redirect_error(setup, id, "too_many_requests", false);
        }
        let cookies: Vec<String> = req
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let query = req.uri().query().map(str::to_owned);
        let cookie_lines: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let finished = match setup.oidc.finish(id, query.as_deref(), &cookie_lines).await {
            Ok(finished) => finished,
            Err(failure) => return self.oidc_failed(setup, id, &failure),
        };
        if let Some(user) = &finished.link_user {
            // Linking: no new session; the user is signed in already.
            let code = match setup.accounts.link(user, &finished.identity).await {
                Ok(Link::Linked | Link::AlreadyLinked) => None,
                Ok(_) => Some("identity_taken"),
                Err(_) => Some("unavailable"),
            };
            let mut res = match code {
                None => see_other(&finished.return_to),
                Some(code) => see_other(&format!("/?oidc_error={code}")),
            };
            if let Ok(clear) = HeaderValue::try_from(setup.oidc.clear_cookie(id)) {
                res.headers_mut().append(SET_COOKIE, clear);
            }
            return res;
        }
        let user_id = match setup.accounts.sign_in(&finished.identity).await {
            Ok(user) => user,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::error!(target: "baton::auth", error = %_e, "the account directory is unavailable");
                return self.oidc_redirect_error(setup, id, "unavailable", true);
            }
        };
        if !matches!(self.auth.claims(&user_id).await, Ok(Some(_))) {
            #[cfg(feature = "tracing")]
            tracing::error!(target: "baton::auth", user = %user_id, "the authenticator has no claims for a signed-in provider identity");
            return self.oidc_redirect_error(setup, id, "unavailable", true);
        }
        // No methods of ours: the provider's own `amr` is its word about its own login, which
        // this server has not checked (a step-up rule must not pass on it).
        let login = baton_store::Login::new(
            device,
            baton_store::Authentication::new(Vec::<String>::new()),
        );
        let created = match self
            .open_session(&user_id, login, ip, agent.as_deref())
            .await
        {
            Ok(created) => created,
            Err(_) => return self.oidc_redirect_error(setup, id, "unavailable", true),
        };
        let mut res = see_other(&finished.return_to);
        match self.refresh_cookie.set(created.token.expose()) {
            Ok(cookie) => {
                res.headers_mut().append(SET_COOKIE, cookie);
            }
            Err(_) => return self.oidc_redirect_error(setup, id, "unavailable", true),
        }
        if let Ok(clear) = HeaderValue::try_from(setup.oidc.clear_cookie(id)) {
            res.headers_mut().append(SET_COOKIE, clear);
        }
        res
    }

    /// A failed sign-in: to the page, with its code, the flow cookie cleared.
    fn oidc_failed(&self, setup: &OidcSetup, id: &str, failure: &OidcFailure) -> Response<Bytes> {
        #[cfg(feature = "tracing")]
        tracing::info!(target: "baton::auth", provider = id, error = %failure, "sign-in with a provider failed");
        // A callback that is not this browser's flow leaves the flow alone (a forged link
        // must not cancel a sign-in in progress).
        let spent = !matches!(
            failure,
            OidcFailure::NoFlow | OidcFailure::StateMismatch | OidcFailure::UnknownProvider
        );
        self.oidc_redirect_error(setup, id, failure.code(), spent)
    }

    /// To the page with `code`; the flow cookie cleared when `spent`.
    fn oidc_redirect_error(
        &self,
        setup: &OidcSetup,
        id: &str,
        code: &str,
        spent: bool,
    ) -> Response<Bytes> {
        let mut res = see_other(&format!("/?oidc_error={code}"));
        if spent
            && setup.oidc.providers().any(|(p, _)| p == id)
            && let Ok(clear) = HeaderValue::try_from(setup.oidc.clear_cookie(id))
        {
            res.headers_mut().append(SET_COOKIE, clear);
        }
        res
    }
}
