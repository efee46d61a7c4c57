//! A hyper-util client behind `RefreshOn401Layer`: log in, let the access token expire, call
//! `/api/me` many times at once, and see that one refresh served them all.

use std::time::Duration;

use baton::refresh::{HttpRefresher, RefreshOn401Layer, RetryBody};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

/// What a run saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Calls answered 200.
    pub ok: usize,
    /// Calls answered otherwise.
    pub failed: usize,
    /// Refreshes the client made.
    pub refreshes: u64,
}

/// Registers (if needed) and logs in to the login app at `base`, waits `wait` (past the
/// access token's life), then sends `concurrency` concurrent `GET /api/me`.
///
/// # Errors
/// A message when registration or login fails.
pub async fn run(
    base: &str,
    username: &str,
    password: &str,
    wait: Duration,
    concurrency: usize,
) -> Result<Report, String> {
    let plain = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let credentials = serde_json::json!({ "username": username, "password": password });
    let register = Request::post(format!("{base}/auth/register"))
        .header("content-type", "application/json")
        .body(Full::from(credentials.to_string()))
        .map_err(|e| e.to_string())?;
    let status = plain
        .clone()
        .oneshot(register)
        .await
        .map_err(|e| e.to_string())?
        .status();
    if status != StatusCode::CREATED && status != StatusCode::CONFLICT {
        return Err(format!("registration failed with {status}"));
    }
    let refresher = HttpRefresher::new(
        plain,
        format!("{base}/auth/refresh")
            .parse()
            .map_err(|e| format!("{e}"))?,
    );
    let login = format!("{base}/auth/login")
        .parse()
        .map_err(|e| format!("{e}"))?;
    refresher
        .login(login, &credentials)
        .await
        .map_err(|e| e.to_string())?;

    tokio::time::sleep(wait).await;

    let api = ServiceBuilder::new()
        .layer(RefreshOn401Layer::new(refresher.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<RetryBody<Full<Bytes>>>());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let api = api.clone();
        let uri = format!("{base}/api/me");
        calls.spawn(async move {
            let req = Request::get(uri)
                .body(Full::default())
                .expect("a valid request");
            api.oneshot(req).await.map(|res| res.status())
        });
    }
    let mut report = Report {
        ok: 0,
        failed: 0,
        refreshes: 0,
    };
    while let Some(done) = calls.join_next().await {
        match done {
            Ok(Ok(StatusCode::OK)) => report.ok += 1,
            _ => report.failed += 1,
        }
    }
    report.refreshes = refresher.refreshes();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_refresh_serves_every_concurrent_call() {
        let config = login_app::Config {
            access_ttl: Duration::from_secs(1),
            ..login_app::Config::default()
        };
        let app = login_app::app(&config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
        tokio::spawn(login_app::serve(listener, app, std::future::pending()));
        let report = run(
            &base,
            "client",
            "client-password",
            Duration::from_millis(2100),
            20,
        )
        .await
        .unwrap();
        assert_eq!(
            report,
            Report {
                ok: 20,
                failed: 0,
                refreshes: 1
            }
        );
    }
}
