//! `doorzetctl demo`: the first case of DOMAIN.md (the eviction) walked through a running local mesh
//! of real processes: registered at tier 1 under the urgent procedure, tier 1 fails, escalated to
//! tier 3, participants found from the members' own mandates, what each participant may and may not
//! see, the meeting, the decision with commitments checked against mandates, the commitments
//! reported, the follow-up confirmed and the case closed; then the timeline and the audit log's
//! verification. All names and facts are fictional.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use doorzet_proto::v1::{
    self, coordinator_client::CoordinatorClient, node_admin_client::NodeAdminClient,
};
use tonic::transport::Channel;

use crate::inspect::token_for;
use crate::local_mesh::{MeshFile, MeshMember};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Demo {
    mesh: MeshFile,
    run: String,
}

fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

fn state(s: i32) -> String {
    v1::EscalationState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ESCALATION_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".into())
}

fn event(e: i32) -> String {
    v1::EscalationEventType::try_from(e)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ESCALATION_EVENT_TYPE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".into())
}

fn reason(r: i32) -> String {
    v1::WithheldReason::try_from(r)
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("WITHHELD_REASON_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".into())
}

fn when(t: &Option<prost_types::Timestamp>) -> String {
    let Some(t) = t.and_then(|t| SystemTime::try_from(t).ok()) else {
        return "-".into();
    };
    doorzet_domain::calendar::Calendar::default().format(t)
}

impl Demo {
    fn member(&self, slug: &str) -> anyhow::Result<&MeshMember> {
        self.mesh.member(slug)
    }

    fn token(&self, slug: &str, sub: &str, role: &str) -> anyhow::Result<String> {
        token_for(self.member(slug)?, sub, role, Duration::from_secs(3600))
    }

    fn local(&self, slug: &str) -> anyhow::Result<NodeAdminClient<Channel>> {
        let me = self.member(slug)?;
        let endpoint = me.local_endpoint.as_deref().context("no local listener")?;
        let channel = doorzet_mesh::client::channel(
            me.tls()?,
            endpoint,
            Some(me.oin()?),
            Duration::from_secs(10),
        )?;
        Ok(NodeAdminClient::new(channel))
    }

    fn coordinator(&self, slug: &str) -> anyhow::Result<CoordinatorClient<Channel>> {
        let me = self.member(slug)?;
        let channel = doorzet_mesh::client::channel(
            me.tls()?,
            &self.mesh.coordinator.mesh_endpoint,
            Some(self.mesh.coordinator.oin()?),
            Duration::from_secs(10),
        )?;
        Ok(CoordinatorClient::new(channel))
    }

    async fn mandate(
        &self,
        slug: &str,
        role: &str,
        tiers: &[u32],
        decides: &str,
    ) -> anyhow::Result<String> {
        let now = SystemTime::now();
        let m = self
            .local(slug)?
            .create_mandate(authed(
                v1::CreateMandateRequest {
                    mandate: Some(v1::Mandate {
                        role: role.into(),
                        tiers: tiers.to_vec(),
                        domains: vec!["housing".into(), "wmo_support".into(), "zvw_care".into()],
                        decision_types: vec![decides.into()],
                        legal_basis: "Mandaatbesluit 2026 (fictief)".into(),
                        valid_from: Some((now - 30 * DAY).into()),
                        review_date: Some((now + 300 * DAY).into()),
                        ..Default::default()
                    }),
                },
                &self.token(slug, "beheer-1", "beheerder")?,
            )?)
            .await
            .with_context(|| format!("mandate {role} at {slug}"))?
            .into_inner();
        println!("   {slug:<13} {role:<14} tiers {:?}  {decides}", m.tiers);
        Ok(m.mandate_id)
    }

