//! Who is calling: user agent and client address (forwarding headers read only from trusted
//! proxies, and only the one header the deployment names).

use std::net::{IpAddr, SocketAddr};

use http::header::{FORWARDED, HeaderName, USER_AGENT};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

/// The TCP peer of a request, for servers that are not axum: insert it into the request's
/// extensions (axum's `ConnectInfo<SocketAddr>` is read as well, with feature `axum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The header a deployment's proxies write the client address into. Exactly one is read:
/// reading several lets a client pick whichever its proxy does not overwrite.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx `$proxy_add_x_forwarded_for`, most
    /// cloud load balancers): each proxy appends the address it received from.
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
    /// A header holding one address that the outermost proxy sets, overwriting what the
    /// client sent: `X-Real-IP` (nginx), `CF-Connecting-IP` (Cloudflare), `True-Client-IP`.
    Single(HeaderName),
}

impl ForwardedHeader {
    /// `X-Real-IP`.
    pub fn x_real_ip() -> Self {
        ForwardedHeader::Single(HeaderName::from_static("x-real-ip"))
    }

    /// Parses a configuration value: `x-forwarded-for`, `forwarded`, or the name of a
    /// single-address header (`x-real-ip`, `cf-connecting-ip`, ...).
    ///
    /// # Errors
    /// When the name is not a valid header name.
    pub fn parse(name: &str) -> Result<Self, http::header::InvalidHeaderName> {
        let name = HeaderName::try_from(name.trim())?;
        Ok(if name == "x-forwarded-for" {
            ForwardedHeader::XForwardedFor
        } else if name == FORWARDED {
            ForwardedHeader::Forwarded
        } else {
            ForwardedHeader::Single(name)
        })
    }
}

/// How a request's client address is found.
///
/// By default it is the TCP peer. Behind reverse proxies, name their addresses (CIDR ranges)
/// and the one header they write: when the peer is a trusted proxy, the client is the
/// rightmost address of that header that is not itself a trusted proxy (what the outermost
/// trusted proxy saw). Anything a client writes to the left of that, or into other headers,
/// is ignored, so a client cannot choose its own address.
///
/// ```
/// use baton::{ClientIp, ForwardedHeader, PeerAddr};
/// use http::HeaderMap;
///
/// let client_ip = ClientIp::new()
///     .trust_proxy("10.0.0.0/8".parse().unwrap())
///     .with_header(ForwardedHeader::XForwardedFor);
/// let mut headers = HeaderMap::new();
/// // The client wrote "6.6.6.6"; the edge proxy appended the address it saw, an inner proxy
/// // the edge's.
/// headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3".parse().unwrap());
/// let peer = "10.0.0.5:40000".parse().unwrap();
/// assert_eq!(client_ip.resolve(&headers, peer), "203.0.113.7".parse::<std::net::IpAddr>().unwrap());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
}

impl Default for ClientIp {
    fn default() -> Self {
        ClientIp::new()
    }
}

impl ClientIp {
    /// The TCP peer; `X-Forwarded-For` once proxies are trusted.
    pub fn new() -> Self {
        ClientIp {
            trusted: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
        }
    }

    /// Trusts the proxies in `net` (an address is a /32 or /128).
    #[must_use]
    pub fn trust_proxy(mut self, net: IpNet) -> Self {
        self.trusted.push(net.trunc());
        self
    }

    /// The header the trusted proxies write.
    #[must_use]
    pub fn with_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// `true` when no proxy is trusted (the peer is the client).
    pub fn is_peer_only(&self) -> bool {
        self.trusted.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn resolve(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        let peer = canonical(peer.ip());
        if !self.trusts(peer) {
            return peer;
        }
        let hops = match &self.header {
            ForwardedHeader::XForwardedFor => {
                hops(headers.get_all("x-forwarded-for"), x_forwarded_for)
            }
            ForwardedHeader::Forwarded => hops(headers.get_all(FORWARDED), forwarded_for),
            ForwardedHeader::Single(name) => {
                let mut values = headers.get_all(name).iter();
                // One value, set by the proxy; two mean someone added one: trust neither.
                return match (values.next(), values.next()) {
                    (Some(value), None) => value
                        .to_str()
                        .ok()
                        .and_then(|v| parse_node(v.trim()))
                        .map_or(peer, canonical),
                    _ => peer,
                };
            }
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) if self.trusts(ip) => client = canonical(ip),
                Some(ip) => return canonical(ip),
                // Unreadable: nothing to its left can be trusted; the last trusted hop is
                // the best known.
                None => return client,
            }
        }
        client
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every hop of every line of a header, in order; `None` for one that is not an address.
fn hops<'a>(
    values: http::header::GetAll<'a, HeaderValue>,
    parse: fn(&str) -> Vec<Option<IpAddr>>,
) -> Vec<Option<IpAddr>> {
    values
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => parse(text),
            Err(_) => vec![None],
        })
        .collect()
}

