//! Which local user an identity at a provider is: [`Accounts`], and [`MemoryAccounts`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::RwLock;

use crate::Identity;

/// The account directory could not answer (the sign-in gets a clear 503-style page).
#[derive(Debug, thiserror::Error)]
#[error("the account directory is unavailable: {0}")]
pub struct AccountsUnavailable(pub String);

/// What linking an identity to a signed-in user did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Link {
    /// Linked now.
    Linked,
    /// It was linked to this user already.
    AlreadyLinked,
    /// It is another user's: nothing changed (an identity never moves silently).
    TakenByAnother,
}

/// Links identities at providers, `(issuer, subject)`, to local users. An identity is linked
/// to one user; a new identity signing in creates a user. Nothing is ever merged by e-mail: an
/// identity whose e-mail matches an existing account still gets a user of its own, until that
/// account's signed-in user links it.
pub trait Accounts: Send + Sync + 'static {
    /// The local user `identity` is linked to, creating a user (and the link) the first time.
    fn sign_in(
        &self,
        identity: &Identity,
    ) -> impl Future<Output = Result<String, AccountsUnavailable>> + Send;

    /// Links `identity` to the signed-in `user_id`, unless it is another user's.
    fn link(
        &self,
        user_id: &str,
        identity: &Identity,
    ) -> impl Future<Output = Result<Link, AccountsUnavailable>> + Send;
}

/// Links kept in this process's memory; new users are named `oidc-` and 16 random hex digits.
#[derive(Debug, Default)]
pub struct MemoryAccounts {
    links: RwLock<HashMap<(String, String), String>>,
}

impl MemoryAccounts {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The user `(issuer, subject)` is linked to, if any.
    pub fn user_of(&self, issuer: &str, subject: &str) -> Option<String> {
        self.links
            .read()
            .ok()?
            .get(&(issuer.to_owned(), subject.to_owned()))
            .cloned()
    }
}

fn new_user_id() -> Result<String, AccountsUnavailable> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AccountsUnavailable("the random generator failed".to_owned()))?;
    Ok(format!("oidc-{:016x}", u64::from_be_bytes(bytes)))
}

impl Accounts for MemoryAccounts {
    async fn sign_in(&self, identity: &Identity) -> Result<String, AccountsUnavailable> {
        let key = (identity.issuer.clone(), identity.subject.clone());
        let mut links = self
            .links
            .write()
            .map_err(|_| AccountsUnavailable("lock".to_owned()))?;
        if let Some(user) = links.get(&key) {
            return Ok(user.clone());
        }
        let user = new_user_id()?;
        links.insert(key, user.clone());
        Ok(user)
    }

    async fn link(&self, user_id: &str, identity: &Identity) -> Result<Link, AccountsUnavailable> {
        let key = (identity.issuer.clone(), identity.subject.clone());
        let mut links = self
            .links
            .write()
            .map_err(|_| AccountsUnavailable("lock".to_owned()))?;
        Ok(match links.get(&key) {
            Some(user) if user == user_id => Link::AlreadyLinked,
            Some(_) => Link::TakenByAnother,
            None => {
                links.insert(key, user_id.to_owned());
                Link::Linked
            }
        })
    }
}
