//! Users: argon2-hashed passwords, and identities at OpenID Connect providers linked to
//! users, in memory, in Redis, or in PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{
    Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton::oidc::{Accounts, AccountsUnavailable, Identity, Link};
use baton::redis::RedisConnection;
use baton::{AuthUnavailable, Authenticator, Principal, UsernamePassword};
use serde::{Deserialize, Serialize};

use crate::hashing::{Busy, HashPool, Lane};

/// The app's claims in access tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClaims {
    /// The user's name.
    pub username: String,
}

/// A stored user.
#[derive(Clone, Debug)]
struct User {
    id: String,
    hash: String,
}

/// Users in memory: by canonical name, display names by id, and provider identities
/// `(issuer, subject)` by the user they are linked to.
#[derive(Clone, Default)]
struct Memory {
    users: Arc<RwLock<HashMap<String, User>>>,
    ids: Arc<RwLock<HashMap<String, String>>>,
    links: Arc<RwLock<HashMap<(String, String), String>>>,
}

/// The scripts the Redis backend writes with (each behind the deadline check).
struct Scripts {
    register: redis::Script,
    sign_in: redis::Script,
    link: redis::Script,
}

#[derive(Clone)]
enum Backend {
    Memory(Memory),
    Redis(RedisConnection, Arc<Scripts>),
    Postgres(sqlx::PgPool),
}

/// The app's own tables, created when missing (one instance at a time: the advisory lock is
/// held to the end of the implicit transaction the statements run in).
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7406500001);
CREATE TABLE IF NOT EXISTS login_app_users (
    id      text PRIMARY KEY,
    -- The canonical name of a password user; NULL for a user made by a provider sign-in.
    name    text UNIQUE,
    display text NOT NULL,
    hash    text
);
CREATE TABLE IF NOT EXISTS login_app_identities (
    issuer  text NOT NULL,
    subject text NOT NULL,
    user_id text NOT NULL REFERENCES login_app_users (id),
    PRIMARY KEY (issuer, subject)
);
CREATE TABLE IF NOT EXISTS login_app_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);
";

/// The secret `name` every instance on this database uses (`login_app_secrets`): the first
/// instance to start writes a random one, the others read it.
///
/// # Errors
/// A message when the database cannot be read.
pub async fn shared_secret_pg(pool: &sqlx::PgPool, name: &str) -> Result<[u8; 32], String> {
    let mut fresh = [0u8; 32];
    SystemRandom::new()
        .fill(&mut fresh)
        .map_err(|_| "the random generator failed".to_owned())?;
    let value: Vec<u8> = sqlx::query_scalar(
        // The row as it is after the statement, whoever wrote it (two instances starting
        // together both get the first one's).
        "INSERT INTO login_app_secrets (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING value",
    )
    .bind(name)
    .bind(fresh.as_slice())
    .fetch_one(pool)
    .await
    .map_err(|e| format!("postgres: the shared secret {name}: {e}"))?;
    <[u8; 32]>::try_from(value.as_slice())
        .map_err(|_| format!("postgres: the shared secret {name} is not 32 bytes; delete it"))
}

/// A provider identity's user: found, or made with its link in one statement.
/// $1 issuer, $2 subject, $3 the new user's id, $4 its display name.
const SIGN_IN_SQL: &str = "
WITH existing AS (
    SELECT user_id FROM login_app_identities WHERE issuer = $1 AND subject = $2),
new_user AS (
    INSERT INTO login_app_users (id, display)
    SELECT $3, $4 WHERE NOT EXISTS (SELECT 1 FROM existing)
    RETURNING id),
link AS (
    INSERT INTO login_app_identities (issuer, subject, user_id)
    SELECT $1, $2, id FROM new_user
    ON CONFLICT DO NOTHING
    RETURNING user_id)
SELECT user_id FROM existing UNION ALL SELECT user_id FROM link";

