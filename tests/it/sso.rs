//! Single sign-on against a real OpenID Connect provider (node
//! oidc-provider, started by `tests/viewer/oidc.mjs`), with headless
//! Chromium going through the provider's login and consent pages: groups
//! map to roles, a user without a mapped group is refused, a local
//! account's name cannot be taken over, the account has no password here,
//! and every login, good or bad, is in the audit trail.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{free_port, http_exchange, skip, Archive, Backend};
use serde_json::Value;
use tessera::auth::oidc::RawOidc;
use tessera::model::{Role, Roles};

const SECRET: &str = "client-secret-for-tests";
const PASSWORD: &str = "Corr3ct-horse";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn missing_tool() -> Option<&'static str> {
    if !manifest().join("web/node_modules/oidc-provider").is_dir() {
        return Some("oidc-provider is not installed (scripts/install-viewer)");
    }
    if !manifest().join("web/node_modules/playwright-core").is_dir() {
        return Some("playwright-core is not installed (scripts/install-viewer)");
    }
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is not installed (scripts/install-viewer --with-browser)");
    }
    None
}

async fn audit_records(archive: &Archive, token: &str, query: &str, want: usize) -> Vec<Value> {
    let auth = format!("Bearer {token}");
    let mut last = Vec::new();
    for _ in 0..100 {
        let rsp = http_exchange(
            "127.0.0.1",
            archive.http_port,
            "GET",
            &format!("/api/v1/audit?{query}"),
            None,
            &[("Authorization", &auth)],
        )
        .await;
        assert_eq!(rsp.status, 200, "{}", rsp.body);
        last = rsp.json()["records"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if last.len() >= want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("wanted {want} records for {query}: {last:#?}");
}

async fn single_sign_on_maps_groups_to_roles(backend: Backend) {
    if let Some(reason) = missing_tool() {
        return skip("single_sign_on_maps_groups_to_roles", reason);
    }
    let port = free_port();
    let archive = Archive::start_with(backend, |raw| {
        raw.oidc = RawOidc {
            issuer: Some(format!("http://127.0.0.1:{port}")),
            client_id: Some("tessera".into()),
            client_secret: Some(SECRET.into()),
            scopes: Some(vec!["profile".into(), "email".into(), "groups".into()]),
            roles: Some(
                [
                    ("radiology".to_owned(), vec!["radiologist".to_owned()]),
                    ("referrers".to_owned(), vec!["referring".to_owned()]),
                ]
                .into(),
            ),
            label: Some("Hospital login".into()),
            ..Default::default()
        };
    })
    .await;
    let accounts = tessera::auth::Accounts::new(archive.index().await, Default::default());
    accounts
        .add_user("carol", &Roles([Role::Admin].into()), PASSWORD, false, "")
        .await
        .expect("local user");
    accounts
        .add_user("aud", &Roles([Role::Auditor].into()), PASSWORD, false, "")
        .await
        .expect("auditor");
    let auditor = accounts
        .create_token("aud", "t", None, 1)
        .await
        .expect("token")
        .secret;

    // The provider's answers, before any browser: a callback without the
    // login's cookie, and one the provider refused.
    let rsp = http_exchange(
        "127.0.0.1",
        archive.http_port,
        "GET",
        "/login/oidc/callback?code=abc&state=def",
        None,
        &[],
    )
    .await;
    assert_eq!(rsp.status, 400, "{}", rsp.body);
    assert!(
        rsp.body.contains("has expired or did not start here"),
        "{}",
        rsp.body
    );
    let rsp = http_exchange(
        "127.0.0.1",
        archive.http_port,
        "GET",
        "/login/oidc/callback?error=access_denied&error_description=no",
        None,
        &[],
    )
    .await;
    assert_eq!(rsp.status, 401, "{}", rsp.body);
    let rsp = http_exchange("127.0.0.1", archive.http_port, "GET", "/login", None, &[]).await;
    assert!(rsp.body.contains("Hospital login"), "{}", rsp.body);

    let accounts_json = serde_json::json!({
        "anna": {"groups": ["radiology", "staff"], "family_name": "Nguyễn", "given_name": "Anh"},
        "rex": {"groups": ["referrers"], "family_name": "Rex", "given_name": "Tom"},
        "bob": {"groups": ["staff"]},
        "carol": {"groups": ["radiology"]},
    });
    let base = format!("http://127.0.0.1:{}", archive.http_port);
    let out = tokio::process::Command::new("node")
        .arg(manifest().join("tests/viewer/oidc.mjs"))
        .args([
            "--base",
            &base,
            "--port",
            &port.to_string(),
            "--secret",
            SECRET,
        ])
        .args(["--accounts", &accounts_json.to_string()])
        .args(["--login", "anna", "--login", "rex", "--login", "bob"])
        .args(["--login", "carol"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The provider may print its own warnings first; ours is the last line.
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let seen: Value = last
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON from oidc.mjs: {stdout}"));

    assert_eq!(seen["anna"]["session"]["user"], "anna", "{seen}");
    assert_eq!(
        seen["anna"]["session"]["roles"],
        serde_json::json!(["radiologist"]),
        "{seen}"
    );
    assert_eq!(
        seen["rex"]["session"]["roles"],
        serde_json::json!(["referring"]),
        "{seen}"
    );
    let bob = seen["bob"]["error"].as_str().unwrap_or_default();
    assert!(bob.contains("no Tessera role"), "{seen}");
    assert_eq!(seen["bob"]["session_status"], 401, "{seen}");
    let carol = seen["carol"]["error"].as_str().unwrap_or_default();
    assert!(carol.contains("local account"), "{seen}");

    let anna = accounts.user("anna").await.expect("anna's account");
    assert_eq!(anna.source, "oidc");
    assert_eq!(anna.physician_name, "Nguyễn^Anh");
    let rex = accounts.user("rex").await.expect("rex's account");
    assert_eq!(rex.physician_name, "Rex^Tom");
    assert!(matches!(
        accounts.check_password("anna", "anything").await,
        Err(tessera::auth::AuthError::BadCredentials)
    ));
    assert!(
        accounts
            .set_password("anna", PASSWORD, false, None)
            .await
            .is_err(),
        "no password for an account the provider vouches for"
    );
    assert!(accounts.user("bob").await.is_err(), "bob got no account");
    let carol = accounts.user("carol").await.expect("carol");
    assert_eq!(carol.source, "local");
    assert_eq!(carol.roles, Roles([Role::Admin].into()));

    let good = audit_records(&archive, &auditor, "event=login&user=anna", 1).await;
    assert_eq!(good[0]["outcome"], 0, "{good:#?}");
    let bad = audit_records(&archive, &auditor, "event=login&user=bob", 1).await;
    assert_ne!(bad[0]["outcome"], 0, "{bad:#?}");
}

on_both_backends!(single_sign_on_maps_groups_to_roles);
