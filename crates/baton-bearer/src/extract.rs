//! Finding the token in a request: `Authorization: Bearer` and, optionally, a cookie.
//!
//! The token's `token68` syntax is checked only when it fails to verify: a token that
//! verifies is three base64url segments joined by `.` (or, from the cache, equal to one that
//! did), all of whose characters are `token68` characters, so the success path skips a pass
//! over the token and a failure is classified as before (`invalid_request` for bad syntax,
//! `invalid_token` for the rest).

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// Where the token came from, or why the request is malformed (RFC 6750 `invalid_request`).
pub(crate) type Extracted<'a> = Result<Option<Found<'a>>, &'static str>;

/// A token found in a request, its syntax not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    pub(crate) token: &'a str,
    /// It came with the `DPoP` scheme.
    pub(crate) dpop: bool,
    /// It came from the cookie (else the `Authorization` header).
    cookie: bool,
}

impl<'a> Found<'a> {
    fn header(token: &'a str, dpop: bool) -> Self {
        Found {
            token,
            dpop,
            cookie: false,
        }
    }

    fn cookie(token: &'a str) -> Self {
        Found {
            token,
            dpop: false,
            cookie: true,
        }
    }

    /// Why the token is not `token68` (RFC 9110 section 11.2), if it is not: asked when it
    /// failed to verify, so that bad syntax is answered `invalid_request`.
    pub(crate) fn syntax_error(&self) -> Option<&'static str> {
        match (token68(self.token.as_bytes()), self.cookie) {
            (Some(_), _) => None,
            (None, false) => Some("bearer token has invalid syntax"),
            (None, true) => Some("token cookie has invalid syntax"),
        }
    }
}

/// One character of `token68` before its `=` padding (RFC 9110 section 11.2): ALPHA, DIGIT,
/// `-`, `.`, `_`, `~`, `+`, `/`. Comparisons only, so the check over a whole token vectorizes.
#[inline]
fn is_token68_char(b: u8) -> bool {
    let lower = b | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// `token68`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`. Being ASCII, a
/// `token68` is also valid UTF-8.
fn token68(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().rposition(|&b| b != b'=')? + 1;
    // No early exit: a branch-free fold over the bytes is faster than stopping at the first
    // bad one, and bad tokens are rare.
    if bytes[..end]
        .iter()
        .fold(true, |ok, &b| ok & is_token68_char(b))
    {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

fn from_header(headers: &HeaderMap, dpop: bool) -> Extracted<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let value = value.as_bytes();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &[][..]),
    };
    let is_dpop = dpop && scheme.eq_ignore_ascii_case(b"dpop");
    if !is_dpop && !scheme.eq_ignore_ascii_case(b"bearer") {
        // Another scheme (Basic, ...): this request carries no bearer token.
        return Ok(None);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err("empty bearer token");
    }
    // Not UTF-8 is not `token68` either; the rest of the syntax waits for a failure.
    match std::str::from_utf8(token) {
        Ok(token) => Ok(Some(Found::header(token, is_dpop))),
        Err(_) => Err("bearer token has invalid syntax"),
    }
}

fn from_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, &'static str> {
    let mut found: Option<&'a str> = None;
    for value in headers.get_all(COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for cookie in cookie::Cookie::split_parse(value).flatten() {
            if cookie.name() != name {
                continue;
            }
            // `split_parse` borrows from `value` when it does not decode, which it never does.
            let Some(v) = cookie.value_raw() else {
                continue;
            };
            match found {
                Some(prev) if prev != v => {
                    return Err("the token cookie appears twice with different values");
                }
                _ => found = Some(v),
            }
        }
    }
    match found {
        Some("") => Ok(None),
        other => Ok(other),
    }
}

