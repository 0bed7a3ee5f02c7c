//! A tenant's custom domains (docs/EDGE.md, "Custom domains"): registered,
//! proved with a DNS TXT record, then served as the issuer's own host.

use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use idm_core::proto::account::{
    AddDomain, DomainList, IssuerDomain, IssuerRef, ListDomains, RemoveDomain, VerifyDomain,
};
use idm_core::{ApiError, DomainName};
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The host name to serve the client API on, e.g. `auth.mybrand.com`.
    domain: String,
    /// The session cookie's `Domain` on this host: the domain itself or a
    /// parent (`mybrand.com`), so that the tenant's other hosts see the
    /// cookie too. Absent: a host-only `__Host-` cookie.
    cookie_domain: Option<String>,
}

/// A domain in a path: one that does not parse is not anyone's.
fn path_domain(raw: &str) -> Result<DomainName, ApiError> {
    DomainName::parse(raw).map_err(|_| ApiError::not_found("domain"))
}

/// Registers a custom domain; it serves nothing until verified.
#[utoipa::path(post, path = "/v1/issuer/domains", tag = "issuers", request_body = NewDomain,
    responses((status = 201, description = "The domain, unverified, with the DNS record that proves control", body = IssuerDomain)))]
pub async fn add(
    incoming: Incoming,
    request: Result<Json<NewDomain>, JsonRejection>,
) -> Reply<(StatusCode, Json<IssuerDomain>)> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    let domain = DomainName::parse(&request.domain)
        .map_err(|e| e.with_details(serde_json::json!({"field": "domain"})))?;
    let cookie_domain = request
        .cookie_domain
        .as_deref()
        .map(DomainName::parse)
        .transpose()
        .map_err(|e| e.with_details(serde_json::json!({"field": "cookie_domain"})))?;
    let added = incoming
        .app
        .bus
        .send(&AddDomain {
            issuer_id: caller.key.issuer_id.clone(),
            domain,
            cookie_domain,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// The issuer's custom domains.
#[utoipa::path(get, path = "/v1/issuer/domains", tag = "issuers",
    responses((status = 200, description = "The domains", body = DomainList)))]
pub async fn list(incoming: Incoming) -> Reply<Json<DomainList>> {
    let caller = incoming.authorize().await?;
    let list = incoming
        .app
        .bus
        .send(&ListDomains(IssuerRef {
            issuer_id: caller.key.issuer_id.clone(),
        }))
        .await?;
    Ok(Json(list))
}

/// Removes a custom domain; every edge stops serving it at once.
#[utoipa::path(delete, path = "/v1/issuer/domains/{domain}", tag = "issuers",
    params(("domain" = String, Path, description = "The domain")),
    responses((status = 200, description = "The removed domain", body = IssuerDomain)))]
pub async fn remove(incoming: Incoming, Path(domain): Path<String>) -> Reply<Json<IssuerDomain>> {
    let caller = incoming.authorize().await?;
    let removed = incoming
        .app
        .bus
        .send(&RemoveDomain {
            issuer_id: caller.key.issuer_id.clone(),
            domain: path_domain(&domain)?,
        })
        .await?;
    Ok(Json(removed))
}

/// Looks the domain's `_idmesh-challenge` TXT record up now; once it holds
/// the challenge value the domain is verified and served.
#[utoipa::path(post, path = "/v1/issuer/domains/{domain}/verify", tag = "issuers",
    params(("domain" = String, Path, description = "The domain")),
    responses((status = 200, description = "The domain, verified", body = IssuerDomain)))]
pub async fn verify(incoming: Incoming, Path(domain): Path<String>) -> Reply<Json<IssuerDomain>> {
    let caller = incoming.authorize().await?;
    let verified = incoming
        .app
        .bus
        .send(&VerifyDomain {
            issuer_id: caller.key.issuer_id.clone(),
            domain: path_domain(&domain)?,
        })
        .await?;
    Ok(Json(verified))
}
