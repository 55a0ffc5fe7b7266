//! The documentation stays in step with the code: the conformance statement
//! lists exactly the storage SOP classes the SCP accepts, the README shows
//! how to run Tessera and its tests, and the architecture document names
//! every top-level module, and the role table shows the code's. Standard
//! library only.

use std::collections::BTreeSet;
use std::path::Path;

use tessera::dimse::storage_classes::STORAGE_SOP_CLASSES;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The text between the heading `start` and the next level-2 heading.
fn section<'a>(text: &'a str, start: &str) -> &'a str {
    let begin = text
        .find(start)
        .unwrap_or_else(|| panic!("heading {start:?} not found"));
    let rest = &text[begin + start.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn conformance_statement_lists_every_storage_sop_class() {
    let doc = read("docs/conformance.md");
    let missing: Vec<&str> = STORAGE_SOP_CLASSES
        .iter()
        .map(|(uid, _)| *uid)
        .filter(|uid| !doc.contains(&format!("`{uid}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/conformance.md lacks {} storage SOP class UID(s) from \
         STORAGE_SOP_CLASSES: {missing:?}",
        missing.len()
    );

    // Annex A holds exactly the accepted classes: none removed from the code
    // but still documented.
    let annex = section(&doc, "## Annex A");
    let documented: BTreeSet<&str> = annex
        .lines()
        .filter(|line| line.starts_with('|'))
        .filter_map(|line| line.split('`').nth(1))
        .collect();
    let accepted: BTreeSet<&str> = STORAGE_SOP_CLASSES.iter().map(|(uid, _)| *uid).collect();
    let extra: Vec<&&str> = documented.difference(&accepted).collect();
    assert!(
        extra.is_empty(),
        "docs/conformance.md Annex A lists UIDs not in STORAGE_SOP_CLASSES: {extra:?}"
    );

    let count = format!("{} storage SOP classes", STORAGE_SOP_CLASSES.len());
    for file in ["docs/conformance.md", "README.md"] {
        assert!(
            read(file).contains(&count),
            "{file} should say \"{count}\" (the length of STORAGE_SOP_CLASSES)"
        );
    }
}

#[test]
fn readme_shows_the_run_and_test_commands() {
    let readme = read("README.md");
    for command in [
        "scripts/serve",
        "cargo run --release -- serve",
        "scripts/test",
        ".ci/run",
        "cargo test",
    ] {
        assert!(
            readme.contains(command),
            "README.md does not show `{command}`"
        );
    }
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".ci/run")
            .is_file(),
        "README.md documents .ci/run, which does not exist"
    );
}

#[test]
fn architecture_names_every_top_level_module() {
    let lib = read("src/lib.rs");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::trim)
        .collect();
    assert!(
        modules.len() >= 5,
        "found only {modules:?} in src/lib.rs; did its layout change?"
    );
    let doc = read("docs/architecture.md");
    let missing: Vec<&&str> = modules
        .iter()
        .filter(|m| !doc.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md does not mention module(s) {missing:?} (as `name`)"
    );
}

#[test]
fn readme_config_example_is_valid() {
    let readme = read("README.md");
    let start = readme
        .find("```toml\n# tessera.toml")
        .expect("README has the full configuration example");
    let body = &readme[start + "```toml\n".len()..];
    let end = body.find("```").expect("example ends");
    let raw: tessera::config::RawConfig =
        toml::from_str(&body[..end]).expect("README example is valid TOML for RawConfig");
    tessera::config::Config::from_raw(raw).expect("README example is a valid configuration");
}

/// The README's role table shows every line of the route table in the
/// code, with the roles that line allows.
#[test]
fn readme_role_table_matches_the_code() {
    use tessera::auth::access::RULES;
    let readme = read("README.md");
    let security = section(&readme, "## Security");
    let mut wrong = Vec::new();
    for rule in RULES {
        let cell = format!("| `{} {}` |", rule.method, rule.path);
        let Some(at) = security.find(&cell) else {
            wrong.push(format!("{cell} missing"));
            continue;
        };
        let line = security[at..].lines().next().unwrap_or_default();
        let roles = rule.access.roles();
        let shown_ok = if roles.is_empty() {
            line.contains("anyone")
        } else if roles.len() == 5 {
            line.contains("any logged-in user")
        } else {
            roles.iter().all(|r| line.contains(r.as_str())) && !line.contains("any logged-in user")
        };
        if !shown_ok {
            wrong.push(format!("{line} (the code allows {roles:?})"));
        }
    }
    assert!(
        wrong.is_empty(),
        "README role table out of step:\n{}",
        wrong.join("\n")
    );
}

/// The README's DIMSE role table shows the code's DIMSE rows.
#[test]
fn readme_dimse_roles_match_the_code() {
    use tessera::auth::access::DIMSE_RULES;
    use tessera::model::PeerService;
    let readme = read("README.md");
    let security = section(&readme, "## Security");
    let mut wrong = Vec::new();
    for (service, access) in DIMSE_RULES {
        let name = match service {
            PeerService::Store => "C-STORE",
            PeerService::Commit => "Storage Commitment",
            PeerService::Find => "C-FIND",
            PeerService::Move => "C-MOVE",
            PeerService::Get => "C-GET",
            PeerService::Mpps => "MPPS",
        };
        let line = security
            .lines()
            .find(|l| l.starts_with('|') && l.contains(name) && !l.contains('`'))
            .unwrap_or_default();
        let roles: Vec<&str> = line
            .rsplit('|')
            .nth(1)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .collect();
        let mut want: Vec<&str> = access.roles().iter().map(|r| r.as_str()).collect();
        let mut shown = roles.clone();
        want.sort();
        shown.sort();
        if want != shown {
            wrong.push(format!("{name}: README {shown:?}, code {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "README DIMSE table out of step:\n{}",
        wrong.join("\n")
    );
}
