//! The facade's wire format as its documentation shows it (`crates/baton/WIRE.md`, the
//! `baton::wire` page): every example request is sent, in order, to a real server over TCP,
//! and its answer must match the documented one: status, the documented headers, the body.
//! `{name}` in an answer captures what the server chose (and must equal it when captured
//! before); in a later request it is replaced by that value; `{*}` matches anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use baton::bearer::RecentLogin;
use baton::store::{MemoryStore, Policy, RefreshKeys};
use baton::token::{Algorithm, Key, KeyRing, KeySet, NoCustomClaims};
use baton::{AuthUnavailable, Authenticator, Baton, Principal, UsernamePassword};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

mod common;

const WIRE: &str = include_str!("../../crates/baton/WIRE.md");

struct Alice;

impl Authenticator for Alice {
    type Claims = NoCustomClaims;
    type Credentials = UsernamePassword;
    async fn authenticate(
        &self,
        c: &UsernamePassword,
    ) -> Result<Option<Principal<NoCustomClaims>>, AuthUnavailable> {
        Ok((c.username == "alice" && c.password == "correct horse")
            .then(|| Principal::new("user-alice", NoCustomClaims {})))
    }
    async fn check_password(&self, user_id: &str, password: &str) -> Result<bool, AuthUnavailable> {
        Ok(user_id == "user-alice" && password == "correct horse")
    }
    async fn claims(&self, _: &str) -> Result<Option<NoCustomClaims>, AuthUnavailable> {
        Ok(Some(NoCustomClaims {}))
    }
}

