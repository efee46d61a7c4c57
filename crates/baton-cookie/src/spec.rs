//! Cookie specs for the token cookies: safe defaults, checked when built.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, StatusCode};

/// What is wrong with a cookie spec or a request's cookies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// A spec browsers would reject or that is unsafe (found when the spec is built).
    #[error("invalid cookie spec: {0}")]
    InvalidSpec(&'static str),
    /// A value that is not made of cookie-octets.
    #[error("invalid cookie value")]
    InvalidValue,
    /// The same cookie appears twice in the request with different values.
    #[error("the cookie {0} appears more than once with different values")]
    Ambiguous(String),
    /// The request's `Cookie` headers are larger than accepted.
    #[error("the Cookie header is larger than {0} bytes")]
    TooLarge(usize),
}

impl CookieError {
    /// The status a request error deserves: 400, or 431 for an oversized header.
    pub fn status(&self) -> StatusCode {
        match self {
            CookieError::TooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// `true` for an RFC 6265 cookie name (an RFC 7230 token).
pub(crate) fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// `true` for RFC 6265 `cookie-octet`s.
fn is_cookie_value(s: &str) -> bool {
    s.bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e))
}

fn is_attribute_value(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Refresh,
    Access,
    Other,
}

/// How one token cookie is set, read and cleared. Built by [`CookieSpecBuilder::build`],
/// which refuses what browsers would reject or what is unsafe.
///
/// ```
/// use baton_cookie::CookieSpec;
/// use std::time::Duration;
///
/// let refresh = CookieSpec::refresh("/auth")
///     .with_max_age(Duration::from_secs(14 * 24 * 3600))
///     .build()
///     .unwrap();
/// let header = refresh.set("v1.abc").unwrap();
/// assert_eq!(
///     header,
///     "__Secure-refresh=v1.abc; HttpOnly; SameSite=Strict; Secure; Path=/auth; Max-Age=1209600"
/// );
/// assert!(CookieSpec::refresh("/").build().is_err(), "a refresh cookie on every path");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSpec {
    name: String,
    path: String,
    domain: Option<String>,
    same_site: SameSite,
    secure: bool,
    max_age: Option<Duration>,
    kind: Kind,
}

/// Builds a [`CookieSpec`]; see [`CookieSpec::refresh`] and [`CookieSpec::access`].
#[derive(Clone, Debug)]
#[must_use]
pub struct CookieSpecBuilder {
    spec: CookieSpec,
}

impl CookieSpec {
    /// The refresh-token cookie: `__Secure-refresh`, `HttpOnly; Secure; SameSite=Strict`,
    /// `Path` = the auth routes (never `/`), no `Domain`.
    pub fn refresh(auth_path: impl Into<String>) -> CookieSpecBuilder {
        CookieSpecBuilder {
            spec: CookieSpec {
                name: "__Secure-refresh".to_owned(),
                path: auth_path.into(),
                domain: None,
                same_site: SameSite::Strict,
                secure: true,
                max_age: None,
                kind: Kind::Refresh,
            },
        }
    }

    /// The access-token cookie of cookie-mode apps: `__Host-access`,
    /// `HttpOnly; Secure; SameSite=Strict; Path=/`, no `Domain`.
    pub fn access() -> CookieSpecBuilder {
        CookieSpecBuilder {
            spec: CookieSpec {
                name: "__Host-access".to_owned(),
                path: "/".to_owned(),
                domain: None,
                same_site: SameSite::Strict,
                secure: true,
                max_age: None,
                kind: Kind::Access,
            },
        }
    }

