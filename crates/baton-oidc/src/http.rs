//! The HTTPS client the provider is reached with: rustls on aws-lc-rs, the platform's roots or
//! the configured ones, no redirects followed, every exchange bounded in time and size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::OidcError;

/// The largest provider response read (discovery, keys, tokens, user info).
const MAX_RESPONSE: usize = 256 * 1024;

/// Why an exchange with the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be sent or its answer read.
    #[error("the provider could not be reached: {0}")]
    Transport(String),
    /// The provider took longer than the timeout.
    #[error("the provider did not answer in time")]
    Timeout,
}

/// TLS and time settings for reaching providers.
#[derive(Clone, Debug)]
pub(crate) struct HttpsClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpsClient {
    /// A client trusting `roots` (DER), or the platform's roots when empty.
    pub(crate) fn new(roots: &[Vec<u8>], timeout: Duration) -> Result<Self, OidcError> {
        let mut store = rustls::RootCertStore::empty();
        if roots.is_empty() {
            let found = rustls_native_certs::load_native_certs();
            let (_added, _ignored) = store.add_parsable_certificates(found.certs);
        } else {
            for der in roots {
                store
                    .add(rustls::pki_types::CertificateDer::from(der.clone()))
                    .map_err(|e| OidcError::Config(format!("bad root certificate: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| OidcError::Config(format!("TLS: {e}")))?
            .with_root_certificates(store)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(HttpsClient {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    /// One exchange, as `openidconnect` asks for it. Redirects are not followed (a provider
    /// endpoint that redirects is an error, not a hop to wherever it points).
    pub(crate) async fn send(
        &self,
        req: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Transport(baton_core::ErrorChain(&e).to_string()))?;
            let (parts, body) = res.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| HttpError::Transport(e.to_string()))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout)?
    }
}