/// The ```http blocks of the document, in order.
fn http_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```http") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an http block is not closed");
    blocks
}

/// Head lines and body of a block.
fn split(block: &str) -> (Vec<&str>, &str) {
    let (head, body) = block.split_once("\n\n").unwrap_or((block, ""));
    (head.lines().collect(), body.trim_end_matches('\n'))
}

type Bindings = HashMap<String, String>;

/// `text` with every `{name}` replaced by its binding.
fn substitute(text: &str, bound: &Bindings) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str(&rest[..=start]);
            rest = &rest[start + 1..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(
            bound
                .get(name)
                .unwrap_or_else(|| panic!("{{{name}}} is used before an answer gave it")),
        );
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether `actual` matches `pattern` (literal text with `{name}` / `{*}` holes); new names
/// are bound into `bound`.
fn matches(pattern: &str, actual: &str, bound: &mut Bindings) -> bool {
    let mut parts: Vec<(Option<&str>, &str)> = Vec::new(); // (hole before, literal)
    let mut rest = pattern;
    let mut hole = None;
    loop {
        match rest
            .find('{')
            .and_then(|s| rest[s..].find('}').map(|l| (s, l)))
        {
            Some((s, l))
                if rest[s + 1..s + l]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '*')
                    && l > 1 =>
            {
                parts.push((hole, &rest[..s]));
                hole = Some(&rest[s + 1..s + l]);
                rest = &rest[s + l + 1..];
            }
            _ => {
                parts.push((hole, rest));
                break;
            }
        }
    }
    let mut at = 0;
    let mut captured = Vec::new();
    for (i, (hole, literal)) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        match hole {
            None => {
                if !actual[at..].starts_with(literal) {
                    return false;
                }
                at += literal.len();
            }
            Some(name) => {
                let found = if last && literal.is_empty() {
                    Some(actual.len())
                } else if last {
                    actual[at..]
                        .ends_with(literal)
                        .then(|| actual.len() - literal.len())
                } else {
                    actual[at..].find(literal).map(|p| at + p)
                };
                let Some(end) = found.filter(|&end| end > at) else {
                    return false;
                };
                captured.push((*name, &actual[at..end]));
                at = end + literal.len();
            }
        }
    }
    if at != actual.len() {
        return false;
    }
    for (name, value) in &captured {
        if *name == "*" {
            continue;
        }
        if let Some(before) = bound.get(*name)
            && before != value
        {
            return false;
        }
    }
    for (name, value) in captured {
        if name != "*" {
            bound.insert(name.to_owned(), value.to_owned());
        }
    }
    true
}

/// Compares a documented JSON value with the real one; a documented string that is one hole
/// stands for any value.
fn json_matches(
    doc: &Value,
    actual: &Value,
    bound: &mut Bindings,
    path: &str,
) -> Result<(), String> {
    match (doc, actual) {
        (Value::String(p), a)
            if p.starts_with('{') && p.ends_with('}') && !p[1..p.len() - 1].contains('{') =>
        {
            let text = match a {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if matches(p, &text, bound) {
                Ok(())
            } else {
                Err(format!("{path}: {a} does not match {p:?}"))
            }
        }
        (Value::String(p), Value::String(a)) => {
            if matches(p, a, bound) {
                Ok(())
            } else {
                Err(format!("{path}: {a:?} is not {p:?}"))
            }
        }
        (Value::Object(d), Value::Object(a)) => {
            let mut dk: Vec<_> = d.keys().collect();
            let mut ak: Vec<_> = a.keys().collect();
            dk.sort();
            ak.sort();
            if dk != ak {
                return Err(format!("{path}: fields {ak:?}, documented {dk:?}"));
            }
            for (k, v) in d {
                json_matches(v, &a[k], bound, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(a)) => {
            if d.len() != a.len() {
                return Err(format!("{path}: {} items, documented {}", a.len(), d.len()));
            }
            for (i, (dv, av)) in d.iter().zip(a).enumerate() {
                json_matches(dv, av, bound, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (d, a) if d == a => Ok(()),
        (d, a) => Err(format!("{path}: {a} is not {d}")),
    }
}

async fn serve() -> SocketAddr {
    let keys = KeyRing::new(KeySet::new(Key::generate("k1", Algorithm::ES256).unwrap()).unwrap());
    let store = MemoryStore::new(RefreshKeys::generate().unwrap(), Policy::new());
    let baton = Baton::builder(store, Alice, keys)
        .iss("https://login.example")
        .recent_login(RecentLogin::within(Duration::from_secs(300)))
        .client_addr_from_peer()
        .build()
        .unwrap();
    common::serve_with_peer(baton.router()).await
}

#[tokio::test]
async fn every_documented_exchange_is_what_the_server_answers() {
    let blocks = http_blocks(WIRE);
    assert!(blocks.len() >= 20, "{} http blocks", blocks.len());
    assert_eq!(blocks.len() % 2, 0, "every request has its answer");
    let addr = serve().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut bound = Bindings::new();
    let mut failures = Vec::new();
    for pair in blocks.chunks(2) {
        let request = substitute(&pair[0], &bound);
        let (head, body) = split(&request);
        let mut words = head[0].split(' ');
        let (method, path) = (words.next().unwrap(), words.next().unwrap());
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for line in &head[1..] {
            let (name, value) = line.split_once(": ").unwrap();
            req = req.header(name, value);
        }
        let res = client
            .request(req.body(Full::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let (parts, got) = res.into_parts();
        let got = got.collect().await.unwrap().to_bytes();
        let got = String::from_utf8(got.to_vec()).unwrap();

        let (head, documented) = split(&pair[1]);
        let name = head[0];
        let mut problems = Vec::new();
        let status = format!(
            "HTTP/1.1 {} {}",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        );
        if status != name {
            problems.push(format!("status {status}"));
        }
        let mut used = Vec::new();
        for line in &head[1..] {
            let (header, pattern) = line.split_once(": ").unwrap();
            let found = parts
                .headers
                .get_all(header)
                .iter()
                .enumerate()
                .find(|(i, v)| {
                    !used.contains(&(header, *i))
                        && matches(pattern, v.to_str().unwrap_or(""), &mut bound)
                })
                .map(|(i, _)| i);
            match found {
                Some(i) => used.push((header, i)),
                None => problems.push(format!(
                    "{header}: {:?}, documented {pattern:?}",
                    parts.headers.get_all(header).iter().collect::<Vec<_>>()
                )),
            }
        }
        if documented.is_empty() {
            if !got.is_empty() {
                problems.push(format!("body {got:?}, documented none"));
            }
        } else {
            let doc: Value = serde_json::from_str(documented)
                .unwrap_or_else(|e| panic!("documented body of {name} is not JSON: {e}"));
            match serde_json::from_str::<Value>(&got) {
                Ok(actual) => {
                    if let Err(e) = json_matches(&doc, &actual, &mut bound, "body") {
                        problems.push(format!("{e} (body {got})"));
                    }
                }
                Err(_) => problems.push(format!("body {got:?} is not JSON")),
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}\n  -> {}",
                head_line(&pair[0]),
                problems.join("\n  -> ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "WIRE.md differs:\n{}",
        failures.join("\n")
    );
}

fn head_line(block: &str) -> &str {
    block.lines().next().unwrap_or_default()
}
