//! A local mesh of real processes for development and demos: a coordinator and five fictional
//! partner nodes on free loopback ports, with generated PKI and configuration, described in
//! `DIR/mesh.json`. The organisations and names are fictional.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use doorzet_domain::{Oin, OrgKind};
use doorzet_mesh::ReloadingTls;
use doorzet_mesh::config::TlsFiles;
use serde::{Deserialize, Serialize};

use crate::pki::{self, OrgFiles};

/// One fictional organisation of the local mesh.
#[derive(Debug, Clone, Copy)]
pub struct DemoOrg {
    /// Short name used for files and `--member`.
    pub slug: &'static str,
    /// Organisation id.
    pub org: &'static str,
    /// Kind.
    pub kind: OrgKind,
    /// Display name.
    pub name: &'static str,
}

/// The coordinator's fictional identity (a sub-OIN of the ZVH).
pub const COORDINATOR: DemoOrg = DemoOrg {
    slug: "coordinator",
    org: "00000001999000000001",
    kind: OrgKind::CareAndSafetyHouse,
    name: "Zorg- en Veiligheidshuis Hofland (coordinator)",
};

/// The five fictional partner organisations.
pub const MEMBERS: [DemoOrg; 5] = [
    DemoOrg {
        slug: "municipality",
        org: "00000001999000001001",
        kind: OrgKind::Municipality,
        name: "Gemeente Hofland",
    },
    DemoOrg {
        slug: "ggz",
        org: "00000001999000002002",
        kind: OrgKind::MentalHealthInstitution,
        name: "GGZ De Linde",
    },
    DemoOrg {
        slug: "care-office",
        org: "00000001999000003003",
        kind: OrgKind::CareOffice,
        name: "Zorgkantoor Hofland-Rivier",
    },
    DemoOrg {
        slug: "housing",
        org: "00000001999000004004",
        kind: OrgKind::HousingCorporation,
        name: "Woonstichting Het Anker",
    },
    DemoOrg {
        slug: "zvh",
        org: "00000001999000000002",
        kind: OrgKind::CareAndSafetyHouse,
        name: "Zorg- en Veiligheidshuis Hofland",
    },
];

/// The region name of the local mesh.
pub const REGION: &str = "hofland-demo";
/// The origin of the local mesh's audit log.
pub const AUDIT_ORIGIN: &str = "hofland-demo.example/doorzet/audit";
/// The token audience of the local mesh.
pub const AUDIENCE: &str = "doorzet";

/// `DIR/mesh.json`: everything a test or a person needs to talk to the local mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeshFile {
    /// Region name.
    pub region: String,
    /// JWT audience.
    pub audience: String,
    /// The CA bundle every member trusts.
    pub ca: PathBuf,
    /// The coordinator.
    pub coordinator: MeshMember,
    /// The partner nodes.
    pub members: Vec<MeshMember>,
    /// The audit log's checkpoint verifier key (C2SP signed-note form).
    pub audit_verifier_key: String,
    /// Where `doorzetctl audit verify` keeps the checkpoints it has seen.
    pub audit_state: PathBuf,
}

/// One process of the local mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeshMember {
    /// Short name (`municipality`, `ggz`, ...).
    pub slug: String,
    /// Organisation id.
    pub org_id: String,
    /// Organisation kind.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Mesh listener, `https://127.0.0.1:port`.
    pub mesh_endpoint: String,
    /// Local listener (nodes only), `https://127.0.0.1:port`.
    pub local_endpoint: Option<String>,
    /// Admin listener address (metrics, probes), `127.0.0.1:port`.
    pub admin_addr: String,
    /// Certificate, key, CA bundle and token key of this organisation.
    pub files: OrgFiles,
    /// Configuration file.
    pub config: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// Process id while running.
    pub pid: Option<u32>,
    /// The REST gateway beside this node (nodes only).
    #[serde(default)]
    pub gateway: Option<GatewayProcess>,
}

