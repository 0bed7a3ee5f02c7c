//! Users (issue 11): changing a profile, changing an address only through a
//! proof of the new one, and listing an issuer's users page by page.

use crate::factor_kit::{tenant, MAIL_WAIT};
use crate::user_kit::*;
use idm_core::Region;
use idm_testkit::{unique_email, Platform};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_patch_changes_name_and_metadata_in_the_users_region_only() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Profiles A").await?;
    let b = tenant(platform, "Profiles B").await?;
    let email = unique_email("pat");
    let user = create_user(
        platform,
        &a,
        json!({"email": email, "name": "Pat", "region": "apac", "metadata": {"plan": "free"}}),
    )
    .await?;
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/users/{id}");

    let marker = format!("Marker{}", &id[id.len() - 8..]);
    let r = platform
        .backend(
            Method::PATCH,
            &path,
            &a.secret_key,
            Some(json!({"name": marker, "metadata": {"plan": "pro", "seats": 3}})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["name"], json!(marker));
    assert_eq!(r.json["metadata"], json!({"plan": "pro", "seats": 3}));
    assert_eq!(r.json["email"], json!(email));
    assert_eq!(r.json["region"], json!("apac"));
    assert!(r.json.get("email_change").is_none(), "{}", r.json);
    let read = platform
        .backend(Method::GET, &path, &a.secret_key, None)
        .await?;
    assert_eq!(read.json["name"], json!(marker));

    // The event names the fields, never their values.
    let event = platform
        .last_event(&a.issuer_id, "user.updated")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"]["user_id"], json!(id));
    assert_eq!(event["data"]["fields"], json!(["name", "metadata"]));
    assert!(!event.to_string().contains(&marker) && !event.to_string().contains("pro"));

    // The name is only in the user's region; nowhere global.
    let places = places_of(platform, &a, &marker).await?;
    assert_eq!(
        places,
        vec![format!(
            "{}/{}.users.name",
            db_label(platform, Region::Apac),
            schema_of(&a)
        )]
    );

    // `name: null` clears; absent fields stay.
    let r = platform
        .backend(
            Method::PATCH,
            &path,
            &a.secret_key,
            Some(json!({"name": null})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["name"], json!(null));
    assert_eq!(r.json["metadata"], json!({"plan": "pro", "seats": 3}));

    // Bad inputs, stable codes.
    for (body, status, code) in [
        (json!({}), 422, "validation_failed"),
        (json!({"metadata": [1, 2]}), 422, "validation_failed"),
        (
            json!({"metadata": {"big": "x".repeat(20_000)}}),
            422,
            "validation_failed",
        ),
        (json!({"name": "   "}), 422, "validation_failed"),
        (json!({"name": "n".repeat(201)}), 422, "validation_failed"),
        (json!({"name": "a\u{0007}b"}), 422, "validation_failed"),
        (json!({"email": "not an address"}), 422, "invalid_email"),
        (
            json!({"redirect_url": "https://app.example.com/x"}),
            422,
            "validation_failed",
        ),
        (json!({"nickname": "x"}), 400, "invalid_request"),
        (json!({"metadata": {"n": 1e308}}), 422, "validation_failed"),
    ] {
        let r = platform
            .backend(Method::PATCH, &path, &a.secret_key, Some(body.clone()))
            .await?;
        refused(&r, status, code);
    }
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/users/usr_nope",
            &a.secret_key,
            Some(json!({"name": "x"})),
        )
        .await?;
    refused(&r, 404, "not_found");

    // Another issuer's key: a plain 404, and nothing changed.
    let r = platform
        .backend(
            Method::PATCH,
            &path,
            &b.secret_key,
            Some(json!({"name": "Eve"})),
        )
        .await?;
    refused(&r, 404, "not_found");
    // A restricted key is refused on the backend route.
    let r = with_restricted_key(
        platform,
        &a,
        Method::PATCH,
        &path,
        Some(json!({"name": "Eve"})),
    )
    .await?;
    refused(&r, 403, "insufficient_scope");
    let read = platform
        .backend(Method::GET, &path, &a.secret_key, None)
        .await?;
    assert_eq!(read.json["name"], json!(null));
    Ok(())
}