/// Links an identity to a user unless it is another's: 0 linked now, 1 this user's already,
/// 2 another user's. The upsert returns the row as it is after the statement, whichever
/// transaction wrote it (`xmax = 0`: this one inserted it). $1 issuer, $2 subject, $3 the user.
const LINK_SQL: &str = "
INSERT INTO login_app_identities AS l (issuer, subject, user_id) VALUES ($1, $2, $3)
ON CONFLICT (issuer, subject) DO UPDATE SET user_id = l.user_id
RETURNING CASE WHEN l.xmax = 0 THEN 0 WHEN l.user_id = $3 THEN 1 ELSE 2 END";

/// Registers a user atomically: the name and the id together, or nothing. Sent again after a
/// lost reply, it recognises its own id and answers "created" rather than "taken"; reached too
/// late (after a stall), it does nothing (the deadline check before it).
/// KEYS: the name's key, the id's key. ARGV: the record (`id \x1f hash`), the name, the id.
const REGISTER_LUA: &str = r#"
local existing = redis.call("GET", KEYS[1])
if existing then
  if string.sub(existing, 1, #ARGV[3] + 1) == ARGV[3] .. "\031" then return 1 end
  return 0
end
redis.call("SET", KEYS[1], ARGV[1])
redis.call("SET", KEYS[2], ARGV[2])
return 1
"#;

/// The first sign-in of a provider identity: its link and its user together. Sent again after
/// a lost reply, it finds the link it made and answers the same user.
/// KEYS: the identity's link key, the new user's id key. ARGV: the new id, its display name.
const SIGN_IN_LUA: &str = r#"
local existing = redis.call("GET", KEYS[1])
if existing then return existing end
redis.call("SET", KEYS[1], ARGV[1])
redis.call("SET", KEYS[2], ARGV[2])
return ARGV[1]
"#;

/// Links an identity to a signed-in user unless it is another user's: 0 linked now, 1 linked
/// to this user already (a retry after a lost reply included), 2 another user's.
/// KEYS: the identity's link key. ARGV: the user id.
const LINK_LUA: &str = r#"
local existing = redis.call("GET", KEYS[1])
if existing == ARGV[1] then return 1 end
if existing then return 2 end
redis.call("SET", KEYS[1], ARGV[1])
return 0
"#;

/// Why a registration failed.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The name is taken.
    Taken,
    /// The store could not answer.
    Unavailable,
    /// Too much hashing waits already: try again shortly.
    Busy,
}

/// Users and their argon2id password hashes (OWASP parameters: 19 MiB, 2 passes, 1 lane).
#[derive(Clone)]
pub struct Users {
    backend: Backend,
    argon: Argon2<'static>,
    dummy_hash: Arc<String>,
    /// Hashing runs on one thread per core (see [`crate::hashing`]).
    hashing: Arc<HashPool>,
    /// Names by user id, as read from Redis or PostgreSQL, for a minute: here a user's id and
    /// name never change, so most refreshes (which ask for the claims of the session's user)
    /// cost the store one command, the rotation. A user deleted in the store directly is
    /// found gone (and the session revoked) at the first refresh after its entry expires.
    names: Arc<NameCache>,
}

/// A bounded map of user ids to names, each kept for a while: emptied when full.
struct NameCache {
    names: RwLock<HashMap<String, (String, Instant)>>,
    ttl: Duration,
}

impl Default for NameCache {
    fn default() -> Self {
        NameCache {
            names: RwLock::default(),
            ttl: Self::TTL,
        }
    }
}

impl NameCache {
    /// At most this many names (ids of 16 bytes, names of up to 256 bytes and a provider's
    /// host: at most about 25 MB, a few MB in practice).
    const MAX: usize = 65_536;
    /// How long a name read from the store is used without asking again.
    const TTL: Duration = Duration::from_secs(60);

    fn get(&self, id: &str) -> Option<String> {
        let names = self.names.read().ok()?;
        let (name, read) = names.get(id)?;
        (read.elapsed() < self.ttl).then(|| name.clone())
    }

