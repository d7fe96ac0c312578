//! `doorzetctl`: development PKI, tokens, a local mesh, and a look inside a running mesh.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};
use doorzet_ctl::local_mesh::{self, MeshFile, UpOptions};
use doorzet_ctl::{inspect, partner, pki, token};
use doorzet_domain::Oin;

/// Operate a doorzet mesh: make development certificates and tokens, run a local mesh of real
/// processes, and look inside it.
#[derive(Debug, Parser)]
#[command(name = "doorzetctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Development PKI of the production shape (never for production use).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Development tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// A local mesh: a coordinator and five fictional partner nodes on loopback.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// The directory as a member of the local mesh sees it.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// The mesh's audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// A node's local cases (on its local listener, with a token).
    Case {
        #[command(subcommand)]
        command: partner::CaseCommand,
        #[command(flatten)]
        target: partner::LocalTarget,
    },
    /// Facts about a node's local cases.
    Fact {
        #[command(subcommand)]
        command: partner::FactCommand,
        #[command(flatten)]
        target: partner::LocalTarget,
    },
    /// Consents and legal bases for a node's local cases.
    Consent {
        #[command(subcommand)]
        command: partner::ConsentCommand,
        #[command(flatten)]
        target: partner::LocalTarget,
    },
    /// A node's mandates.
    Mandate {
        #[command(subcommand)]
        command: partner::MandateCommand,
        #[command(flatten)]
        target: partner::LocalTarget,
    },
    /// A node's disclosure log for a case reference (who saw which categories when).
    Disclosures {
        /// The case reference.
        case_ref: String,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        target: partner::LocalTarget,
    },
    /// Participation grants (development: minted with the local mesh coordinator's key).
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Ask a node for a case's facts over mutual TLS, as a member (local mesh).
    #[command(subcommand)]
    Facts(FactsCommand),
    /// Walk the eviction case (DOMAIN.md, case 1) through the local mesh: tier 1 fails, urgent tier
    /// 3, participants from mandates, meeting, decision with commitments, follow-up, closed; then
    /// verify the audit log. Without --dir it brings up a fresh local mesh in .doorzet-dev.
    Demo {
        /// Use the local mesh `mesh up` started in DIR instead of starting one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// When a term ends in the region's calendar (Europe/Amsterdam working days and hours).
    #[command(group(clap::ArgGroup::new("term").required(true).args(["working_days", "hours"])))]
    Deadline {
        /// Start of the term, RFC 3339 with offset (e.g. 2026-12-04T16:30:00+01:00).
        #[arg(long)]
        from: String,
        /// A term in working days.
        #[arg(long)]
        working_days: Option<u32>,
        /// An urgent term in elapsed hours.
        #[arg(long)]
        hours: Option<u32>,
        /// A ladder file (its `[calendar]`) or a calendar file; default: the Dutch default calendar.
        #[arg(long)]
        calendar: Option<PathBuf>,
    },
    /// The year's non-working days in the region's calendar (besides weekends).
    Calendar {
        /// The year.
        #[arg(long)]
        year: i16,
        /// A ladder file (its `[calendar]`) or a calendar file; default: the Dutch default calendar.
        #[arg(long)]
        calendar: Option<PathBuf>,
    },
    /// Show who a development token makes you on a member's local listener.
    Whoami {
        /// Local mesh directory.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
        /// Member whose local listener to ask (`municipality`, `ggz`, `care-office`, `housing`, `zvh`).
        #[arg(long, default_value = "municipality")]
        member: String,
        /// Subject (employee or system id) to put in the token.
        #[arg(long, default_value = "demo-user")]
        sub: String,
        /// Role to put in the token.
        #[arg(long, default_value = "procesregisseur")]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum GrantCommand {
    /// Mint a grant for members of the local mesh, signed with its coordinator's development key
    /// (until the coordinator issues grants itself); prints the token.
    Issue {
        /// Local mesh directory.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
        /// The case reference.
        #[arg(long)]
        case_ref: String,
        /// Participants (member names or ids), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// Purpose.
        #[arg(long, default_value = "escalation_meeting")]
        purpose: String,
        /// Tier.
        #[arg(long, default_value_t = 2)]
        tier: u32,
        /// Escalation id.
        #[arg(long, default_value = "esc-demo-one")]
        escalation_id: String,
        /// Validity.
        #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
        ttl: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum FactsCommand {
    /// Ask MEMBER's node for a case's facts, with a grant.
    Query {
        /// Local mesh directory.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
        /// The member asking (its certificate is used).
        #[arg(long = "as")]
        asker: String,
        /// The member whose node holds the case.
        #[arg(long)]
        from: String,
        /// The participation grant.
        #[arg(long, env = "DOORZET_GRANT", hide_env_values = true)]
        grant: String,
        /// The case reference.
        #[arg(long)]
        case_ref: String,
        /// Who asks at the asking organisation (an employee id).
        #[arg(long, default_value = "emp-0042")]
        requested_by: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Make a CA (or reuse the one in DIR) and a certificate, key and token signing key per
    /// organisation. Private keys are written 0600.
    Init {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Organisation as OIN=NAME (20-digit OIN); repeat for more.
        #[arg(long = "org", required = true, value_parser = parse_org)]
        orgs: Vec<(Oin, String)>,
    },
    /// Revoke a certificate of the development CA in DIR: writes DIR/crl.pem listing it and every
    /// certificate revoked before (give that file to `tls.crls`).
    Revoke {
        /// The development PKI directory (with ca.pem and ca.key).
        #[arg(long)]
        dir: PathBuf,
        /// The certificate (PEM) to revoke.
        #[arg(long)]
        cert: PathBuf,
        /// When the list is due again (its next update).
        #[arg(long, default_value = "7d", value_parser = humantime_serde::re::humantime::parse_duration)]
        next_update: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a JWT signed with the organisation's development key; prints it on standard output.
    Issue {
        /// Issuing organisation (20-digit OIN).
        #[arg(long)]
        org: Oin,
        /// Subject: employee or system id.
        #[arg(long)]
        sub: String,
        /// Role, e.g. procesregisseur, bestuurder, uitvoerder.
        #[arg(long)]
        role: String,
        /// Lifetime, e.g. 15m or 8h.
        #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
        ttl: Duration,
        /// Audience of the region's mesh.
        #[arg(long, default_value = local_mesh::AUDIENCE)]
        aud: String,
        /// PKI directory made by `pki init` or `mesh up` (DIR/pki); the key is DIR/orgs/OIN/signing.key.
        #[arg(long, default_value = ".doorzet-dev/pki")]
        pki: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum MeshCommand {
    /// Generate PKI and configs into DIR, start the coordinator and five nodes on free loopback
    /// ports, wait until every listener reports SERVING, and write DIR/mesh.json.
    Up {
        /// Directory for PKI, configs, data, logs and mesh.json.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
        /// Where doorzet-node and doorzet-coordinator are (default: next to doorzetctl, then PATH).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// How often nodes refresh the directory (how fast a removal or revocation takes effect).
        #[arg(long, default_value = "2s", value_parser = humantime_serde::re::humantime::parse_duration)]
        refresh: Duration,
        /// How long to wait for every listener to report SERVING.
        #[arg(long, default_value = "60s", value_parser = humantime_serde::re::humantime::parse_duration)]
        wait: Duration,
    },
    /// Stop every process of the local mesh in DIR (SIGTERM, then SIGKILL after 15 s).
    Down {
        /// Local mesh directory.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
    },
    /// Show which processes of the local mesh in DIR are up and what their listeners report.
    Status {
        /// Local mesh directory.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// List the members, fetched from the coordinator over a member's mutual-TLS identity.
    List {
        /// Local mesh directory.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
        /// Member whose certificate to use.
        #[arg(long = "as", default_value = "municipality")]
        member: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Record a (fictional) disclosure in the audit log as a member of the local mesh, as its node
    /// will when it serves facts; prints the leaf index and the checkpoint that covers it.
    Record {
        /// Local mesh directory.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
        /// Member that disclosed.
        #[arg(long = "as", default_value = "ggz")]
        member: String,
        /// Member that received the facts.
        #[arg(long, default_value = "municipality")]
        to: String,
        /// Case reference (a token, never a name or BSN).
        #[arg(long, default_value = "case-demo-0001")]
        case_ref: String,
        /// Fact category disclosed.
        #[arg(long, default_value = "legal_title")]
        category: String,
        /// Purpose code.
        #[arg(long, default_value = "tier3_meeting")]
        purpose: String,
    },
    /// Download every entry, recompute the tree, check the signed checkpoint, every checkpoint seen
    /// before and the coordinator's proofs; exit 1 with a precise message at the first break.
    Verify {
        /// Local mesh directory (uses its mesh.json); or give --coordinator and the TLS files.
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
        /// Member whose certificate to use (local mesh).
        #[arg(long = "as", default_value = "zvh")]
        member: String,
        /// Coordinator address, https://host:port (instead of --dir).
        #[arg(long, requires_all = ["cert", "key", "ca", "verifier_key", "state"])]
        coordinator: Option<String>,
        /// Certificate (PEM) to connect with.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Trust anchors (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The log's verifier key, as published in the directory.
        #[arg(long)]
        verifier_key: Option<String>,
        /// Directory where checkpoints seen are kept between runs.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// A node's audit alarm.
    #[command(subcommand)]
    Alarm(AlarmCommand),
}

#[derive(Debug, Subcommand)]
enum AlarmCommand {
    /// Clear a node's audit alarm after an investigation (on its local listener, with a token whose
    /// role is in the node's audit.clear_roles); the node records who cleared it and why.
    Clear {
        /// Why the alarm may be cleared: the outcome of the investigation.
        #[arg(long)]
        reason: String,
        /// Also forget the checkpoints seen so far, trusting the log as it is now.
        #[arg(long)]
        forget_checkpoints: bool,
        /// Local mesh directory (mints a development token for --member).
        #[arg(long, default_value = ".doorzet-dev")]
        dir: PathBuf,
        /// Member whose node to clear (local mesh).
        #[arg(long, default_value = "municipality")]
        member: String,
        /// Subject to put in the development token.
        #[arg(long, default_value = "ops-1")]
        sub: String,
        /// Role to put in the development token.
        #[arg(long, default_value = "beheerder")]
        role: String,
        /// A node's local listener, https://host:port (instead of --dir), with --ca and --token.
        #[arg(long, requires_all = ["ca", "token"])]
        local: Option<String>,
        /// Trust anchors (PEM) of the node's local listener.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// A token your organisation issued, with a role that may clear the alarm.
        #[arg(long, env = "DOORZET_TOKEN")]
        token: Option<String>,
    },
}

fn parse_org(s: &str) -> Result<(Oin, String), String> {
    let (oin, name) = s.split_once('=').ok_or("expected OIN=NAME")?;
    Ok((oin.parse().map_err(|e| format!("{e}"))?, name.to_owned()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorzetctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo { dir } => {
            let dir = match dir {
                Some(dir) => {
                    let mesh = MeshFile::read(&dir).with_context(|| {
                        format!(
                            "no local mesh in {} (start one with `doorzetctl mesh up --dir {}`)",
                            dir.display(),
                            dir.display()
                        )
                    })?;
                    println!(
                        "using the local mesh in {} (region {})",
                        dir.display(),
                        mesh.region
                    );
                    dir
                }
                None => {
                    let dir = PathBuf::from(".doorzet-dev");
                    if MeshFile::read(&dir).is_ok() {
                        local_mesh::down(&dir).await?;
                    }
                    let mesh = local_mesh::up(&UpOptions {
                        dir: dir.clone(),
                        bin_dir: None,
                        refresh_interval: Duration::from_secs(2),
                        wait: Duration::from_secs(60),
                    })
                    .await?;
                    println!(
                        "local mesh up in {} (region {}): a coordinator and {} nodes, real processes over mutual TLS",
                        dir.display(),
                        mesh.region,
                        mesh.members.len()
                    );
                    dir
                }
            };
            doorzet_ctl::demo::run(&dir).await?;
            let mesh = MeshFile::read(&dir)?;
            let me = mesh.member("municipality")?;
            let channel = doorzet_mesh::client::channel(
                me.tls()?,
                &mesh.coordinator.mesh_endpoint,
                Some(mesh.coordinator.oin()?),
                Duration::from_secs(30),
            )?;
            let verifier =
                doorzet_audit::checkpoint::NoteVerifier::parse(&mesh.audit_verifier_key)?;
            let report =
                doorzet_ctl::audit_verify::verify(channel, &verifier, &mesh.audit_state).await?;
            println!(
                "\n== 11. The audit log, downloaded and verified: {} entries recomputed, {} earlier checkpoints consistent, {} proofs checked",
                report.size, report.checkpoints, report.proofs
            );
            println!("\nREST API (OpenAPI document at .../openapi.json), each organisation's own:");
            for m in &mesh.members {
                if let Some(g) = &m.gateway {
                    println!("   {:<13} {}", m.slug, g.api);
                }
            }
            println!(
                "\nWeb console, each organisation's own (the ZVH's is the process director's board):"
            );
            for m in &mesh.members {
                if let Some(g) = &m.gateway {
                    println!("   {:<13} {}", m.slug, g.console);
                }
            }
            if let Ok(zvh) = mesh.member("zvh") {
                println!(
                    "   sign in with a development token, e.g. the process director's:\n   doorzetctl token issue --org {} --sub pd-1 --role procesregisseur --pki {}",
                    zvh.org_id,
                    dir.join("pki").display()
                );
            }
            println!(
                "\nThe mesh is still running ({}); stop it with: doorzetctl mesh down --dir {}",
                dir.join("mesh.json").display(),
                dir.display()
            );
        }
        Command::Deadline {
            from,
            working_days,
            hours,
            calendar,
        } => {
            let term = match (working_days, hours) {
                (Some(n), None) => doorzet_domain::calendar::Term::WorkingDays(n),
                (None, Some(n)) => doorzet_domain::calendar::Term::Hours(n),
                _ => anyhow::bail!("give one of --working-days or --hours"),
            };
            let cal = doorzet_ctl::calendar::load(calendar.as_deref())?;
            println!("{}", doorzet_ctl::calendar::deadline(&cal, &from, term)?);
        }
        Command::Calendar { year, calendar } => {
            if !(1900..=9999).contains(&year) {
                anyhow::bail!("--year must be between 1900 and 9999");
            }
            let cal = doorzet_ctl::calendar::load(calendar.as_deref())?;
            print!("{}", doorzet_ctl::calendar::listing(&cal, year));
        }
        Command::Case { command, target } => partner::case(command, &target).await?,
        Command::Fact { command, target } => partner::fact(command, &target).await?,
        Command::Consent { command, target } => partner::consent(command, &target).await?,
        Command::Mandate { command, target } => partner::mandate(command, &target).await?,
        Command::Disclosures {
            case_ref,
            limit,
            target,
        } => partner::disclosures(case_ref, limit, &target).await?,
        Command::Grant(GrantCommand::Issue {
            dir,
            case_ref,
            to,
            purpose,
            tier,
            escalation_id,
            ttl,
        }) => {
            let grant =
                partner::issue_grant(&dir, &case_ref, &to, &purpose, tier, &escalation_id, ttl)?;
            println!("{grant}");
        }
        Command::Facts(FactsCommand::Query {
            dir,
            asker,
            from,
            grant,
            case_ref,
            requested_by,
            json,
        }) => {
            partner::query_facts(&dir, &asker, &from, grant, case_ref, requested_by, json).await?
        }
        Command::Pki(PkiCommand::Revoke {
            dir,
            cert,
            next_update,
        }) => {
            let crl = pki::revoke(&dir, &cert, next_update)?;
            println!("{}", crl.display());
        }
        Command::Pki(PkiCommand::Init { dir, orgs }) => {
            for files in pki::init(&dir, &orgs)? {
                println!("{}", files.cert.display());
            }
        }
        Command::Token(TokenCommand::Issue {
            org,
            sub,
            role,
            ttl,
            aud,
            pki,
        }) => {
            let files = pki::OrgFiles::under(&pki, org);
            let pem = std::fs::read(&files.signing_key)
                .with_context(|| format!("reading {}", files.signing_key.display()))?;
            let kid = files.read_jwk()?.kid;
            let request = token::TokenRequest {
                org,
                subject: sub,
                role,
                audience: aud,
                issued_at: SystemTime::now(),
                ttl,
            };
            println!("{}", token::mint(&pem, &kid, &request)?);
        }
        Command::Mesh(MeshCommand::Up {
            dir,
            bin_dir,
            refresh,
            wait,
        }) => {
            let mesh = local_mesh::up(&UpOptions {
                dir: dir.clone(),
                bin_dir,
                refresh_interval: refresh,
                wait,
            })
            .await?;
            println!(
                "local mesh up in {} (region {}):",
                dir.display(),
                mesh.region
            );
            for m in mesh.all() {
                println!(
                    "  {:<13} {}  mesh {}  local {}  REST {}",
                    m.slug,
                    m.org_id,
                    m.mesh_endpoint,
                    m.local_endpoint.as_deref().unwrap_or("-"),
                    m.gateway.as_ref().map_or("-", |g| g.api.as_str())
                );
            }
            println!("described in {}", dir.join("mesh.json").display());
        }
        Command::Mesh(MeshCommand::Down { dir }) => {
            let stopped = local_mesh::down(&dir).await?;
            println!(
                "stopped: {}",
                if stopped.is_empty() {
                    "nothing was running".into()
                } else {
                    stopped.join(", ")
                }
            );
        }
        Command::Mesh(MeshCommand::Status { dir }) => {
            let lines = local_mesh::status(&dir).await?;
            for line in &lines {
                let pid = line.pid.map_or("-".into(), |p| p.to_string());
                let listeners: Vec<_> = line
                    .listeners
                    .iter()
                    .map(|(e, s)| format!("{e} {s}"))
                    .collect();
                println!(
                    "{:<13} {} pid {:<8} {}",
                    line.slug,
                    line.org_id,
                    pid,
                    listeners.join("  ")
                );
            }
            if lines.iter().any(|l| !l.is_running) {
                anyhow::bail!("not every process is running");
            }
        }
        Command::Directory(DirectoryCommand::List { dir, member }) => {
            let mesh = MeshFile::read(&dir)?;
            let me = mesh.member(&member)?;
            let directory = inspect::list_members(&mesh, me).await?;
            println!(
                "directory {} version {} as seen by {}:",
                directory.region, directory.version, me.slug
            );
            for m in &directory.members {
                let kind = doorzet_proto::convert::org_kind("kind", m.kind)
                    .map_or("?".into(), |k| k.to_string());
                println!(
                    "  {}  {:<26} {:<34} {}",
                    m.org_id, kind, m.name, m.mesh_endpoint
                );
            }
        }
        Command::Audit(AuditCommand::Record {
            dir,
            member,
            to,
            case_ref,
            category,
            purpose,
        }) => {
            let mesh = MeshFile::read(&dir)?;
            let (me, recipient) = (mesh.member(&member)?, mesh.member(&to)?);
            let (index, size) =
                inspect::record_disclosure(&mesh, me, recipient, &case_ref, &category, &purpose)
                    .await?;
            println!("recorded as entry {index}; covered by the signed checkpoint of size {size}");
        }
        Command::Audit(AuditCommand::Verify {
            dir,
            member,
            coordinator,
            cert,
            key,
            ca,
            verifier_key,
            state,
        }) => {
            let (channel, vkey, state) = match coordinator {
                Some(endpoint) => {
                    let tls =
                        doorzet_mesh::ReloadingTls::load(doorzet_mesh::config::TlsFiles::new(
                            cert.context("--cert")?,
                            key.context("--key")?,
                            ca.context("--ca")?,
                        ))?;
                    let channel = doorzet_mesh::client::channel(
                        tls,
                        &endpoint,
                        None,
                        Duration::from_secs(30),
                    )?;
                    (
                        channel,
                        verifier_key.context("--verifier-key")?,
                        state.context("--state")?,
                    )
                }
                None => {
                    let mesh = MeshFile::read(&dir)?;
                    let me = mesh.member(&member)?;
                    let channel = doorzet_mesh::client::channel(
                        me.tls()?,
                        &mesh.coordinator.mesh_endpoint,
                        Some(mesh.coordinator.oin()?),
                        Duration::from_secs(30),
                    )?;
                    (
                        channel,
                        mesh.audit_verifier_key.clone(),
                        mesh.audit_state.clone(),
                    )
                }
            };
            let verifier = doorzet_audit::checkpoint::NoteVerifier::parse(&vkey)?;
            let report = doorzet_ctl::audit_verify::verify(channel, &verifier, &state).await?;
            println!(
                "audit log verified: {} entries recomputed, {} earlier checkpoints consistent, {} proofs checked",
                report.size, report.checkpoints, report.proofs
            );
        }
        Command::Audit(AuditCommand::Alarm(AlarmCommand::Clear {
            reason,
            forget_checkpoints,
            dir,
            member,
            sub,
            role,
            local,
            ca,
            token,
        })) => {
            let (endpoint, tls, token) = match local {
                Some(endpoint) => {
                    let ca = ca.context("--ca")?;
                    (
                        endpoint,
                        inspect::server_only_tls(&ca)?,
                        token.context("--token")?,
                    )
                }
                None => {
                    let mesh = MeshFile::read(&dir)?;
                    let me = mesh.member(&member)?;
                    let endpoint = me
                        .local_endpoint
                        .clone()
                        .context("that member has no local listener")?;
                    let token = inspect::token_for(me, &sub, &role, Duration::from_secs(300))?;
                    (endpoint, inspect::server_only_tls(&mesh.ca)?, token)
                }
            };
            let cleared =
                inspect::clear_audit_alarm(&endpoint, tls, &token, &reason, forget_checkpoints)
                    .await?;
            println!("audit alarm cleared (recorded by the node): {cleared}");
        }
        Command::Whoami {
            dir,
            member,
            sub,
            role,
        } => {
            let mesh = MeshFile::read(&dir)?;
            let me = mesh.member(&member)?;
            let token = inspect::token_for(me, &sub, &role, Duration::from_secs(300))?;
            let who = inspect::who_am_i(me, &token).await?;
            println!(
                "org {} subject {} role {}",
                who.org_id, who.subject, who.role
            );
        }
    }
    Ok(())
}