#[tokio::test]
async fn an_address_changes_only_once_the_new_one_is_proven() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Address A").await?;
    let b = tenant(platform, "Address B").await?;
    let old = unique_email("old");
    let new = unique_email("new");
    let user = create_user(platform, &a, json!({"email": old, "region": "eeur"})).await?;
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/users/{id}");
    let other = create_user(
        platform,
        &a,
        json!({"email": unique_email("other"), "region": "sam"}),
    )
    .await?;
    let other_email = other["email"].as_str().unwrap_or_default().to_owned();

    // Taken in the issuer (another region): refused at once; its own: refused.
    let r = platform
        .backend(
            Method::PATCH,
            &path,
            &a.secret_key,
            Some(json!({"email": other_email})),
        )
        .await?;
    refused(&r, 409, "conflict");
    let r = platform
        .backend(
            Method::PATCH,
            &path,
            &a.secret_key,
            Some(json!({"email": old})),
        )
        .await?;
    refused(&r, 422, "validation_failed");
    // A redirect outside the allowed origins is refused.
    let r = platform
        .backend(
            Method::PATCH,
            &path,
            &a.secret_key,
            Some(json!({"email": new, "redirect_url": "https://evil.example.net/x"})),
        )
        .await?;
    refused(&r, 422, "validation_failed");

    let r = platform
        .backend(
            Method::PATCH,
            &path,
            &a.secret_key,
            Some(json!({"email": new, "redirect_url": "https://app.example.com/confirm"})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["email"], json!(old), "not applied yet");
    assert_eq!(r.json["email_change"]["status"], json!("pending"));
    let mail = platform.smtp.wait_for(&new, 0, MAIL_WAIT).await?;
    assert!(
        mail.contains("https://app.example.com/confirm?idm_email_change_code="),
        "{mail}"
    );
    let code = long_code(&mail, "idm_email_change_code").unwrap_or_default();
    assert_eq!(code.len(), 43, "{mail}");
    // Until confirmed, the old address still finds the user.
    let found = platform
        .backend(
            Method::GET,
            &format!("/v1/users?email={old}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(found.str("/id"), id);

    // Wrong codes, and another issuer's key with the right one: refused.
    let confirm = "/v1/client/email_changes/confirm";
    for bad in ["short", &"A".repeat(43)] {
        let r = platform
            .client_call(
                0,
                &a,
                Method::POST,
                confirm,
                None,
                Some(json!({"code": bad})),
            )
            .await?;
        refused(&r, 422, "code_invalid");
    }
    let r = platform
        .client_call(
            0,
            &b,
            Method::POST,
            confirm,
            None,
            Some(json!({"code": code})),
        )
        .await?;
    refused(&r, 422, "code_invalid");
    let r = platform
        .client_call(0, &a, Method::POST, confirm, None, Some(json!({"nope": 1})))
        .await?;
    refused(&r, 400, "invalid_request");

    let r = platform
        .client_call(
            0,
            &a,
            Method::POST,
            confirm,
            None,
            Some(json!({"code": code})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["email"], json!(new));
    assert_eq!(r.json["email_verified"], json!(true));
    // Single use.
    let r = platform
        .client_call(
            0,
            &a,
            Method::POST,
            confirm,
            None,
            Some(json!({"code": code})),
        )
        .await?;
    refused(&r, 422, "code_invalid");

    // The blind index moved with it: the new address finds the user, the
    // old one nobody, and the new one cannot be taken again.
    let found = platform
        .backend(
            Method::GET,
            &format!("/v1/users?email={new}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(found.str("/id"), id);
    let gone = platform
        .backend(
            Method::GET,
            &format!("/v1/users?email={old}"),
            &a.secret_key,
            None,
        )
        .await?;
    refused(&gone, 404, "not_found");
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": new})),
        )
        .await?;
    refused(&r, 409, "conflict");
    // The old address hears of it, and is free again.
    nth_mail_with(
        platform,
        &old,
        "Your email address was changed",
        0,
        MAIL_WAIT,
    )
    .await?;
    create_user(platform, &a, json!({"email": old})).await?;
    let event = platform
        .last_event(&a.issuer_id, "email.changed")
        .await?
        .unwrap_or_default();
    assert_eq!(event["data"], json!({"user_id": id}));

    // Addresses live in the user's region only (the directory keeps a
    // keyed hash).
    let local = new.split('@').next().unwrap_or_default();
    let mut places = places_of(platform, &a, local).await?;
    places.sort();
    assert_eq!(
        places,
        vec![
            format!(
                "{}/{}.users.email",
                db_label(platform, Region::Eeur),
                schema_of(&a)
            ),
            format!(
                "{}/{}.users.email_canonical",
                db_label(platform, Region::Eeur),
                schema_of(&a)
            ),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn an_address_taken_before_the_proof_is_refused_and_nothing_moves() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Race").await?;
    let old = unique_email("racer");
    let contested = unique_email("contested");
    let user = create_user(platform, &a, json!({"email": old, "region": "oc"})).await?;
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    let r = platform
        .backend(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            &a.secret_key,
            Some(json!({"email": contested})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let mail = platform.smtp.wait_for(&contested, 0, MAIL_WAIT).await?;
    let code = long_code(&mail, "idm_email_change_code").unwrap_or_default();
    // Someone signs up with the address meanwhile.
    create_user(platform, &a, json!({"email": contested, "region": "wnam"})).await?;
    let r = platform
        .client_call(
            0,
            &a,
            Method::POST,
            "/v1/client/email_changes/confirm",
            None,
            Some(json!({"code": code})),
        )
        .await?;
    refused(&r, 409, "conflict");
    let read = platform
        .backend(Method::GET, &format!("/v1/users/{id}"), &a.secret_key, None)
        .await?;
    assert_eq!(read.json["email"], json!(old));
    let found = platform
        .backend(
            Method::GET,
            &format!("/v1/users?email={old}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(found.str("/id"), id);
    Ok(())
}

#[tokio::test]
async fn the_user_list_pages_newest_first_with_filters_and_never_crosses_issuers(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "List A").await?;
    let b = tenant(platform, "List B").await?;
    let mut created = Vec::new();
    for (i, region) in ["weur", "sam", "weur", "apac", "sam", "weur", "oc"]
        .iter()
        .enumerate()
    {
        let u = create_user(
            platform,
            &a,
            json!({"email": unique_email(&format!("l{i}")), "region": region, "name": format!("N{i}")}),
        )
        .await?;
        created.push((u["id"].as_str().unwrap_or_default().to_owned(), *region, u));
    }
    create_user(
        platform,
        &b,
        json!({"email": unique_email("b"), "region": "weur"}),
    )
    .await?;
    let newest_first: Vec<String> = created.iter().rev().map(|(id, _, _)| id.clone()).collect();

    // Three per page, following `starting_after` until `has_more` is false.
    let pages = every_page(platform, &a.secret_key, "/v1/users", 3, 20).await?;
    let mut seen = Vec::new();
    for page in &pages {
        // Profiles come from the stores, regions shown.
        for user in page["data"].as_array().into_iter().flatten() {
            let (_, region, made) = created
                .iter()
                .find(|(id, _, _)| user["id"] == json!(id))
                .ok_or_else(|| anyhow::anyhow!("a user of another issuer: {user}"))?;
            assert_eq!(user["region"], json!(region));
            assert_eq!(user["name"], made["name"]);
            assert_eq!(user["email"], made["email"]);
        }
        seen.extend(ids(page));
    }
    assert_eq!(seen, newest_first);

    // Default page: every user here (fewer than 20), has_more false.
    let r = platform
        .backend(Method::GET, "/v1/users", &a.secret_key, None)
        .await?;
    assert_eq!(ids(&r.json), newest_first);
    assert_eq!(r.json["has_more"], json!(false));

    // Region filter.
    let r = platform
        .backend(Method::GET, "/v1/users?region=weur", &a.secret_key, None)
        .await?;
    let weur: Vec<String> = created
        .iter()
        .rev()
        .filter(|(_, r, _)| *r == "weur")
        .map(|(id, _, _)| id.clone())
        .collect();
    assert_eq!(ids(&r.json), weur);
    let r = platform
        .backend(
            Method::GET,
            "/v1/users?region=weur&limit=1",
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(ids(&r.json), weur[..1].to_vec());
    assert_eq!(r.json["has_more"], json!(true));

    // Creation-time filters (the directory's time of each user).
    let global = platform.global().await?;
    let third: time::OffsetDateTime = global
        .query_one(
            "SELECT created_at FROM directory.users WHERE id = $1",
            &[&created[3].0],
        )
        .await?
        .get(0);
    let at = third.format(&time::format_description::well_known::Rfc3339)?;
    let encoded = at.replace('+', "%2B").replace(':', "%3A");
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/users?created_after={encoded}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(ids(&r.json), newest_first[..3].to_vec(), "{}", r.json);
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/users?created_before={encoded}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(ids(&r.json), newest_first[4..].to_vec(), "{}", r.json);

    // The other issuer sees its one user only.
    let r = platform
        .backend(Method::GET, "/v1/users", &b.secret_key, None)
        .await?;
    assert_eq!(ids(&r.json).len(), 1);
    assert!(created.iter().all(|(id, _, _)| !ids(&r.json).contains(id)));
    // Another issuer's user as a cursor: a plain 404.
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/users?starting_after={}", created[0].0),
            &b.secret_key,
            None,
        )
        .await?;
    refused(&r, 404, "not_found");

    // Bad inputs.
    let bad = [
        ("limit=0", 422, "validation_failed"),
        ("limit=101", 422, "validation_failed"),
        ("limit=ten", 422, "validation_failed"),
        ("starting_after=", 422, "validation_failed"),
        ("starting_after=usr_nope", 404, "not_found"),
        ("region=mars", 422, "validation_failed"),
        ("created_after=yesterday", 422, "validation_failed"),
        ("email=x%40example.com&limit=2", 422, "validation_failed"),
        ("colour=red", 400, "invalid_request"),
    ];
    bad_queries(platform, &a.secret_key, "/v1/users", &bad).await?;
    let r = with_restricted_key(platform, &a, Method::GET, "/v1/users", None).await?;
    refused(&r, 403, "insufficient_scope");

    // The listing statements walk the issuer's index from the cursor (the
    // planner would rather scan a table this small: seq scans are priced out
    // to show which index serves the statement at any size).
    let txn = global
        .simple_query("BEGIN; SET LOCAL enable_seqscan = off")
        .await;
    assert!(txn.is_ok());
    for (sql, index) in [
        (
            "EXPLAIN SELECT id, region FROM directory.users
              WHERE issuer_id = $1 AND status = 'active'
                AND (created_at, id) < (now(), 'usr_f')
              ORDER BY created_at DESC, id DESC LIMIT 21",
            "users_by_issuer_created",
        ),
        (
            "EXPLAIN SELECT id, region FROM directory.users
              WHERE issuer_id = $1 AND status = 'active' AND region = 'weur'
                AND (created_at, id) < (now(), 'usr_f')
              ORDER BY created_at DESC, id DESC LIMIT 21",
            "users_by_issuer_region_created",
        ),
    ] {
        let plan: Vec<String> = global
            .query(sql, &[&a.issuer_id])
            .await?
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{plan}");
        assert!(!plan.contains("Sort"), "the index gives the order: {plan}");
    }
    global.simple_query("ROLLBACK").await?;
    Ok(())
}

#[tokio::test]
async fn session_and_token_lists_are_paginated_not_cut_off() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Paged").await?;
    let b = tenant(platform, "Paged B").await?;
    let email = unique_email("many");
    let signed_up = platform
        .sign_up(
            &a,
            "https://app.example.com",
            None,
            &email,
            crate::factor_kit::PASSWORD,
        )
        .await?;
    assert_eq!(signed_up.status, 201, "{}", signed_up.json);
    let id = signed_up.str("/user/id");
    let mut tokens = vec![signed_up.str("/session_token")];
    for _ in 0..4 {
        let r = platform
            .sign_in(
                &a,
                "https://app.example.com",
                &email,
                crate::factor_kit::PASSWORD,
            )
            .await?;
        assert_eq!(r.status, 200, "{}", r.json);
        tokens.push(r.str("/session_token"));
    }
    let path = format!("/v1/users/{id}/sessions");
    let seen: Vec<String> = every_page(platform, &a.secret_key, &path, 2, 10)
        .await?
        .iter()
        .flat_map(ids)
        .collect();
    assert_eq!(seen.len(), 5);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5);
    // The client's own list pages the same way.
    let r = platform
        .client_call(
            0,
            &a,
            Method::GET,
            "/v1/client/sessions?limit=3",
            Some(&tokens[0]),
            None,
        )
        .await?;
    assert_eq!(ids(&r.json).len(), 3, "{}", r.json);
    assert_eq!(r.json["has_more"], json!(true));
    assert_eq!(ids(&r.json), seen[..3].to_vec());
    let r = platform
        .client_call(
            0,
            &a,
            Method::GET,
            "/v1/client/sessions?limit=500",
            Some(&tokens[0]),
            None,
        )
        .await?;
    refused(&r, 422, "validation_failed");
    // A cursor from another issuer's user is not found.
    let r = platform
        .backend(Method::GET, &format!("{path}?limit=2"), &b.secret_key, None)
        .await?;
    refused(&r, 404, "not_found");

    // Personal tokens too.
    for n in 0..3 {
        let r = platform
            .backend(
                Method::POST,
                &format!("/v1/users/{id}/personal_tokens"),
                &a.secret_key,
                Some(json!({"name": format!("t{n}"), "scopes": ["x:read"]})),
            )
            .await?;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let tokens_path = format!("/v1/users/{id}/personal_tokens");
    let first = platform
        .backend(
            Method::GET,
            &format!("{tokens_path}?limit=2"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(ids(&first.json).len(), 2);
    assert_eq!(first.json["has_more"], json!(true));
    let last = ids(&first.json).last().cloned().unwrap_or_default();
    let second = platform
        .backend(
            Method::GET,
            &format!("{tokens_path}?limit=2&starting_after={last}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(ids(&second.json).len(), 1);
    assert_eq!(second.json["has_more"], json!(false));
    assert_eq!(second.json["data"][0]["name"], json!("t0"));
    Ok(())
}

#[tokio::test]
async fn a_page_whose_region_is_down_fails_clearly_and_other_regions_still_list(
) -> anyhow::Result<()> {
    // Own platform: stops a regional store.
    let platform = Platform::start_with(idm_testkit::Options::default()).await?;
    let a = platform.create_account("Outage").await?;
    let oc = create_user(
        &platform,
        &a,
        json!({"email": "oc@example.com", "region": "oc"}),
    )
    .await?;
    let weur = create_user(
        &platform,
        &a,
        json!({"email": "eu@example.com", "region": "weur"}),
    )
    .await?;
    platform.stop_service("user-store-oc").await?;
    // A page holding an oc user cannot be answered whole: refused, not cut.
    let r = platform
        .backend(Method::GET, "/v1/users", &a.secret_key, None)
        .await?;
    refused(&r, 503, "region_unavailable");
    // The other regions' users still list.
    let r = platform
        .backend(Method::GET, "/v1/users?region=weur", &a.secret_key, None)
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        ids(&r.json),
        vec![weur["id"].as_str().unwrap_or_default().to_owned()]
    );
    // And a profile change there waits for its region too.
    let r = platform
        .backend(
            Method::PATCH,
            &format!("/v1/users/{}", oc["id"].as_str().unwrap_or_default()),
            &a.secret_key,
            Some(json!({"name": "Later"})),
        )
        .await?;
    assert_eq!(r.status, 503, "{}", r.json);
    platform.stop().await
}
