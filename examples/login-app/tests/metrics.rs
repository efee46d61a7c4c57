//! `--metrics-addr`: the counters in Prometheus text, on an address of their own.
//! (Its own test binary: the recorder is process-wide.)

mod common;

use common::{call, start};
use http::{Method, StatusCode};
use login_app::Config;
use serde_json::json;

#[tokio::test]
async fn logins_show_up_in_the_prometheus_text() {
    let metrics = login_app::metrics_router().unwrap();
    assert!(
        login_app::metrics_router().is_err(),
        "one recorder per process"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, metrics).await });

    let base = start(&Config::default()).await;
    let creds = json!({"username": "mia", "password": "correct horse"});
    let r = call(
        &base,
        Method::POST,
        "/auth/register",
        &[],
        Some(creds.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        call(&base, Method::POST, "/auth/login", &[], Some(creds))
            .await
            .status,
        StatusCode::OK
    );
    let wrong = json!({"username": "mia", "password": "wrong password"});
    assert_eq!(
        call(&base, Method::POST, "/auth/login", &[], Some(wrong))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let text = raw_get(&format!("{metrics_base}/metrics")).await;
    assert!(
        text.contains("baton_login_total{outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("baton_login_total{outcome=\"refused\"} 1"),
        "{text}"
    );
}

async fn raw_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