/// A REST gateway of the local mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayProcess {
    /// Its API, `http://127.0.0.1:port/api/v1`.
    pub api: String,
    /// Its web console, `http://127.0.0.1:port/console` (the ZVH's is the process director's).
    #[serde(default)]
    pub console: String,
    /// Admin listener address (metrics, probes), `127.0.0.1:port`.
    pub admin_addr: String,
    /// Configuration file.
    pub config: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// Process id while running.
    pub pid: Option<u32>,
}

impl MeshFile {
    /// Reads `DIR/mesh.json`.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("mesh.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: no local mesh here (run `doorzetctl mesh up --dir {}`)",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: invalid", path.display()))
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("mesh.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Returns every process, coordinator first.
    pub fn all(&self) -> impl Iterator<Item = &MeshMember> {
        std::iter::once(&self.coordinator).chain(self.members.iter())
    }

    /// Returns the member with this slug or organisation id.
    pub fn member(&self, name: &str) -> anyhow::Result<&MeshMember> {
        self.all()
            .find(|m| m.slug == name || m.org_id == name)
            .with_context(|| {
                let names: Vec<_> = self.all().map(|m| m.slug.as_str()).collect();
                format!(
                    "no member `{name}` in the local mesh; choose one of {}",
                    names.join(", ")
                )
            })
    }
}

impl MeshMember {
    /// Loads this member's TLS material for client use.
    pub fn tls(&self) -> anyhow::Result<std::sync::Arc<ReloadingTls>> {
        Ok(ReloadingTls::load(TlsFiles::new(
            self.files.cert.clone(),
            self.files.key.clone(),
            self.files.ca.clone(),
        ))?)
    }

    /// Returns the organisation id.
    pub fn oin(&self) -> anyhow::Result<Oin> {
        Ok(self.org_id.parse()?)
    }
}

/// Hands out distinct free loopback ports for processes to bind later. They come from below the
/// range the system draws ephemeral ports from (`net.ipv4.ip_local_port_range`), so that between
/// the pool's release and a child's bind no outgoing connection and no bind to port 0 on the
/// machine can take one (a busy test run lost a node's port that way). Every port stays bound
/// until the pool is dropped, so the pool never hands out the same one twice.
pub struct PortPool {
    held: Vec<std::net::TcpListener>,
    /// Where to pick from (`None`: no room below the ephemeral range).
    range: Option<std::ops::Range<u16>>,
}

impl Default for PortPool {
    fn default() -> Self {
        Self {
            held: Vec::new(),
            range: below_ephemeral(ephemeral_ports_start()),
        }
    }
}

impl PortPool {
    /// A free port, held until the pool is dropped.
    pub fn take(&mut self) -> anyhow::Result<u16> {
        use rand::Rng;
        if let Some(range) = self.range.clone() {
            let mut rng = rand::thread_rng();
            for _ in 0..64 {
                let port = rng.gen_range(range.clone());
                if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                    self.held.push(listener);
                    return Ok(port);
                }
            }
        }
        // Nothing free below the range: let the system choose.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        self.held.push(listener);
        Ok(port)
    }
}

/// The first port of the system's ephemeral range, where it can tell.
fn ephemeral_ports_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Up to 16,384 unprivileged ports below an ephemeral range starting at `start` (Linux's default,
/// 32768, where unknown); `None` when the range leaves none.
fn below_ephemeral(start: Option<u16>) -> Option<std::ops::Range<u16>> {
    let end = start.unwrap_or(32768);
    let lowest = end.saturating_sub(16384).max(1024);
    (lowest < end).then_some(lowest..end)
}

/// Finds a sibling binary of the running executable, or one on PATH.
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = bin_dir {
        candidates.push(dir.join(name));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(name));
        // Test binaries live in target/<profile>/deps.
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join(name));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("cannot find the `{name}` binary; build it with `cargo build --bins` or pass --bin-dir"))
}

