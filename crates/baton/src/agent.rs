//! Named devices: a user agent read as browser, operating system and kind of device.

use serde::Serialize;

/// What kind of device a user agent comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DeviceKind {
    /// A desktop or laptop browser.
    Desktop,
    /// A phone or tablet.
    Mobile,
    /// A game console, TV or other appliance.
    Appliance,
    /// A crawler or other bot.
    Bot,
    /// Anything else that names itself (a command-line tool, a library, a native app).
    Other,
}

/// A device as a person recognises it ("Chrome on Linux"), read from its user agent by the
/// `woothee` parser (its maintained data set, not patterns of our own). Unknown parts are
/// `None`.
///
/// ```
/// use baton::{DeviceInfo, DeviceKind};
///
/// let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
///           Chrome/131.0.0.0 Safari/537.36";
/// let device = DeviceInfo::from_user_agent(ua);
/// assert_eq!(device.browser.as_deref(), Some("Chrome"));
/// assert_eq!(device.os.as_deref(), Some("Linux"));
/// assert_eq!(device.kind, DeviceKind::Desktop);
/// assert_eq!(device.to_string(), "Chrome on Linux");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The browser or client (`Chrome`, `Firefox`, `Safari`), when known.
    pub browser: Option<String>,
    /// The operating system (`Linux`, `Mac OSX`, `iPhone`, `Android`), when known.
    pub os: Option<String>,
    /// The kind of device.
    pub kind: DeviceKind,
}

/// What the parser answers for a part it does not know.
const UNKNOWN: &str = "UNKNOWN";

impl DeviceInfo {
    /// Reads `user_agent` (at most the first 512 bytes: the stores keep 256).
    pub fn from_user_agent(user_agent: &str) -> DeviceInfo {
        let mut end = user_agent.len().min(512);
        while !user_agent.is_char_boundary(end) {
            end -= 1;
        }
        let known = |s: &str| (!s.is_empty() && s != UNKNOWN).then(|| s.to_owned());
        match woothee::parser::Parser::new().parse(&user_agent[..end]) {
            Some(r) => DeviceInfo {
                browser: known(r.name),
                os: known(r.os),
                kind: match r.category {
                    "pc" => DeviceKind::Desktop,
                    "smartphone" | "mobilephone" => DeviceKind::Mobile,
                    "appliance" => DeviceKind::Appliance,
                    "crawler" => DeviceKind::Bot,
                    _ => DeviceKind::Other,
                },
            },
            None => DeviceInfo {
                browser: None,
                os: None,
                kind: DeviceKind::Other,
            },
        }
    }
}

impl std::fmt::Display for DeviceInfo {
    /// "Chrome on Linux", "Firefox", "a Linux device", "an unknown device".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.browser, &self.os) {
            (Some(b), Some(o)) => write!(f, "{b} on {o}"),
            (Some(b), None) => f.write_str(b),
            (None, Some(o)) => write!(f, "a {o} device"),
            (None, None) => f.write_str("an unknown device"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_agents_are_named() {
        let cases = [
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                Some("Safari"),
                DeviceKind::Mobile,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
                Some("Firefox"),
                DeviceKind::Desktop,
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                Some("Googlebot"),
                DeviceKind::Bot,
            ),
        ];
        for (ua, browser, kind) in cases {
            let d = DeviceInfo::from_user_agent(ua);
            assert_eq!((d.browser.as_deref(), d.kind), (browser, kind), "{ua}");
        }
    }

    #[test]
    fn junk_and_huge_agents_are_unknown_not_a_panic() {
        for ua in [
            "",
            "x",
            "\u{fffd}\u{fffd}",
            &"é".repeat(1000),
            &"Mozilla/5.0 (".repeat(500),
        ] {
            let d = DeviceInfo::from_user_agent(ua);
            assert!(d.to_string().len() < 200, "{ua}");
        }
        assert_eq!(
            DeviceInfo::from_user_agent("").to_string(),
            "an unknown device"
        );
    }
}