    async fn inbox_grant(&self, slug: &str, escalation: &str) -> anyhow::Result<String> {
        let token = self.token(slug, "cm-1", "casemanager")?;
        for _ in 0..100 {
            let items = self
                .local(slug)?
                .list_inbox(authed(
                    v1::ListInboxRequest {
                        after: 0,
                        limit: 1000,
                        ..Default::default()
                    },
                    &token,
                )?)
                .await?
                .into_inner()
                .items;
            let grant = items
                .into_iter()
                .filter_map(|i| i.notification)
                .filter(|n| n.escalation_id == escalation && !n.grant.is_empty())
                .max_by_key(|n| n.sequence)
                .map(|n| n.grant);
            if let Some(grant) = grant {
                return Ok(grant);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{slug} received no invitation for {escalation}")
    }
}

/// Runs the demo on the local mesh described in `dir`.
pub async fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    let mesh = MeshFile::read(dir)?;
    let run = format!(
        "{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs()
    );
    let demo = Demo { mesh, run };

    println!(
        "\n== 1. Who may decide what: each organisation registers its own mandates at its own node"
    );
    demo.mandate("ggz", "teamleider", &[1], "open_bed").await?;
    demo.mandate("housing", "woonconsulent", &[1], "suspend_eviction")
        .await?;
    demo.mandate("care-office", "zorginkoper", &[2], "pre_finance")
        .await?;
    let wethouder = demo
        .mandate("municipality", "wethouder", &[3, 4], "provide_housing")
        .await?;
    let bestuurder = demo
        .mandate("ggz", "bestuurder", &[3], "force_placement")
        .await?;
    demo.mandate("care-office", "gemandateerde", &[3], "pre_finance")
        .await?;
    let directeur = demo
        .mandate("housing", "directeur", &[3], "suspend_eviction")
        .await?;

    println!(
        "\n== 2. The municipality's case: a woman in her fifties, evicted on a fixed date (fictional)"
    );
    let cm = demo.token("municipality", "cm-0147", "casemanager")?;
    let mut municipality = demo.local("municipality")?;
    let case = municipality
        .create_case(authed(
            v1::CreateCaseRequest {
                local_id: format!("zaak-{}", demo.run),
                bsn: String::new(),
            },
            &cm,
        )?)
        .await?
        .into_inner();
    for (category, value) in [
        ("eviction_date", "2027-02-01"),
        (
            "living_situation",
            "huurwoning, geluidsoverlast, ontruimingsvonnis",
        ),
        (
            "diagnosis_group",
            "stemmingsstoornis, stabiel op depotmedicatie",
        ),
    ] {
        municipality
            .add_fact(authed(
                v1::AddFactRequest {
                    request_id: String::new(),
                    case_id: case.case_id.clone(),
                    fact: Some(v1::Fact {
                        category: category.into(),
                        value: value.into(),
                        source: "zaaksysteem gemeente".into(),
                        ..Default::default()
                    }),
                },
                &cm,
            )?)
            .await?;
        println!("   fact {category:<18} (content stays at the municipality's node)");
    }
    municipality
        .record_consent(authed(
            v1::RecordConsentRequest {
                request_id: String::new(),
                consent: Some(v1::Consent {
                    case_id: case.case_id.clone(),
                    given_by: v1::ConsentGiver::Person as i32,
                    categories: vec!["eviction_date".into(), "living_situation".into()],
                    recipients: Some(v1::Recipients {
                        org_ids: vec![],
                        kinds: vec![
                            v1::OrganisationKind::MentalHealthInstitution as i32,
                            v1::OrganisationKind::HousingCorporation as i32,
                        ],
                    }),
                    purposes: vec!["escalation_meeting".into(), "urgent_intervention".into()],
                    ..Default::default()
                }),
            },
            &cm,
        )?)
        .await?;
    println!(
        "   consent: eviction date and living situation, to mental-health institutions and housing corporations, for the escalation"
    );

    println!(
        "\n== 3. Registered at tier 1 under the urgent procedure (the eviction date is fixed)"
    );
    let esc = municipality
        .escalate(authed(
            v1::EscalateRequest {
                request_id: format!("demo-{}-t1", demo.run),
                case_id: case.case_id.clone(),
                tier: 1,
                urgent: true,
                categories: vec!["eviction_date".into(), "living_situation".into()],
                tables_tried: vec![],
                question: "Kan de ontruiming worden opgeschort tot er passende woonruimte is?"
                    .into(),
                asked_seats: vec![],
            },
            &cm,
        )?)
        .await?
        .into_inner()
        .escalation
        .context("no escalation")?;
    let id = esc.escalation_id.clone();
    print_escalation(&esc);

    println!(
        "\n== 4. Tier 1 fails: nobody at the transfer table may suspend an eviction; the GGZ's process director escalates to tier 3"
    );
    let ggz_pd = demo.token("ggz", "pr-ggz-1", "procesregisseur")?;
    let esc = demo
        .coordinator("ggz")?
        .escalate_tier(authed(
            v1::EscalateTierRequest {
                request_id: format!("demo-{}-up", demo.run),
                escalation_id: id.clone(),
                to_tier: 3,
                reason: "Geen mandaat aan tafel om een ontruiming op te schorten".into(),
            },
            &ggz_pd,
        )?)
        .await?
        .into_inner();
    print_escalation(&esc);

    println!("\n== 5. What each participant may see of the case, with the coordinator's grant");
    for slug in ["ggz", "housing", "care-office"] {
        let grant = demo.inbox_grant(slug, &id).await?;
        let answer = demo
            .local(slug)?
            .query_partner_facts(authed(
                v1::QueryPartnerFactsRequest {
                    org_id: demo.member("municipality")?.org_id.clone(),
                    grant,
                    case_ref: esc.case_ref.clone(),
                    categories: vec![],
                },
                &demo.token(slug, "cm-2", "casemanager")?,
            )?)
            .await?
            .into_inner();
        let seen: Vec<String> = answer.facts.iter().map(|f| f.category.clone()).collect();
        let withheld: Vec<String> = answer
            .withheld
            .iter()
            .map(|w| format!("{} ({})", w.category, reason(w.reason)))
            .collect();
        println!("   {slug:<12} sees {seen:?}; withheld {withheld:?}");
    }

    println!("\n== 6. The municipality's process director plans the meeting within the term");
    let pd = demo.token("municipality", "pr-0042", "procesregisseur")?;
    let mut coordinator = demo.coordinator("municipality")?;
    let esc = coordinator
        .plan_meeting(authed(
            v1::PlanMeetingRequest {
                request_id: format!("demo-{}-plan", demo.run),
                escalation_id: id.clone(),
                at: Some((SystemTime::now() + Duration::from_secs(4 * 3600)).into()),
                location: "Stadhuis, bestuurskamer".into(),
            },
            &pd,
        )?)
        .await?
        .into_inner();
    println!(
        "   meeting at {} (term ends {})",
        when(&esc.meeting.as_ref().and_then(|m| m.at)),
        when(&esc.deadline)
    );

    println!(
        "\n== 7. The decision, with commitments under mandates the coordinator checks at each node"
    );
    let due = Some((SystemTime::now() + 14 * DAY).into());
    let mut commitments = vec![
        (
            "housing",
            "Ontruiming opschorten tot 1 maart",
            directeur.as_str(),
        ),
        (
            "ggz",
            "Ambulante begeleiding en bemoeizorg starten",
            bestuurder.as_str(),
        ),
        (
            "municipality",
            "Urgentie voor begeleid wonen toekennen",
            wethouder.as_str(),
        ),
    ]
    .into_iter()
    .map(|(slug, action, mandate)| {
        Ok(v1::CommitmentInput {
            org: demo.member(slug)?.org_id.clone(),
            action: action.into(),
            due,
            mandate_id: mandate.into(),
        })
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    let bogus = v1::RecordDecisionRequest {
        request_id: format!("demo-{}-dec0", demo.run),
        escalation_id: id.clone(),
        summary: "Ontruiming opgeschort; begeleid wonen".into(),
        commitments: vec![v1::CommitmentInput {
            mandate_id: "mandaat-bestaat-niet".into(),
            ..commitments[0].clone()
        }],
        lessons: String::new(),
        national_advice: String::new(),
    };
    match coordinator.record_decision(authed(bogus, &pd)?).await {
        Err(s) => println!("   refused first, as it should be: {}", s.message()),
        Ok(_) => bail!("a commitment under a mandate nobody holds was accepted"),
    }
    let esc = coordinator
        .record_decision(authed(
            v1::RecordDecisionRequest {
                request_id: format!("demo-{}-dec", demo.run),
                escalation_id: id.clone(),
                summary: "Ontruiming opgeschort; begeleid wonen binnen zes weken".into(),
                commitments: std::mem::take(&mut commitments),
                lessons: "Bij een vaste ontruimingsdatum direct de spoedprocedure".into(),
                national_advice: "Zwarte lijsten van corporaties regionaal afstemmen".into(),
            },
            &pd,
        )?)
        .await?
        .into_inner();
    print_escalation(&esc);
    let decision = esc.decision.clone().context("no decision")?;
    for c in &decision.commitments {
        println!(
            "   {}  {}  by {}  under {}",
            c.commitment_id,
            c.action,
            when(&c.due),
            c.mandate_id
        );
    }

    println!("\n== 8. Each organisation reports its commitment done");
    for c in &decision.commitments {
        let slug = demo
            .mesh
            .members
            .iter()
            .find(|m| m.org_id == c.org)
            .map(|m| m.slug.clone())
            .context("commitment of an unknown member")?;
        demo.coordinator(&slug)?
            .report_commitment(authed(
                v1::ReportCommitmentRequest {
                    request_id: format!("demo-{}-{}", demo.run, c.commitment_id),
                    escalation_id: id.clone(),
                    commitment_id: c.commitment_id.clone(),
                    done: true,
                    progress: "Gedaan".into(),
                },
                &demo.token(&slug, "uitv-1", "casemanager")?,
            )?)
            .await?;
        println!("   {slug:<12} {} done", c.commitment_id);
    }

    println!("\n== 9. Follow-up: the municipality confirms the solution happened; the case closes");
    let esc = coordinator
        .confirm_follow_up(authed(
            v1::ConfirmFollowUpRequest {
                request_id: format!("demo-{}-fu", demo.run),
                escalation_id: id.clone(),
                solved: true,
                note: "Verhuisd naar begeleid wonen".into(),
            },
            &cm,
        )?)
        .await?
        .into_inner();
    print_escalation(&esc);

    println!(
        "\n== 10. The escalation's timeline (every transition was notified to the municipality)"
    );
    let mut events = coordinator
        .watch_escalation(authed(
            v1::WatchEscalationRequest {
                escalation_id: id.clone(),
                after_sequence: 0,
            },
            &pd,
        )?)
        .await?
        .into_inner();
    while let Some(e) = events.message().await? {
        println!(
            "   {:>2}  {}  {:<22} tier {}",
            e.sequence,
            when(&e.occurred_at),
            event(e.r#type),
            e.tier
        );
        if e.sequence >= esc.sequence {
            break;
        }
    }

    if let Some(gateway) = &demo.member("municipality")?.gateway {
        let path = format!("/escalations/{id}");
        let (status, body) =
            crate::local_mesh::http_get(gateway.authority(), &format!("/api/v1{path}"), Some(&cm))
                .await?;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        println!(
            "\n== The same escalation through the municipality's REST gateway\n   GET {}{path}  ->  {status}, state {}, tier {}",
            gateway.api, json["state"], json["tier"]
        );
        let (status, _) =
            crate::local_mesh::http_get(gateway.authority(), &format!("/api/v1{path}"), None)
                .await?;
        println!("   the same without a token  ->  {status} (application/problem+json)");
    }
    Ok(())
}

fn print_escalation(e: &v1::Escalation) {
    println!(
        "   {}  case {}  tier {} ({})  {}  deadline {}",
        e.escalation_id,
        e.case_ref,
        e.tier,
        e.tier_name,
        state(e.state),
        when(&e.deadline)
    );
    for p in &e.participants {
        let seat = p.seat.clone().unwrap_or_default();
        if p.missing {
            println!(
                "     MISSING {} {}: {}",
                seat.org_kind, seat.role, p.missing_reason
            );
        } else {
            println!(
                "     {:<26} {:<14} {} (mandate {})",
                seat.org_kind, seat.role, p.org_name, p.mandate_id
            );
        }
    }
    if !e.participants.is_empty() && !e.table_complete {
        println!("     the table is NOT complete: a required participant is missing");
    }
}
