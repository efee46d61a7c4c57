//! A tonic service (the standard gRPC health service, which needs no protoc) behind baton's
//! `BearerVerifyLayer`: callers without a valid token get `Unauthenticated`.

use baton::bearer::BearerVerifyLayer;
use baton::token::Verifier;
use tokio::net::TcpListener;

/// Serves the health service on `listener`, requiring a bearer token verified by `verifier`.
///
/// # Errors
/// Transport errors.
pub async fn serve(
    listener: TcpListener,
    verifier: Verifier,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .layer(BearerVerifyLayer::new(verifier))
        .add_service(health)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton::token::{Algorithm, Issuer, Key, KeySet, NoCustomClaims};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    #[tokio::test]
    async fn no_token_is_unauthenticated_and_a_token_gets_its_answer() {
        let issuer =
            Issuer::new(KeySet::new(Key::generate("grpc", Algorithm::EdDSA).unwrap()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, issuer.verifier()));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);

        let status = client
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        let token = issuer
            .issue("svc-a", None, NoCustomClaims {})
            .unwrap()
            .token;
        let mut req = tonic::Request::new(HealthCheckRequest::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let answer = client.check(req).await.unwrap().into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32);
    }
}
