//! Organizations and memberships: CRUD, issuer-defined roles, cursor
//! pagination, ids only in memberships, another issuer's organization a
//! plain 404, restricted keys refused, bad inputs with stable codes.

use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};

async fn call(
    platform: &Platform,
    method: Method,
    path: &str,
    tenant: &Tenant,
    body: Option<Value>,
) -> anyhow::Result<Response> {
    platform
        .backend(method, path, &tenant.secret_key, body)
        .await
}

async fn new_user(platform: &Platform, tenant: &Tenant, local: &str) -> anyhow::Result<String> {
    let r = call(
        platform,
        Method::POST,
        "/v1/users",
        tenant,
        Some(json!({"email": idm_testkit::unique_email(local), "region": "enam"})),
    )
    .await?;
    anyhow::ensure!(r.status == 201, "user not created: {}", r.json);
    Ok(r.str("/id"))
}

fn ids(r: &Response) -> Vec<String> {
    r.json["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    i["id"]
                        .as_str()
                        .or_else(|| i["user_id"].as_str())
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn organizations_are_created_listed_changed_and_deleted_per_issuer() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Org A").await?;
    let b = platform.create_account("Org B").await?;

    // Created with the default roles, or the issuer's own.
    let first = call(
        platform,
        Method::POST,
        "/v1/organizations",
        &a,
        Some(json!({"name": "Acme"})),
    )
    .await?;
    assert_eq!(first.status, 201, "{}", first.json);
    let first_id = first.str("/id");
    assert!(first_id.starts_with("org_"), "{first_id}");
    assert_eq!(first.json["roles"], json!(["admin", "member"]));
    assert_eq!(first.json["metadata"], json!({}));
    let second = call(
        platform,
        Method::POST,
        "/v1/organizations",
        &a,
        Some(json!({"name": "Beta", "roles": ["owner", "billing", "viewer"], "metadata": {"tier": "gold"}})),
    )
    .await?;
    assert_eq!(second.status, 201, "{}", second.json);
    assert_eq!(second.json["roles"], json!(["owner", "billing", "viewer"]));
    let third = call(
        platform,
        Method::POST,
        "/v1/organizations",
        &a,
        Some(json!({"name": "Gamma"})),
    )
    .await?;
    let third_id = third.str("/id");
    let second_id = second.str("/id");
    let theirs = call(
        platform,
        Method::POST,
        "/v1/organizations",
        &b,
        Some(json!({"name": "B's"})),
    )
    .await?;
    let theirs_id = theirs.str("/id");
    assert_eq!(
        platform
            .last_event(&a.issuer_id, "organization.created")
            .await?
            .map(|e| e["data"].clone()),
        Some(json!({"organization_id": third_id}))
    );

    // Newest first, a page at a time, never another issuer's.
    let page = call(platform, Method::GET, "/v1/organizations?limit=2", &a, None).await?;
    assert_eq!(page.status, 200, "{}", page.json);
    assert_eq!(ids(&page), vec![third_id.clone(), second_id.clone()]);
    assert_eq!(page.json["has_more"], json!(true));
    let next = call(
        platform,
        Method::GET,
        &format!("/v1/organizations?limit=2&starting_after={second_id}"),
        &a,
        None,
    )
    .await?;
    assert_eq!(ids(&next), vec![first_id.clone()]);
    assert_eq!(next.json["has_more"], json!(false));
    let all = call(platform, Method::GET, "/v1/organizations", &a, None).await?;
    assert!(!ids(&all).contains(&theirs_id));
    assert_eq!(
        ids(&call(platform, Method::GET, "/v1/organizations", &b, None).await?),
        vec![theirs_id.clone()]
    );

    // Read and changed.
    let got = call(
        platform,
        Method::GET,
        &format!("/v1/organizations/{second_id}"),
        &a,
        None,
    )
    .await?;
    assert_eq!((got.status, got.str("/name")), (200, "Beta".to_owned()));
    let changed = call(
        platform,
        Method::PATCH,
        &format!("/v1/organizations/{second_id}"),
        &a,
        Some(json!({"name": "Beta Corp", "roles": ["owner", "viewer"]})),
    )
    .await?;
    assert_eq!(changed.status, 200, "{}", changed.json);
    assert_eq!(changed.str("/name"), "Beta Corp");
    assert_eq!(changed.json["roles"], json!(["owner", "viewer"]));
    assert_eq!(changed.json["metadata"], json!({"tier": "gold"}));
    assert!(
        platform
            .count_events(&a.issuer_id, "organization.updated")
            .await?
            >= 1
    );

    // Another issuer: a plain 404 on every route, and nothing changes.
    for (method, path, body) in [
        (Method::GET, format!("/v1/organizations/{second_id}"), None),
        (
            Method::PATCH,
            format!("/v1/organizations/{second_id}"),
            Some(json!({"name": "Mine"})),
        ),
        (
            Method::DELETE,
            format!("/v1/organizations/{second_id}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/organizations/{second_id}/memberships"),
            None,
        ),
        // Nor is A's organization a cursor for B's list.
        (
            Method::GET,
            format!("/v1/organizations?starting_after={second_id}"),
            None,
        ),
    ] {
        let r = call(platform, method.clone(), &path, &b, body).await?;
        assert_eq!(
            (r.status, r.code()),
            (404, Some("not_found")),
            "{method} {path}: {}",
            r.json
        );
    }
    let still = call(
        platform,
        Method::GET,
        &format!("/v1/organizations/{second_id}"),
        &a,
        None,
    )
    .await?;
    assert_eq!(still.str("/name"), "Beta Corp");

    // Bad inputs.
    for body in [
        json!({"name": ""}),
        json!({"name": "x", "roles": []}),
        json!({"name": "x", "roles": ["Admin"]}),
        json!({"name": "x", "roles": ["a", "a"]}),
        json!({"name": "x", "metadata": "not an object"}),
    ] {
        let r = call(
            platform,
            Method::POST,
            "/v1/organizations",
            &a,
            Some(body.clone()),
        )
        .await?;
        assert_eq!(
            (r.status, r.code()),
            (422, Some("validation_failed")),
            "{body}: {}",
            r.json
        );
    }
    let r = call(
        platform,
        Method::POST,
        "/v1/organizations",
        &a,
        Some(json!({"name": "x", "colour": "red"})),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (400, Some("invalid_request")),
        "{}",
        r.json
    );
    // The list rules of every list (LIFECYCLE.md "Lists"): a bad limit is
    // `validation_failed`, a cursor that is none of the list's ids (unknown,
    // malformed) `not_found`.
    for (query, status, code) in [
        ("limit=0", 422, "validation_failed"),
        ("limit=101", 422, "validation_failed"),
        ("limit=many", 422, "validation_failed"),
        (
            "starting_after=org_00000000000000000000000000000000",
            404,
            "not_found",
        ),
        ("starting_after=nonsense", 404, "not_found"),
    ] {
        let r = call(
            platform,
            Method::GET,
            &format!("/v1/organizations?{query}"),
            &a,
            None,
        )
        .await?;
        assert_eq!(
            (r.status, r.code()),
            (status, Some(code)),
            "{query}: {}",
            r.json
        );
    }
    let r = call(
        platform,
        Method::GET,
        "/v1/organizations/org_nope",
        &a,
        None,
    )
    .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));

    // Restricted keys are refused on every organization route.
    for (method, path) in [
        (Method::POST, "/v1/organizations".to_owned()),
        (Method::GET, "/v1/organizations".to_owned()),
        (Method::GET, format!("/v1/organizations/{first_id}")),
        (Method::DELETE, format!("/v1/organizations/{first_id}")),
        (
            Method::GET,
            format!("/v1/organizations/{first_id}/memberships"),
        ),
    ] {
        let r = platform
            .backend(
                method.clone(),
                &path,
                &a.restricted_key,
                Some(json!({"name": "x"})),
            )
            .await?;
        assert!(
            [401, 403].contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.json
        );
    }

    // Deleted: gone for good, announced.
    let r = call(
        platform,
        Method::DELETE,
        &format!("/v1/organizations/{first_id}"),
        &a,
        None,
    )
    .await?;
    assert_eq!((r.status, r.str("/id")), (200, first_id.clone()));
    let r = call(
        platform,
        Method::GET,
        &format!("/v1/organizations/{first_id}"),
        &a,
        None,
    )
    .await?;
    assert_eq!(r.code(), Some("not_found"));
    let r = call(
        platform,
        Method::DELETE,
        &format!("/v1/organizations/{first_id}"),
        &a,
        None,
    )
    .await?;
    assert_eq!(r.code(), Some("not_found"));
    assert_eq!(
        platform
            .last_event(&a.issuer_id, "organization.deleted")
            .await?
            .map(|e| e["data"].clone()),
        Some(json!({"organization_id": first_id}))
    );
    Ok(())
}

