//! The claims of a baton access token.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The claims of an access token: the registered claims of RFC 7519, the session id `sid`, the
/// RFC 9068 `scope` and `roles`, when and how the user authenticated (`auth_time`, `amr`,
/// `acr`, RFC 9470), and the application's own claims `C`, flattened into the same JSON
/// object.
///
/// `sub` and `exp` are required: a token without them, or with a claim of the wrong JSON type
/// (`"exp": "9999999999"`), does not verify.
///
/// ```
/// use baton_token::Claims;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// struct Custom {
///     tenant: String,
/// }
///
/// let claims = Claims::new("user-1", 1_700_000_900, Custom { tenant: "acme".into() });
/// let json = serde_json::to_value(&claims).unwrap();
/// assert_eq!(json["tenant"], "acme");
/// assert_eq!(json["sub"], "user-1");
/// ```
///
/// Deserializing reads the registered claims straight from the JSON object and hands only the
/// remaining members to `C` (what `#[serde(flatten)]` means, without buffering the whole
/// object first): a duplicate registered claim is refused, unknown ones go to `C`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Claims<C = NoCustomClaims> {
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject: the user id.
    pub sub: String,
    /// Audience: one string or an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The session (one login on one device) the token was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Space-separated scopes (RFC 9068 section 2.2.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Roles (RFC 9068 section 2.2.3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// When the user last authenticated, seconds since the epoch (OpenID Connect Core,
    /// RFC 9470): the login, or a later re-authentication; a refresh keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// How the user authenticated (RFC 8176 values: `pwd`, `otp`, `mfa` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// The authentication context class reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The key the token is bound to (RFC 7800; `jkt` for DPoP, RFC 9449): a bound token is
    /// accepted only with a proof from that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The application's own claims.
    #[serde(flatten)]
    pub custom: C,
}

impl<C> Claims<C> {
    /// Claims with the subject, expiry and the application's claims; everything else empty.
    pub fn new(sub: impl Into<String>, exp: u64, custom: C) -> Self {
        Claims {
            iss: None,
            sub: sub.into(),
            aud: None,
            exp,
            nbf: None,
            iat: None,
            jti: None,
            sid: None,
            scope: None,
            roles: None,
            auth_time: None,
            amr: None,
            acr: None,
            cnf: None,
            custom,
        }
    }

    /// Binds the token to the DPoP key with thumbprint `jkt` (`cnf.jkt`).
    #[must_use]
    pub fn with_dpop_jkt(mut self, jkt: impl Into<String>) -> Self {
        self.cnf = Some(Confirmation {
            jkt: Some(jkt.into()),
        });
        self
    }

    /// The DPoP key thumbprint the token is bound to, if any.
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.cnf.as_ref().and_then(|c| c.jkt.as_deref())
    }

    /// Sets when (`auth_time`, seconds since the epoch) and how (`amr`) the user
    /// authenticated, and the class reached (`acr`) when given.
    #[must_use]
    pub fn with_authentication<I, S>(mut self, auth_time: u64, amr: I, acr: Option<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.auth_time = Some(auth_time);
        let amr: Vec<String> = amr.into_iter().map(Into::into).collect();
        self.amr = (!amr.is_empty()).then_some(amr);
        self.acr = acr;
        self
    }

    /// Sets the session id.
    #[must_use]
    pub fn with_sid(mut self, sid: impl Into<String>) -> Self {
        self.sid = Some(sid.into());
        self
    }

    /// Sets the space-separated scopes.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sets the roles.
    #[must_use]
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `nbf`.
    #[must_use]
    pub fn with_nbf(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }

    /// The scopes, split on spaces.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }

    /// `true` when `scope` lists `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scopes().any(|s| s == wanted)
    }

    /// `true` when `roles` lists `wanted`.
    pub fn has_role(&self, wanted: &str) -> bool {
        self.roles
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|r| r == wanted)
    }
}

/// The `cnf` claim (RFC 7800): the key a token is bound to. baton reads `jkt`, the RFC 7638
/// thumbprint of a DPoP key (RFC 9449); other members are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Confirmation {
    /// The SHA-256 thumbprint of the DPoP public key, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

/// No application claims: the default for [`Claims`].
///
/// Unknown claims in a token are ignored when this is the custom type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NoCustomClaims {}

/// The `aud` claim: a single string or an array of strings (RFC 7519 section 4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "api"`.
    One(String),
    /// `"aud": ["api", "admin"]`.
    Many(Vec<String>),
}

impl Audience {
    /// The audiences listed.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Audience::One(a) => (Some(a.as_str()), &[][..]),
            Audience::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }

    /// `true` when `aud` lists `wanted`.
    pub fn contains(&self, wanted: &str) -> bool {
        self.iter().any(|a| a == wanted)
    }
}

