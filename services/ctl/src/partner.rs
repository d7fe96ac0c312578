//! `doorzetctl case|fact|consent|mandate|disclosures|grant|facts`: a partner node's own data on its
//! local listener (with a token), development grants, and asking a node for facts over mutual TLS
//! as a member. Every command prints a table, or JSON with `--json`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use doorzet_proto::v1::{self, node_admin_client::NodeAdminClient};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::inspect::{server_only_tls, token_for};
use crate::local_mesh::MeshFile;

/// Which node's local listener, and as whom.
#[derive(Debug, Clone, Args)]
pub struct LocalTarget {
    /// Local mesh directory (mints a development token for --member).
    #[arg(long, default_value = ".doorzet-dev", global = true)]
    pub dir: PathBuf,
    /// Member whose node to use (local mesh).
    #[arg(long, default_value = "municipality", global = true)]
    pub member: String,
    /// Subject of the development token.
    #[arg(long, default_value = "emp-0042", global = true)]
    pub sub: String,
    /// Role of the development token (default: one that may do the command).
    #[arg(long, global = true)]
    pub role: Option<String>,
    /// A node's local listener, https://host:port (instead of --dir), with --ca and --token.
    #[arg(long, requires_all = ["ca", "token"], global = true)]
    pub local: Option<String>,
    /// Trust anchors (PEM) of the node's local listener.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// A token your organisation issued.
    #[arg(long, env = "DOORZET_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl LocalTarget {
    async fn connect(
        &self,
        default_role: &str,
    ) -> anyhow::Result<(NodeAdminClient<Channel>, String)> {
        if let Some(endpoint) = &self.local {
            let tls = server_only_tls(self.ca.as_deref().context("--ca")?)?;
            let channel =
                doorzet_mesh::client::channel(tls, endpoint, None, Duration::from_secs(10))?;
            return Ok((
                NodeAdminClient::new(channel),
                self.token.clone().context("--token")?,
            ));
        }
        let mesh = MeshFile::read(&self.dir)?;
        let me = mesh.member(&self.member)?;
        let endpoint = me
            .local_endpoint
            .as_deref()
            .context("the coordinator has no local listener")?;
        let channel = doorzet_mesh::client::channel(
            me.tls()?,
            endpoint,
            Some(me.oin()?),
            Duration::from_secs(10),
        )?;
        let role = self.role.as_deref().unwrap_or(default_role);
        let token = token_for(me, &self.sub, role, Duration::from_secs(600))?;
        Ok((NodeAdminClient::new(channel), token))
    }
}

fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| SystemTime::try_from(t).ok())
        .map(|t| humantime_serde::re::humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "-".into())
}

fn parse_time(s: &str) -> anyhow::Result<prost_types::Timestamp> {
    let t = humantime_serde::re::humantime::parse_rfc3339_weak(s)
        .with_context(|| format!("`{s}` is not an RFC 3339 time"))?;
    Ok(t.into())
}