    fn insert(&self, id: &str, name: &str) {
        if let Ok(mut names) = self.names.write() {
            if names.len() >= Self::MAX {
                names.clear();
            }
            names.insert(id.to_owned(), (name.to_owned(), Instant::now()));
        }
    }
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").finish_non_exhaustive()
    }
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random generator");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn argon() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_with(argon: &Argon2<'static>, password: &str) -> String {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("system random generator");
    let salt = SaltString::encode_b64(&salt).expect("16-byte salt");
    let mut raw = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut raw).expect("the salt just encoded");
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    crate::hashing::with_argon_memory(argon.params().block_count(), |memory| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, memory)
    })
    .expect("argon2 hashing");
    PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params()).expect("the parameters as a string"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).expect("a 32-byte output")),
    }
    .to_string()
}

/// Whether `hash` was made with `argon`'s algorithm, version and costs (the parsed
/// parameters also carry the output length, which does not matter here).
fn made_like(argon: &Argon2<'static>, hash: &PasswordHash<'_>) -> bool {
    let want = argon.params();
    hash.algorithm == argon2::ARGON2ID_IDENT
        && hash.version == Some(Version::V0x13.into())
        && Params::try_from(hash).is_ok_and(|p| {
            (p.m_cost(), p.t_cost(), p.p_cost()) == (want.m_cost(), want.t_cost(), want.p_cost())
        })
}

/// Whether `password` is the one `hash` (a PHC string) was made from, hashing into this
/// thread's reused memory when `hash` has `argon`'s algorithm and parameters (every hash this
/// app makes); a hash of other parameters is checked the allocating way.
fn verify_with(argon: &Argon2<'static>, password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    if !made_like(argon, &parsed) {
        return argon.verify_password(password.as_bytes(), &parsed).is_ok();
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut raw = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut raw) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    let hashed = crate::hashing::with_argon_memory(argon.params().block_count(), |memory| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, out, memory)
    });
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(out).is_ok_and(|computed| computed == expected)
}

const USER_PREFIX: &str = "baton-app:user:";
const ID_PREFIX: &str = "baton-app:uid:";
const LINK_PREFIX: &str = "baton-app:oidc:";

/// The Redis key of a provider identity's link: the issuer and the subject, each
/// length-prefixed so no pair can be spelled as another.
fn link_key(identity: &Identity) -> String {
    format!(
        "{LINK_PREFIX}{}:{}:{}",
        identity.issuer.len(),
        identity.issuer,
        identity.subject
    )
}

/// Keeps what shows of a provider's name for a user: no control or invisible formatting
/// characters (bidirectional overrides, zero-width joiners), surrounding spaces trimmed, at
/// most 64 characters; `None` when nothing is left.
fn visible(text: &str) -> Option<String> {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
    };
    let kept: String = text.chars().filter(|c| !invisible(*c)).take(64).collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

/// How a user made by a provider sign-in is shown: the provider's name for them (or their
/// e-mail, or their id there) and the provider's host, so it cannot pass for a local
/// username. A display name only: two people may carry the same one, and what identifies a
/// user is the token's `sub`.
fn display_name(identity: &Identity) -> String {
    let name = [identity.name.as_deref(), identity.email.as_deref()]
        .into_iter()
        .flatten()
        .find_map(visible)
        .or_else(|| visible(&identity.subject))
        .unwrap_or_else(|| "user".to_owned());
    let host = identity
        .issuer
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_else(|| identity.issuer.clone());
    format!("{name} ({host})")
}

impl Users {
    fn with_backend(backend: Backend) -> Self {
        let argon = argon();
        // Made once on this thread, the allocating way: the reused memory is for the hashing
        // threads only.
        let salt = SaltString::encode_b64(random_b64(16).as_bytes()).expect("a 22-byte salt");
        let dummy_hash = Arc::new(
            argon
                .hash_password(random_b64(16).as_bytes(), &salt)
                .expect("argon2 hashing")
                .to_string(),
        );
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Users {
            backend,
            argon,
            dummy_hash,
            // 32 waiting jobs per thread and lane: a login waits for at most about 32 hashes
            // (about a second) ahead of it; beyond that it is told to come back.
            hashing: Arc::new(HashPool::new(cores, cores * 32)),
            names: Arc::new(NameCache::default()),
        }
    }