fn abs(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

fn toml_str(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// Options of `mesh up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Where everything goes.
    pub dir: PathBuf,
    /// Where the service binaries are (default: next to doorzetctl, then PATH).
    pub bin_dir: Option<PathBuf>,
    /// How often nodes refresh the directory.
    pub refresh_interval: Duration,
    /// How long to wait for every listener to report SERVING.
    pub wait: Duration,
}

/// Generates PKI and configs into `DIR`, starts the coordinator and five nodes, waits until
/// every listener reports SERVING and writes `DIR/mesh.json`.
pub async fn up(options: &UpOptions) -> anyhow::Result<MeshFile> {
    let dir = abs(&options.dir)?;
    if let Ok(existing) = MeshFile::read(&dir)
        && existing.all().any(|m| m.pid.is_some_and(is_alive))
    {
        bail!(
            "a local mesh is already running in {} (stop it with `doorzetctl mesh down --dir {}`)",
            dir.display(),
            dir.display()
        );
    }
    let node_bin = find_binary("doorzet-node", options.bin_dir.as_deref())?;
    let coordinator_bin = find_binary("doorzet-coordinator", options.bin_dir.as_deref())?;
    let gateway_bin = find_binary("doorzet-gateway", options.bin_dir.as_deref())?;
    for sub in ["pki", "config", "data", "logs"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let pki_dir = dir.join("pki");
    let mut orgs: Vec<(Oin, String)> = vec![(COORDINATOR.org.parse()?, COORDINATOR.name.into())];
    orgs.extend(
        MEMBERS
            .iter()
            .map(|m| (m.org.parse().expect("fixed OIN"), m.name.to_owned())),
    );
    let audit_key = pki_dir.join("audit.key");
    if !audit_key.exists() {
        pki::write_private(
            &audit_key,
            pki::TokenKey::generate()?.private_pem.as_bytes(),
        )?;
    }
    let signer = doorzet_audit::checkpoint::NoteSigner::from_pkcs8_pem(
        AUDIT_ORIGIN,
        &std::fs::read_to_string(&audit_key)?,
    )?;
    let needs_pki = orgs
        .iter()
        .any(|(org, _)| !OrgFiles::under(&pki_dir, *org).cert.exists());
    if needs_pki {
        pki::init(&pki_dir, &orgs)?;
    }

    let mut ports = PortPool::default();
    let mut member = |org: &DemoOrg, with_local: bool| -> anyhow::Result<MeshMember> {
        let oin: Oin = org.org.parse()?;
        Ok(MeshMember {
            slug: org.slug.into(),
            org_id: org.org.into(),
            kind: org.kind.as_str().into(),
            name: org.name.into(),
            mesh_endpoint: format!("https://127.0.0.1:{}", ports.take()?),
            local_endpoint: if with_local {
                Some(format!("https://127.0.0.1:{}", ports.take()?))
            } else {
                None
            },
            admin_addr: format!("127.0.0.1:{}", ports.take()?),
            files: OrgFiles::under(&pki_dir, oin),
            config: dir.join("config").join(format!("{}.toml", org.slug)),
            log: dir.join("logs").join(format!("{}.log", org.slug)),
            pid: None,
            gateway: if with_local {
                let http = ports.take()?;
                Some(GatewayProcess {
                    api: format!("http://127.0.0.1:{http}/api/v1"),
                    console: format!("http://127.0.0.1:{http}/console"),
                    admin_addr: format!("127.0.0.1:{}", ports.take()?),
                    config: dir
                        .join("config")
                        .join(format!("{}-gateway.toml", org.slug)),
                    log: dir.join("logs").join(format!("{}-gateway.log", org.slug)),
                    pid: None,
                })
            } else {
                None
            },
        })
    };
    let mut mesh = MeshFile {
        region: REGION.into(),
        audience: AUDIENCE.into(),
        ca: pki_dir.join("ca.pem"),
        coordinator: member(&COORDINATOR, false)?,
        members: MEMBERS
            .iter()
            .map(|m| member(m, true))
            .collect::<anyhow::Result<_>>()?,
        audit_verifier_key: signer.verifier_key(),
        audit_state: dir.join("audit"),
    };

    drop(ports);
    write_directory_file(&dir, &mesh)?;
    write_coordinator_config(&dir, &mesh.coordinator, &audit_key)?;
    for m in &mesh.members {
        write_node_config(&dir, m, &mesh.coordinator, options.refresh_interval)?;
        write_gateway_config(&dir, m, &mesh.coordinator)?;
    }

    mesh.coordinator.pid = Some(spawn(&coordinator_bin, &mesh.coordinator)?);
    mesh.write(&dir)?;
    let coordinator_ready = wait_serving(
        &mesh.coordinator,
        &mesh.coordinator.mesh_endpoint,
        options.wait,
    )
    .await;
    if let Err(e) = coordinator_ready {
        let _ = down(&dir).await;
        return Err(e);
    }
    for i in 0..mesh.members.len() {
        let pid = spawn(&node_bin, &mesh.members[i])?;
        mesh.members[i].pid = Some(pid);
    }
    mesh.write(&dir)?;
    for m in &mesh.members {
        let local = m.local_endpoint.clone().unwrap_or_default();
        for endpoint in [&m.mesh_endpoint, &local] {
            if let Err(e) = wait_serving(m, endpoint, options.wait).await {
                let _ = down(&dir).await;
                return Err(e);
            }
        }
    }
    for m in &mut mesh.members {
        if let Some(g) = m.gateway.as_mut() {
            g.pid = Some(spawn_process(&gateway_bin, &g.config, &g.log)?);
        }
    }
    mesh.write(&dir)?;
    for m in &mesh.members {
        if let Some(g) = &m.gateway
            && let Err(e) = wait_gateway(g, options.wait).await
        {
            let _ = down(&dir).await;
            return Err(e);
        }
    }
    Ok(mesh)
}

fn write_directory_file(dir: &Path, mesh: &MeshFile) -> anyhow::Result<()> {
    let key_table = |files: &OrgFiles| -> anyhow::Result<String> {
        let jwk = files.read_jwk()?;
        Ok(format!(
            "signing_keys = [{{ kid = \"{}\", alg = \"{}\", kty = \"{}\", crv = \"{}\", x = \"{}\" }}]\n",
            jwk.kid, jwk.alg, jwk.kty, jwk.crv, jwk.x
        ))
    };
    let c = &mesh.coordinator;
    let mut text = format!(
        "# The member directory of the local demo mesh. Edit and save: the coordinator reloads it.\nregion = \"{}\"\n\n[coordinator]\norg_id = \"{}\"\nname = \"{}\"\nmesh_endpoint = \"{}\"\n{}\n",
        mesh.region,
        c.org_id,
        c.name,
        c.mesh_endpoint,
        key_table(&c.files)?
    );
    for m in &mesh.members {
        text.push_str(&format!(
            "[[members]]\norg_id = \"{}\"\nkind = \"{}\"\nname = \"{}\"\nmesh_endpoint = \"{}\"\n{}\n",
            m.org_id, m.kind, m.name, m.mesh_endpoint, key_table(&m.files)?
        ));
    }
    text.push_str("[revoked]\ncertificate_sha256 = []\n");
    std::fs::write(dir.join("config").join("directory.toml"), text)?;
    Ok(())
}

fn tls_section(files: &OrgFiles) -> String {
    format!(
        "[tls]\ncert = {}\nkey = {}\nca = {}\n",
        toml_str(&files.cert),
        toml_str(&files.key),
        toml_str(&files.ca)
    )
}

fn addr(endpoint: &str) -> &str {
    endpoint.trim_start_matches("https://")
}

/// The local mesh's ladder (`deploy/regions/local-mesh.toml`), written next to its configuration.
pub const LADDER: &str = include_str!("../../../deploy/regions/local-mesh.toml");

fn write_coordinator_config(dir: &Path, c: &MeshMember, audit_key: &Path) -> anyhow::Result<()> {
    let ladder = dir.join("config").join("ladder.toml");
    std::fs::write(&ladder, LADDER)?;
    let kid = c.files.read_jwk()?.kid;
    let mut text = format!(
        "org = \"{}\"\n\n{}\n[mesh]\nlisten = \"{}\"\n\n[admin]\nlisten = \"{}\"\n\n[directory]\nfile = {}\nreload_interval = \"1s\"\n\n[audit]\nsigning_key = {}\norigin = \"{AUDIT_ORIGIN}\"\n\n[storage]\nurl = \"sqlite:{}\"\n",
        c.org_id,
        tls_section(&c.files),
        addr(&c.mesh_endpoint),
        c.admin_addr,
        toml_str(&dir.join("config").join("directory.toml")),
        toml_str(audit_key),
        dir.join("data").join("coordinator.db").display(),
    );
    // Grants are signed with the coordinator's development token key, published in the directory.
    text.push_str(&format!(
        "\n[escalations]\nladder = {}\ngrant_signing_key = {}\ngrant_key_id = \"{kid}\"\n",
        toml_str(&ladder),
        toml_str(&c.files.signing_key),
    ));
    std::fs::write(&c.config, text)?;
    Ok(())
}

fn write_node_config(
    dir: &Path,
    m: &MeshMember,
    c: &MeshMember,
    refresh: Duration,
) -> anyhow::Result<()> {
    let text = format!(
        "org = \"{}\"\n\n{}\n[mesh]\nlisten = \"{}\"\n\n[local]\nlisten = \"{}\"\n\n[admin]\nlisten = \"{}\"\n\n[coordinator]\nendpoint = \"{}\"\norg = \"{}\"\n\n[directory]\nrefresh_interval = \"{}ms\"\n\n[storage]\nurl = \"sqlite:{}\"\n",
        m.org_id,
        tls_section(&m.files),
        addr(&m.mesh_endpoint),
        addr(m.local_endpoint.as_deref().unwrap_or_default()),
        m.admin_addr,
        c.mesh_endpoint,
        c.org_id,
        refresh.as_millis(),
        dir.join("data").join(format!("{}.db", m.slug)).display(),
    );
    std::fs::write(&m.config, text)?;
    Ok(())
}

fn write_gateway_config(dir: &Path, m: &MeshMember, c: &MeshMember) -> anyhow::Result<()> {
    let Some(g) = &m.gateway else {
        return Ok(());
    };
    let mut text = format!(
        "# The REST gateway beside {}'s node.\norg = \"{}\"\n\n{}\n[http]\nlisten = \"{}\"\n\n[admin]\nlisten = \"{}\"\n\n[node]\nendpoint = \"{}\"\n\n[coordinator]\nendpoint = \"{}\"\norg = \"{}\"\n",
        m.name,
        m.org_id,
        tls_section(&m.files),
        g.authority(),
        g.admin_addr,
        m.local_endpoint.as_deref().unwrap_or_default(),
        c.mesh_endpoint,
        c.org_id,
    );
    // Webhooks read the node's inbox with tokens minted with the member's development key; plain
    // http endpoints on loopback are allowed here only.
    text.push_str(&format!(
        "\n[webhooks]\nstorage = \"sqlite:{}\"\nsigning_key = {}\nkey_id = \"{}\"\nallow_plain_http_loopback = true\n",
        dir.join("data").join(format!("{}-gateway.db", m.slug)).display(),
        toml_str(&m.files.signing_key),
        m.files.read_jwk()?.kid,
    ));
    // The console on loopback: sign in with a `doorzetctl token issue` token, over plain http.
    text.push_str("\n[console]\ndev_sign_in = true\nsecure_cookie = false\n");
    std::fs::write(&g.config, text)?;
    Ok(())
}

/// A plain HTTP/1.1 GET to `authority` (`host:port`) with an optional bearer token; returns the
/// status line after the version (`200 OK`) and the body. For the local mesh's gateways only.
pub async fn http_get(
    authority: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("HTTP/1.1 ")
        .to_owned();
    Ok((status, body.to_owned()))
}

impl GatewayProcess {
    /// `host:port` of the REST listener.
    pub fn authority(&self) -> &str {
        self.api
            .trim_start_matches("http://")
            .trim_end_matches("/api/v1")
    }
}

/// Returns true when the gateway's admin listener says it is ready.
pub async fn gateway_ready(g: &GatewayProcess) -> bool {
    http_get(&g.admin_addr, "/readyz", None)
        .await
        .is_ok_and(|(status, _)| status.starts_with("200"))
}

/// Waits until the gateway is ready.
async fn wait_gateway(g: &GatewayProcess, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(pid) = g.pid {
            reap(pid);
            if !is_alive(pid) {
                bail!(
                    "the gateway at {} exited while starting:\n{}",
                    g.api,
                    tail(&g.log)
                );
            }
        }
        if gateway_ready(g).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the gateway at {} did not become ready in {wait:?}", g.api);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn(binary: &Path, member: &MeshMember) -> anyhow::Result<u32> {
    spawn_process(binary, &member.config, &member.log)
}

fn spawn_process(binary: &Path, config: &Path, log_path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = std::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .env("DOORZET_TELEMETRY__LOG_FILTER", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in the shell that ran `mesh up` does not stop the mesh.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(child.id())
}

/// Returns true when a process with this id exists.
pub fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Asks the health service at `endpoint`, presenting `member`'s certificate.
pub async fn health(member: &MeshMember, endpoint: &str) -> anyhow::Result<i32> {
    let channel =
        doorzet_mesh::client::channel(member.tls()?, endpoint, None, Duration::from_secs(3))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status)
}

async fn wait_serving(member: &MeshMember, endpoint: &str, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(pid) = member.pid {
            // Our own child: reap it, or an exited one would still answer to kill(pid, 0).
            reap(pid);
            if !is_alive(pid) {
                bail!(
                    "{} exited during start-up; see {}:\n{}",
                    member.slug,
                    member.log.display(),
                    tail(&member.log)
                );
            }
        }
        match health(member, endpoint).await {
            Ok(status) if status == serving => return Ok(()),
            Ok(status) => last = format!("health status {status}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{} at {endpoint} did not report SERVING within {wait:?} ({last}); see {}",
        member.slug,
        member.log.display()
    )
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<_> = text.lines().rev().take(15).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Stops every process of the mesh in `dir`: SIGTERM, a grace period to drain, then SIGKILL. The
/// nodes stop together first, so none logs a missing coordinator on the way out.
pub async fn down(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut mesh = MeshFile::read(dir)?;
    let mut stopped = Vec::new();
    let gateways = mesh
        .members
        .iter_mut()
        .filter_map(|m| {
            m.gateway
                .as_mut()
                .map(|g| (format!("{}-gateway", m.slug), &mut g.pid))
        })
        .collect();
    stopped.extend(stop_pids(gateways).await);
    let nodes: Vec<&mut MeshMember> = mesh.members.iter_mut().collect();
    stopped.extend(stop_all(nodes).await);
    stopped.extend(stop_all(vec![&mut mesh.coordinator]).await);
    mesh.write(dir)?;
    Ok(stopped)
}

async fn stop_all(members: Vec<&mut MeshMember>) -> Vec<String> {
    stop_pids(
        members
            .into_iter()
            .map(|m| (m.slug.clone(), &mut m.pid))
            .collect(),
    )
    .await
}

async fn stop_pids(processes: Vec<(String, &mut Option<u32>)>) -> Vec<String> {
    use nix::sys::signal::{Signal, kill};
    let mut running = Vec::new();
    for (name, pid) in processes {
        let Some(pid) = pid.take() else {
            continue;
        };
        if is_alive(pid) {
            let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
            running.push((name, pid));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while running.iter().any(|(_, pid)| is_alive(*pid)) && Instant::now() < deadline {
        running.iter().for_each(|(_, pid)| reap(*pid));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for (_, pid) in &running {
        if is_alive(*pid) {
            let _ = kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
    running.into_iter().map(|(slug, _)| slug).collect()
}

/// Collects the exit status of our own child, so it does not linger as a zombie that still
/// answers to `kill(pid, 0)`.
fn reap(pid: u32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let _ = waitpid(
        nix::unistd::Pid::from_raw(pid as i32),
        Some(WaitPidFlag::WNOHANG),
    );
}

/// One line of `mesh status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusLine {
    /// Short name.
    pub slug: String,
    /// Organisation id.
    pub org_id: String,
    /// Process id, when recorded.
    pub pid: Option<u32>,
    /// Whether that process exists.
    pub is_running: bool,
    /// Health of each listener: endpoint and status or error.
    pub listeners: Vec<(String, String)>,
}

/// Reports who is up.
pub async fn status(dir: &Path) -> anyhow::Result<Vec<StatusLine>> {
    let mesh = MeshFile::read(dir)?;
    let mut lines = Vec::new();
    for m in mesh.all() {
        let is_running = m.pid.is_some_and(is_alive);
        let mut listeners = Vec::new();
        let endpoints = std::iter::once(m.mesh_endpoint.clone()).chain(m.local_endpoint.clone());
        for endpoint in endpoints {
            let state = if is_running {
                match health(m, &endpoint).await {
                    Ok(1) => "SERVING".to_owned(),
                    Ok(2) => "NOT_SERVING".to_owned(),
                    Ok(other) => format!("status {other}"),
                    Err(e) => format!("unreachable: {e}"),
                }
            } else {
                "down".to_owned()
            };
            listeners.push((endpoint, state));
        }
        if let Some(g) = &m.gateway {
            let running = g.pid.is_some_and(is_alive);
            let state = match (running, running && gateway_ready(g).await) {
                (_, true) => "ready",
                (true, false) => "not ready",
                (false, _) => "down",
            };
            listeners.push((g.api.clone(), state.to_owned()));
        }
        lines.push(StatusLine {
            slug: m.slug.clone(),
            org_id: m.org_id.clone(),
            pid: m.pid,
            is_running,
            listeners,
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_hands_out_distinct_held_ports_below_the_ephemeral_range() {
        let mut pool = PortPool::default();
        let ports: Vec<u16> = (0..20).map(|_| pool.take().unwrap()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        if let Some(start) = ephemeral_ports_start() {
            assert!(ports.iter().all(|&p| p < start), "{ports:?} from {start}");
        }
        // Held until the pool goes, then free for the child.
        assert!(std::net::TcpListener::bind(("127.0.0.1", ports[0])).is_err());
        drop(pool);
        assert!(std::net::TcpListener::bind(("127.0.0.1", ports[0])).is_ok());
    }

    #[test]
    fn a_system_whose_ephemeral_range_starts_low_leaves_the_choice_to_the_system() {
        assert_eq!(below_ephemeral(Some(32768)), Some(16384..32768));
        assert_eq!(below_ephemeral(None), Some(16384..32768));
        assert_eq!(below_ephemeral(Some(4000)), Some(1024..4000));
        // No room below the range: no range to pick from (it would panic), not a wrong one.
        assert_eq!(below_ephemeral(Some(1024)), None);
        assert_eq!(below_ephemeral(Some(80)), None);
    }
}