#[tokio::test]
async fn memberships_hold_ids_and_one_of_the_organizations_roles() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Members A").await?;
    let b = platform.create_account("Members B").await?;
    let org = call(
        platform,
        Method::POST,
        "/v1/organizations",
        &a,
        Some(json!({"name": "Team", "roles": ["admin", "member", "guest"]})),
    )
    .await?;
    let org_id = org.str("/id");
    let members = format!("/v1/organizations/{org_id}/memberships");
    let (u1, u2, u3) = (
        new_user(platform, &a, "m1").await?,
        new_user(platform, &a, "m2").await?,
        new_user(platform, &a, "m3").await?,
    );
    let foreign_user = new_user(platform, &b, "foreign").await?;

    for (user, role) in [(&u1, "admin"), (&u2, "member"), (&u3, "guest")] {
        let r = call(
            platform,
            Method::POST,
            &members,
            &a,
            Some(json!({"user_id": user, "role": role})),
        )
        .await?;
        assert_eq!(r.status, 201, "{}", r.json);
        assert_eq!(
            r.json.as_object().map(|o| {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                keys.into_iter().cloned().collect::<Vec<_>>()
            }),
            Some(vec![
                "created_at".to_owned(),
                "organization_id".into(),
                "role".into(),
                "user_id".into()
            ]),
            "ids only: {}",
            r.json
        );
    }
    assert_eq!(
        platform
            .last_event(&a.issuer_id, "membership.created")
            .await?
            .map(|e| e["data"].clone()),
        Some(json!({"organization_id": org_id, "user_id": u3, "role": "guest"}))
    );
    // The directory row holds ids and the role, nothing personal.
    let global = platform.global().await?;
    let row = global
        .query_one(
            "SELECT to_jsonb(m)::text FROM directory.memberships m WHERE organization_id = $1 AND user_id = $2",
            &[&org_id, &u1],
        )
        .await?;
    let stored: String = row.get(0);
    assert!(!stored.contains('@'), "{stored}");

    // Not one of its roles; twice; an unknown user; another issuer's user.
    let r = call(
        platform,
        Method::POST,
        &members,
        &a,
        Some(json!({"user_id": u1, "role": "owner"})),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (422, Some("validation_failed")),
        "{}",
        r.json
    );
    let r = call(
        platform,
        Method::POST,
        &members,
        &a,
        Some(json!({"user_id": u1, "role": "member"})),
    )
    .await?;
    assert_eq!((r.status, r.code()), (409, Some("conflict")), "{}", r.json);
    let r = call(
        platform,
        Method::POST,
        &members,
        &a,
        Some(json!({"user_id": "usr_00000000000000000000000000000000", "role": "member"})),
    )
    .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    let r = call(
        platform,
        Method::POST,
        &members,
        &a,
        Some(json!({"user_id": foreign_user, "role": "member"})),
    )
    .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    let r = call(
        platform,
        Method::POST,
        &members,
        &a,
        Some(json!({"user_id": u1})),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (400, Some("invalid_request")),
        "{}",
        r.json
    );

    // Listed newest first, a page at a time.
    let page = call(
        platform,
        Method::GET,
        &format!("{members}?limit=2"),
        &a,
        None,
    )
    .await?;
    assert_eq!(ids(&page), vec![u3.clone(), u2.clone()], "{}", page.json);
    assert_eq!(page.json["has_more"], json!(true));
    let next = call(
        platform,
        Method::GET,
        &format!("{members}?limit=2&starting_after={u2}"),
        &a,
        None,
    )
    .await?;
    assert_eq!(ids(&next), vec![u1.clone()]);
    assert_eq!(next.json["has_more"], json!(false));

    // A user's organizations.
    let other_org = call(
        platform,
        Method::POST,
        "/v1/organizations",
        &a,
        Some(json!({"name": "Other"})),
    )
    .await?;
    let other_id = other_org.str("/id");
    let r = call(
        platform,
        Method::POST,
        &format!("/v1/organizations/{other_id}/memberships"),
        &a,
        Some(json!({"user_id": u1, "role": "member"})),
    )
    .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let mine = call(
        platform,
        Method::GET,
        &format!("/v1/users/{u1}/organizations"),
        &a,
        None,
    )
    .await?;
    assert_eq!(mine.status, 200, "{}", mine.json);
    let orgs: Vec<&str> = mine.json["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|m| m["organization_id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(orgs, vec![other_id.as_str(), org_id.as_str()]);
    let first = call(
        platform,
        Method::GET,
        &format!("/v1/users/{u1}/organizations?limit=1"),
        &a,
        None,
    )
    .await?;
    assert_eq!(first.json["has_more"], json!(true));
    let rest = call(
        platform,
        Method::GET,
        &format!("/v1/users/{u1}/organizations?limit=1&starting_after={other_id}"),
        &a,
        None,
    )
    .await?;
    assert_eq!(rest.json["data"][0]["organization_id"], json!(org_id));
    assert_eq!(rest.json["has_more"], json!(false));

    // Role changes: only to one of its roles; a role in use stays.
    let one = format!("{members}/{u2}");
    let r = call(
        platform,
        Method::PATCH,
        &one,
        &a,
        Some(json!({"role": "admin"})),
    )
    .await?;
    assert_eq!(
        (r.status, r.str("/role")),
        (200, "admin".to_owned()),
        "{}",
        r.json
    );
    assert_eq!(
        platform
            .last_event(&a.issuer_id, "membership.updated")
            .await?
            .map(|e| e["data"].clone()),
        Some(json!({"organization_id": org_id, "user_id": u2, "role": "admin"}))
    );
    let r = call(
        platform,
        Method::PATCH,
        &one,
        &a,
        Some(json!({"role": "superuser"})),
    )
    .await?;
    assert_eq!((r.status, r.code()), (422, Some("validation_failed")));
    let r = call(
        platform,
        Method::PATCH,
        &format!("/v1/organizations/{org_id}"),
        &a,
        Some(json!({"roles": ["member", "guest"]})),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (422, Some("validation_failed")),
        "{}",
        r.json
    );
    let r = call(
        platform,
        Method::PATCH,
        &format!("{members}/{foreign_user}"),
        &a,
        Some(json!({"role": "admin"})),
    )
    .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));

    // Another issuer sees nothing of it.
    for (method, path, body) in [
        (Method::GET, members.clone(), None),
        (
            Method::POST,
            members.clone(),
            Some(json!({"user_id": foreign_user, "role": "member"})),
        ),
        (Method::PATCH, one.clone(), Some(json!({"role": "guest"}))),
        (Method::DELETE, one.clone(), None),
        (Method::GET, format!("/v1/users/{u1}/organizations"), None),
    ] {
        let r = call(platform, method.clone(), &path, &b, body).await?;
        assert_eq!(
            (r.status, r.code()),
            (404, Some("not_found")),
            "{method} {path}: {}",
            r.json
        );
    }
    // Restricted keys are refused.
    for (method, path) in [
        (Method::POST, members.clone()),
        (Method::PATCH, one.clone()),
        (Method::DELETE, one.clone()),
        (Method::GET, format!("/v1/users/{u1}/organizations")),
    ] {
        let r = platform
            .backend(
                method.clone(),
                &path,
                &a.restricted_key,
                Some(json!({"role": "guest"})),
            )
            .await?;
        assert!(
            [401, 403].contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.json
        );
    }

    // Removed; an organization's deletion takes its memberships with it.
    let r = call(platform, Method::DELETE, &one, &a, None).await?;
    assert_eq!((r.status, r.str("/user_id")), (200, u2.clone()));
    let r = call(platform, Method::DELETE, &one, &a, None).await?;
    assert_eq!(r.code(), Some("not_found"));
    assert_eq!(
        platform
            .last_event(&a.issuer_id, "membership.deleted")
            .await?
            .map(|e| e["data"].clone()),
        Some(json!({"organization_id": org_id, "user_id": u2}))
    );
    let r = call(
        platform,
        Method::DELETE,
        &format!("/v1/organizations/{org_id}"),
        &a,
        None,
    )
    .await?;
    assert_eq!(r.status, 200);
    let left: i64 = global
        .query_one(
            "SELECT count(*) FROM directory.memberships WHERE organization_id = $1",
            &[&org_id],
        )
        .await?
        .get(0);
    assert_eq!(left, 0);
    Ok(())
}
