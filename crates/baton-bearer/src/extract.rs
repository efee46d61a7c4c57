//! Finding the token in a request: `Authorization: Bearer` and, optionally, a cookie.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// Where the token came from, or why the request is malformed (RFC 6750 `invalid_request`).
pub(crate) type Extracted<'a> = Result<Option<&'a str>, &'static str>;

/// The token of the `Authorization` header and whether it came with the `DPoP` scheme.
pub(crate) type FromHeader<'a> = Result<Option<(&'a str, bool)>, &'static str>;

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

fn from_header(headers: &HeaderMap, dpop: bool) -> FromHeader<'_> {
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
    token68(token)
        .map(|t| Some((t, is_dpop)))
        .ok_or("bearer token has invalid syntax")
}

fn from_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Extracted<'a> {
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
        Some(v) if token68(v.as_bytes()).is_none() => Err("token cookie has invalid syntax"),
        other => Ok(other),
    }
}

/// The request's token: from the header, from the cookie when configured, or both when they
/// agree; and whether it came with the `DPoP` scheme (only recognised when `dpop`).
pub(crate) fn extract<'a>(
    headers: &'a HeaderMap,
    cookie: Option<&str>,
    dpop: bool,
) -> FromHeader<'a> {
    let header = from_header(headers, dpop)?;
    let Some(name) = cookie else {
        return Ok(header);
    };
    let cookie = from_cookie(headers, name)?;
    match (header, cookie) {
        (Some((h, _)), Some(c)) if h != c => {
            Err("the tokens in the Authorization header and the cookie differ")
        }
        (Some(h), _) => Ok(Some(h)),
        (None, c) => Ok(c.map(|c| (c, false))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The token alone, DPoP not configured.
    fn extract<'a>(headers: &'a HeaderMap, cookie: Option<&str>) -> Extracted<'a> {
        super::extract(headers, cookie, false).map(|t| t.map(|(token, _)| token))
    }

    #[test]
    fn the_dpop_scheme_is_read_only_when_configured() {
        let h = headers(&[("authorization", "DPoP abc.def")]);
        assert_eq!(super::extract(&h, None, false), Ok(None));
        assert_eq!(super::extract(&h, None, true), Ok(Some(("abc.def", true))));
        let h = headers(&[("authorization", "Bearer abc.def")]);
        assert_eq!(super::extract(&h, None, true), Ok(Some(("abc.def", false))));
        let h = headers(&[("authorization", "dpop  ")]);
        assert!(super::extract(&h, None, true).is_err());
    }
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
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
        assert!(extract(&headers(&[("authorization", "Bearer")]), None).is_err());
        assert!(extract(&headers(&[("authorization", "Bearer a b")]), None).is_err());
        assert!(extract(&headers(&[("authorization", "Bearer a\"b")]), None).is_err());
        assert!(extract(&headers(&[("authorization", "Bearer ===")]), None).is_err());
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
    }
}
