//! Typed helpers for driving the platform over HTTP, so tests read like the
//! scenario they check.

use crate::Platform;
use anyhow::Context;
use reqwest::Method;
use serde_json::Value;

/// A response with its JSON body (or `Null` when it had none).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Response {
    /// The stable error code, when the response is an error.
    pub fn code(&self) -> Option<&str> {
        self.json.pointer("/error/code").and_then(Value::as_str)
    }

    pub fn str(&self, pointer: &str) -> String {
        self.json
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

/// An account's first issuer and its keys, as the operator API returned them.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub account_id: String,
    pub issuer_id: String,
    pub secret_key: String,
    pub restricted_key: String,
}

impl Platform {
    pub fn edge_url(&self, replica: usize) -> String {
        format!("http://{}", self.edges[replica])
    }

    /// Sends a request to edge replica 0.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> anyhow::Result<Response> {
        self.send_to(0, method, path, headers, body).await
    }

    pub async fn send_to(
        &self,
        replica: usize,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> anyhow::Result<Response> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.edge_url(replica)));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.context("request failed")?).await
    }

    /// Sends raw bytes as a JSON body (for malformed and oversized bodies).
    pub async fn send_raw(&self, path: &str, key: &str, body: Vec<u8>) -> anyhow::Result<Response> {
        let request = self
            .http
            .post(format!("{}{path}", self.edge_url(0)))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        read(request.send().await?).await
    }

    /// A backend call with a secret key.
    pub async fn backend(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Response> {
        let auth = format!("Bearer {key}");
        self.send(method, path, &[("authorization", &auth)], body)
            .await
    }

    /// Creates an account through the operator API.
    pub async fn create_account(&self, name: &str) -> anyhow::Result<Tenant> {
        let response = self
            .http
            .post(format!("http://{}/admin/v1/accounts", self.account_addr))
            .bearer_auth(&self.operator_token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await?;
        let response = read(response).await?;
        anyhow::ensure!(
            response.status == 201,
            "account creation failed: {} {}",
            response.status,
            response.json
        );
        Ok(Tenant {
            account_id: response.str("/account/id"),
            issuer_id: response.str("/issuer/id"),
            secret_key: response.str("/secret_key"),
            restricted_key: response.str("/restricted_key"),
        })
    }

    /// Sets the tenant's allowed origins with its secret key.
    pub async fn allow_origins(&self, tenant: &Tenant, origins: &[&str]) -> anyhow::Result<()> {
        let r = self
            .backend(
                Method::PATCH,
                "/v1/issuer",
                &tenant.secret_key,
                Some(serde_json::json!({ "allowed_origins": origins })),
            )
            .await?;
        anyhow::ensure!(
            r.status == 200,
            "setting origins failed: {} {}",
            r.status,
            r.json
        );
        Ok(())
    }

    /// Signs a user up through the client API with the restricted key, from
    /// `origin`, optionally through the trusted proxy with a country.
    pub async fn sign_up(
        &self,
        tenant: &Tenant,
        origin: &str,
        country: Option<&str>,
        email: &str,
        password: &str,
    ) -> anyhow::Result<Response> {
        let auth = format!("Bearer {}", tenant.restricted_key);
        let mut headers = vec![("authorization", auth.as_str()), ("origin", origin)];
        if let Some(country) = country {
            headers.push(("cf-ipcountry", country));
        }
        self.send(
            Method::POST,
            "/v1/client/sign_up",
            &headers,
            Some(serde_json::json!({ "email": email, "password": password })),
        )
        .await
    }

    pub async fn sign_in(
        &self,
        tenant: &Tenant,
        origin: &str,
        email: &str,
        password: &str,
    ) -> anyhow::Result<Response> {
        let auth = format!("Bearer {}", tenant.restricted_key);
        self.send(
            Method::POST,
            "/v1/client/sign_in",
            &[("authorization", &auth), ("origin", origin)],
            Some(serde_json::json!({ "email": email, "password": password })),
        )
        .await
    }

    /// A client call with the restricted key from `origin`, on edge `replica`,
    /// with the session token in `Authorization` when given.
    pub async fn client_call(
        &self,
        replica: usize,
        tenant: &Tenant,
        method: Method,
        path: &str,
        session: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Response> {
        let bearer = session.map(|token| format!("Bearer {token}"));
        let mut headers = vec![
            ("idm-api-key", tenant.restricted_key.as_str()),
            ("origin", "https://app.example.com"),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        self.send_to(replica, method, path, &headers, body).await
    }

    pub async fn refresh(&self, tenant: &Tenant, refresh_token: &str) -> anyhow::Result<Response> {
        let body = serde_json::json!({ "refresh_token": refresh_token });
        self.client_call(
            0,
            tenant,
            Method::POST,
            "/v1/client/token/refresh",
            None,
            Some(body),
        )
        .await
    }

    /// A call to edge `replica`'s internal ops listener (metrics, ban admin),
    /// with the platform's operator token unless `token` says otherwise.
    pub async fn edge_ops(
        &self,
        replica: usize,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Response> {
        let addr = self
            .edge_ops
            .get(replica)
            .with_context(|| format!("no edge replica {replica}"))?;
        let request = self
            .http
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(token.unwrap_or(&self.operator_token));
        read(request.send().await?).await
    }

    /// Edge `replica`'s Prometheus text.
    pub async fn edge_metrics(&self, replica: usize) -> anyhow::Result<String> {
        let r = self
            .edge_ops(replica, Method::GET, "/metrics", None)
            .await?;
        anyhow::ensure!(r.status == 200, "metrics answered {}", r.status);
        Ok(match r.json {
            Value::String(text) => text,
            other => other.to_string(),
        })
    }

    /// Replaces the tenant's `policy.waf` (fields not given take their defaults).
    pub async fn set_waf_policy(&self, tenant: &Tenant, waf: Value) -> anyhow::Result<()> {
        let r = self
            .backend(
                Method::PATCH,
                "/v1/issuer",
                &tenant.secret_key,
                Some(serde_json::json!({ "policy": { "waf": waf } })),
            )
            .await?;
        anyhow::ensure!(
            r.status == 200,
            "setting the WAF policy failed: {} {}",
            r.status,
            r.json
        );
        Ok(())
    }

    /// Plain GET of a service's own HTTP endpoint (health, metrics).
    pub async fn get_service(&self, service: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = self
            .service_addrs
            .get(service)
            .with_context(|| format!("no service {service}"))?;
        let response = self.http.get(format!("http://{addr}{path}")).send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }
}

/// An HTTP answer as a [`Response`] (the body as JSON, else as a string).
pub async fn read(response: reqwest::Response) -> anyhow::Result<Response> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(Response {
        status,
        headers,
        json,
    })
}
