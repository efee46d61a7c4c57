//! Helpers shared by the login app's tests.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use login_app::Config;
use serde_json::Value;

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) cookie: Option<String>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) body: Value,
}

pub(crate) async fn start(config: &Config) -> String {
    let app = login_app::app(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(login_app::serve(listener, app, std::future::pending()));
    base
}

pub(crate) async fn call(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> Reply {
    call_from(None, base, method, path, headers, body).await
}

/// As [`call`], from the local address `from` (127.0.0.x stand in for other clients).
pub(crate) async fn call_from(
    from: Option<std::net::IpAddr>,
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> Reply {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(from);
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or(Full::default(), |b| Full::from(b.to_string()));
    let res = client.request(req.body(body).unwrap()).await.unwrap();
    let status = res.status();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Secure-refresh=v1."))
        .map(|v| v.split(';').next().unwrap().to_owned());
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        cookie,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}
