//! The layer as a `Service`, over a mock inner service and a mock refresher: which responses
//! trigger a refresh, single flight, body replay, no loops, and what a refused or unavailable
//! refresh returns.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_refresh::{RefreshOn401Layer, Refreshed, Refresher, RetryBody};
use bytes::Bytes;
use http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, request};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tower::{Layer, Service, ServiceExt, service_fn};

const EXPIRED: &str =
    r#"Bearer realm="baton", error="invalid_token", error_description="token expired""#;

#[derive(Clone)]
struct Mock {
    outcome: Arc<Mutex<Refreshed<String>>>,
    refreshes: Arc<AtomicUsize>,
    delay: Duration,
    expiring: bool,
}

impl Mock {
    fn new(outcome: Refreshed<String>) -> Self {
        Mock {
            outcome: Arc::new(Mutex::new(outcome)),
            refreshes: Arc::default(),
            delay: Duration::ZERO,
            expiring: false,
        }
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

impl Refresher for Mock {
    type Credentials = String;

    fn flight_key(&self, parts: &request::Parts) -> Option<String> {
        parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn refresh(
        &self,
        _parts: &request::Parts,
    ) -> impl std::future::Future<Output = Refreshed<String>> + Send {
        let this = self.clone();
        async move {
            this.refreshes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(this.delay).await;
            this.outcome.lock().unwrap().clone()
        }
    }

    fn expires_within(&self, _parts: &request::Parts, _margin: Duration) -> bool {
        self.expiring
    }

    fn apply(&self, credentials: &String, parts: &mut request::Parts) {
        let value = HeaderValue::try_from(format!("Bearer {credentials}")).unwrap();
        parts.headers.insert(AUTHORIZATION, value);
    }

    fn finish(&self, credentials: &String, headers: &mut HeaderMap) {
        headers.insert("x-refreshed", HeaderValue::try_from(credentials).unwrap());
    }

    fn unavailable<B>(&self, retry_after: Duration, response: &mut Response<B>) {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
    }
}

/// The API: 200 echoing the body for `Bearer fresh`, otherwise 401 with `challenge`; counts
/// calls and records the bodies it saw.
#[derive(Clone, Default)]
struct Api {
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Api {
    fn service<B>(
        &self,
        challenge: &'static str,
    ) -> impl Service<
        Request<RetryBody<B>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Debug + Send,
    {
        let this = self.clone();
        service_fn(move |req: Request<RetryBody<B>>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let fresh = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes)
                    == Some(b"Bearer fresh".as_slice());
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                this.bodies.lock().unwrap().push(body.clone());
                let mut res = Response::new(Full::new(body));
                if !fresh {
                    *res.status_mut() = StatusCode::UNAUTHORIZED;
                    res.headers_mut()
                        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                }
                Ok::<_, Infallible>(res)
            }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn post(user: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post("/api/notes")
        .header("x-user", user)
        .header(AUTHORIZATION, "Bearer stale")
        .body(Full::from(body))
        .unwrap()
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_request_replayed() {
    let refresher = Mock::new(Refreshed::Fresh("fresh".into()));
    let api = Api::default();
    let svc = RefreshOn401Layer::new(refresher.clone()).layer(api.service(EXPIRED));
    let res = svc.oneshot(post("alice", "the note")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-refreshed"], "fresh", "finish ran");
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "the note"
    );
    assert_eq!((refresher.refreshes(), api.calls()), (1, 2));
    let bodies = api.bodies.lock().unwrap().clone();
    assert_eq!(bodies, ["the note", "the note"], "the same body both times");
}

#[tokio::test]
async fn other_401s_and_other_statuses_are_left_alone() {
    for challenge in [r#"Bearer realm="baton""#, r#"Basic realm="x""#] {
        let refresher = Mock::new(Refreshed::Fresh("fresh".into()));
        let api = Api::default();
        let svc = RefreshOn401Layer::new(refresher.clone()).layer(api.service(challenge));
        let res = svc.oneshot(post("alice", "x")).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{challenge}");
        assert_eq!((refresher.refreshes(), api.calls()), (0, 1), "{challenge}");
    }
    // Nothing to refresh with (no flight key): no refresh either.
    let refresher = Mock::new(Refreshed::Fresh("fresh".into()));
    let api = Api::default();
    let svc = RefreshOn401Layer::new(refresher.clone()).layer(api.service(EXPIRED));
    let anonymous = Request::post("/api/notes").body(Full::from("x")).unwrap();
    let res = svc.oneshot(anonymous).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refresher.refreshes(), 0);
}

#[tokio::test]
async fn a_refused_refresh_returns_the_original_401_and_never_loops() {
    let refresher = Mock::new(Refreshed::Refused);
    let api = Api::default();
    let svc = RefreshOn401Layer::new(refresher.clone()).layer(api.service(EXPIRED));
    let res = svc.oneshot(post("alice", "x")).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()[WWW_AUTHENTICATE], EXPIRED);
    assert_eq!((refresher.refreshes(), api.calls()), (1, 1));

    // Fresh credentials the API still refuses: one retry, its 401, no second refresh.
    let refresher = Mock::new(Refreshed::Fresh("also-stale".into()));
    let api = Api::default();
    let svc = RefreshOn401Layer::new(refresher.clone()).layer(api.service(EXPIRED));
    let res = svc.oneshot(post("alice", "x")).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!((refresher.refreshes(), api.calls()), (1, 2));
}

#[tokio::test]
async fn an_unavailable_refresh_goes_through_the_refreshers_hook_with_its_partial() {
    let refresher = Mock::new(Refreshed::Unavailable {
        retry_after: Duration::from_secs(3),
        partial: Some("successor".into()),
    });
    let api = Api::default();
    let svc = RefreshOn401Layer::new(refresher.clone()).layer(api.service(EXPIRED));
    let res = svc.oneshot(post("alice", "x")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[RETRY_AFTER], "3");
    assert_eq!(
        res.headers()["x-refreshed"],
        "successor",
        "the partial reached the response"
    );
    assert_eq!((refresher.refreshes(), api.calls()), (1, 1), "not retried");
}

#[tokio::test]
async fn concurrent_failures_share_one_refresh_per_credential() {
    let mut refresher = Mock::new(Refreshed::Fresh("fresh".into()));
    refresher.delay = Duration::from_millis(50);
    let api = Api::default();
    let svc = RefreshOn401Layer::new(refresher.clone()).layer(api.service(EXPIRED));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let svc = svc.clone();
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        tasks.spawn(async move { svc.oneshot(post(user, "x")).await.unwrap().status() });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        refresher.refreshes(),
        2,
        "one per credential, not one per request"
    );
    assert_eq!(api.calls(), 80);
}

#[tokio::test]
async fn bodies_that_cannot_be_replayed_are_not_retried() {
    let refresher = Mock::new(Refreshed::Fresh("fresh".into()));
    let api = Api::default();
    // Over the replay limit.
    let svc = RefreshOn401Layer::new(refresher.clone())
        .with_max_replay_body(4)
        .layer(api.service(EXPIRED));
    let res = svc
        .oneshot(post("alice", "longer than four"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!((refresher.refreshes(), api.calls()), (0, 1));

    // A stream of unknown length.
    let api = Api::default();
    let chunks = futures_chunks(["a", "b"]);
    let svc = RefreshOn401Layer::new(refresher.clone()).layer(api.service(EXPIRED));
    let req = Request::post("/api/notes")
        .header("x-user", "alice")
        .body(StreamBody::new(chunks))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.calls(), 1);
    assert_eq!(
        api.bodies.lock().unwrap()[0],
        "ab",
        "the stream still reached the API once"
    );
}

#[tokio::test]
async fn credentials_about_to_expire_are_refreshed_before_the_first_attempt() {
    let mut refresher = Mock::new(Refreshed::Fresh("fresh".into()));
    refresher.expiring = true;
    let api = Api::default();
    let svc = RefreshOn401Layer::new(refresher.clone())
        .with_proactive_refresh(Duration::from_secs(30))
        .layer(api.service(EXPIRED));
    let res = svc.oneshot(post("alice", "x")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-refreshed"], "fresh");
    assert_eq!(
        (refresher.refreshes(), api.calls()),
        (1, 1),
        "no 401 round trip"
    );
}

/// A body stream of `chunks`, with no size hint.
fn futures_chunks<const N: usize>(
    chunks: [&'static str; N],
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    futures_util::stream::iter(chunks.map(|c| Ok(Frame::data(Bytes::from(c)))))
}
