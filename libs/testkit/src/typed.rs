//! A typed client for the most common flows (sign-up, sign-in, refresh,
//! `/me`, sessions): calls answer with the wire types the services define
//! (`idm_core::proto`), or with the typed error (`ApiError`). The expected
//! status is checked in one place: a success must carry the route's success
//! status and parse as its type; a refusal must carry the code asked for and
//! the HTTP status the error table gives that code
//! (`ErrorCode::http_status`), so a test names the code and nothing else.

use crate::{Platform, Response, Tenant};
use anyhow::Context;
use idm_core::proto::auth::Authenticated;
use idm_core::proto::session::{IssuedSession, SessionList};
use idm_core::proto::user::User;
use idm_core::{ApiError, ErrorCode};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::marker::PhantomData;

/// The origin the typed client calls from unless told otherwise (tenants
/// made by the suites allow it).
pub const APP_ORIGIN: &str = "https://app.example.com";

/// One answer of the typed client: [`Self::ok`] for the wire type,
/// [`Self::refused`] for the typed error.
#[derive(Debug)]
#[must_use = "check the answer with ok() or refused()"]
pub struct Answer<T> {
    /// The raw answer, for headers (cookies, `Retry-After`).
    pub response: Response,
    success: u16,
    _type: PhantomData<T>,
}

impl<T: DeserializeOwned> Answer<T> {
    fn new(response: Response, success: u16) -> Self {
        Self {
            response,
            success,
            _type: PhantomData,
        }
    }

    /// The body as `T`, after checking the status is the route's success.
    pub fn ok(self) -> anyhow::Result<T> {
        let r = &self.response;
        anyhow::ensure!(
            r.status == self.success,
            "expected {}, got {} {}",
            self.success,
            r.status,
            r.json
        );
        serde_json::from_value(r.json.clone()).with_context(|| {
            format!(
                "a {} answer that is not the wire type: {}",
                r.status, r.json
            )
        })
    }

    /// The error, after checking it is `code` with `code`'s HTTP status.
    pub fn refused(self, code: ErrorCode) -> anyhow::Result<ApiError> {
        let error = self.error()?;
        anyhow::ensure!(
            error.code == code,
            "expected {code}, got {} {}: {}",
            self.response.status,
            error.code,
            error.message
        );
        Ok(error)
    }

    /// Whatever error it is, checked to carry its code's HTTP status.
    pub fn error(&self) -> anyhow::Result<ApiError> {
        let r = &self.response;
        let error: ApiError = r
            .json
            .get("error")
            .cloned()
            .and_then(|e| serde_json::from_value(e).ok())
            .with_context(|| format!("expected an error, got {} {}", r.status, r.json))?;
        anyhow::ensure!(
            r.status == error.code.http_status(),
            "{} answered with {} instead of {}",
            error.code,
            r.status,
            error.code.http_status()
        );
        Ok(error)
    }
}

impl Response {
    /// This response as a typed answer whose success status is `success`.
    pub fn typed<T: DeserializeOwned>(self, success: u16) -> Answer<T> {
        Answer::new(self, success)
    }
}

/// A tenant's client API (its publishable key, from an allowed origin) on
/// one edge replica: `platform.client(&tenant)`.
#[derive(Clone)]
pub struct Client<'a> {
    platform: &'a Platform,
    tenant: &'a Tenant,
    replica: usize,
    origin: String,
    country: Option<String>,
}

impl Platform {
    /// The typed client of `tenant`, from [`APP_ORIGIN`], on edge 0.
    pub fn client<'a>(&'a self, tenant: &'a Tenant) -> Client<'a> {
        Client {
            platform: self,
            tenant,
            replica: 0,
            origin: APP_ORIGIN.to_owned(),
            country: None,
        }
    }
}

impl<'a> Client<'a> {
    /// The same client on edge `replica`.
    pub fn on(mut self, replica: usize) -> Self {
        self.replica = replica;
        self
    }

    /// The same client from another origin.
    pub fn from_origin(mut self, origin: &str) -> Self {
        self.origin = origin.to_owned();
        self
    }

    /// The same client with a country header (believed only by platforms
    /// that trust the test process as a proxy).
    pub fn in_country(mut self, country: &str) -> Self {
        self.country = Some(country.to_owned());
        self
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        session: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Response> {
        let bearer = session.map(|token| format!("Bearer {token}"));
        let mut headers = vec![
            ("idm-api-key", self.tenant.restricted_key.as_str()),
            ("origin", self.origin.as_str()),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        if let Some(country) = &self.country {
            headers.push(("cf-ipcountry", country.as_str()));
        }
        self.platform
            .send_to(self.replica, method, path, &headers, body)
            .await
    }

    /// `POST /v1/client/sign_up` (201).
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
    ) -> anyhow::Result<Answer<Authenticated>> {
        let body = json!({ "email": email, "password": password });
        let r = self
            .call(Method::POST, "/v1/client/sign_up", None, Some(body))
            .await?;
        Ok(r.typed(201))
    }

    /// `POST /v1/client/sign_in` (200; `401 mfa_required` when a second
    /// factor is due).
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
    ) -> anyhow::Result<Answer<Authenticated>> {
        let body = json!({ "email": email, "password": password });
        let r = self
            .call(Method::POST, "/v1/client/sign_in", None, Some(body))
            .await?;
        Ok(r.typed(200))
    }

    /// `POST /v1/client/token/refresh` (200).
    pub async fn refresh(&self, refresh_token: &str) -> anyhow::Result<Answer<IssuedSession>> {
        let body = json!({ "refresh_token": refresh_token });
        let r = self
            .call(Method::POST, "/v1/client/token/refresh", None, Some(body))
            .await?;
        Ok(r.typed(200))
    }

    /// `GET /v1/client/me` (200).
    pub async fn me(&self, session_token: &str) -> anyhow::Result<Answer<User>> {
        let r = self
            .call(Method::GET, "/v1/client/me", Some(session_token), None)
            .await?;
        Ok(r.typed(200))
    }

    /// `GET /v1/client/sessions` (200).
    pub async fn sessions(&self, session_token: &str) -> anyhow::Result<Answer<SessionList>> {
        let r = self
            .call(
                Method::GET,
                "/v1/client/sessions",
                Some(session_token),
                None,
            )
            .await?;
        Ok(r.typed(200))
    }

    /// `POST /v1/client/sign_out` (200; the answer's body is the edge's own).
    pub async fn sign_out(&self, session_token: &str) -> anyhow::Result<Answer<Value>> {
        let r = self
            .call(
                Method::POST,
                "/v1/client/sign_out",
                Some(session_token),
                None,
            )
            .await?;
        Ok(r.typed(200))
    }
}

/// `local` made unique to the test (`local-<random>@example.com`): the
/// shared platform's mail sink is one for every test, so a test reading
/// mail must not share a recipient with another.
pub fn unique_email(local: &str) -> String {
    format!("{local}-{}@example.com", crate::random_hex(4))
}
