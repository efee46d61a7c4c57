//! Session lifetime and rotation policies.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::ConfigError;

/// What to do when a refresh comes with another user agent than the session's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserAgentChange {
    /// Record the new user agent and carry on (browsers update themselves).
    #[default]
    Record,
    /// Treat it as a stolen token: revoke the session.
    Revoke,
}

/// What to do when a refresh comes from outside the session's network: another network of
/// the same address family than the address last seen (login or the latest refresh), with the
/// policy's prefix lengths ([`PolicyBuilder::network_prefixes`]: /16 for IPv4 and /48 for
/// IPv6 by default).
///
/// A switch between IPv4 and IPv6 is never a change: dual-stack clients alternate between
/// the two from one request to the next. A refresh whose address is unknown is no change
/// either. The new address is recorded in every case but `Revoke`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkChange {
    /// Record the new address and carry on (phones move between networks all day).
    #[default]
    Record,
    /// Keep the session but mark it ([`Session::network_changed_at`](
    /// crate::Session::network_changed_at)), for the device list and the audit trail.
    Flag,
    /// Treat it as a stolen token: revoke the session.
    Revoke,
}

/// The network an address belongs to under a policy's prefix lengths: `10.1.0.0/16`.
///
/// ```
/// use baton_store::Policy;
/// let policy = Policy::new();
/// let net = policy.network_of("10.1.200.7".parse().unwrap());
/// assert_eq!(net.to_string(), "10.1.0.0/16");
/// assert_eq!(net.class(), "4/16");
/// let net = policy.network_of("2001:db8:7:1::9".parse().unwrap());
/// assert_eq!(net.to_string(), "2001:db8:7::/48");
/// // IPv4-mapped IPv6 is the IPv4 address.
/// assert_eq!(policy.network_of("::ffff:10.1.2.3".parse().unwrap()).to_string(), "10.1.0.0/16");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network {
    address: IpAddr,
    prefix_len: u8,
}

impl Network {
    /// The first address of the network.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The family and prefix length, `4/16` or `6/48`: only networks of one class compare.
    pub fn class(&self) -> String {
        let family = if self.address.is_ipv4() { 4 } else { 6 };
        format!("{family}/{}", self.prefix_len)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// When a spent refresh token counts as stolen.
///
/// Both policies give the immediate parent of the live token the *same* successor (never a
/// sibling), and both revoke the session when an older token comes back. They differ in how
/// long the parent stays usable:
///
/// | | [`Strict`](Self::Strict) (default) | [`AfterSuccessorUse`](Self::AfterSuccessorUse) |
/// |---|---|---|
/// | parent presented within the grace window | same successor | same successor |
/// | parent presented after the grace window, successor never used | **reuse: session revoked** | same successor |
/// | parent presented after the successor was used | reuse: session revoked | reuse: session revoked |
///
/// `Strict` detects a thief who replays a spent token more than the grace window after the
/// victim's refresh, even if the victim has not refreshed since; its cost is that a client
/// which lost a refresh reply (a timeout, a dropped connection, a closed laptop) and comes
/// back after the window loses its session. `AfterSuccessorUse` (the rule SuperTokens uses)
/// never costs a session for a lost reply: the parent stays usable until its successor is
/// presented once. Theft is still detected once both holders use the family: whoever falls
/// two rotations behind presents a grandparent and the session is revoked; a thief holding
/// only the parent can obtain the live token while the victim has not refreshed since.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReuseDetection {
    /// The parent is graced only within the grace window.
    #[default]
    Strict,
    /// The parent stays usable until its successor has been presented once.
    AfterSuccessorUse,
}

/// Lifetimes and limits of sessions, and what a changed device or network does.
///
/// Built by [`Policy::builder`], whose setters take any values in any order; [`build`](
/// PolicyBuilder::build) checks them together.
///
/// ```
/// use baton_store::Policy;
/// use std::time::Duration;
///
/// // 104 days idle: the absolute cap given after it is what makes it valid.
/// let policy = Policy::builder()
///     .idle_lifetime(Duration::from_secs(104 * 24 * 3600))
///     .absolute_lifetime(Duration::from_secs(180 * 24 * 3600))
///     .build()
///     .unwrap();
/// assert_eq!(policy.grace_window(), Duration::from_secs(10));
/// assert!(Policy::builder().max_sessions_per_user(0).build().is_err());
/// assert!(Policy::builder().absolute_lifetime(Duration::MAX).build().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    idle: Duration,
    absolute: Duration,
    grace: Duration,
    max_sessions: usize,
    user_agent_change: UserAgentChange,
    network_change: NetworkChange,
    v4_prefix: u8,
    v6_prefix: u8,
    reuse_detection: ReuseDetection,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new()
    }
}

