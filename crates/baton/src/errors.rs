//! Error responses: JSON by default, replaceable; one renderer for every layer.

pub use baton_bearer::RenderRejection;
pub use baton_core::{JsonErrors, Refusal, RenderError};