fn list(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|s| {
            s.split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Prints rows as an aligned table, or `json` when asked.
fn print(as_json: bool, value: Value, headers: &[&str], rows: Vec<Vec<String>>) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!(
        "{}",
        line(headers.iter().map(|h| h.to_uppercase()).collect())
    );
    for row in rows {
        println!("{}", line(row));
    }
}

/// `doorzetctl case ...`
#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// Create a local case (the organisation's own identifier; no BSN over this command).
    Create {
        /// The case system's own identifier.
        #[arg(long)]
        local_id: String,
    },
    /// Show a case with its facts, consents, legal bases and links.
    Show {
        /// Case id.
        case_id: String,
    },
    /// List cases, newest first.
    List {
        /// Most to list.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Link a case to an escalation's case reference.
    Link {
        /// Case id.
        case_id: String,
        /// The case reference.
        #[arg(long)]
        case_ref: String,
    },
}

fn case_row(c: &v1::Case) -> (Value, Vec<String>) {
    (
        json!({"case_id": c.case_id, "local_id": c.local_id, "has_bsn": c.has_bsn, "created_at": time(&c.created_at)}),
        vec![c.case_id.clone(), c.local_id.clone(), time(&c.created_at)],
    )
}

fn fact_json(f: &v1::Fact) -> Value {
    json!({"fact_id": f.fact_id, "category": f.category, "value": f.value, "source": f.source, "recorded_at": time(&f.recorded_at)})
}

fn recipients(r: &Option<v1::Recipients>) -> Vec<String> {
    let r = r.clone().unwrap_or_default();
    let kinds = r.kinds.iter().map(|k| {
        doorzet_proto::convert::org_kind("kind", *k).map_or("?".into(), |k| k.to_string())
    });
    r.org_ids.iter().cloned().chain(kinds).collect()
}

/// Runs a case command.
pub async fn case(cmd: CaseCommand, target: &LocalTarget) -> anyhow::Result<()> {
    let (mut client, token) = target.connect("casemanager").await?;
    match cmd {
        CaseCommand::Create { local_id } => {
            let c = client
                .create_case(authed(
                    v1::CreateCaseRequest {
                        local_id,
                        bsn: String::new(),
                    },
                    &token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            let (j, row) = case_row(&c);
            print(target.json, j, &["case", "local id", "created"], vec![row]);
        }
        CaseCommand::List { limit } => {
            let list = client
                .list_cases(authed(
                    v1::ListCasesRequest {
                        limit,
                        before_case_id: String::new(),
                    },
                    &token,
                )?)
                .await
                .map_err(status)?
                .into_inner()
                .cases;
            let (js, rows): (Vec<_>, Vec<_>) = list.iter().map(case_row).unzip();
            print(
                target.json,
                Value::Array(js),
                &["case", "local id", "created"],
                rows,
            );
        }
        CaseCommand::Link { case_id, case_ref } => {
            let l = client
                .link_case(authed(
                    v1::LinkCaseRequest {
                        case_id,
                        case_ref,
                        with_pseudonym: false,
                    },
                    &token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            print(
                target.json,
                json!({"case_id": l.case_id, "case_ref": l.case_ref, "linked_at": time(&l.linked_at)}),
                &["case", "case ref", "linked"],
                vec![vec![l.case_id, l.case_ref, time(&l.linked_at)]],
            );
        }
        CaseCommand::Show { case_id } => {
            let d = client
                .get_case(authed(v1::GetCaseRequest { case_id }, &token)?)
                .await
                .map_err(status)?
                .into_inner();
            let case = d.case.clone().unwrap_or_default();
            let consents: Vec<Value> = d.consents.iter().map(|c| json!({
                "consent_id": c.consent_id, "categories": c.categories, "recipients": recipients(&c.recipients),
                "purposes": c.purposes, "valid_from": time(&c.valid_from), "valid_until": time(&c.valid_until),
                "withdrawn_at": time(&c.withdrawn_at)})).collect();
            let bases: Vec<Value> = d.legal_bases.iter().map(|l| json!({
                "legal_basis_id": l.legal_basis_id, "law": l.law, "article": l.article, "categories": l.categories,
                "recipients": recipients(&l.recipients), "purposes": l.purposes,
                "valid_from": time(&l.valid_from), "valid_until": time(&l.valid_until)})).collect();
            let links: Vec<Value> = d
                .links
                .iter()
                .map(|l| json!({"case_ref": l.case_ref, "linked_at": time(&l.linked_at)}))
                .collect();
            let value = json!({"case": case_row(&case).0, "facts": d.facts.iter().map(fact_json).collect::<Vec<_>>(),
                "consents": consents, "legal_bases": bases, "links": links});
            if target.json {
                print(true, value, &[], vec![]);
                return Ok(());
            }
            println!(
                "case {} ({}), created {}",
                case.case_id,
                case.local_id,
                time(&case.created_at)
            );
            println!("\nfacts:");
            print(
                false,
                Value::Null,
                &["fact", "category", "value", "source", "recorded"],
                d.facts
                    .iter()
                    .map(|f| {
                        vec![
                            f.fact_id.clone(),
                            f.category.clone(),
                            f.value.clone(),
                            f.source.clone(),
                            time(&f.recorded_at),
                        ]
                    })
                    .collect(),
            );
            println!("\nconsents:");
            print(
                false,
                Value::Null,
                &[
                    "consent",
                    "categories",
                    "recipients",
                    "purposes",
                    "from",
                    "until",
                    "withdrawn",
                ],
                d.consents
                    .iter()
                    .map(|c| {
                        vec![
                            c.consent_id.clone(),
                            c.categories.join(","),
                            recipients(&c.recipients).join(","),
                            c.purposes.join(","),
                            time(&c.valid_from),
                            time(&c.valid_until),
                            time(&c.withdrawn_at),
                        ]
                    })
                    .collect(),
            );
            println!("\nlegal bases:");
            print(
                false,
                Value::Null,
                &[
                    "basis",
                    "law",
                    "article",
                    "categories",
                    "recipients",
                    "purposes",
                ],
                d.legal_bases
                    .iter()
                    .map(|l| {
                        vec![
                            l.legal_basis_id.clone(),
                            l.law.clone(),
                            l.article.clone(),
                            l.categories.join(","),
                            recipients(&l.recipients).join(","),
                            l.purposes.join(","),
                        ]
                    })
                    .collect(),
            );
            println!("\nlinks:");
            print(
                false,
                Value::Null,
                &["case ref", "linked"],
                d.links
                    .iter()
                    .map(|l| vec![l.case_ref.clone(), time(&l.linked_at)])
                    .collect(),
            );
        }
    }
    Ok(())
}

/// `doorzetctl fact ...`
#[derive(Debug, Subcommand)]
pub enum FactCommand {
    /// Record a fact about a case.
    Add {
        /// Case id.
        case_id: String,
        /// Category (living_situation, eviction_date, legal_title, required_security_level,
        /// current_provider, diagnosis_group, risk_signal, financing).
        #[arg(long)]
        category: String,
        /// The statement.
        #[arg(long)]
        value: String,
        /// Where it comes from.
        #[arg(long)]
        source: String,
    },
}

/// Runs a fact command.
pub async fn fact(cmd: FactCommand, target: &LocalTarget) -> anyhow::Result<()> {
    let (mut client, token) = target.connect("casemanager").await?;
    let FactCommand::Add {
        case_id,
        category,
        value,
        source,
    } = cmd;
    let f = client
        .add_fact(authed(
            v1::AddFactRequest {
                request_id: String::new(),
                case_id,
                fact: Some(v1::Fact {
                    category,
                    value,
                    source,
                    ..Default::default()
                }),
            },
            &token,
        )?)
        .await
        .map_err(status)?
        .into_inner();
    print(
        target.json,
        fact_json(&f),
        &["fact", "category", "recorded"],
        vec![vec![
            f.fact_id.clone(),
            f.category.clone(),
            time(&f.recorded_at),
        ]],
    );
    Ok(())
}

/// Who receives, for what, when: shared by consents and legal bases.
#[derive(Debug, Args)]
pub struct Coverage {
    /// Categories covered, comma-separated.
    #[arg(long)]
    pub categories: String,
    /// Recipient organisation kinds, comma-separated (e.g. mental_health_institution).
    #[arg(long)]
    pub recipient_kinds: Option<String>,
    /// Recipient organisation ids, comma-separated.
    #[arg(long)]
    pub recipient_orgs: Option<String>,
    /// Purposes, comma-separated (escalation_meeting, follow_up, urgent_intervention).
    #[arg(long, default_value = "escalation_meeting")]
    pub purposes: String,
    /// Valid from, RFC 3339 (default now).
    #[arg(long)]
    pub from: Option<String>,
    /// Valid until (exclusive), RFC 3339.
    #[arg(long)]
    pub until: Option<String>,
}

impl Coverage {
    fn recipients(&self) -> anyhow::Result<v1::Recipients> {
        let kinds = list(&self.recipient_kinds)
            .iter()
            .map(|k| {
                k.parse::<doorzet_domain::OrgKind>()
                    .map(|k| v1::OrganisationKind::from(k) as i32)
                    .map_err(|e| anyhow::anyhow!("--recipient-kinds: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(v1::Recipients {
            org_ids: list(&self.recipient_orgs),
            kinds,
        })
    }

    fn times(
        &self,
    ) -> anyhow::Result<(
        Option<prost_types::Timestamp>,
        Option<prost_types::Timestamp>,
    )> {
        Ok((
            self.from.as_deref().map(parse_time).transpose()?,
            self.until.as_deref().map(parse_time).transpose()?,
        ))
    }
}

/// `doorzetctl consent ...`
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Record a consent given by the person (or, with --representative, a representative).
    Record {
        /// Case id.
        case_id: String,
        /// Given by a legal representative.
        #[arg(long)]
        representative: bool,
        /// Who receives, for what, when.
        #[command(flatten)]
        coverage: Coverage,
    },
    /// Record a legal basis (law and article) that allows disclosure without consent.
    LegalBasis {
        /// Case id.
        case_id: String,
        /// The law, e.g. Wvggz.
        #[arg(long)]
        law: String,
        /// The article, e.g. 8:16.
        #[arg(long)]
        article: String,
        /// Who receives, for what, when.
        #[command(flatten)]
        coverage: Coverage,
    },
    /// Withdraw a consent, at once.
    Withdraw {
        /// Consent id.
        consent_id: String,
    },
}

/// Runs a consent command.
pub async fn consent(cmd: ConsentCommand, target: &LocalTarget) -> anyhow::Result<()> {
    let (mut client, token) = target.connect("casemanager").await?;
    let show = |id: String,
                categories: Vec<String>,
                r: &Option<v1::Recipients>,
                withdrawn: String| {
        print(
            target.json,
            json!({"id": id, "categories": categories, "recipients": recipients(r), "withdrawn_at": withdrawn}),
            &["id", "categories", "recipients", "withdrawn"],
            vec![vec![
                id.clone(),
                categories.join(","),
                recipients(r).join(","),
                withdrawn.clone(),
            ]],
        );
    };
    match cmd {
        ConsentCommand::Record {
            case_id,
            representative,
            coverage,
        } => {
            let (valid_from, valid_until) = coverage.times()?;
            let c = client
                .record_consent(authed(
                    v1::RecordConsentRequest {
                        request_id: String::new(),
                        consent: Some(v1::Consent {
                            case_id,
                            given_by: if representative {
                                v1::ConsentGiver::Representative
                            } else {
                                v1::ConsentGiver::Person
                            } as i32,
                            categories: list(&Some(coverage.categories.clone())),
                            recipients: Some(coverage.recipients()?),
                            purposes: list(&Some(coverage.purposes.clone())),
                            valid_from,
                            valid_until,
                            ..Default::default()
                        }),
                    },
                    &token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            show(
                c.consent_id.clone(),
                c.categories.clone(),
                &c.recipients,
                time(&c.withdrawn_at),
            );
        }
        ConsentCommand::LegalBasis {
            case_id,
            law,
            article,
            coverage,
        } => {
            let (valid_from, valid_until) = coverage.times()?;
            let l = client
                .record_legal_basis(authed(
                    v1::RecordLegalBasisRequest {
                        request_id: String::new(),
                        legal_basis: Some(v1::LegalBasis {
                            case_id,
                            law,
                            article,
                            categories: list(&Some(coverage.categories.clone())),
                            recipients: Some(coverage.recipients()?),
                            purposes: list(&Some(coverage.purposes.clone())),
                            valid_from,
                            valid_until,
                            ..Default::default()
                        }),
                    },
                    &token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            show(
                l.legal_basis_id.clone(),
                l.categories.clone(),
                &l.recipients,
                "-".into(),
            );
        }
        ConsentCommand::Withdraw { consent_id } => {
            let c = client
                .withdraw_consent(authed(v1::WithdrawConsentRequest { consent_id }, &token)?)
                .await
                .map_err(status)?
                .into_inner();
            show(
                c.consent_id.clone(),
                c.categories.clone(),
                &c.recipients,
                time(&c.withdrawn_at),
            );
        }
    }
    Ok(())
}

/// `doorzetctl mandate ...`
#[derive(Debug, Subcommand)]
pub enum MandateCommand {
    /// Create a mandate.
    Create {
        /// Role that holds it.
        #[arg(long)]
        role: String,
        /// Employee id of the person who holds it (optional).
        #[arg(long)]
        person: Option<String>,
        /// Tiers, comma-separated.
        #[arg(long)]
        tiers: String,
        /// Domains, comma-separated.
        #[arg(long)]
        domains: String,
        /// Decision types, comma-separated.
        #[arg(long)]
        decision_types: String,
        /// Legal basis or delegation.
        #[arg(long)]
        legal_basis: String,
        /// Review date, RFC 3339 (at most a year ahead).
        #[arg(long)]
        review_date: String,
        /// Valid until (exclusive), RFC 3339.
        #[arg(long)]
        until: Option<String>,
    },
    /// List this organisation's mandates (current ones; --all for every one, flagged).
    List {
        /// Include expired, ended and overdue mandates.
        #[arg(long)]
        all: bool,
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only this tier.
        #[arg(long)]
        tier: Option<u32>,
    },
    /// End a mandate now.
    End {
        /// Mandate id.
        mandate_id: String,
    },
}

fn mandate_row(m: &v1::Mandate) -> (Value, Vec<String>) {
    let flags = match (m.is_current, m.is_review_overdue, m.ended_at.is_some()) {
        (true, _, _) => "current",
        (_, _, true) => "ended",
        (_, true, _) => "review overdue",
        _ => "not valid now",
    };
    let tiers: Vec<String> = m.tiers.iter().map(u32::to_string).collect();
    (
        json!({"mandate_id": m.mandate_id, "role": m.role, "person": m.person, "tiers": m.tiers, "domains": m.domains,
            "decision_types": m.decision_types, "legal_basis": m.legal_basis, "valid_from": time(&m.valid_from),
            "valid_until": time(&m.valid_until), "review_date": time(&m.review_date), "is_current": m.is_current,
            "is_review_overdue": m.is_review_overdue}),
        vec![
            m.mandate_id.clone(),
            m.role.clone(),
            tiers.join(","),
            m.domains.join(","),
            m.decision_types.join(","),
            time(&m.review_date),
            flags.into(),
        ],
    )
}

const MANDATE_HEADERS: [&str; 7] = [
    "mandate",
    "role",
    "tiers",
    "domains",
    "decisions",
    "review",
    "state",
];

/// Runs a mandate command.
pub async fn mandate(cmd: MandateCommand, target: &LocalTarget) -> anyhow::Result<()> {
    let (mut client, token) = target.connect("beheerder").await?;
    let one = |m: v1::Mandate| {
        let (j, row) = mandate_row(&m);
        print(target.json, j, &MANDATE_HEADERS, vec![row]);
    };
    match cmd {
        MandateCommand::Create {
            role,
            person,
            tiers,
            domains,
            decision_types,
            legal_basis,
            review_date,
            until,
        } => {
            let tiers = list(&Some(tiers))
                .iter()
                .map(|t| t.parse::<u32>().with_context(|| format!("--tiers: `{t}`")))
                .collect::<anyhow::Result<_>>()?;
            let m = client
                .create_mandate(authed(
                    v1::CreateMandateRequest {
                        mandate: Some(v1::Mandate {
                            role,
                            person: person.unwrap_or_default(),
                            tiers,
                            domains: list(&Some(domains)),
                            decision_types: list(&Some(decision_types)),
                            legal_basis,
                            review_date: Some(parse_time(&review_date)?),
                            valid_until: until.as_deref().map(parse_time).transpose()?,
                            ..Default::default()
                        }),
                    },
                    &token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            one(m);
        }
        MandateCommand::End { mandate_id } => {
            let m = client
                .end_mandate(authed(
                    v1::EndMandateRequest {
                        mandate_id,
                        ended_at: None,
                    },
                    &token,
                )?)
                .await
                .map_err(status)?
                .into_inner();
            one(m);
        }
        MandateCommand::List { all, domain, tier } => {
            let list = client
                .list_own_mandates(authed(
                    v1::ListOwnMandatesRequest {
                        filter: Some(v1::ListMandatesRequest {
                            tier,
                            domain: domain.unwrap_or_default(),
                            ..Default::default()
                        }),
                        include_not_current: all,
                    },
                    &token,
                )?)
                .await
                .map_err(status)?
                .into_inner()
                .mandates;
            let (js, rows): (Vec<_>, Vec<_>) = list.iter().map(mandate_row).unzip();
            print(target.json, Value::Array(js), &MANDATE_HEADERS, rows);
        }
    }
    Ok(())
}

fn outcome(o: i32) -> &'static str {
    match v1::DisclosureOutcome::try_from(o) {
        Ok(v1::DisclosureOutcome::Disclosed) => "disclosed",
        Ok(v1::DisclosureOutcome::PartlyWithheld) => "partly withheld",
        Ok(v1::DisclosureOutcome::Withheld) => "withheld",
        Ok(v1::DisclosureOutcome::Refused) => "refused",
        _ => "?",
    }
}

/// Lists a case reference's disclosure log, oldest first.
pub async fn disclosures(case_ref: String, limit: u32, target: &LocalTarget) -> anyhow::Result<()> {
    let (mut client, token) = target.connect("privacy_officer").await?;
    let mut list = client
        .list_disclosures(authed(
            v1::ListDisclosuresRequest { case_ref, limit },
            &token,
        )?)
        .await
        .map_err(status)?
        .into_inner()
        .disclosures;
    list.reverse();
    let js = list.iter().map(|d| json!({
        "disclosure_id": d.disclosure_id, "at": time(&d.at), "requester_org": d.requester_org,
        "requester_person": d.requester_person, "on_behalf_of_org": d.on_behalf_of_org, "case_ref": d.case_ref,
        "escalation_id": d.escalation_id, "purpose": d.purpose, "disclosed_fact_ids": d.disclosed_fact_ids,
        "disclosed_categories": d.disclosed_categories, "withheld_categories": d.withheld_categories,
        "outcome": outcome(d.outcome), "refusal": d.refusal, "grant_id": d.grant_id})).collect();
    let rows = list
        .iter()
        .map(|d| {
            vec![
                time(&d.at),
                d.requester_org.clone(),
                d.requester_person.clone(),
                d.purpose.clone(),
                d.disclosed_categories.join(","),
                d.withheld_categories.join(","),
                if d.refusal.is_empty() {
                    outcome(d.outcome).to_owned()
                } else {
                    format!("refused: {}", d.refusal)
                },
            ]
        })
        .collect();
    print(
        target.json,
        Value::Array(js),
        &[
            "when",
            "asked by",
            "person",
            "purpose",
            "disclosed",
            "withheld",
            "outcome",
        ],
        rows,
    );
    Ok(())
}

/// Mints a participation grant with the local mesh coordinator's development key, for `to`
/// (member slugs or ids) and `case_ref`.
pub fn issue_grant(
    dir: &std::path::Path,
    case_ref: &str,
    to: &[String],
    purpose: &str,
    tier: u32,
    escalation_id: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    let mesh = MeshFile::read(dir)?;
    let coordinator = &mesh.coordinator;
    let participants = to
        .iter()
        .map(|m| Ok(mesh.member(m)?.org_id.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = doorzet_domain::grant::GrantClaims {
        iss: coordinator.org_id.clone(),
        jti: format!("grant-{}", now),
        escalation_id: escalation_id.to_owned(),
        case_ref: case_ref.to_owned(),
        tier,
        participants,
        purpose: purpose.to_owned(),
        iat: now,
        nbf: now.saturating_sub(30),
        exp: now + ttl.as_secs(),
    };
    let pem = std::fs::read(&coordinator.files.signing_key)
        .with_context(|| format!("reading {}", coordinator.files.signing_key.display()))?;
    let kid = coordinator.files.read_jwk()?.kid;
    Ok(crate::token::mint_grant(&pem, &kid, &claims)?)
}

/// Asks `holder`'s node for a case's facts over mutual TLS as member `asker`, as that member's
/// systems would, and prints what was disclosed and what was withheld.
pub async fn query_facts(
    dir: &std::path::Path,
    asker: &str,
    holder: &str,
    grant: String,
    case_ref: String,
    requested_by: String,
    as_json: bool,
) -> anyhow::Result<()> {
    let mesh = MeshFile::read(dir)?;
    let (me, them) = (mesh.member(asker)?, mesh.member(holder)?);
    let channel = doorzet_mesh::client::channel(
        me.tls()?,
        &them.mesh_endpoint,
        Some(them.oin()?),
        Duration::from_secs(10),
    )?;
    let answer = v1::partner_node_client::PartnerNodeClient::new(channel)
        .query_facts(v1::QueryFactsRequest {
            grant,
            case_ref,
            categories: vec![],
            requested_by,
        })
        .await
        .map_err(status)?
        .into_inner();
    let reason = |r: i32| {
        v1::WithheldReason::try_from(r)
            .map(|r| {
                r.as_str_name()
                    .trim_start_matches("WITHHELD_REASON_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| "?".into())
    };
    let mut rows: Vec<Vec<String>> = answer
        .facts
        .iter()
        .map(|f| {
            vec![
                f.category.clone(),
                "disclosed".into(),
                f.value.clone(),
                f.source.clone(),
            ]
        })
        .collect();
    rows.extend(answer.withheld.iter().map(|w| {
        vec![
            w.category.clone(),
            format!("withheld: {}", reason(w.reason)),
            "-".into(),
            "-".into(),
        ]
    }));
    let value = json!({
        "disclosure_id": answer.disclosure_id,
        "facts": answer.facts.iter().map(fact_json).collect::<Vec<_>>(),
        "withheld": answer.withheld.iter().map(|w| json!({"category": w.category, "reason": reason(w.reason)})).collect::<Vec<_>>(),
    });
    print(
        as_json,
        value,
        &["category", "answer", "value", "source"],
        rows,
    );
    Ok(())
}
