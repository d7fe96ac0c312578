//! The web console in a real headless browser: Debian's chromium driven by playwright-core, every
//! page scanned by axe-core, against a local mesh of real processes (`doorzetctl mesh up`, then
//! `doorzetctl demo` for mandates and a closed tier-3 case). The scenario itself is
//! `tests/e2e/browser/console.cjs`; `tests/e2e/browser/install.sh` installs chromium (Debian) and
//! the two npm packages (exact versions, into `target/tools/browser`) on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use doorzet_ctl::local_mesh::{MeshFile, find_binary};

fn doorzetctl(args: &[&str]) -> Output {
    let bin = find_binary("doorzetctl", None).expect("doorzetctl is built with the workspace");
    Command::new(bin)
        .args(args)
        .output()
        .expect("run doorzetctl")
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the local mesh however the test ends.
struct Mesh(PathBuf);

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = doorzetctl(&["mesh", "down", "--dir", self.0.to_str().unwrap_or_default()]);
    }
}

fn token(mesh: &MeshFile, slug: &str, sub: &str, role: &str) -> String {
    let m = mesh.member(slug).unwrap();
    doorzet_ctl::token::mint(
        &std::fs::read(&m.files.signing_key).unwrap(),
        &m.files.read_jwk().unwrap().kid,
        &doorzet_ctl::token::TokenRequest {
            org: m.oin().unwrap(),
            subject: sub.into(),
            role: role.into(),
            audience: mesh.audience.clone(),
            issued_at: SystemTime::now(),
            ttl: Duration::from_secs(900),
        },
    )
    .unwrap()
}

fn console(mesh: &MeshFile, slug: &str) -> String {
    let api = &mesh.member(slug).unwrap().gateway.as_ref().unwrap().api;
    api.trim_end_matches("/api/v1").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_a_browser_takes_a_case_from_board_to_decision_accessibly() {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let install = Command::new("bash")
        .arg(browser.join("install.sh"))
        .output()
        .expect("run install.sh");
    ok(
        "installing chromium, playwright-core and axe-core",
        &install,
    );
    let chromium = String::from_utf8_lossy(&install.stdout)
        .lines()
        .last()
        .unwrap_or("/usr/bin/chromium")
        .to_owned();
    let tools = browser.join("../../../target/tools/browser/node_modules");

    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let _mesh = Mesh(dir.path().to_owned());
    ok(
        "mesh up",
        &doorzetctl(&["mesh", "up", "--dir", dir_arg, "--refresh", "300ms"]),
    );
    ok("demo", &doorzetctl(&["demo", "--dir", dir_arg]));
    let mesh = MeshFile::read(dir.path()).unwrap();

    // The demo's case, closed after a tier-3 decision, has the report.
    let pd = token(&mesh, "zvh", "pd-1", "procesregisseur");
    let closed: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/escalations?state=closed",
            console(&mesh, "zvh")
        ))
        .bearer_auth(&pd)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report_id = closed["items"][0]["escalationId"]
        .as_str()
        .expect("the demo's closed case")
        .to_owned();

    let mut node = tokio::process::Command::new("node");
    node.arg(browser.join("console.cjs"))
        .env("NODE_PATH", &tools)
        .env("CHROMIUM", chromium)
        .env("ZVH", console(&mesh, "zvh"))
        .env("MUNICIPALITY", console(&mesh, "municipality"))
        .env("CARE_OFFICE", console(&mesh, "care-office"))
        .env("PD_TOKEN", &pd)
        .env(
            "CM_TOKEN",
            token(&mesh, "municipality", "cm-1", "casemanager"),
        )
        .env(
            "CARE_TOKEN",
            token(&mesh, "care-office", "cm-2", "casemanager"),
        )
        .env("REPORT_ID", report_id)
        .kill_on_drop(true);
    if let Ok(shots) = std::env::var("DOORZET_CONSOLE_SCREENSHOTS") {
        node.env("SCREENSHOTS", shots);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), node.output())
        .await
        .expect("the browser scenario finished in 5 minutes")
        .expect("run node");
    ok("the browser scenario", &out);
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}");
    for page in [
        "sign-in",
        "board",
        "escalation",
        "inbox",
        "mandates",
        "cases",
        "case",
        "not-found",
        "report",
        "board-en",
    ] {
        assert!(said.contains(page), "page {page} was not scanned: {said}");
    }
}
