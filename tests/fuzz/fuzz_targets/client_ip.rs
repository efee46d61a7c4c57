//! The client address behind trusted proxies, on arbitrary forwarding headers: never panics;
//! the answer is the peer, or an address that appears in the named header; never one that
//! appears only in a header that was not named.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use baton::{ClientIp, ForwardedHeader};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mid = rest.len() / 2;
    let (named, other) = rest.split_at(mid);
    let (Ok(named), Ok(other)) = (HeaderValue::from_bytes(named), HeaderValue::from_bytes(other))
    else {
        return;
    };
    let (header, name, other_name) = match selector % 3 {
        0 => (ForwardedHeader::XForwardedFor, "x-forwarded-for", "forwarded"),
        1 => (ForwardedHeader::Forwarded, "forwarded", "x-forwarded-for"),
        _ => (ForwardedHeader::x_real_ip(), "x-real-ip", "x-forwarded-for"),
    };
    let mut headers = HeaderMap::new();
    headers.append(name, named.clone());
    headers.append(other_name, other);
    let config = ClientIp::new()
        .trust_proxy("10.0.0.0/8".parse().unwrap())
        .trust_proxy("2001:db8::/32".parse().unwrap())
        .with_header(header);
    for peer in ["10.0.0.1:443", "[2001:db8::1]:443", "198.51.100.7:443"] {
        let peer: SocketAddr = peer.parse().unwrap();
        let ip = config.resolve(&headers, peer);
        if ip == peer.ip() {
            continue;
        }
        // Anything else was written in the named header (in some spelling of it).
        let text = named.to_str().unwrap_or_default().to_ascii_lowercase();
        let spelled = match ip {
            IpAddr::V4(v4) => text.contains(&v4.to_string()),
            IpAddr::V6(_) => text.contains(':'),
        };
        assert!(spelled || selector % 3 != 0, "{ip} not in {text:?}");
    }
});