    /// Users in process memory.
    pub fn memory() -> Self {
        Users::with_backend(Backend::Memory(Memory::default()))
    }

    /// Users in PostgreSQL (tables `login_app_users` and `login_app_identities`, created when
    /// missing), on the pool the sessions, the feed and the limits share.
    ///
    /// # Errors
    /// A message when the tables cannot be created.
    pub async fn postgres(pool: sqlx::PgPool) -> Result<Self, String> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| format!("postgres: the users' tables: {e}"))?;
        Ok(Users::with_backend(Backend::Postgres(pool)))
    }

    /// Users in Redis (`baton-app:user:<name>` and `baton-app:uid:<id>`), on the connection
    /// the sessions, the revocation feed and the limits share.
    pub fn redis(conn: RedisConnection) -> Self {
        let script =
            |body: &str| redis::Script::new(&format!("{}{body}", baton::redis::DEADLINE_LUA));
        let scripts = Scripts {
            register: script(REGISTER_LUA),
            sign_in: script(SIGN_IN_LUA),
            link: script(LINK_LUA),
        };
        Users::with_backend(Backend::Redis(conn, Arc::new(scripts)))
    }

    async fn hash(&self, password: &str) -> Result<String, Busy> {
        let argon = self.argon.clone();
        let password = password.to_owned();
        self.hashing
            .run(Lane::Register, move || hash_with(&argon, &password))
            .await
    }

    async fn verify(&self, password: &str, hash: &str) -> Result<bool, Busy> {
        let argon = self.argon.clone();
        let (password, hash) = (password.to_owned(), hash.to_owned());
        self.hashing
            .run(Lane::Login, move || verify_with(&argon, &password, &hash))
            .await
    }

    /// Registers `username`; returns the new user id.
    ///
    /// # Errors
    /// [`RegisterError`].
    pub async fn register(&self, username: &str, password: &str) -> Result<String, RegisterError> {
        // Stored under the canonical form (a look-alike of a taken name is taken), shown as
        // typed.
        let display = username;
        let Some(canonical) = baton::canonical_username(username) else {
            return Err(RegisterError::Taken);
        };
        let username = canonical.as_str();
        let id = format!("u_{}", random_b64(12));
        let hash = self
            .hash(password)
            .await
            .map_err(|Busy| RegisterError::Busy)?;
        match &self.backend {
            Backend::Memory(Memory { users, ids, .. }) => {
                let mut users = users.write().map_err(|_| RegisterError::Unavailable)?;
                if users.contains_key(username) {
                    return Err(RegisterError::Taken);
                }
                users.insert(
                    username.to_owned(),
                    User {
                        id: id.clone(),
                        hash,
                    },
                );
                ids.write()
                    .map_err(|_| RegisterError::Unavailable)?
                    .insert(id.clone(), display.to_owned());
            }
            Backend::Redis(conn, scripts) => {
                let keys = [
                    format!("{USER_PREFIX}{username}"),
                    format!("{ID_PREFIX}{id}"),
                ];
                let args = [format!("{id}\u{1f}{hash}"), display.to_owned(), id.clone()];
                let created: i64 = conn
                    .write_script("register", &scripts.register, &keys, &args)
                    .await
                    .map_err(|_| RegisterError::Unavailable)?;
                if created == 0 {
                    return Err(RegisterError::Taken);
                }
            }
            Backend::Postgres(pool) => {
                let created: Option<String> = sqlx::query_scalar(
                    "INSERT INTO login_app_users (id, name, display, hash) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING id",
                )
                .bind(&id)
                .bind(username)
                .bind(display)
                .bind(&hash)
                .fetch_optional(pool)
                .await
                .map_err(|_| RegisterError::Unavailable)?;
                if created.is_none() {
                    return Err(RegisterError::Taken);
                }
            }
        }
        Ok(id)
    }

    async fn find(&self, username: &str) -> Result<Option<User>, AuthUnavailable> {
        match &self.backend {
            Backend::Memory(Memory { users, .. }) => Ok(users
                .read()
                .map_err(|_| AuthUnavailable("lock".into()))?
                .get(username)
                .cloned()),
            Backend::Redis(conn, _) => {
                let key = format!("{USER_PREFIX}{username}");
                let key = &key;
                let value: Option<String> = conn
                    .read("find user", move |mut c| async move {
                        redis::cmd("GET").arg(key).query_async(&mut c).await
                    })
                    .await
                    .map_err(|e| AuthUnavailable(e.to_string()))?;
                Ok(value.and_then(|v| {
                    let (id, hash) = v.split_once('\u{1f}')?;
                    Some(User {
                        id: id.to_owned(),
                        hash: hash.to_owned(),
                    })
                }))
            }
            Backend::Postgres(pool) => {
                let found: Option<(String, String)> = sqlx::query_as(
                    "SELECT id, hash FROM login_app_users WHERE name = $1 AND hash IS NOT NULL",
                )
                .bind(username)
                .fetch_optional(pool)
                .await
                .map_err(|e| AuthUnavailable(e.to_string()))?;
                Ok(found.map(|(id, hash)| User { id, hash }))
            }
        }
    }

    async fn username_of(&self, id: &str) -> Result<Option<String>, AuthUnavailable> {
        if let Some(name) = self.names.get(id) {
            return Ok(Some(name));
        }
        let name = self.username_in_store(id).await?;
        if let (Some(name), false) = (&name, matches!(self.backend, Backend::Memory(_))) {
            self.names.insert(id, name);
        }
        Ok(name)
    }

    async fn username_in_store(&self, id: &str) -> Result<Option<String>, AuthUnavailable> {
        match &self.backend {
            Backend::Memory(Memory { ids, .. }) => Ok(ids
                .read()
                .map_err(|_| AuthUnavailable("lock".into()))?
                .get(id)
                .cloned()),
            Backend::Redis(conn, _) => {
                let key = format!("{ID_PREFIX}{id}");
                let key = &key;
                conn.read("user name", move |mut c| async move {
                    redis::cmd("GET").arg(key).query_async(&mut c).await
                })
                .await
                .map_err(|e| AuthUnavailable(e.to_string()))
            }
            Backend::Postgres(pool) => {
                sqlx::query_scalar("SELECT display FROM login_app_users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| AuthUnavailable(e.to_string()))
            }
        }
    }
}

