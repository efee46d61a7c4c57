//! Sessions, device information and the rotation context.

use std::net::IpAddr;

use crate::{SessionId, StoreError};

/// The longest user agent kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_USER_AGENT_LEN: usize = 256;
/// The longest device name kept, in bytes.
pub const MAX_DEVICE_NAME_LEN: usize = 64;
/// The longest user id accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// The longest device identifier accepted, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 128;

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
    /// A stable identifier the client sends for itself (a native app's install id): a new
    /// login of the same user with the same identifier replaces that device's live session.
    /// 1 to [`MAX_DEVICE_ID_LEN`] bytes of `A-Z a-z 0-9 - . _ ~ :` (see [`check_device_id`]).
    pub id: Option<String>,
}

impl Device {
    /// A device with this user agent and IP.
    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> Self {
        Device {
            user_agent: user_agent.map(str::to_owned),
            ip,
            name: None,
            id: None,
        }
    }

    /// Sets the device identifier (checked by the store: [`check_device_id`]).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
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
            id: self.id.clone(),
        }
    }
}

/// Checks a device identifier: 1 to [`MAX_DEVICE_ID_LEN`] bytes of ASCII letters, digits and
/// `- . _ ~ :` (a UUID, a base64url install id, a `vendor:serial` pair).
///
/// ```
/// use baton_store::check_device_id;
/// assert!(check_device_id("6f1c2a52-9a3e-4f4b-8d6e-0c1b5e1d2a77").is_ok());
/// assert!(check_device_id("").is_err());
/// assert!(check_device_id("two words").is_err());
/// assert!(check_device_id(&"x".repeat(129)).is_err());
/// ```
///
/// # Errors
/// [`StoreError::InvalidInput`].
pub fn check_device_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(
            "a device id must be 1 to 128 characters of A-Z a-z 0-9 - . _ ~ :",
        ))
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
    /// When the user last proved who they are in this session (the login, or a later
    /// [`reauthenticate`](crate::RefreshStore::reauthenticate)), milliseconds since the epoch:
    /// the access token's `auth_time` (RFC 9470). A refresh is not an authentication and
    /// leaves it alone.
    pub auth_time: u64,
    /// How they proved it (RFC 8176 `amr` values, `pwd` for a password).
    pub amr: Vec<String>,
    /// The authentication context class reached then (`acr`), if the application names one.
    pub acr: Option<String>,
    /// The latest refresh that came from outside the session's network while the policy is
    /// [`NetworkChange::Flag`](crate::NetworkChange::Flag), milliseconds since the epoch.
    pub network_changed_at: Option<u64>,
    /// The thumbprint of the DPoP key the session is bound to (RFC 9449): its refresh token
    /// rotates only for a request that proves that key ([`RotateContext::dpop_jkt`]).
    pub dpop_jkt: Option<String>,
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
            auth_time: created_at,
            amr: Vec::new(),
            acr: None,
            network_changed_at: None,
            dpop_jkt: None,
        }
    }

    /// Sets the DPoP key thumbprint (for store implementations).
    #[must_use]
    pub fn with_dpop_jkt(mut self, jkt: Option<String>) -> Self {
        self.dpop_jkt = jkt;
        self
    }

    /// Sets when and how the user last authenticated (for store implementations).
    #[must_use]
    pub fn with_authentication(mut self, auth_time: u64, authentication: Authentication) -> Self {
        self.auth_time = auth_time;
        self.amr = authentication.amr;
        self.acr = authentication.acr;
        self
    }

    /// Sets the latest network change flagged (for store implementations).
    #[must_use]
    pub fn with_network_changed_at(mut self, at: Option<u64>) -> Self {
        self.network_changed_at = at;
        self
    }

    /// How the user last authenticated, as recorded.
    pub fn authentication(&self) -> Authentication {
        Authentication {
            amr: self.amr.clone(),
            acr: self.acr.clone(),
        }
    }
}

/// The most `amr` values kept.
pub const MAX_AMR_VALUES: usize = 8;

/// How a user proved who they are (RFC 9470): the methods (`amr`, RFC 8176 values such as
/// `pwd`, `otp`, `hwk`, `mfa`) and the context class reached (`acr`), if any.
///
/// ```
/// use baton_store::Authentication;
/// let auth = Authentication::password();
/// assert_eq!(auth.amr, ["pwd"]);
/// assert!(auth.check().is_ok());
/// assert!(Authentication::new(["two words"]).check().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authentication {
    /// The methods used.
    pub amr: Vec<String>,
    /// The context class reached.
    pub acr: Option<String>,
}