/// Builds a [`Policy`]; see [`Policy::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// The idle lifetime (sliding: each rotation resets it); 1 s up to the absolute cap.
    pub fn idle_lifetime(mut self, idle: Duration) -> Self {
        self.policy.idle = idle;
        self
    }

    /// The absolute lifetime cap, counted from login; at least the idle lifetime, at most
    /// [`Policy::MAX_LIFETIME`].
    pub fn absolute_lifetime(mut self, absolute: Duration) -> Self {
        self.policy.absolute = absolute;
        self
    }

    /// How long after a rotation the previous token still gets the same successor (0 turns
    /// it off; at most 5 minutes).
    pub fn grace_window(mut self, grace: Duration) -> Self {
        self.policy.grace = grace;
        self
    }

    /// How many sessions one user may have (1 to 1000); creating one more evicts the least
    /// recently used.
    pub fn max_sessions_per_user(mut self, max: usize) -> Self {
        self.policy.max_sessions = max;
        self
    }

    /// What a changed user agent does.
    pub fn user_agent_change(mut self, action: UserAgentChange) -> Self {
        self.policy.user_agent_change = action;
        self
    }

    /// What a refresh from another network does.
    pub fn network_change(mut self, action: NetworkChange) -> Self {
        self.policy.network_change = action;
        self
    }

    /// The prefix lengths that make a network (IPv4 1 to 32, default 16; IPv6 1 to 128,
    /// default 48).
    pub fn network_prefixes(mut self, v4: u8, v6: u8) -> Self {
        self.policy.v4_prefix = v4;
        self.policy.v6_prefix = v6;
        self
    }

    /// When a spent token counts as stolen (see [`ReuseDetection`]).
    pub fn reuse_detection(mut self, detection: ReuseDetection) -> Self {
        self.policy.reuse_detection = detection;
        self
    }

    /// The policy, once every value is checked against the others.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first value out of range.
    pub fn build(self) -> Result<Policy, ConfigError> {
        let p = self.policy;
        if p.idle < Duration::from_secs(1) {
            return Err(ConfigError::new("the idle lifetime must be at least 1 s"));
        }
        // Far past any real session, and within what every store can keep (Redis's `PX`).
        if p.absolute > Policy::MAX_LIFETIME {
            return Err(ConfigError::new(
                "session lifetimes must be at most 10 years",
            ));
        }
        if p.absolute < p.idle {
            return Err(ConfigError::new(
                "the absolute lifetime must be at least the idle lifetime",
            ));
        }
        if p.grace > Duration::from_secs(300) {
            return Err(ConfigError::new(
                "the grace window must be at most 5 minutes",
            ));
        }
        if p.max_sessions == 0 || p.max_sessions > 1000 {
            return Err(ConfigError::new("max sessions per user must be 1 to 1000"));
        }
        if !(1..=32).contains(&p.v4_prefix) || !(1..=128).contains(&p.v6_prefix) {
            return Err(ConfigError::new(
                "network prefixes must be 1 to 32 (IPv4) and 1 to 128 (IPv6)",
            ));
        }
        Ok(p)
    }
}

