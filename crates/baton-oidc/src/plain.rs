//! Plain OAuth 2.0 providers, which give no ID token (Naver's kind): the user-info endpoint,
//! called with the access token, says who signed in, at places a field mapping names.

use openidconnect::{AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, TokenUrl};

use crate::{Identity, OidcError, OidcFailure};

/// A plain OAuth 2.0 client with its authorization and token endpoints.
pub(crate) type PlainClient = oauth2::basic::BasicClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Where a plain OAuth 2.0 provider (one that gives no ID token) is reached, and where its
/// user-info answer keeps the user's fields: JSON pointers (RFC 6901) into that answer.
///
/// The identity's issuer is the authorization endpoint's origin (`https://nid.naver.com`,
/// or as [`identified_as`](Self::identified_as) says);
/// its subject is the field at [`subject_at`](Self::subject_at) (a string or an integer).
///
/// ```
/// use baton_oidc::{OAuth2Endpoints, ProviderConfig};
///
/// // Naver: the user-info answer is {"resultcode": "00", "response": {"id": ..., ...}}.
/// let naver = OAuth2Endpoints::new(
///     "https://nid.naver.com/oauth2.0/authorize",
///     "https://nid.naver.com/oauth2.0/token",
///     "https://openapi.naver.com/v1/nid/me",
/// )
/// .subject_at("/response/id")
/// .email_at("/response/email")
/// .name_at("/response/name")
/// .secret_in_body();
/// let config = ProviderConfig::oauth2("naver", "Naver", "client-id", naver)
///     .with_secret("client-secret");
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct OAuth2Endpoints {
    pub(crate) authorization: String,
    pub(crate) token: String,
    pub(crate) userinfo: String,
    pub(crate) subject: String,
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) secret_in_body: bool,
    pub(crate) issuer: Option<String>,
}

impl OAuth2Endpoints {
    /// The provider's authorization, token and user-info endpoints (HTTPS). The fields are
    /// read where OpenID Connect's user info keeps them (`/sub`, `/email`, `/name`) until
    /// told otherwise; the client secret goes in HTTP Basic authentication.
    pub fn new(
        authorization: impl Into<String>,
        token: impl Into<String>,
        userinfo: impl Into<String>,
    ) -> Self {
        OAuth2Endpoints {
            authorization: authorization.into(),
            token: token.into(),
            userinfo: userinfo.into(),
            subject: "/sub".to_owned(),
            email: Some("/email".to_owned()),
            name: Some("/name".to_owned()),
            secret_in_body: false,
            issuer: None,
        }
    }

