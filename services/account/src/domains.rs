//! Custom domains: a tenant serves its client routes on its own host name
//! (`auth.mybrand.com`) once it has proved control of it with a DNS TXT
//! record, `_idmesh-challenge.<domain>` = `idmesh-domain-verification=<token>`
//! (docs/EDGE.md, "Custom domains", says why TXT and not an HTTP challenge).
//! The lookup goes through `ACCOUNT_DNS_RESOLVER` when set (the tests run
//! their own DNS server), else the system's resolver.

use crate::handlers::broadcast_change;
use crate::storage::{self, DomainRow};
use crate::{Error, State};
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveErrorKind, Resolver};
use idm_core::proto::account::*;
use idm_core::{ApiError, DomainName, ErrorCode, IssuerId};
use std::net::SocketAddr;
use std::sync::Arc;

/// At most this many custom domains per issuer.
const MAX_DOMAINS: usize = 20;
const CHALLENGE_PREFIX: &str = "_idmesh-challenge.";
const VALUE_PREFIX: &str = "idmesh-domain-verification=";

/// A resolver that caches nothing: a verification asks DNS now, so a record
/// added a minute after a failed attempt is seen on the next one.
pub(crate) fn resolver(
    server: Option<SocketAddr>,
) -> Result<Resolver<TokioConnectionProvider>, idm_core::config::ConfigError> {
    let mut builder = match server {
        Some(addr) => Resolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
            ),
            TokioConnectionProvider::default(),
        ),
        None => Resolver::builder_tokio().map_err(|e| idm_core::config::ConfigError::Invalid {
            var: "ACCOUNT_DNS_RESOLVER".into(),
            reason: format!("no system resolver configuration: {e}"),
        })?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    opts.attempts = 2;
    opts.timeout = std::time::Duration::from_secs(3);
    Ok(builder.build())
}

fn parse_row(row: DomainRow) -> Result<IssuerDomain, Error> {
    let domain =
        DomainName::parse(&row.domain).map_err(|e| Error::from(ApiError::internal_from(&e)))?;
    let cookie_domain = row
        .cookie_domain
        .as_deref()
        .map(DomainName::parse)
        .transpose()
        .map_err(|e| Error::from(ApiError::internal_from(&e)))?;
    Ok(IssuerDomain {
        challenge: DomainChallenge {
            record_type: "TXT".into(),
            name: format!("{CHALLENGE_PREFIX}{domain}"),
            value: format!("{VALUE_PREFIX}{}", row.token),
        },
        domain,
        cookie_domain,
        verified: row.verified_at.is_some(),
        created_at: row.created_at,
        verified_at: row.verified_at,
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, domain = %req.domain))]
pub async fn add_domain(state: Arc<State>, req: AddDomain) -> Result<IssuerDomain, Error> {
    if let Some(cookie) = &req.cookie_domain {
        if !cookie.covers(&req.domain) {
            return Err(ApiError::validation(
                "cookie_domain must be the domain itself or a parent of it",
            )
            .with_details(serde_json::json!({"field": "cookie_domain"}))
            .into());
        }
    }
    let client = state.db.get().await?;
    storage::issuer(&client, &req.issuer_id)
        .await?
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    if storage::list_domains(&client, &req.issuer_id).await?.len() >= MAX_DOMAINS {
        return Err(ApiError::new(
            ErrorCode::PlanLimitReached,
            format!("at most {MAX_DOMAINS} custom domains per issuer"),
        )
        .into());
    }
    let token = idm_crypto::random_token::<16>();
    let row = storage::insert_domain(
        &client,
        &req.issuer_id,
        req.domain.as_str(),
        req.cookie_domain.as_ref().map(DomainName::as_str),
        &token,
    )
    .await?
    // Whoever holds it, this issuer or another: the answer does not say.
    .ok_or_else(|| ApiError::conflict("this domain is already registered"))?;
    tracing::info!("custom domain registered");
    parse_row(row)
}

pub async fn list_domains(
    state: Arc<State>,
    ListDomains(req): ListDomains,
) -> Result<DomainList, Error> {
    let client = state.db.get().await?;
    let rows = storage::list_domains(&client, &req.issuer_id).await?;
    Ok(DomainList {
        data: rows.into_iter().map(parse_row).collect::<Result<_, _>>()?,
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, domain = %req.domain))]
pub async fn remove_domain(state: Arc<State>, req: RemoveDomain) -> Result<IssuerDomain, Error> {
    let client = state.db.get().await?;
    let row = storage::remove_domain(&client, &req.issuer_id, req.domain.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("domain"))?;
    broadcast_change(&state, &req.issuer_id, None).await;
    parse_row(row)
}

/// Whether some TXT record at `name` is exactly `expected`.
async fn txt_holds(state: &State, name: &str, expected: &str) -> Result<bool, Error> {
    let fqdn = format!("{name}.");
    match state.dns.txt_lookup(fqdn).await {
        Ok(lookup) => Ok(lookup.iter().any(|txt| {
            let joined: Vec<u8> = txt
                .txt_data()
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            joined == expected.as_bytes()
        })),
        Err(e) if matches!(e.kind(), ResolveErrorKind::Proto(p) if p.is_no_records_found() || p.is_nx_domain()) => {
            Ok(false)
        }
        Err(e) => {
            tracing::warn!(error = %e, "DNS lookup failed");
            Err(ApiError::upstream("the DNS lookup failed; try again later").into())
        }
    }
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, domain = %req.domain))]
pub async fn verify_domain(state: Arc<State>, req: VerifyDomain) -> Result<IssuerDomain, Error> {
    let row = {
        let client = state.db.get().await?;
        storage::domain_of(&client, &req.issuer_id, req.domain.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found("domain"))?
    };
    if row.verified_at.is_some() {
        return parse_row(row);
    }
    let name = format!("{CHALLENGE_PREFIX}{}", req.domain);
    let expected = format!("{VALUE_PREFIX}{}", row.token);
    if !txt_holds(&state, &name, &expected).await? {
        return Err(ApiError::new(
            ErrorCode::DomainNotVerified,
            format!("no TXT record at {name} holds the expected value yet"),
        )
        .into());
    }
    let client = state.db.get().await?;
    let row = storage::mark_domain_verified(&client, &req.issuer_id, req.domain.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("domain"))?;
    // Edges cache "no issuer here" too: drop it everywhere before answering.
    broadcast_change(&state, &req.issuer_id, None).await;
    tracing::info!("custom domain verified");
    parse_row(row)
}

/// The issuer a host serves, for the edge.
pub async fn resolve_host(state: Arc<State>, req: ResolveHost) -> Result<ResolvedHost, Error> {
    let client = state.db.get().await?;
    let (issuer_id, cookie_domain): (IssuerId, Option<String>) = match req {
        ResolveHost::Issuer(id) => (id, None),
        ResolveHost::Domain(domain) => {
            match storage::verified_domain(&client, domain.as_str()).await? {
                Some(found) => found,
                None => return Ok(ResolvedHost { host: None }),
            }
        }
    };
    let Some(issuer) = storage::issuer(&client, &issuer_id).await? else {
        return Ok(ResolvedHost { host: None });
    };
    let cookie_domain = cookie_domain
        .as_deref()
        .map(DomainName::parse)
        .transpose()
        .map_err(|e| Error::from(ApiError::internal_from(&e)))?;
    Ok(ResolvedHost {
        host: Some(IssuerHost {
            issuer_id: issuer.id,
            allowed_origins: issuer.allowed_origins,
            policy: issuer.policy,
            cookie_domain,
        }),
    })
}