/// The request's token: from the header, from the cookie when configured, or both when they
/// agree; and whether it came with the `DPoP` scheme (only recognised when `dpop`).
pub(crate) fn extract<'a>(
    headers: &'a HeaderMap,
    cookie: Option<&str>,
    dpop: bool,
) -> Extracted<'a> {
    let header = from_header(headers, dpop)?;
    let Some(name) = cookie else {
        return Ok(header);
    };
    let cookie = from_cookie(headers, name)?;
    match (header, cookie) {
        (Some(h), Some(c)) if h.token != c => {
            Err("the tokens in the Authorization header and the cookie differ")
        }
        (Some(h), _) => Ok(Some(h)),
        (None, c) => Ok(c.map(Found::cookie)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The token and its scheme as the layer answers a token that does not verify: bad
    /// syntax is the request's error (every token that verifies is `token68`).
    fn unverified<'a>(
        headers: &'a HeaderMap,
        cookie: Option<&str>,
        dpop: bool,
    ) -> Result<Option<(&'a str, bool)>, &'static str> {
        match super::extract(headers, cookie, dpop)? {
            Some(found) => match found.syntax_error() {
                Some(e) => Err(e),
                None => Ok(Some((found.token, found.dpop))),
            },
            None => Ok(None),
        }
    }

    /// The token alone, DPoP not configured.
    fn extract<'a>(
        headers: &'a HeaderMap,
        cookie: Option<&str>,
    ) -> Result<Option<&'a str>, &'static str> {
        unverified(headers, cookie, false).map(|t| t.map(|(token, _)| token))
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_dpop_scheme_is_read_only_when_configured() {
        let h = headers(&[("authorization", "DPoP abc.def")]);
        assert_eq!(unverified(&h, None, false), Ok(None));
        assert_eq!(unverified(&h, None, true), Ok(Some(("abc.def", true))));
        let h = headers(&[("authorization", "Bearer abc.def")]);
        assert_eq!(unverified(&h, None, true), Ok(Some(("abc.def", false))));
        let h = headers(&[("authorization", "dpop  ")]);
        assert!(unverified(&h, None, true).is_err());
    }

    #[test]
    fn scheme_is_case_insensitive_and_other_schemes_carry_no_token() {
        assert_eq!(
            extract(&headers(&[("authorization", "bEaReR abc.d-e_f")]), None),
            Ok(Some("abc.d-e_f"))
        );
        assert_eq!(
            extract(&headers(&[("authorization", "Bearer   abc==")]), None),
            Ok(Some("abc=="))
        );
        assert!(
            extract(&headers(&[("authorization", "Bearer abc ")]), None).is_err(),
            "trailing space"
        );
        assert_eq!(
            extract(&headers(&[("authorization", "Basic dXNlcjpwYXNz")]), None),
            Ok(None)
        );
        assert_eq!(extract(&headers(&[]), None), Ok(None));
    }

    #[test]
    fn token68_characters_are_exactly_those_of_rfc_9110() {
        for b in 0..=255u8 {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_token68_char(b), expected, "byte {b:#04x}");
        }
        assert_eq!(token68(b"abc=="), Some("abc=="));
        assert_eq!(token68(b"a=c"), None);
        assert_eq!(token68(b"==="), None);
        assert_eq!(token68("é".as_bytes()), None);
    }

    #[test]
    fn bad_syntax_is_invalid_request() {
        assert_eq!(
            extract(&headers(&[("authorization", "Bearer")]), None),
            Err("empty bearer token")
        );
        for value in ["Bearer a b", "Bearer a\"b", "Bearer ===", "Bearer a=b"] {
            assert_eq!(
                extract(&headers(&[("authorization", value)]), None),
                Err("bearer token has invalid syntax"),
                "{value}"
            );
        }
    }

    #[test]
    fn a_header_that_is_not_utf8_is_refused_at_once() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_bytes(b"Bearer ab\xffcd").unwrap(),
        );
        assert_eq!(
            super::extract(&h, None, false),
            Err("bearer token has invalid syntax")
        );
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        assert!(
            extract(
                &headers(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn cookie_is_read_when_configured_and_must_agree() {
        let h = headers(&[("cookie", "x=1; at=tok.en; y=2")]);
        assert_eq!(extract(&h, Some("at")), Ok(Some("tok.en")));
        assert_eq!(extract(&h, None), Ok(None));
        let h = headers(&[("cookie", "at=one"), ("cookie", "at=two")]);
        assert!(extract(&h, Some("at")).is_err());
        let h = headers(&[("cookie", "at=one; at=one")]);
        assert_eq!(extract(&h, Some("at")), Ok(Some("one")));
        let h = headers(&[("cookie", "at=one"), ("authorization", "Bearer two")]);
        assert!(extract(&h, Some("at")).is_err());
        let h = headers(&[("cookie", "at=one"), ("authorization", "Bearer one")]);
        assert_eq!(extract(&h, Some("at")), Ok(Some("one")));
        let h = headers(&[("cookie", "at=a~b=c")]);
        assert_eq!(
            extract(&h, Some("at")),
            Err("token cookie has invalid syntax")
        );
    }
}