    /// Another `HttpOnly` cookie, `Secure; SameSite=Strict; Path=/` by default.
    pub fn named(name: impl Into<String>) -> CookieSpecBuilder {
        CookieSpecBuilder {
            spec: CookieSpec {
                name: name.into(),
                path: "/".to_owned(),
                domain: None,
                same_site: SameSite::Strict,
                secure: true,
                max_age: None,
                kind: Kind::Other,
            },
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cookie's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cookie's domain, when it has one.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// `SameSite`.
    pub fn same_site(&self) -> SameSite {
        self.same_site
    }

    /// `true` unless built with the insecure opt-in.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The `Max-Age`.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    fn cookie<'c>(&'c self, value: &'c str) -> Cookie<'c> {
        let mut cookie = Cookie::build((self.name.as_str(), value))
            .http_only(true)
            .same_site(self.same_site)
            .path(self.path.as_str())
            .build();
        if self.secure {
            cookie.set_secure(true);
        }
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.as_str());
        }
        cookie
    }

    /// The `Set-Cookie` value that stores `value`.
    ///
    /// # Errors
    /// [`CookieError::InvalidValue`] when `value` is not made of cookie-octets.
    pub fn set(&self, value: &str) -> Result<HeaderValue, CookieError> {
        if !is_cookie_value(value) {
            return Err(CookieError::InvalidValue);
        }
        let mut cookie = self.cookie(value);
        if let Some(max_age) = self.max_age {
            let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            cookie.set_max_age(cookie::time::Duration::seconds(secs));
        }
        HeaderValue::try_from(cookie.to_string()).map_err(|_| CookieError::InvalidValue)
    }

    /// The `Set-Cookie` value that makes browsers drop the cookie: same name, path and
    /// domain, empty value, `Max-Age=0` and an expiry in the past.
    pub fn clear(&self) -> HeaderValue {
        let mut cookie = self.cookie("");
        cookie.make_removal();
        HeaderValue::try_from(cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The cookie's value in a request, from all its `Cookie` headers.
    ///
    /// # Errors
    /// [`CookieError::Ambiguous`] when the cookie appears with two different values;
    /// [`CookieError::TooLarge`] when the `Cookie` headers add up to more than 8 KiB.
    pub fn read<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, CookieError> {
        read_cookie(headers, &self.name, MAX_COOKIE_HEADER_LEN)
    }
}

/// The largest total of `Cookie` header bytes [`CookieSpec::read`] accepts.
pub const MAX_COOKIE_HEADER_LEN: usize = 8 * 1024;

/// The value of cookie `name` across all of a request's `Cookie` headers (several headers,
/// many cookies each). The same name twice with the same value is fine; with different values
/// it is ambiguous.
///
/// # Errors
/// [`CookieError::Ambiguous`], [`CookieError::TooLarge`] past `max_len` bytes in all.
pub fn read_cookie<'h>(
    headers: &'h HeaderMap,
    name: &str,
    max_len: usize,
) -> Result<Option<&'h str>, CookieError> {
    let values = headers.get_all(http::header::COOKIE);
    if values.iter().map(|v| v.len()).sum::<usize>() > max_len {
        return Err(CookieError::TooLarge(max_len));
    }
    let mut found: Option<&'h str> = None;
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for cookie in Cookie::split_parse(value).flatten() {
            if cookie.name() != name {
                continue;
            }
            let Some(v) = cookie.value_raw() else {
                continue;
            };
            match found {
                Some(prev) if prev != v => return Err(CookieError::Ambiguous(name.to_owned())),
                _ => found = Some(v),
            }
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

impl CookieSpecBuilder {
    /// Another name (keep the `__Secure-`/`__Host-` prefix: browsers then enforce the rules).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into();
        self
    }

    /// Another path.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.spec.path = path.into();
        self
    }

    /// A `Domain` (shares the cookie with subdomains; not allowed with `__Host-`).
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.spec.domain = Some(domain.into());
        self
    }

    /// Another `SameSite` (`None` requires `Secure`).
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.spec.same_site = same_site;
        self
    }

    /// `Max-Age`: the token's lifetime.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.spec.max_age = Some(max_age);
        self
    }

    /// Drops `Secure`, so the cookie travels over plain HTTP to hosts other than localhost.
    ///
    /// # Security
    /// Anyone on the network then reads the token. Browsers accept `Secure` cookies on
    /// `http://localhost`, so development does not need this. Incompatible with the
    /// `__Secure-` and `__Host-` prefixes.
    pub fn dangerous_insecure_http(mut self) -> Self {
        self.spec.secure = false;
        self
    }

    /// Checks and returns the spec.
    ///
    /// # Errors
    /// [`CookieError::InvalidSpec`] for: a name that is not a token; a path not starting
    /// with `/` or with `;` or control characters; a bad domain; `SameSite=None` without
    /// `Secure`; `__Secure-` without `Secure`; `__Host-` without `Secure`, with a `Domain`,
    /// or with a path other than `/`; a refresh cookie on `Path=/`.
    pub fn build(self) -> Result<CookieSpec, CookieError> {
        let s = self.spec;
        let invalid = |why| Err(CookieError::InvalidSpec(why));
        if !is_cookie_name(&s.name) {
            return invalid("the name must be a token (no spaces, separators or controls)");
        }
        if !s.path.starts_with('/') || !is_attribute_value(&s.path) {
            return invalid("the path must start with '/' and hold no ';' or controls");
        }
        if s.domain
            .as_deref()
            .is_some_and(|d| !is_attribute_value(d) || d.contains(' '))
        {
            return invalid("the domain holds invalid characters");
        }
        if s.same_site == SameSite::None && !s.secure {
            return invalid("SameSite=None requires Secure");
        }
        if s.name.starts_with("__Secure-") && !s.secure {
            return invalid("a __Secure- cookie requires Secure");
        }
        if s.name.starts_with("__Host-") && (!s.secure || s.domain.is_some() || s.path != "/") {
            return invalid("a __Host- cookie requires Secure, Path=/ and no Domain");
        }
        if s.kind == Kind::Refresh && s.path == "/" {
            return invalid("the refresh cookie must be restricted to the auth routes, not Path=/");
        }
        Ok(s)
    }
}