fn x_forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value.split(',').map(|hop| parse_node(hop.trim())).collect()
}

/// The `for=` of each element of a `Forwarded` value (RFC 7239 section 4), `None` for an
/// element without one, an obfuscated one (`_hidden`), or `unknown`.
fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value
        .split(',')
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                if !key.trim().eq_ignore_ascii_case("for") {
                    return None;
                }
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                parse_node(value)
            })
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

pub(crate) fn peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    None
}

/// The client IP of a request: [`ClientIp::resolve`] on its peer, `None` without one.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    extensions: &http::Extensions,
    config: &ClientIp,
) -> Option<IpAddr> {
    Some(config.resolve(headers, peer(extensions)?))
}

/// A client address as a limit key: an IPv4 address, or the /64 of an IPv6 one (a client is
/// handed a whole /64 and picks addresses in it at will).
pub fn network_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

pub(crate) fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers.get(USER_AGENT).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn behind(net: &str, header: ForwardedHeader) -> ClientIp {
        ClientIp::new()
            .trust_proxy(net.parse().unwrap())
            .with_header(header)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_writes() {
        let config = behind("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(
            config.resolve(&h, "198.51.100.7:5000".parse().unwrap()),
            ip("198.51.100.7")
        );
        assert_eq!(
            ClientIp::new().resolve(&h, "198.51.100.7:5000".parse().unwrap()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_of_the_named_header_only() {
        let config = behind("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        let peer = "10.0.0.1:5000".parse().unwrap();
        // The client's own Forwarded header is not read when X-Forwarded-For is the named one.
        let h = headers(&[
            ("forwarded", "for=9.9.9.9"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-for", "10.2.2.2"),
        ]);
        assert_eq!(config.resolve(&h, peer), ip("203.0.113.9"));
        // Only trusted hops: the leftmost of them.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.2.2.2")]);
        assert_eq!(config.resolve(&h, peer), ip("10.9.9.9"));
        // No header at all: the proxy itself.
        assert_eq!(config.resolve(&HeaderMap::new(), peer), ip("10.0.0.1"));
        // Garbage right of the client: the last trusted hop.
        let h = headers(&[("x-forwarded-for", "203.0.113.9, nonsense, 10.2.2.2")]);
        assert_eq!(config.resolve(&h, peer), ip("10.2.2.2"));
    }

    #[test]
    fn forwarded_is_read_when_named() {
        let config = behind("10.0.0.0/8", ForwardedHeader::Forwarded);
        let peer = "10.0.0.1:5000".parse().unwrap();
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            (
                "forwarded",
                "for=6.6.6.6;proto=http, for=\"[2001:db8::1]:4711\";by=10.0.0.1",
            ),
        ]);
        assert_eq!(config.resolve(&h, peer), ip("2001:db8::1"));
        let h = headers(&[("forwarded", "for=_hidden, for=10.3.3.3")]);
        assert_eq!(config.resolve(&h, peer), ip("10.3.3.3"));
    }

    #[test]
    fn a_single_address_header_counts_once() {
        let config = behind("127.0.0.1/32", ForwardedHeader::x_real_ip());
        let peer = "127.0.0.1:5000".parse().unwrap();
        let h = headers(&[("x-real-ip", "203.0.113.5"), ("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(config.resolve(&h, peer), ip("203.0.113.5"));
        let h = headers(&[("x-real-ip", "203.0.113.5"), ("x-real-ip", "6.6.6.6")]);
        assert_eq!(
            config.resolve(&h, peer),
            ip("127.0.0.1"),
            "two values: neither"
        );
        let cf = behind(
            "127.0.0.1/32",
            ForwardedHeader::parse("CF-Connecting-IP").unwrap(),
        );
        let h = headers(&[("cf-connecting-ip", "2001:db8::7")]);
        assert_eq!(cf.resolve(&h, peer), ip("2001:db8::7"));
    }

    #[test]
    fn mapped_addresses_and_ipv6_networks() {
        let config = behind("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(config.resolve(&h, mapped), ip("203.0.113.9"));
        assert_eq!(network_key(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(
            network_key(ip("2001:db8:1:2:ffff::1")),
            network_key(ip("2001:db8:1:2::9"))
        );
        assert_eq!(network_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(network_key(ip("192.0.2.1")), "192.0.2.1");
    }
}
