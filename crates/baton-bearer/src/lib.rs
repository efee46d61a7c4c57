#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod dpop;
mod extract;
mod future;
mod layer;
mod recent;
mod rejection;
mod service;

#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "jwks")]
pub mod jwks;

#[cfg(feature = "axum")]
pub use crate::axum::{Authenticated, NotAuthenticated};
pub use baton_core::{
    CheckRevocation, Revocation, RevocationList, Revoke, RevokeError, RevokeFuture, TokenIdentity,
};
pub use baton_core::{ReplayCache, ReplayCheck, ReplayFuture, ReplayKey, ReplayUnknown};
pub use body::ResponseBody;
pub use dpop::{Dpop, DpopCheckError, DpopNonces, MemoryReplayCache};
pub use future::ResponseFuture;
pub use layer::{BearerVerifyLayer, ConfigError};
pub use recent::RecentLogin;
pub use rejection::{
    BuildRejection, JsonRejection, Rejection, RejectionKind, RenderRejection, grpc_response,
};
pub use service::BearerVerify;

/// Put in a request's extensions, beside its `Arc<`[`Claims`](baton_token::Claims)`>`, once a
/// bearer layer verified its token, whatever the claims type: an extractor that finds this
/// but not the claims type it asks for has met the application's mix-up of claims types (a
/// loud error), not an anonymous request.
///
/// Debug builds only (`debug_assertions`), where such mix-ups are made and found: a second
/// extension entry per request can make the request's extension table grow, an allocation
/// and a rehash on the hot path of a release build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BearerVerified;
