//! `doorzetctl mesh up` / `mesh down` end to end: real processes, real ports, real mutual TLS.

use std::process::Command;
use std::time::Duration;

use doorzet_ctl::inspect;
use doorzet_ctl::local_mesh::{self, MeshFile, find_binary, is_alive};

fn doorzetctl(args: &[&str]) -> std::process::Output {
    let bin = find_binary("doorzetctl", None).expect("doorzetctl is built with the workspace");
    Command::new(bin)
        .args(args)
        .output()
        .expect("run doorzetctl")
}

#[tokio::test(flavor = "multi_thread")]
async fn mesh_up_serves_five_members_and_mesh_down_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let up = doorzetctl(&["mesh", "up", "--dir", dir_arg, "--refresh", "300ms"]);
    assert!(
        up.status.success(),
        "mesh up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    let mesh = MeshFile::read(dir.path()).unwrap();
    assert_eq!(mesh.members.len(), 5);
    let mut kinds: Vec<_> = mesh.members.iter().map(|m| m.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "care_and_safety_house",
            "care_office",
            "housing_corporation",
            "mental_health_institution",
            "municipality"
        ]
    );
    for m in mesh.all() {
        assert!(m.pid.is_some_and(is_alive), "{} is not running", m.slug);
        assert!(m.files.cert.is_file() && m.files.key.is_file() && m.files.ca.is_file());
        let endpoints = std::iter::once(m.mesh_endpoint.clone()).chain(m.local_endpoint.clone());
        for endpoint in endpoints {
            let status = local_mesh::health(m, &endpoint).await.unwrap();
            assert_eq!(status, 1, "{} at {endpoint} is not SERVING", m.slug);
        }
    }
    // A REST gateway beside every node, ready.
    for m in &mesh.members {
        let g = m.gateway.as_ref().expect("a gateway beside every node");
        assert!(
            g.pid.is_some_and(is_alive),
            "{}'s gateway is not running",
            m.slug
        );
        assert!(
            local_mesh::gateway_ready(g).await,
            "{}'s gateway is not ready",
            m.slug
        );
    }
    // The municipality's gateway takes webhooks.
    let municipality = mesh.member("municipality").unwrap();
    let token = doorzet_ctl::token::mint(
        &std::fs::read(&municipality.files.signing_key).unwrap(),
        &municipality.files.read_jwk().unwrap().kid,
        &doorzet_ctl::token::TokenRequest {
            org: municipality.oin().unwrap(),
            subject: "ops-1".into(),
            role: "beheerder".into(),
            audience: mesh.audience.clone(),
            issued_at: std::time::SystemTime::now(),
            ttl: Duration::from_secs(300),
        },
    )
    .unwrap();
    let api = &municipality.gateway.as_ref().unwrap().api;
    let hooks = reqwest::Client::new()
        .get(format!("{api}/webhooks"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(hooks.status().as_u16(), 200, "{:?}", hooks.text().await);
    // The process director's console, with the development sign-in of the local mesh.
    let zvh = mesh.member("zvh").unwrap().gateway.as_ref().unwrap();
    assert!(zvh.console.ends_with("/console"), "{}", zvh.console);
    let (status, page) = local_mesh::http_get(zvh.authority(), "/console/sign-in", None)
        .await
        .unwrap();
    assert_eq!(status, "200 OK");
    assert!(
        page.contains("id=\"token\""),
        "no development sign-in: {page}"
    );

    // The directory as another member sees it.
    let housing = mesh.member("housing").unwrap();
    let directory = inspect::list_members(&mesh, housing).await.unwrap();
    let mut listed: Vec<_> = directory.members.iter().map(|m| m.org_id.clone()).collect();
    let mut expected: Vec<_> = mesh.members.iter().map(|m| m.org_id.clone()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);

    // A person of the municipality, through its node's local listener.
    let municipality = mesh.member("municipality").unwrap();
    let token = inspect::token_for(
        municipality,
        "emp-7",
        "procesregisseur",
        Duration::from_secs(60),
    )
    .unwrap();
    let who = inspect::who_am_i(municipality, &token).await.unwrap();
    assert_eq!(
        (who.org_id.as_str(), who.role.as_str()),
        (municipality.org_id.as_str(), "procesregisseur")
    );

    // The same token from `doorzetctl token issue` works too.
    let issued = doorzetctl(&[
        "token",
        "issue",
        "--org",
        &municipality.org_id,
        "--sub",
        "emp-8",
        "--role",
        "uitvoerder",
        "--pki",
        dir.path().join("pki").to_str().unwrap(),
    ]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let token = String::from_utf8(issued.stdout).unwrap();
    let who = inspect::who_am_i(municipality, token.trim()).await.unwrap();
    assert_eq!(who.subject, "emp-8");

    // The audit log's verifier key is in mesh.json and in the directory, and the log verifies.
    assert_eq!(
        directory
            .coordinator
            .as_ref()
            .unwrap()
            .audit_log_verifier_key,
        mesh.audit_verifier_key
    );
    let verified = doorzetctl(&["audit", "verify", "--dir", dir_arg]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("audit log verified"));

    // The main job: the eviction case walked through the running mesh, from tier 1 to closed.
    let demo = doorzetctl(&["demo", "--dir", dir_arg]);
    let out = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "demo failed: {}\n{out}",
        String::from_utf8_lossy(&demo.stderr)
    );
    for step in [
        "tier 3 (Bestuurlijk escalatieoverleg)  participants_resolved",
        "refused first, as it should be",
        "care-office  sees []",
        "closed",
        "audit log, downloaded and verified",
    ] {
        assert!(out.contains(step), "the demo did not show `{step}`:\n{out}");
    }
    // No fact content crosses to an organisation the consent does not cover.
    let care_office_line = out
        .lines()
        .find(|l| l.contains("care-office  sees"))
        .unwrap();
    assert!(
        !care_office_line.contains("2027-02-01"),
        "{care_office_line}"
    );

    let status = doorzetctl(&["mesh", "status", "--dir", dir_arg]);
    assert!(status.status.success());
    assert_eq!(
        String::from_utf8_lossy(&status.stdout)
            .matches("SERVING")
            .count(),
        11
    );

    // A second `mesh up` on a running mesh is refused rather than starting duplicates.
    let again = doorzetctl(&["mesh", "up", "--dir", dir_arg]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let down = doorzetctl(&["mesh", "down", "--dir", dir_arg]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for m in mesh.all() {
        assert!(
            !is_alive(m.pid.unwrap()),
            "{} still running after mesh down",
            m.slug
        );
        if let Some(g) = &m.gateway {
            assert!(
                !is_alive(g.pid.unwrap()),
                "{}'s gateway still running",
                m.slug
            );
        }
    }
    let status = doorzetctl(&["mesh", "status", "--dir", dir_arg]);
    assert!(
        !status.status.success(),
        "status must fail when the mesh is down"
    );
    // Every process logged its drain on SIGTERM.
    for m in mesh.all() {
        let log = std::fs::read_to_string(&m.log).unwrap();
        assert!(log.contains("SIGTERM: draining"), "{}: {log}", m.slug);
    }
}
