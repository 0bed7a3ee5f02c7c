//! Users (issue 11): the devices a user's sessions come from, listed per
//! user and for the user, and revoked device by device (the revocation
//! reaches the edge at once).

use crate::factor_kit::{tenant, ORIGIN, PASSWORD};
use crate::user_kit::*;
use idm_core::Region;
use idm_testkit::{unique_email, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;

async fn with_agent(
    platform: &Platform,
    tenant: &Tenant,
    path: &str,
    agent: &str,
    body: serde_json::Value,
) -> anyhow::Result<Response> {
    let auth = format!("Bearer {}", tenant.restricted_key);
    platform
        .send(
            Method::POST,
            path,
            &[
                ("authorization", &auth),
                ("origin", ORIGIN),
                ("user-agent", agent),
            ],
            Some(body),
        )
        .await
}

async fn me(platform: &Platform, tenant: &Tenant, session: &str) -> anyhow::Result<u16> {
    Ok(platform
        .client_call(0, tenant, Method::GET, "/v1/client/me", Some(session), None)
        .await?
        .status)
}

#[tokio::test]
async fn devices_are_listed_per_user_and_revoking_one_ends_its_sessions() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Devices A").await?;
    let b = tenant(platform, "Devices B").await?;
    let email = unique_email("devices");
    let tag = tag();
    let phone = format!("PhoneAgent{tag}/1.0");
    let laptop = format!("LaptopAgent{tag}/2.0");
    let creds = json!({"email": email, "password": PASSWORD});
    let up = with_agent(platform, &a, "/v1/client/sign_up", &phone, creds.clone()).await?;
    assert_eq!(up.status, 201, "{}", up.json);
    let user = up.str("/user/id");
    let region = Region::parse(&up.str("/user/region")).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let phone_1 = up.str("/session_token");
    let phone_2 = with_agent(platform, &a, "/v1/client/sign_in", &phone, creds.clone())
        .await?
        .str("/session_token");
    let on_laptop = with_agent(platform, &a, "/v1/client/sign_in", &laptop, creds.clone()).await?;
    assert_eq!(on_laptop.status, 200, "{}", on_laptop.json);
    let laptop_1 = on_laptop.str("/session_token");

    let path = format!("/v1/users/{user}/devices");
    let r = platform
        .backend(Method::GET, &path, &a.secret_key, None)
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let devices = r.json["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), 2, "{}", r.json);
    // Most recently seen first: the laptop.
    assert_eq!(devices[0]["user_agent"], json!(laptop));
    assert_eq!(devices[0]["active_sessions"], json!(1));
    assert_eq!(devices[1]["user_agent"], json!(phone));
    assert_eq!(devices[1]["active_sessions"], json!(2));
    for d in &devices {
        assert_eq!(
            d["ip_network"],
            json!("127.0.0.0/24"),
            "only the network: {d}"
        );
        assert!(d["first_seen_at"].is_string() && d["last_seen_at"].is_string());
        assert!(d["id"].as_str().unwrap_or_default().starts_with("dev_"));
    }
    let phone_device = devices[1]["id"].as_str().unwrap_or_default().to_owned();
    // Each session names its device.
    let sessions = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user}/sessions"),
            &a.secret_key,
            None,
        )
        .await?;
    let on_phone = sessions.json["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["device_id"] == json!(phone_device))
        .count();
    assert_eq!(on_phone, 2, "{}", sessions.json);

    // The user's own list, and pages.
    let own = platform
        .client_call(
            0,
            &a,
            Method::GET,
            "/v1/client/devices",
            Some(&laptop_1),
            None,
        )
        .await?;
    assert_eq!(ids(&own.json), ids(&r.json));
    let first = platform
        .backend(Method::GET, &format!("{path}?limit=1"), &a.secret_key, None)
        .await?;
    assert_eq!(first.json["has_more"], json!(true));
    let next = platform
        .backend(
            Method::GET,
            &format!("{path}?limit=1&starting_after={}", ids(&first.json)[0]),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(ids(&next.json), vec![phone_device.clone()]);
    assert_eq!(next.json["has_more"], json!(false));

    // A refresh shows the device again (its last_seen_at moves on).
    let seen = |list: &serde_json::Value, id: &str| {
        list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["id"] == json!(id))
            .and_then(|d| d["last_seen_at"].as_str())
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
    };
    let laptop_device = ids(&r.json)[0].clone();
    let before = seen(&r.json, &laptop_device);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let refreshed = platform
        .refresh(&a, &on_laptop.str("/refresh_token"))
        .await?;
    assert_eq!(refreshed.status, 200, "{}", refreshed.json);
    let after = platform
        .backend(Method::GET, &path, &a.secret_key, None)
        .await?;
    assert!(before.is_some());
    assert!(seen(&after.json, &laptop_device) > before, "{}", after.json);

    // Cross-tenant, restricted key, unknown device, another user's device.
    let r = platform
        .backend(Method::GET, &path, &b.secret_key, None)
        .await?;
    refused(&r, 404, "not_found");
    let device_path = format!("{path}/{phone_device}");
    let r = platform
        .backend(Method::DELETE, &device_path, &b.secret_key, None)
        .await?;
    refused(&r, 404, "not_found");
    let r = with_restricted_key(platform, &a, Method::GET, &path, None).await?;
    refused(&r, 403, "insufficient_scope");
    let r = with_restricted_key(platform, &a, Method::DELETE, &device_path, None).await?;
    refused(&r, 403, "insufficient_scope");
    let r = platform
        .backend(
            Method::DELETE,
            &format!("{path}/dev_nope"),
            &a.secret_key,
            None,
        )
        .await?;
    refused(&r, 404, "not_found");
    let r = platform
        .backend(Method::GET, &format!("{path}?limit=0"), &a.secret_key, None)
        .await?;
    refused(&r, 422, "validation_failed");
    let stranger = platform
        .sign_up(&a, ORIGIN, None, &unique_email("stranger"), PASSWORD)
        .await?;
    let stranger_id = stranger.str("/user/id");
    let r = platform
        .backend(
            Method::DELETE,
            &format!("/v1/users/{stranger_id}/devices/{phone_device}"),
            &a.secret_key,
            None,
        )
        .await?;
    refused(&r, 404, "not_found");
    // Nothing was revoked by the refusals.
    assert_eq!(me(platform, &a, &phone_1).await?, 200);

    // Revoking the phone ends both of its sessions at the edge, not the laptop's.
    let r = platform
        .backend(Method::DELETE, &device_path, &a.secret_key, None)
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["session_ids"].as_array().map(Vec::len), Some(2));
    for replica in 0..platform.edges.len() {
        for token in [&phone_1, &phone_2] {
            let r = platform
                .client_call(replica, &a, Method::GET, "/v1/client/me", Some(token), None)
                .await?;
            refused(&r, 401, "session_revoked");
        }
    }
    assert_eq!(me(platform, &a, &laptop_1).await?, 200);
    let event = platform
        .last_event(&a.issuer_id, "session.revoked")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["reason"], json!("device_revoked"));
    let r = platform
        .backend(Method::GET, &path, &a.secret_key, None)
        .await?;
    let phone_now = r.json["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["id"] == json!(phone_device))
        .cloned()
        .unwrap_or_default();
    assert_eq!(phone_now["active_sessions"], json!(0));

    // Devices live in the user's region only: the user agent is found in
    // that store (devices, sessions) and nowhere else.
    let mut places = places_of(platform, &a, &format!("PhoneAgent{tag}")).await?;
    places.sort();
    let home = format!("{}/{}", db_label(platform, region), schema_of(&a));
    assert_eq!(
        places,
        vec![
            format!("{home}.devices.user_agent"),
            format!("{home}.sessions.user_agent")
        ]
    );
    assert_eq!(rows_in(platform, &a, region, "devices", &user).await?, 2);
    for other in Region::ALL.into_iter().filter(|r| *r != region) {
        if platform.region_dbs[&other] != platform.region_dbs[&region] {
            assert_eq!(rows_in(platform, &a, other, "devices", &user).await?, 0);
        }
    }
    Ok(())
}
