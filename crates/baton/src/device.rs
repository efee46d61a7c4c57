//! Who is calling: user agent and client IP (trusting forwarding headers only from proxies).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{FORWARDED, USER_AGENT};

/// The TCP peer of a request, for servers that are not axum: insert it into the request's
/// extensions (axum's `ConnectInfo<SocketAddr>` is read as well, with feature `axum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

pub(crate) fn peer(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    None
}

/// The addresses a request passed through, nearest last: `Forwarded: for=` first, else
/// `X-Forwarded-For`.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<IpAddr> = headers
        .get_all(FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            if !k.eq_ignore_ascii_case("for") {
                return None;
            }
            let v = v.trim_matches('"');
            let v = v
                .strip_prefix('[')
                .map_or(v, |rest| rest.split(']').next().unwrap_or(rest));
            v.parse::<IpAddr>()
                .ok()
                .or_else(|| v.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect()
}

/// The client IP: the peer, or, when the peer is a trusted proxy, the nearest address in the
/// forwarding chain that is not itself a trusted proxy.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    extensions: &http::Extensions,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer(extensions)?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let chain = forwarded_chain(headers);
    Some(
        chain
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .unwrap_or(peer),
    )
}

pub(crate) fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers.get(USER_AGENT).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ext(peer: &str) -> http::Extensions {
        let mut e = http::Extensions::new();
        e.insert(PeerAddr(peer.parse().unwrap()));
        e
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 203.0.113.9"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(&headers, &ext("198.51.100.7:5000"), &[proxy]),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            client_ip(&headers, &ext("10.0.0.1:5000"), &[proxy]),
            Some("203.0.113.9".parse().unwrap())
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            FORWARDED,
            HeaderValue::from_static("for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\""),
        );
        assert_eq!(
            client_ip(&headers, &ext("10.0.0.1:5000"), &[proxy]),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), &http::Extensions::new(), &[proxy]),
            None
        );
    }
}