impl Authenticator for Users {
    type Claims = AppClaims;

    type Credentials = UsernamePassword;

    async fn authenticate(
        &self,
        credentials: &UsernamePassword,
    ) -> Result<Option<Principal<AppClaims>>, AuthUnavailable> {
        let (username, password) = (credentials.username.as_str(), credentials.password.as_str());
        let busy = |Busy| AuthUnavailable("password hashing is busy".into());
        let found = match baton::canonical_username(username) {
            Some(canonical) => self.find(&canonical).await?,
            None => None,
        };
        match found {
            Some(user) => {
                if self.verify(password, &user.hash).await.map_err(busy)? {
                    // The name as registered, whatever case it was typed in now.
                    let display = self
                        .username_of(&user.id)
                        .await?
                        .unwrap_or_else(|| username.to_owned());
                    Ok(Some(Principal::new(
                        user.id,
                        AppClaims { username: display },
                    )))
                } else {
                    Ok(None)
                }
            }
            None => {
                // The same work as a wrong password, so timing does not reveal names.
                self.verify(password, &self.dummy_hash)
                    .await
                    .map_err(busy)?;
                Ok(None)
            }
        }
    }

    async fn check_password(&self, user_id: &str, password: &str) -> Result<bool, AuthUnavailable> {
        let busy = |Busy| AuthUnavailable("password hashing is busy".into());
        let found = match self.username_of(user_id).await? {
            Some(name) => match baton::canonical_username(&name) {
                Some(canonical) => self.find(&canonical).await?.filter(|u| u.id == user_id),
                None => None,
            },
            None => None,
        };
        match found {
            Some(user) => self.verify(password, &user.hash).await.map_err(busy),
            None => {
                // The same work as a wrong password.
                self.verify(password, &self.dummy_hash)
                    .await
                    .map_err(busy)?;
                Ok(false)
            }
        }
    }

