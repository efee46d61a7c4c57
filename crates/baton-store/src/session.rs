//! Sessions, device information and the rotation context.

use std::net::IpAddr;

use crate::{SessionId, StoreError};

/// The longest user agent kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_USER_AGENT_LEN: usize = 256;
/// The longest device name kept, in bytes.
pub const MAX_DEVICE_NAME_LEN: usize = 64;
/// The longest user id accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;

/// What is known of the device behind a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Device {
    /// The `User-Agent` seen at login, then at the latest refresh.
    pub user_agent: Option<String>,
    /// The client IP seen at login, then at the latest refresh.
    pub ip: Option<IpAddr>,
    /// A name the user gave the device.
    pub name: Option<String>,
}

impl Device {
    /// A device with this user agent and IP.
    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> Self {
        Device {
            user_agent: user_agent.map(str::to_owned),
            ip,
            name: None,
        }
    }

    /// Sets the device name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The device as stored: control characters replaced by spaces, lengths capped, empty
    /// strings as `None`.
    pub fn sanitized(&self) -> Device {
        Device {
            user_agent: sanitize_opt(self.user_agent.as_deref(), MAX_USER_AGENT_LEN),
            ip: self.ip,
            name: sanitize_opt(self.name.as_deref(), MAX_DEVICE_NAME_LEN),
        }
    }
}

/// Replaces control characters with spaces and cuts to `max` bytes on a char boundary.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn sanitize_opt(s: Option<&str>, max: usize) -> Option<String> {
    s.map(|s| sanitize(s, max)).filter(|s| !s.is_empty())
}

/// Checks a user id: non-empty, at most 256 bytes, no control characters.
///
/// # Errors
/// [`StoreError::InvalidInput`].
pub fn check_user_id(user_id: &str) -> Result<(), StoreError> {
    if user_id.is_empty()
        || user_id.len() > MAX_USER_ID_LEN
        || user_id.chars().any(char::is_control)
    {
        return Err(StoreError::InvalidInput(
            "user id must be 1 to 256 bytes without control characters",
        ));
    }
    Ok(())
}

/// One login on one device.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// The session id (the access token's `sid`).
    pub id: SessionId,
    /// The user.
    pub user_id: String,
    /// The device, as last seen.
    pub device: Device,
    /// Login time, milliseconds since the epoch.
    pub created_at: u64,
    /// Latest login or refresh, milliseconds since the epoch.
    pub last_used_at: u64,
    /// The generation of the live refresh token (0 at login).
    pub generation: u64,
    /// When the session ends if not used: the idle deadline, capped by the absolute one.
    pub expires_at: u64,
    /// When the session ends whatever happens.
    pub absolute_expires_at: u64,
}

impl Session {
    /// A session from its parts (for store implementations reading one back).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        user_id: String,
        device: Device,
        created_at: u64,
        last_used_at: u64,
        generation: u64,
        expires_at: u64,
        absolute_expires_at: u64,
    ) -> Self {
        Session {
            id,
            user_id,
            device,
            created_at,
            last_used_at,
            generation,
            expires_at,
            absolute_expires_at,
        }
    }
}

/// What the refreshing request looked like.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotateContext {
    /// The request's `User-Agent`.
    pub user_agent: Option<String>,
    /// The client IP.
    pub ip: Option<IpAddr>,
}

impl RotateContext {
    /// A context with this user agent and IP.
    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> Self {
        RotateContext {
            user_agent: user_agent.map(str::to_owned),
            ip,
        }
    }

    /// The user agent as stored: sanitized like [`Device::sanitized`].
    pub fn stored_user_agent(&self) -> Option<String> {
        sanitize_opt(self.user_agent.as_deref(), MAX_USER_AGENT_LEN)
    }
}