impl Policy {
    /// The longest idle or absolute lifetime a policy takes: 10 years.
    pub const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

    /// Idle lifetime 14 days (sliding: each rotation resets it), absolute cap 90 days, grace
    /// window 10 s, 20 sessions per user, user-agent and network changes recorded (networks of
    /// /16 and /48), [`ReuseDetection::Strict`].
    pub fn new() -> Self {
        Policy {
            idle: Duration::from_secs(14 * 24 * 3600),
            absolute: Duration::from_secs(90 * 24 * 3600),
            grace: Duration::from_secs(10),
            max_sessions: 20,
            user_agent_change: UserAgentChange::Record,
            network_change: NetworkChange::Record,
            v4_prefix: 16,
            v6_prefix: 48,
            reuse_detection: ReuseDetection::Strict,
        }
    }

    /// A builder starting from the defaults of [`Policy::new`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::new(),
        }
    }

    /// A builder starting from this policy.
    pub fn to_builder(&self) -> PolicyBuilder {
        PolicyBuilder {
            policy: self.clone(),
        }
    }

    /// When a spent token counts as stolen.
    pub fn reuse_detection(&self) -> ReuseDetection {
        self.reuse_detection
    }

    /// `true` when the parent of the live token, last rotated `since_rotation_ms` ago, gets the
    /// live token again rather than counting as reuse.
    pub fn graces_parent(&self, since_rotation_ms: u64) -> bool {
        match self.reuse_detection {
            ReuseDetection::Strict => since_rotation_ms < self.grace_ms(),
            ReuseDetection::AfterSuccessorUse => true,
        }
    }

    /// The idle lifetime.
    pub fn idle_lifetime(&self) -> Duration {
        self.idle
    }

    /// The absolute lifetime cap.
    pub fn absolute_lifetime(&self) -> Duration {
        self.absolute
    }

    /// The grace window.
    pub fn grace_window(&self) -> Duration {
        self.grace
    }

    /// Sessions per user.
    pub fn max_sessions_per_user(&self) -> usize {
        self.max_sessions
    }

    /// What a changed user agent does.
    pub fn user_agent_change(&self) -> UserAgentChange {
        self.user_agent_change
    }

    /// What a refresh from another network does.
    pub fn network_change(&self) -> NetworkChange {
        self.network_change
    }

    /// The prefix lengths that make a network: (IPv4, IPv6).
    pub fn network_prefixes(&self) -> (u8, u8) {
        (self.v4_prefix, self.v6_prefix)
    }

    /// The network of `ip` under this policy's prefix lengths (an IPv4-mapped IPv6 address
    /// counts as IPv4).
    pub fn network_of(&self, ip: IpAddr) -> Network {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.v4_prefix))
                    .unwrap_or(0);
                Network {
                    address: IpAddr::V4(Ipv4Addr::from(bits & mask)),
                    prefix_len: self.v4_prefix,
                }
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.v6_prefix))
                    .unwrap_or(0);
                Network {
                    address: IpAddr::V6(Ipv6Addr::from(bits & mask)),
                    prefix_len: self.v6_prefix,
                }
            }
        }
    }

    /// `true` when a refresh from `new` comes from outside the network of `old` (both known,
    /// of one family; see [`NetworkChange`]).
    pub fn network_changed(&self, old: Option<IpAddr>, new: Option<IpAddr>) -> bool {
        let (Some(old), Some(new)) = (old, new) else {
            return false;
        };
        let (old, new) = (self.network_of(old), self.network_of(new));
        old.class() == new.class() && old != new
    }

    pub(crate) fn idle_ms(&self) -> u64 {
        millis(self.idle)
    }

    pub(crate) fn absolute_ms(&self) -> u64 {
        millis(self.absolute)
    }

    pub(crate) fn grace_ms(&self) -> u64 {
        millis(self.grace)
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