    async fn claims(&self, user_id: &str) -> Result<Option<AppClaims>, AuthUnavailable> {
        Ok(self
            .username_of(user_id)
            .await?
            .map(|username| AppClaims { username }))
    }
}

/// Provider identities linked to the app's users: the first sign-in makes a user (shown by the
/// provider's name for them and the provider's host; it has no password), later ones find
/// it; a signed-in user links another identity. Never merged by e-mail.
impl Accounts for Users {
    async fn sign_in(&self, identity: &Identity) -> Result<String, AccountsUnavailable> {
        let new_id = format!("u_{}", random_b64(12));
        let display = display_name(identity);
        match &self.backend {
            Backend::Memory(Memory { ids, links, .. }) => {
                let lock = || AccountsUnavailable("lock".to_owned());
                let mut links = links.write().map_err(|_| lock())?;
                let key = (identity.issuer.clone(), identity.subject.clone());
                if let Some(user) = links.get(&key) {
                    return Ok(user.clone());
                }
                ids.write()
                    .map_err(|_| lock())?
                    .insert(new_id.clone(), display);
                links.insert(key, new_id.clone());
                Ok(new_id)
            }
            Backend::Redis(conn, scripts) => {
                let keys = [link_key(identity), format!("{ID_PREFIX}{new_id}")];
                conn.write_script("oidc sign-in", &scripts.sign_in, &keys, &[new_id, display])
                    .await
                    .map_err(|e| AccountsUnavailable(baton::core::ErrorChain(&e).to_string()))
            }
            Backend::Postgres(pool) => {
                let unavailable = |e: sqlx::Error| AccountsUnavailable(e.to_string());
                let found: Option<String> = sqlx::query_scalar(SIGN_IN_SQL)
                    .bind(&identity.issuer)
                    .bind(&identity.subject)
                    .bind(&new_id)
                    .bind(&display)
                    .fetch_optional(pool)
                    .await
                    .map_err(unavailable)?;
                if let Some(user) = found {
                    return Ok(user);
                }
                // Another first sign-in of the same identity linked it meanwhile: its user,
                // and the user made here for nothing goes.
                sqlx::query(
                    "DELETE FROM login_app_users WHERE id = $1 AND name IS NULL AND NOT EXISTS \
                     (SELECT 1 FROM login_app_identities WHERE user_id = $1)",
                )
                .bind(&new_id)
                .execute(pool)
                .await
                .map_err(unavailable)?;
                sqlx::query_scalar(
                    "SELECT user_id FROM login_app_identities WHERE issuer = $1 AND subject = $2",
                )
                .bind(&identity.issuer)
                .bind(&identity.subject)
                .fetch_optional(pool)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| AccountsUnavailable("the identity's link vanished".to_owned()))
            }
        }
    }

    async fn link(&self, user_id: &str, identity: &Identity) -> Result<Link, AccountsUnavailable> {
        match &self.backend {
            Backend::Memory(Memory { links, .. }) => {
                let mut links = links
                    .write()
                    .map_err(|_| AccountsUnavailable("lock".to_owned()))?;
                let key = (identity.issuer.clone(), identity.subject.clone());
                Ok(match links.get(&key) {
                    Some(user) if user == user_id => Link::AlreadyLinked,
                    Some(_) => Link::TakenByAnother,
                    None => {
                        links.insert(key, user_id.to_owned());
                        Link::Linked
                    }
                })
            }
            Backend::Redis(conn, scripts) => {
                let done: i64 = conn
                    .write_script(
                        "oidc link",
                        &scripts.link,
                        &[link_key(identity)],
                        &[user_id.to_owned()],
                    )
                    .await
                    .map_err(|e| AccountsUnavailable(baton::core::ErrorChain(&e).to_string()))?;
                Ok(match done {
                    0 => Link::Linked,
                    1 => Link::AlreadyLinked,
                    _ => Link::TakenByAnother,
                })
            }
            Backend::Postgres(pool) => {
                let done: i32 = sqlx::query_scalar(LINK_SQL)
                    .bind(&identity.issuer)
                    .bind(&identity.subject)
                    .bind(user_id)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| AccountsUnavailable(e.to_string()))?;
                Ok(match done {
                    0 => Link::Linked,
                    1 => Link::AlreadyLinked,
                    _ => Link::TakenByAnother,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_cache_is_bounded() {
        let names = NameCache::default();
        for i in 0..NameCache::MAX {
            names.insert(&format!("u_{i}"), "name");
        }
        assert_eq!(names.get("u_0").as_deref(), Some("name"));
        names.insert("one-more", "last");
        assert_eq!(names.get("u_0"), None, "emptied when full");
        assert_eq!(names.get("one-more").as_deref(), Some("last"));
        assert!(names.names.read().unwrap().len() <= NameCache::MAX);
    }

    #[test]
    fn a_cached_name_expires() {
        let names = NameCache {
            ttl: Duration::ZERO,
            ..NameCache::default()
        };
        names.insert("u_1", "alice");
        assert_eq!(names.get("u_1"), None, "read again from the store");
        let names = NameCache::default();
        names.insert("u_1", "alice");
        assert_eq!(names.get("u_1").as_deref(), Some("alice"));
    }

    #[test]
    fn hashing_in_reused_memory_agrees_with_the_argon2_crate() {
        let argon = argon();
        let ours = hash_with(&argon, "correct horse");
        // The crate's own (allocating) check takes our hashes, and ours takes its hashes.
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon.verify_password(b"correct horse", &parsed).is_ok());
        let salt = SaltString::encode_b64(b"sixteen byte sal").unwrap();
        let theirs = argon
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify_with(&argon, "correct horse", &theirs));
        // The same memory, hash after hash: each answer is its own.
        for _ in 0..3 {
            assert!(verify_with(&argon, "correct horse", &ours));
            assert!(!verify_with(&argon, "correct horsE", &ours));
        }
        assert!(!verify_with(&argon, "correct horse", "not a hash"));
        let at = ours.len() - 10;
        let flipped = if &ours[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &ours[..at], &ours[at + 1..]);
        assert!(!verify_with(&argon, "correct horse", &tampered));
        // Every hash this app makes (and the crate's, with the same parameters) is checked in
        // the reused memory.
        assert!(made_like(&argon, &PasswordHash::new(&ours).unwrap()));
        assert!(made_like(&argon, &PasswordHash::new(&theirs).unwrap()));
        // A hash of other parameters is checked the allocating way.
        let cheap = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        );
        let other = cheap.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(verify_with(&argon, "pw", &other));
        assert!(!verify_with(&argon, "px", &other));
    }

    fn identity(name: Option<&str>, email: Option<&str>) -> Identity {
        let mut identity = Identity::new("https://accounts.example", "s-123");
        if let Some(name) = name {
            identity = identity.with_name(name);
        }
        if let Some(email) = email {
            identity = identity.with_email(email, Some(true));
        }
        identity
    }

    #[test]
    fn provider_names_show_without_invisible_characters() {
        assert_eq!(
            display_name(&identity(Some("Zoe"), None)),
            "Zoe (accounts.example)"
        );
        // Right-to-left override and zero-width characters are dropped.
        assert_eq!(
            display_name(&identity(Some("ali\u{202e}ce\u{200b}"), None)),
            "alice (accounts.example)"
        );
        // An empty or invisible name falls back to the e-mail, then the subject.
        assert_eq!(
            display_name(&identity(Some(" \u{200b} "), Some("z@example.test"))),
            "z@example.test (accounts.example)"
        );
        assert_eq!(
            display_name(&identity(Some(""), None)),
            "s-123 (accounts.example)"
        );
    }
}