    /// The identity namespace of this provider's users, instead of the authorization
    /// endpoint's origin: for two providers (two tenants, two realms) on one host, whose
    /// subjects must not be taken for each other's. Two providers of one application never
    /// share one ([`Oidc::discover`](crate::Oidc::discover) refuses it).
    #[must_use]
    pub fn identified_as(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The user's stable id at the provider (`/response/id`).
    #[must_use]
    pub fn subject_at(mut self, pointer: impl Into<String>) -> Self {
        self.subject = pointer.into();
        self
    }

    /// The user's e-mail (informational: never used to merge accounts).
    #[must_use]
    pub fn email_at(mut self, pointer: impl Into<String>) -> Self {
        self.email = Some(pointer.into());
        self
    }

    /// The user's display name.
    #[must_use]
    pub fn name_at(mut self, pointer: impl Into<String>) -> Self {
        self.name = Some(pointer.into());
        self
    }

    /// Sends the client secret in the token request's body (`client_secret_post`), for
    /// providers that take it only there.
    #[must_use]
    pub fn secret_in_body(mut self) -> Self {
        self.secret_in_body = true;
        self
    }

    /// The identity namespace: as set, or the authorization endpoint's origin.
    pub(crate) fn issuer(&self) -> Result<String, OidcError> {
        if let Some(issuer) = &self.issuer {
            return Ok(issuer.clone());
        }
        let url = url::Url::parse(&self.authorization)
            .map_err(|e| OidcError::Config(format!("authorization endpoint: {e}")))?;
        Ok(url.origin().ascii_serialization())
    }

    /// Checks the settings and builds the client.
    pub(crate) fn client(
        &self,
        client_id: &str,
        secret: Option<&str>,
        redirect: openidconnect::RedirectUrl,
    ) -> Result<PlainClient, OidcError> {
        for (what, endpoint) in [
            ("authorization", &self.authorization),
            ("token", &self.token),
            ("user-info", &self.userinfo),
        ] {
            let url = url::Url::parse(endpoint)
                .map_err(|e| OidcError::Config(format!("{what} endpoint {endpoint:?}: {e}")))?;
            if url.scheme() != "https" {
                return Err(OidcError::Config(format!(
                    "the {what} endpoint must be https: {endpoint:?}"
                )));
            }
        }
        for pointer in [Some(&self.subject), self.email.as_ref(), self.name.as_ref()]
            .into_iter()
            .flatten()
        {
            if !pointer.starts_with('/') {
                return Err(OidcError::Config(format!(
                    "a user-info field is a JSON pointer starting with /: {pointer:?}"
                )));
            }
        }
        let auth = AuthUrl::new(self.authorization.clone())
            .map_err(|e| OidcError::Config(format!("authorization endpoint: {e}")))?;
        let token = TokenUrl::new(self.token.clone())
            .map_err(|e| OidcError::Config(format!("token endpoint: {e}")))?;
        let mut client = oauth2::basic::BasicClient::new(ClientId::new(client_id.to_owned()))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_redirect_uri(redirect);
        if let Some(secret) = secret {
            client = client.set_client_secret(ClientSecret::new(secret.to_owned()));
        }
        if self.secret_in_body {
            client = client.set_auth_type(oauth2::AuthType::RequestBody);
        }
        Ok(client)
    }

    /// The identity in a user-info answer.
    pub(crate) fn identity(&self, issuer: &str, body: &[u8]) -> Result<Identity, OidcFailure> {
        let bad = |why: String| OidcFailure::UserInfo(why);
        let info: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| bad(format!("the answer is not JSON: {e}")))?;
        let subject = match info.pointer(&self.subject) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => {
                return Err(bad(format!(
                    "{} is not a string or an integer",
                    self.subject
                )));
            }
            None => return Err(bad(format!("no {} in the answer", self.subject))),
        };
        if subject.is_empty() || subject.len() > 255 {
            return Err(bad(format!("{} is empty or too long", self.subject)));
        }
        let text = |pointer: &Option<String>| {
            pointer
                .as_deref()
                .and_then(|p| info.pointer(p))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        Ok(Identity {
            issuer: issuer.to_owned(),
            subject,
            email: text(&self.email),
            // A plain OAuth 2.0 answer does not say whether the e-mail was verified.
            email_verified: None,
            name: text(&self.name),
            amr: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_where_the_mapping_says() {
        let naver = OAuth2Endpoints::new("https://n/a", "https://n/t", "https://n/me")
            .subject_at("/response/id")
            .email_at("/response/email")
            .name_at("/response/name");
        let body = br#"{"resultcode":"00","response":{"id":"abc","email":"a@b.c","name":"A"}}"#;
        let identity = naver.identity("https://n", body).unwrap();
        assert_eq!(identity.subject, "abc");
        assert_eq!(identity.email.as_deref(), Some("a@b.c"));
        assert_eq!(identity.name.as_deref(), Some("A"));
        assert_eq!(identity.email_verified, None);

        // Kakao's kind: an integer id.
        let kakao = OAuth2Endpoints::new("https://k/a", "https://k/t", "https://k/me")
            .subject_at("/id")
            .email_at("/kakao_account/email");
        let identity = kakao
            .identity("https://k", br#"{"id": 123456789}"#)
            .unwrap();
        assert_eq!(identity.subject, "123456789");
        assert_eq!(identity.email, None);
    }

    #[test]
    fn a_missing_or_odd_subject_is_refused() {
        let plain = OAuth2Endpoints::new("https://p/a", "https://p/t", "https://p/me");
        for body in [
            &b"not json"[..],
            br#"{"email":"a@b.c"}"#,
            br#"{"sub":""}"#,
            br#"{"sub":1.5}"#,
            br#"{"sub":{"id":"x"}}"#,
            br#"{"sub":null}"#,
        ] {
            let got = plain.identity("https://p", body);
            assert!(
                matches!(got, Err(OidcFailure::UserInfo(_))),
                "{:?}: {got:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn settings_are_checked() {
        let redirect =
            openidconnect::RedirectUrl::new("https://app/auth/oidc/p/callback".into()).unwrap();
        let http = OAuth2Endpoints::new("http://p/a", "https://p/t", "https://p/me");
        assert!(http.client("c", None, redirect.clone()).is_err());
        let pointer =
            OAuth2Endpoints::new("https://p/a", "https://p/t", "https://p/me").subject_at("id");
        assert!(pointer.client("c", None, redirect.clone()).is_err());
        let fine = OAuth2Endpoints::new("https://p:8443/a", "https://p/t", "https://p/me");
        assert!(fine.client("c", Some("s"), redirect).is_ok());
        assert_eq!(fine.issuer().unwrap(), "https://p:8443");
    }
}