impl Authentication {
    /// Authentication by these methods.
    pub fn new<I, S>(amr: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Authentication {
            amr: amr.into_iter().map(Into::into).collect(),
            acr: None,
        }
    }

    /// A password (`amr` `["pwd"]`).
    pub fn password() -> Self {
        Authentication::new(["pwd"])
    }

    /// Sets the context class.
    #[must_use]
    pub fn with_acr(mut self, acr: impl Into<String>) -> Self {
        self.acr = Some(acr.into());
        self
    }

    /// Checks the values: at most [`MAX_AMR_VALUES`] methods of 1 to 32 bytes and a class of
    /// 1 to 128 bytes, each visible ASCII without spaces or quotes.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`].
    pub fn check(&self) -> Result<(), StoreError> {
        let token = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b',')
        };
        if self.amr.len() > MAX_AMR_VALUES || !self.amr.iter().all(|m| token(m, 32)) {
            return Err(StoreError::InvalidInput(
                "amr must be at most 8 values of 1 to 32 visible characters",
            ));
        }
        if self.acr.as_deref().is_some_and(|a| !token(a, 128)) {
            return Err(StoreError::InvalidInput(
                "acr must be 1 to 128 visible characters",
            ));
        }
        Ok(())
    }
}

/// The longest DPoP key thumbprint accepted, in bytes (a SHA-256 one is 43).
pub const MAX_DPOP_JKT_LEN: usize = 64;

/// Checks a DPoP key thumbprint: 1 to [`MAX_DPOP_JKT_LEN`] base64url characters.
///
/// # Errors
/// [`StoreError::InvalidInput`].
pub fn check_dpop_jkt(jkt: &str) -> Result<(), StoreError> {
    let ok = !jkt.is_empty()
        && jkt.len() <= MAX_DPOP_JKT_LEN
        && jkt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(
            "a DPoP key thumbprint must be 1 to 64 base64url characters",
        ))
    }
}

/// What a login brings to a new session: the device, and how the user authenticated.
///
/// A [`Device`] converts into a login with no recorded methods, so
/// `store.create("alice", device)` reads naturally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Login {
    /// The device.
    pub device: Device,
    /// How the user authenticated.
    pub authentication: Authentication,
    /// The DPoP key the login proved (its thumbprint): the session is bound to it.
    pub dpop_jkt: Option<String>,
}

impl Login {
    /// Binds the session to the DPoP key with thumbprint `jkt`.
    #[must_use]
    pub fn with_dpop_jkt(mut self, jkt: impl Into<String>) -> Self {
        self.dpop_jkt = Some(jkt.into());
        self
    }

    /// A login on `device`, authenticated by `authentication`.
    pub fn new(device: Device, authentication: Authentication) -> Self {
        Login {
            device,
            authentication,
            dpop_jkt: None,
        }
    }
}

impl From<Device> for Login {
    fn from(device: Device) -> Self {
        Login {
            device,
            authentication: Authentication::default(),
            dpop_jkt: None,
        }
    }
}

/// Checks what a store is asked to keep of a login: the user id, the device identifier, the
/// authentication values.
///
/// # Errors
/// [`StoreError::InvalidInput`].
pub fn check_login(user_id: &str, login: &Login) -> Result<(), StoreError> {
    check_user_id(user_id)?;
    if let Some(id) = &login.device.id {
        check_device_id(id)?;
    }
    if let Some(jkt) = &login.dpop_jkt {
        check_dpop_jkt(jkt)?;
    }
    login.authentication.check()
}

/// What the refreshing request looked like.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotateContext {
    /// The request's `User-Agent`.
    pub user_agent: Option<String>,
    /// The client IP.
    pub ip: Option<IpAddr>,
    /// The thumbprint of the DPoP key the request proved, if it carried a valid proof: a
    /// session bound to a key rotates only with that key's.
    pub dpop_jkt: Option<String>,
}

impl RotateContext {
    /// The DPoP key the request proved.
    #[must_use]
    pub fn with_dpop_jkt(mut self, jkt: impl Into<String>) -> Self {
        self.dpop_jkt = Some(jkt.into());
        self
    }

    /// A context with this user agent and IP.
    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> Self {
        RotateContext {
            user_agent: user_agent.map(str::to_owned),
            ip,
            dpop_jkt: None,
        }
    }

    /// The user agent as stored: sanitized like [`Device::sanitized`].
    pub fn stored_user_agent(&self) -> Option<String> {
        sanitize_opt(self.user_agent.as_deref(), MAX_USER_AGENT_LEN)
    }
}
