//! Server-side refresh for cookie-mode apps: a [`Refresher`] that rotates the refresh cookie
//! through the store.

use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use baton_refresh::{Refreshed, Refresher};
use baton_store::{RefreshStore, RotateContext};
use http::header::{AUTHORIZATION, COOKIE, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, request};

use crate::device::{client_ip, user_agent};
use crate::endpoints::RotateFailure;
use crate::{Authenticator, Inner};

/// What a server-side refresh yields: the new access token and the cookies to set.
#[derive(Clone)]
pub struct CookieCredentials {
    access_token: String,
    set_cookies: Vec<HeaderValue>,
}

impl fmt::Debug for CookieCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieCredentials")
            .field("cookies", &self.set_cookies.len())
            .finish_non_exhaustive()
    }
}

/// The server-side [`Refresher`], built by
/// [`Baton::cookie_refresh_layer`](crate::Baton::cookie_refresh_layer).
pub struct CookieRefresher<S, A: Authenticator> {
    pub(crate) inner: Arc<Inner<S, A>>,
}

impl<S, A: Authenticator> Clone for CookieRefresher<S, A> {
    fn clone(&self) -> Self {
        CookieRefresher {
            inner: self.inner.clone(),
        }
    }
}

impl<S, A: Authenticator> fmt::Debug for CookieRefresher<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieRefresher").finish_non_exhaustive()
    }
}

/// The request's `Cookie` headers without the cookie `name`.
fn without_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .map(str::to_owned)
        .collect();
    headers.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::try_from(kept.join("; "))
    {
        headers.insert(COOKIE, value);
    }
}

impl<S: RefreshStore, A: Authenticator> CookieRefresher<S, A> {
    /// 503: try again shortly; with the successor's cookie when the rotation happened.
    fn unavailable_with(&self, successor: Option<&str>) -> Refreshed<CookieCredentials> {
        let partial = successor
            .and_then(|token| self.inner.refresh_cookie.set(token).ok())
            .map(|cookie| CookieCredentials {
                access_token: String::new(),
                set_cookies: vec![cookie],
            });
        Refreshed::Unavailable {
            retry_after: Duration::from_secs(1),
            partial,
        }
    }
}

impl<S: RefreshStore, A: Authenticator> Refresher for CookieRefresher<S, A> {
    type Credentials = CookieCredentials;

    /// The session of a genuine refresh cookie (its MAC checked): requests of one session
    /// share one refresh, and a junk or forged cookie costs its parse and nothing more (no
    /// flight, no store access: the original 401 goes back).
    fn flight_key(&self, parts: &request::Parts) -> Option<String> {
        let token = self.inner.refresh_cookie.read(&parts.headers).ok()??;
        let verified = self.inner.store.keys().verify(token)?;
        Some(verified.session_id.to_string())
    }

    async fn refresh(&self, parts: &request::Parts) -> Refreshed<CookieCredentials> {
        let Some(token) = self
            .inner
            .refresh_cookie
            .read(&parts.headers)
            .ok()
            .flatten()
            .map(str::to_owned)
        else {
            return Refreshed::Refused;
        };
        let context = RotateContext::new(
            user_agent(&parts.headers),
            client_ip(&parts.headers, &parts.extensions, &self.inner.client_ip),
        );
        let (rotation, claims) = match self.inner.rotate(&token, context).await {
            Ok(rotated) => rotated,
            Err(RotateFailure::Unavailable(successor)) => {
                return self.unavailable_with(Some(&successor));
            }
            Err(RotateFailure::Store(e)) if e.is_unavailable() => {
                return self.unavailable_with(None);
            }
            // Corrupted session data (logged by the store): the session cannot be used.
            Err(RotateFailure::Store(_)) => return Refreshed::Refused,
            Err(RotateFailure::Refused(_)) => return Refreshed::Refused,
        };
        let issued =
            self.inner
                .issue_access(&rotation.session, claims)
                .and_then(|(access_token, _)| {
                    let set_cookies = self
                        .inner
                        .token_cookies(rotation.token.expose(), &access_token)?;
                    Some(CookieCredentials {
                        access_token,
                        set_cookies,
                    })
                });
        match issued {
            Some(credentials) => Refreshed::Fresh(credentials),
            // The rotation happened: its successor must reach the browser.
            None => self.unavailable_with(Some(rotation.token.expose())),
        }
    }

    fn unavailable<B>(&self, retry_after: Duration, response: &mut Response<B>) {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().remove(WWW_AUTHENTICATE);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
    }

    fn apply(&self, credentials: &CookieCredentials, parts: &mut request::Parts) {
        if let Some(access) = &self.inner.access_cookie {
            without_cookie(&mut parts.headers, access.name());
        }
        if let Ok(value) = HeaderValue::try_from(format!("Bearer {}", credentials.access_token)) {
            parts.headers.insert(AUTHORIZATION, value);
        }
    }

    fn finish(&self, credentials: &CookieCredentials, headers: &mut HeaderMap) {
        for cookie in &credentials.set_cookies {
            headers.append(SET_COOKIE, cookie.clone());
        }
    }
}
