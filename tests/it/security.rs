//! Users, roles, sessions and tokens on the HTTP port: the route table
//! walked for every role, login with lockout, forced password change,
//! CSRF, token scopes, expiry and revocation, the loopback-only default,
//! and `tessera user`.

use crate::common;

use common::{http_exchange, Archive, Backend, Exchange};
use tessera::auth::access::{Access, DIMSE_RULES, RULES};
use tessera::auth::Accounts;
use tessera::model::{Role, Roles};

const PASSWORD: &str = "Corr3ct-horse";
const JSON: &str = "application/json";

async fn call(
    archive: &Archive,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Exchange {
    http_exchange(
        "127.0.0.1",
        archive.http_port,
        method,
        path,
        body.map(|b| (JSON, b)),
        headers,
    )
    .await
}

fn accounts(index: tessera::index::Index) -> Accounts {
    Accounts::new(index, Default::default())
}

/// A path the rule matches: `*` and `**` become concrete segments.
fn example(pattern: &str) -> String {
    pattern.replace("/**", "/studies").replace('*', "x1")
}

/// Every line of the route table, for every role, with a token holding
/// only that role: allowed roles get past authorisation (any status but
/// 401/403), the others get 403, and no credentials get 401.
async fn route_table_for_every_role(backend: Backend) {
    let archive = Archive::start(backend).await;
    let accounts = accounts(archive.index().await);
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let name = format!("{role}-user");
        let roles = Roles([role].into_iter().collect());
        accounts
            .add_user(&name, &roles, PASSWORD, false, "Doe^Referring")
            .await
            .expect("user");
        let made = accounts
            .create_token(&name, "walk", None, 1)
            .await
            .expect("token");
        tokens.push((role, format!("Bearer {}", made.secret)));
    }
    let mut checked = 0;
    for rule in RULES.iter().filter(|r| r.access != Access::Public) {
        let path = example(rule.path);
        let anonymous = call(&archive, rule.method, &path, None, &[]).await;
        assert_eq!(
            anonymous.status, 401,
            "{} {path} without credentials: {}",
            rule.method, anonymous.body
        );
        for (role, auth) in &tokens {
            let got = call(
                &archive,
                rule.method,
                &path,
                None,
                &[("Authorization", auth)],
            )
            .await;
            let allowed = rule.access.roles().contains(role);
            if allowed {
                assert!(
                    got.status != 401 && got.status != 403,
                    "{role} must be allowed {} {path}: {} {}",
                    rule.method,
                    got.status,
                    got.body
                );
            } else {
                assert_eq!(
                    got.status, 403,
                    "{role} must be refused {} {path}: {}",
                    rule.method, got.body
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} checks");
    // A route the table does not name is for admins only.
    let (_, radiologist) = &tokens[2];
    let unknown = call(
        &archive,
        "GET",
        "/not-in-the-table",
        None,
        &[("Authorization", radiologist)],
    )
    .await;
    assert_eq!(unknown.status, 403);
}

fn session_headers(cookie: &str, csrf: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Cookie", format!("tessera_session={cookie}")),
        ("X-CSRF-Token", csrf.to_owned()),
    ]
}

fn refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn login(archive: &Archive, name: &str, password: &str) -> Exchange {
    let body = serde_json::json!({"name": name, "password": password}).to_string();
    call(archive, "POST", "/login", Some(&body), &[]).await
}

/// The life of an account: created by an admin with the password rules
/// enforced, forced to change at first login, CSRF on changes, lockout
/// with Retry-After, tokens limited to their roles, expiring and
/// revocable, disabled accounts losing their sessions, logout.
async fn accounts_sessions_and_tokens(backend: Backend) {
    let archive = Archive::start(backend).await;

    // No account yet: loopback may do everything, including making the
    // first one; the password rules apply.
    let weak = serde_json::json!({"name": "ada", "roles": ["admin", "radiologist"], "password": "password"});
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/users",
        Some(&weak.to_string()),
        &[],
    )
    .await;
    assert_eq!(rsp.status, 400, "{}", rsp.body);
    assert!(
        rsp.body.contains("at least 8") || rsp.body.contains("upper-case"),
        "{}",
        rsp.body
    );
    let good =
        serde_json::json!({"name": "ada", "roles": ["admin", "radiologist"], "password": PASSWORD});
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/users",
        Some(&good.to_string()),
        &[],
    )
    .await;
    assert_eq!(rsp.status, 201, "{}", rsp.body);
    assert_eq!(rsp.json()["must_change"], true);

    // Now everything but the probes and the login page needs a login.
    assert_eq!(
        call(&archive, "GET", "/api/v1/stats", None, &[])
            .await
            .status,
        401
    );
    assert_eq!(
        call(&archive, "GET", "/healthz", None, &[]).await.status,
        200
    );
    let page = call(
        &archive,
        "GET",
        "/viewer/",
        None,
        &[("Accept", "text/html")],
    )
    .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login?next=/viewer/"));
    let form = call(&archive, "GET", "/login?next=/viewer/", None, &[]).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=password"), "{}", form.body);

    // First login: the cookies are HttpOnly/SameSite=Strict and nothing
    // but the password change is allowed.
    let rsp = login(&archive, "ada", PASSWORD).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    let set_cookie = rsp
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("tessera_session="))
        .map(|(_, v)| v.clone())
        .expect("session cookie");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = rsp.cookie("tessera_session").expect("cookie");
    let csrf = rsp.json()["csrf"].as_str().expect("csrf").to_owned();
    assert_eq!(rsp.cookie("tessera_csrf").as_deref(), Some(csrf.as_str()));
    let with_session = session_headers(&cookie, &csrf);
    let rsp = call(&archive, "GET", "/api/v1/stats", None, &refs(&with_session)).await;
    assert_eq!(rsp.status, 403, "{}", rsp.body);
    assert!(
        rsp.body.contains("password must be changed"),
        "{}",
        rsp.body
    );

    // A state change with the session cookie but no CSRF token is refused.
    let new_password = "N3w-Passw0rd!";
    let change = serde_json::json!({"current": PASSWORD, "new": new_password}).to_string();
    let cookie_only = [("Cookie", format!("tessera_session={cookie}"))];
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/account/password",
        Some(&change),
        &refs(&cookie_only),
    )
    .await;
    assert_eq!(rsp.status, 403, "{}", rsp.body);
    assert!(rsp.body.contains("CSRF"), "{}", rsp.body);
    let wrong_csrf = session_headers(&cookie, "0123456789abcdef0123456789abcdef");
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/account/password",
        Some(&change),
        &refs(&wrong_csrf),
    )
    .await;
    assert_eq!(rsp.status, 403, "{}", rsp.body);
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/account/password",
        Some(&change),
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 204, "{}", rsp.body);
    let rsp = call(&archive, "GET", "/api/v1/stats", None, &refs(&with_session)).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);

    // A second account made by the admin; wrong passwords lock it.
    let bob = serde_json::json!({"name": "bob", "roles": ["technologist"], "password": PASSWORD});
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/users",
        Some(&bob.to_string()),
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 201, "{}", rsp.body);
    for attempt in 1..=tessera::auth::LOCK_AFTER {
        let rsp = login(&archive, "bob", "Wrong-passw0rd").await;
        assert_eq!(rsp.status, 401, "attempt {attempt}: {}", rsp.body);
    }
    let rsp = login(&archive, "bob", PASSWORD).await;
    assert_eq!(rsp.status, 429, "locked: {}", rsp.body);
    let retry: i64 = rsp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=30).contains(&retry), "{retry}");
    // An unknown name reads like a wrong password.
    let rsp = login(&archive, "nobody", PASSWORD).await;
    assert_eq!(rsp.status, 401);
    assert!(
        rsp.body.contains("invalid name or password"),
        "{}",
        rsp.body
    );
    // An admin's reset lifts the lock (and forces a change again).
    let reset = serde_json::json!({"password": PASSWORD}).to_string();
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/users/bob/password",
        Some(&reset),
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 204, "{}", rsp.body);
    let rsp = login(&archive, "bob", PASSWORD).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    assert_eq!(rsp.json()["must_change"], true);
    let bob_cookie = rsp.cookie("tessera_session").expect("cookie");

    // Tokens: only roles the user holds, limited to the ones asked for.
    let too_much = serde_json::json!({"name": "x", "roles": ["auditor"]}).to_string();
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/account/tokens",
        Some(&too_much),
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 400, "{}", rsp.body);
    let zero_days = serde_json::json!({"name": "x", "days": 0}).to_string();
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/account/tokens",
        Some(&zero_days),
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 400, "{}", rsp.body);
    let scoped =
        serde_json::json!({"name": "reader", "roles": ["radiologist"], "days": 30}).to_string();
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/account/tokens",
        Some(&scoped),
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 201, "{}", rsp.body);
    let secret = rsp.json()["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("tsk_"), "{secret}");
    let bearer = [("Authorization", format!("Bearer {secret}"))];
    let rsp = call(&archive, "GET", "/dicom-web/studies", None, &refs(&bearer)).await;
    assert!(
        rsp.status == 200 || rsp.status == 204,
        "{} {}",
        rsp.status,
        rsp.body
    );
    let rsp = call(&archive, "GET", "/api/v1/users", None, &refs(&bearer)).await;
    assert_eq!(
        rsp.status, 403,
        "radiologist token on admin route: {}",
        rsp.body
    );
    // Bearer tokens need no CSRF token: no cookie rides along.
    let rsp = call(
        &archive,
        "GET",
        "/api/v1/account/tokens",
        None,
        &refs(&bearer),
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    assert!(
        !rsp.body.contains("tsk_"),
        "secrets are never listed: {}",
        rsp.body
    );

    // Expiry: a token past its end is refused.
    let expiring =
        serde_json::json!({"name": "short", "roles": ["radiologist"], "days": 1}).to_string();
    let rsp = call(
        &archive,
        "POST",
        "/api/v1/account/tokens",
        Some(&expiring),
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 201, "{}", rsp.body);
    let short = rsp.json()["secret"].as_str().expect("secret").to_owned();
    let short_bearer = [("Authorization", format!("Bearer {short}"))];
    assert_eq!(
        call(&archive, "GET", "/api/v1/stats", None, &refs(&short_bearer))
            .await
            .status,
        200
    );
    expire_token(&archive, "short").await;
    assert_eq!(
        call(&archive, "GET", "/api/v1/stats", None, &refs(&short_bearer))
            .await
            .status,
        401
    );

    // Revocation takes effect at once.
    let rsp = call(
        &archive,
        "DELETE",
        "/api/v1/account/tokens/reader",
        None,
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 204, "{}", rsp.body);
    assert_eq!(
        call(&archive, "GET", "/dicom-web/studies", None, &refs(&bearer))
            .await
            .status,
        401
    );

    // Disabling an account ends its sessions.
    let disable = serde_json::json!({"disabled": true}).to_string();
    let rsp = call(
        &archive,
        "PATCH",
        "/api/v1/users/bob",
        Some(&disable),
        &refs(&with_session),
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    let bob_session = [("Cookie", format!("tessera_session={bob_cookie}"))];
    assert_eq!(
        call(
            &archive,
            "GET",
            "/api/v1/session",
            None,
            &refs(&bob_session)
        )
        .await
        .status,
        401
    );
    assert_eq!(login(&archive, "bob", PASSWORD).await.status, 401);

    // Logout ends the session.
    let rsp = call(&archive, "POST", "/logout", None, &refs(&with_session)).await;
    assert_eq!(rsp.status, 303, "{}", rsp.body);
    assert_eq!(
        call(&archive, "GET", "/api/v1/stats", None, &refs(&with_session))
            .await
            .status,
        401
    );
}

/// Move a token's expiry into the past, as time passing would.
async fn expire_token(archive: &Archive, name: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&archive.config.index_url)
        .await
        .expect("index");
    sqlx::query("UPDATE api_tokens SET expires_at = 1 WHERE name = $1")
        .bind(name)
        .execute(&pool)
        .await
        .expect("expire");
    pool.close().await;
}

/// This machine's first address that is not loopback.
fn outside_address() -> String {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .expect("this machine has a non-loopback IPv4 address")
        .to_owned()
}

/// With no account, a client from another address gets a page that says
/// how to create the first admin; loopback is served; the probes answer
/// everyone.
async fn loopback_only_until_the_first_user(backend: Backend) {
    let archive = Archive::start_with(backend, |raw| {
        raw.http.bind = Some("0.0.0.0:0".parse().expect("addr"));
    })
    .await;
    let outside = outside_address();
    let port = archive.http_port;
    let rsp = http_exchange(&outside, port, "GET", "/dicom-web/studies", None, &[]).await;
    assert_eq!(rsp.status, 403, "{}", rsp.body);
    assert!(
        rsp.body.contains("tessera user add --role admin NAME"),
        "{}",
        rsp.body
    );
    let rsp = http_exchange(&outside, port, "GET", "/healthz", None, &[]).await;
    assert_eq!(rsp.status, 200);
    let rsp = http_exchange("127.0.0.1", port, "GET", "/api/v1/stats", None, &[]).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);

    // Once an account exists, the outside client is asked to log in.
    accounts(archive.index().await)
        .add_user(
            "ada",
            &Roles([Role::Admin].into_iter().collect()),
            PASSWORD,
            false,
            "",
        )
        .await
        .expect("user");
    let mut status = 0;
    for _ in 0..50 {
        status = http_exchange(&outside, port, "GET", "/dicom-web/studies", None, &[])
            .await
            .status;
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
    let rsp = http_exchange(
        &outside,
        port,
        "POST",
        "/login",
        Some((
            JSON,
            &serde_json::json!({"name": "ada", "password": PASSWORD}).to_string(),
        )),
        &[],
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
}

/// `tessera user add|list|token|passwd|disable|revoke` against a running
/// server's index: the server notices the first account, and the printed
/// token works until it is revoked.
async fn user_command_line(backend: Backend) {
    let archive = Archive::start(backend).await;
    let data_dir = archive.dir.path().join("data");
    let index_url = archive.config.index_url.clone();
    let cli = |args: Vec<&'static str>, stdin: Option<&'static str>| {
        let data_dir = data_dir.clone();
        let index_url = index_url.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new(common::tessera_bin())
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--index-url")
                .arg(&index_url)
                .args(&args)
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("tessera runs");
            let mut input = child.stdin.take().expect("stdin");
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).await.expect("stdin");
            }
            drop(input);
            child.wait_with_output().await.expect("tessera exits")
        }
    };
    let weak = cli(
        vec!["user", "add", "--role", "admin", "root", "--password-stdin"],
        Some("short\n"),
    )
    .await;
    assert!(!weak.status.success());
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("at least 8"),
        "{}",
        String::from_utf8_lossy(&weak.stderr)
    );
    let bad_role = cli(
        vec![
            "user",
            "add",
            "--role",
            "wizard",
            "root",
            "--password-stdin",
        ],
        Some("Corr3ct-horse\n"),
    )
    .await;
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role"));
    let out = cli(
        vec![
            "user",
            "add",
            "--role",
            "admin",
            "--role",
            "radiologist",
            "root",
            "--password-stdin",
        ],
        Some("Corr3ct-horse\n"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The running server sees the first account and asks for a login.
    let mut status = 0;
    for _ in 0..50 {
        status = call(&archive, "GET", "/api/v1/stats", None, &[])
            .await
            .status;
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "the server did not notice the first user");
    // The first account chose its own password: no forced change.
    let rsp = login(&archive, "root", PASSWORD).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    assert_eq!(rsp.json()["must_change"], false);

    let list = cli(vec!["user", "list"], None).await;
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("root") && text.contains("admin,radiologist"),
        "{text}"
    );

    let token = cli(
        vec![
            "user",
            "token",
            "root",
            "--name",
            "nightly",
            "--role",
            "radiologist",
            "--days",
            "7",
        ],
        None,
    )
    .await;
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let secret = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let bearer = [("Authorization", format!("Bearer {secret}"))];
    assert_eq!(
        call(&archive, "GET", "/api/v1/stats", None, &refs(&bearer))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&archive, "GET", "/api/v1/users", None, &refs(&bearer))
            .await
            .status,
        403
    );
    let revoke = cli(vec!["user", "revoke", "root", "nightly"], None).await;
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    assert_eq!(
        call(&archive, "GET", "/api/v1/stats", None, &refs(&bearer))
            .await
            .status,
        401
    );

    let passwd = cli(
        vec!["user", "passwd", "root", "--password-stdin"],
        Some("An0ther-pass!\n"),
    )
    .await;
    assert!(
        passwd.status.success(),
        "{}",
        String::from_utf8_lossy(&passwd.stderr)
    );
    assert_eq!(login(&archive, "root", PASSWORD).await.status, 401);
    let rsp = login(&archive, "root", "An0ther-pass!").await;
    assert_eq!(rsp.json()["must_change"], true, "{}", rsp.body);
    let disable = cli(vec!["user", "disable", "root"], None).await;
    assert!(disable.status.success());
    assert_eq!(login(&archive, "root", "An0ther-pass!").await.status, 401);
}