impl From<&str> for Audience {
    fn from(value: &str) -> Self {
        Audience::One(value.to_owned())
    }
}

impl From<String> for Audience {
    fn from(value: String) -> Self {
        Audience::One(value)
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AudienceVisitor;

        impl<'de> Visitor<'de> for AudienceVisitor {
            type Value = Audience;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience::One(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Audience, E> {
                Ok(Audience::One(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
                let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(one) = seq.next_element::<String>()? {
                    all.push(one);
                }
                Ok(Audience::Many(all))
            }
        }

        deserializer.deserialize_any(AudienceVisitor)
    }
}

/// A member name of the claims object: a registered claim, or one for the application.
enum Field {
    Iss,
    Sub,
    Aud,
    Exp,
    Nbf,
    Iat,
    Jti,
    Sid,
    Scope,
    Roles,
    AuthTime,
    Amr,
    Acr,
    Cnf,
    Other(String),
}

impl Field {
    fn from_name(name: &str) -> Field {
        match name {
            "iss" => Field::Iss,
            "sub" => Field::Sub,
            "aud" => Field::Aud,
            "exp" => Field::Exp,
            "nbf" => Field::Nbf,
            "iat" => Field::Iat,
            "jti" => Field::Jti,
            "sid" => Field::Sid,
            "scope" => Field::Scope,
            "roles" => Field::Roles,
            "auth_time" => Field::AuthTime,
            "amr" => Field::Amr,
            "acr" => Field::Acr,
            "cnf" => Field::Cnf,
            other => Field::Other(other.to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;

        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::from_name(v))
            }
        }

        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// Sets `slot` once; a second value for the same claim is an error.
fn set_once<'de, A, T>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de, C: DeserializeOwned> Deserialize<'de> for Claims<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor<C>(PhantomData<fn() -> C>);

        impl<'de, C: DeserializeOwned> Visitor<'de> for ClaimsVisitor<C> {
            type Value = Claims<C>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JWT claims object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims<C>, A::Error> {
                // Optional claims are `Option<Option<T>>` here: outer for "seen", inner for
                // JSON null, which reads as absent.
                let mut iss: Option<Option<String>> = None;
                let mut sub: Option<String> = None;
                let mut aud: Option<Option<Audience>> = None;
                let mut exp: Option<u64> = None;
                let mut nbf: Option<Option<u64>> = None;
                let mut iat: Option<Option<u64>> = None;
                let mut jti: Option<Option<String>> = None;
                let mut sid: Option<Option<String>> = None;
                let mut scope: Option<Option<String>> = None;
                let mut roles: Option<Option<Vec<String>>> = None;
                let mut auth_time: Option<Option<u64>> = None;
                let mut amr: Option<Option<Vec<String>>> = None;
                let mut acr: Option<Option<String>> = None;
                let mut cnf: Option<Option<Confirmation>> = None;
                let mut rest = serde_json::Map::new();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Iss => set_once(&mut iss, "iss", &mut map)?,
                        Field::Sub => set_once(&mut sub, "sub", &mut map)?,
                        Field::Aud => set_once(&mut aud, "aud", &mut map)?,
                        Field::Exp => set_once(&mut exp, "exp", &mut map)?,
                        Field::Nbf => set_once(&mut nbf, "nbf", &mut map)?,
                        Field::Iat => set_once(&mut iat, "iat", &mut map)?,
                        Field::Jti => set_once(&mut jti, "jti", &mut map)?,
                        Field::Sid => set_once(&mut sid, "sid", &mut map)?,
                        Field::Scope => set_once(&mut scope, "scope", &mut map)?,
                        Field::Roles => set_once(&mut roles, "roles", &mut map)?,
                        Field::AuthTime => set_once(&mut auth_time, "auth_time", &mut map)?,
                        Field::Amr => set_once(&mut amr, "amr", &mut map)?,
                        Field::Acr => set_once(&mut acr, "acr", &mut map)?,
                        Field::Cnf => set_once(&mut cnf, "cnf", &mut map)?,
                        Field::Other(name) => {
                            let value: serde_json::Value = map.next_value()?;
                            rest.insert(name, value);
                        }
                    }
                }
                let custom =
                    C::deserialize(serde_json::Value::Object(rest)).map_err(de::Error::custom)?;
                Ok(Claims {
                    iss: iss.flatten(),
                    sub: sub.ok_or_else(|| de::Error::missing_field("sub"))?,
                    aud: aud.flatten(),
                    exp: exp.ok_or_else(|| de::Error::missing_field("exp"))?,
                    nbf: nbf.flatten(),
                    iat: iat.flatten(),
                    jti: jti.flatten(),
                    sid: sid.flatten(),
                    scope: scope.flatten(),
                    roles: roles.flatten(),
                    auth_time: auth_time.flatten(),
                    amr: amr.flatten(),
                    acr: acr.flatten(),
                    cnf: cnf.flatten(),
                    custom,
                })
            }
        }

        deserializer.deserialize_map(ClaimsVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_of_the_wrong_type_does_not_deserialize() {
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u","exp":"9999999999"}"#);
        assert!(r.is_err());
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u"}"#);
        assert!(r.is_err(), "exp is required");
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u","exp":5,"nbf":"1"}"#);
        assert!(r.is_err());
    }

    #[test]
    fn audience_is_one_or_many_and_unknown_claims_are_ignored() {
        let c: Claims = serde_json::from_str(r#"{"sub":"u","exp":5,"aud":"a","x":1}"#).unwrap();
        assert!(c.aud.unwrap().contains("a"));
        let c: Claims = serde_json::from_str(r#"{"sub":"u","exp":5,"aud":["a","b"]}"#).unwrap();
        let aud = c.aud.unwrap();
        assert!(aud.contains("b"));
        assert!(!aud.contains("c"));
    }

    #[test]
    fn registered_claims_are_read_once_and_the_rest_goes_to_the_custom_type() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct App {
            tenant: String,
            #[serde(default)]
            level: u8,
        }
        let c: Claims<App> = serde_json::from_str(
            r#"{"sub":"u","exp":5,"tenant":"acme","iss":null,"aud":["a"],"roles":["r"]}"#,
        )
        .unwrap();
        assert_eq!(
            c.custom,
            App {
                tenant: "acme".into(),
                level: 0
            }
        );
        assert_eq!(c.iss, None);
        assert_eq!(c.roles.as_deref(), Some(&["r".to_owned()][..]));
        let r: Result<Claims<App>, _> = serde_json::from_str(r#"{"sub":"u","exp":5}"#);
        assert!(r.unwrap_err().to_string().contains("tenant"));
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u","exp":5,"sub":"v"}"#);
        assert!(r.unwrap_err().to_string().contains("duplicate field `sub`"));
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u","exp":5,"aud":5}"#);
        assert!(r.is_err());
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u","exp":5,"aud":[5]}"#);
        assert!(r.is_err());
        let r: Result<Claims, _> = serde_json::from_str(r#"["u", 5]"#);
        assert!(r.is_err());
        let r: Result<Claims, _> = serde_json::from_str(r#"{"sub":"u","exp":-5}"#);
        assert!(r.is_err());
        // Escaped member names are the same names.
        let c: Claims = serde_json::from_str(r#"{"s\u0075b":"u","exp":5}"#).unwrap();
        assert_eq!(c.sub, "u");
    }

    #[test]
    fn claims_round_trip_through_json() {
        let c = Claims::new("u", 9, NoCustomClaims {})
            .with_sid("s")
            .with_scope("read")
            .with_roles(["admin"])
            .with_nbf(3)
            .with_authentication(7, ["pwd", "otp"], Some("phr".into()));
        let json = serde_json::to_string(&c).unwrap();
        let back: Claims = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn authentication_claims_are_typed() {
        let c: Claims =
            serde_json::from_str(r#"{"sub":"u","exp":5,"auth_time":4,"amr":["pwd"],"acr":"x"}"#)
                .unwrap();
        assert_eq!(c.auth_time, Some(4));
        assert_eq!(c.amr.as_deref(), Some(&["pwd".to_owned()][..]));
        assert_eq!(c.acr.as_deref(), Some("x"));
        for bad in [
            r#"{"sub":"u","exp":5,"auth_time":"4"}"#,
            r#"{"sub":"u","exp":5,"auth_time":-4}"#,
            r#"{"sub":"u","exp":5,"amr":"pwd"}"#,
            r#"{"sub":"u","exp":5,"acr":1}"#,
            r#"{"sub":"u","exp":5,"auth_time":1,"auth_time":2}"#,
        ] {
            assert!(serde_json::from_str::<Claims>(bad).is_err(), "{bad}");
        }
        let none = Claims::new("u", 1, NoCustomClaims {}).with_authentication(
            3,
            Vec::<String>::new(),
            None,
        );
        let json = serde_json::to_value(&none).unwrap();
        assert_eq!(json["auth_time"], 3);
        assert!(json.get("amr").is_none(), "no empty amr array");
    }

    #[test]
    fn scopes_and_roles() {
        let c = Claims::new("u", 1, NoCustomClaims {})
            .with_scope("read  write")
            .with_roles(["admin"]);
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["read", "write"]);
        assert!(c.has_scope("write"));
        assert!(!c.has_scope(""));
        assert!(c.has_role("admin"));
        assert!(!c.has_role("root"));
    }
}
