#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod memory;
mod policy;
mod session;
mod store;
mod token;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Cause, ConfigError, DeviceChange, RotateError, SessionRef, StoreError};
pub use memory::{MemoryStore, REVOKED_TOMBSTONE_MS};
pub use policy::{Network, NetworkChange, Policy, PolicyBuilder, ReuseDetection, UserAgentChange};
pub use session::{
    Authentication, Device, Login, MAX_AMR_VALUES, MAX_DEVICE_ID_LEN, MAX_DEVICE_NAME_LEN,
    MAX_DPOP_JKT_LEN, MAX_USER_AGENT_LEN, MAX_USER_ID_LEN, RotateContext, Session, check_device_id,
    check_dpop_jkt, check_login, check_user_id,
};
pub use store::{Created, RefreshStore, Rotation, RotationKind};
pub use token::{
    InvalidSessionId, RefreshKeys, RefreshToken, SessionId, VerifiedToken, user_tag_of,
};