/// A referring physician's searches find only studies that name them
/// (case and diacritics aside), and any request naming another study is
/// answered as if it did not exist; the rest of the API stays closed.
async fn referring_sees_only_their_studies(backend: Backend) {
    if common::python().is_none() {
        return common::skip(
            "referring_sees_only_their_studies",
            "python with pydicom missing",
        );
    }
    let archive = Archive::start(backend).await;
    let dir = tempfile::tempdir().expect("tmp");
    let studies = [
        ("1.2.826.0.1.3680043.10.1.1", "Kowalski^Jan", "REF-A", "1"),
        ("1.2.826.0.1.3680043.10.1.2", "Other^Doc", "REF-B", "2"),
    ];
    for (uid, referring, patient, seed) in studies {
        let out_dir = dir.path().join(patient);
        let out = common::run_peer(
            "gen.py",
            &[
                out_dir.to_str().expect("utf8"),
                "--count",
                "1",
                "--study-uid",
                uid,
                "--patient-id",
                patient,
                "--referring",
                referring,
                "--seed",
                seed,
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(out_dir.join("img00000.dcm")).expect("generated file");
        assert_eq!(common::stow(archive.http_port, &bytes, &[]).await, 200);
    }
    let accounts = accounts(archive.index().await);
    let referring = Roles([Role::Referring].into_iter().collect());
    accounts
        .add_user("jan", &referring, PASSWORD, false, "KOWALSKI^Jan")
        .await
        .expect("user");
    accounts
        .add_user("nobody", &referring, PASSWORD, false, "")
        .await
        .expect("user");
    let token = |user: &'static str| {
        let accounts = accounts.clone();
        async move {
            let made = accounts
                .create_token(user, "t", None, 1)
                .await
                .expect("token");
            format!("Bearer {}", made.secret)
        }
    };
    let jan = token("jan").await;
    let nobody = token("nobody").await;
    let get = |path: String, auth: String| {
        let archive = &archive;
        async move { call(archive, "GET", &path, None, &[("Authorization", &auth)]).await }
    };
    let uids = |rsp: &Exchange| -> Vec<String> {
        rsp.json()
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["0020000D"]["Value"][0].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (mine, theirs) = (studies[0].0, studies[1].0);

    let rsp = get("/dicom-web/studies".into(), jan.clone()).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    assert_eq!(uids(&rsp), vec![mine.to_owned()]);
    let rsp = get(
        "/dicom-web/studies?ReferringPhysicianName=Other^Doc".into(),
        jan.clone(),
    )
    .await;
    assert_eq!(uids(&rsp), Vec::<String>::new(), "{}", rsp.body);
    let rsp = get("/dicom-web/series".into(), jan.clone()).await;
    assert_eq!(uids(&rsp), vec![mine.to_owned()], "{}", rsp.body);
    let rsp = get(format!("/dicom-web/studies/{mine}/metadata"), jan.clone()).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    let rsp = get(format!("/dicom-web/studies/{theirs}/metadata"), jan.clone()).await;
    assert_eq!(rsp.status, 404, "{}", rsp.body);
    let rsp = get(format!("/dicom-web/studies/{theirs}/series"), jan.clone()).await;
    assert_eq!(rsp.status, 404, "{}", rsp.body);
    let rsp = get(
        format!("/wado?requestType=WADO&studyUID={theirs}&seriesUID=1&objectUID=1"),
        jan.clone(),
    )
    .await;
    assert_eq!(rsp.status, 404, "{}", rsp.body);
    let rsp = get("/api/v1/patients/REF-A".into(), jan.clone()).await;
    assert_eq!(rsp.status, 403, "{}", rsp.body);
    // Without a physician name nothing names them.
    let rsp = get("/dicom-web/studies".into(), nobody.clone()).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    assert_eq!(uids(&rsp), Vec::<String>::new(), "{}", rsp.body);
    let rsp = get(
        format!("/dicom-web/studies/{mine}/metadata"),
        nobody.clone(),
    )
    .await;
    assert_eq!(rsp.status, 404, "{}", rsp.body);

    // Shares open a study to a referring user it does not name.
    accounts
        .add_user(
            "rad",
            &Roles([Role::Radiologist].into()),
            PASSWORD,
            false,
            "",
        )
        .await
        .expect("user");
    let rad = token("rad").await;
    let send = |method: &'static str, path: String, auth: String, body: Option<&'static str>| {
        let archive = &archive;
        async move { call(archive, method, &path, body, &[("Authorization", &auth)]).await }
    };
    let share = |who: &str| format!("/api/v1/studies/{theirs}/shares/{who}");
    let rsp = send("PUT", share("jan"), jan.clone(), None).await;
    assert_eq!(
        rsp.status, 403,
        "a referring user may not share: {}",
        rsp.body
    );
    let rsp = send("PUT", share("jan"), rad.clone(), Some(r#"{"days":0}"#)).await;
    assert_eq!(rsp.status, 400, "{}", rsp.body);
    let rsp = send("PUT", share("jan"), rad.clone(), Some("{days")).await;
    assert_eq!(rsp.status, 400, "{}", rsp.body);
    let rsp = send("PUT", share("rad"), rad.clone(), None).await;
    assert_eq!(
        rsp.status, 400,
        "a radiologist sees all anyway: {}",
        rsp.body
    );
    let rsp = send("PUT", share("ghost"), rad.clone(), None).await;
    assert_eq!(rsp.status, 404, "{}", rsp.body);
    let rsp = send(
        "PUT",
        "/api/v1/studies/1.2.3.999/shares/jan".into(),
        rad.clone(),
        None,
    )
    .await;
    assert_eq!(rsp.status, 404, "{}", rsp.body);
    let rsp = send("PUT", share("jan"), rad.clone(), Some(r#"{"days":7}"#)).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    assert_eq!(rsp.json()["shared_by"], "rad", "{}", rsp.body);
    let rsp = send("PUT", share("nobody"), rad.clone(), None).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    assert_eq!(rsp.json()["expires_at"], 0, "{}", rsp.body);

    let rsp = get("/dicom-web/studies".into(), jan.clone()).await;
    let mut seen = uids(&rsp);
    seen.sort();
    assert_eq!(
        seen,
        vec![mine.to_owned(), theirs.to_owned()],
        "{}",
        rsp.body
    );
    let rsp = get(
        "/dicom-web/studies?ReferringPhysicianName=Other^Doc".into(),
        jan.clone(),
    )
    .await;
    assert_eq!(uids(&rsp), vec![theirs.to_owned()], "{}", rsp.body);
    let rsp = get(format!("/dicom-web/studies/{theirs}/metadata"), jan.clone()).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    let rsp = get("/dicom-web/studies".into(), nobody.clone()).await;
    assert_eq!(uids(&rsp), vec![theirs.to_owned()], "{}", rsp.body);
    let rsp = get(format!("/api/v1/studies/{theirs}/shares"), rad.clone()).await;
    assert_eq!(rsp.status, 200, "{}", rsp.body);
    assert_eq!(rsp.json()["shares"].as_array().map(Vec::len), Some(2));

    // Revoked or expired, the study is hidden again.
    let rsp = send("DELETE", share("jan"), rad.clone(), None).await;
    assert_eq!(rsp.status, 204, "{}", rsp.body);
    let rsp = send("DELETE", share("jan"), rad.clone(), None).await;
    assert_eq!(rsp.status, 404, "{}", rsp.body);
    let rsp = get(format!("/dicom-web/studies/{theirs}/metadata"), jan.clone()).await;
    assert_eq!(rsp.status, 404, "{}", rsp.body);
    let rsp = get("/dicom-web/studies".into(), jan.clone()).await;
    assert_eq!(uids(&rsp), vec![mine.to_owned()], "{}", rsp.body);
    archive
        .index()
        .await
        .share_study(theirs, "nobody", "rad", 1)
        .await
        .expect("expired share");
    let rsp = get(
        format!("/dicom-web/studies/{theirs}/metadata"),
        nobody.clone(),
    )
    .await;
    assert_eq!(rsp.status, 404, "an expired share: {}", rsp.body);
    let rsp = get("/dicom-web/studies".into(), nobody).await;
    assert_eq!(uids(&rsp), Vec::<String>::new(), "{}", rsp.body);
}

/// What `identity.py` saw calling as `user` (no identity when `None`).
async fn call_as(archive: &Archive, user: Option<(&str, &str)>) -> serde_json::Value {
    let sample = common::ct_sample().expect("pydicom's CT_small.dcm");
    let port = archive.dicom_port.to_string();
    let mut args = vec![port.as_str(), sample.to_str().expect("utf8")];
    if let Some((name, password)) = user {
        args.extend(["--user", name, "--password", password]);
    }
    let out = common::run_peer("identity.py", &args).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).expect("json")
}

/// User identity negotiation on DIMSE: every row of the table's DIMSE
/// part for every role, each service tried once by an account holding
/// only that role (allowed: the service answers for itself; refused:
/// 0124 Not Authorized); a wrong password is rejected (A-ASSOCIATE-RJ);
/// with `dicom.user_identity = "required"` an association without one is
/// rejected, and DCMTK's storescu --user gets in.
async fn dimse_services_follow_the_user_roles(backend: Backend) {
    if common::python().is_none() || common::dcmtk("storescu").is_none() {
        return common::skip(
            "dimse_services_follow_the_user_roles",
            "pynetdicom or storescu missing",
        );
    }
    let archive = Archive::start(backend).await;
    let accounts = accounts(archive.index().await);
    for role in Role::ALL {
        accounts
            .add_user(role.as_str(), &Roles([role].into()), PASSWORD, false, "")
            .await
            .expect("user");
    }
    const NOT_AUTHORIZED: i64 = 0x0124;
    for role in Role::ALL {
        let mut seen = call_as(&archive, Some((role.as_str(), PASSWORD))).await;
        if seen.get("lost").is_some() {
            // A lost association says nothing about the rules; one more
            // try, and the first is kept in the log.
            eprintln!("{role}: association lost, trying again: {seen}");
            seen = call_as(&archive, Some((role.as_str(), PASSWORD))).await;
        }
        assert_eq!(seen["established"], true, "{role}: {seen}");
        assert_eq!(seen["echo"].as_i64(), Some(0), "{role}: {seen}");
        for (service, access) in DIMSE_RULES {
            let status = seen[service.as_str()].as_i64();
            let allowed = tessera::auth::access::allows(*access, [role]);
            assert!(
                status.is_some(),
                "{role} {}: no answer: {seen}",
                service.as_str()
            );
            assert_eq!(
                status != Some(NOT_AUTHORIZED),
                allowed,
                "{role} {}: {seen}",
                service.as_str()
            );
        }
    }
    let seen = call_as(&archive, Some(("rad", "Wrong-passw0rd"))).await;
    assert_eq!(
        seen["established"], false,
        "a wrong password is rejected at association: {seen}"
    );
    // Without an identity the peer rules alone apply (the default).
    let seen = call_as(&archive, None).await;
    assert_eq!(seen["store"].as_i64(), Some(0), "{seen}");

    let strict = Archive::start_with(backend, |raw| {
        raw.dicom.user_identity = Some("required".into());
    })
    .await;
    let accounts = accounts_of(&strict).await;
    accounts
        .add_user(
            "tech",
            &Roles([Role::Technologist].into()),
            PASSWORD,
            false,
            "",
        )
        .await
        .expect("user");
    let seen = call_as(&strict, None).await;
    assert_eq!(seen["established"], false, "no identity, required: {seen}");
    let sample = common::ct_sample().expect("pydicom's CT_small.dcm");
    let out = tokio::process::Command::new(common::dcmtk("storescu").expect("checked"))
        .args([
            "-aec",
            "TESSERA",
            "--user",
            "tech",
            "--password",
            PASSWORD,
            "127.0.0.1",
        ])
        .arg(strict.dicom_port.to_string())
        .arg(&sample)
        .env("TCP_NODELAY", "1")
        .output()
        .await
        .expect("storescu runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn accounts_of(archive: &Archive) -> Accounts {
    accounts(archive.index().await)
}

on_both_backends!(
    dimse_services_follow_the_user_roles,
    referring_sees_only_their_studies,
    route_table_for_every_role,
    accounts_sessions_and_tokens,
    loopback_only_until_the_first_user,
    user_command_line,
);
