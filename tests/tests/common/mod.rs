//! What the facade tests over TCP share: a user directory, one request, its reply.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton::token::NoCustomClaims;
use baton::{AuthUnavailable, Authenticator, Principal, UsernamePassword};
use bytes::Bytes;
use http::header::SET_COOKIE;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Every user `u` has the id `id-u` and the password `u-password`.
pub(crate) struct Users;

impl Authenticator for Users {
    type Claims = NoCustomClaims;

    type Credentials = UsernamePassword;

    async fn authenticate(
        &self,
        credentials: &UsernamePassword,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        let (user, password) = (credentials.username.as_str(), credentials.password.as_str());
        Ok((password == format!("{user}-password"))
            .then(|| Principal::new(format!("id-{user}"), NoCustomClaims {})))
    }

    async fn check_password(&self, user_id: &str, password: &str) -> Result<bool, AuthUnavailable> {
        let user = user_id.strip_prefix("id-").unwrap_or_default();
        Ok(password == format!("{user}-password"))
    }

    async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        Ok(Some(NoCustomClaims {}))
    }
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    /// The refresh token the reply sets, if any.
    pub(crate) fn refresh_cookie(&self) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("__Secure-refresh=v1."))
            .map(|v| v.split(';').next().unwrap()["__Secure-refresh=".len()..].to_owned())
    }

    /// The access token of a token response.
    pub(crate) fn access(&self) -> String {
        self.body["access_token"].as_str().unwrap().to_owned()
    }
}

/// One request to `origin` (`http://127.0.0.1:port`), from the local address `from` when
/// given (127.0.0.x stand in for other clients).
pub(crate) async fn call(
    origin: &str,
    from: Option<&str>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut connector = HttpConnector::new();
    connector.set_local_address(from.map(|ip| ip.parse().unwrap()));
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{origin}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// The claims of a JWT, unverified (to look at what the server put in).
pub(crate) fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Serves `app` on a free loopback port, handing each request its peer address (axum's
/// `ConnectInfo`), as a production server of the facade must.
pub(crate) async fn serve_with_peer(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}
