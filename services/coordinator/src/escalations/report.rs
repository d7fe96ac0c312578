//! What the region learns: the fixed-format report of a tier-3 decision (case description without
//! direct identifiers, outcomes and agreements, lessons for the region, advice for national
//! lobbying), and aggregate statistics per period with counts below [`SUPPRESS_BELOW`] suppressed,
//! so a rare case cannot be recognised from the numbers. Pure functions over stored escalations
//! and their events.

use std::collections::BTreeMap;
use std::time::SystemTime;

use doorzet_proto::v1;

/// Counts below this are reported as -1.
pub const SUPPRESS_BELOW: i64 = 5;

/// The tier whose decisions yield the fixed-format report.
pub const REPORT_TIER: u32 = 3;

fn suppress(n: i64) -> i64 {
    if n < SUPPRESS_BELOW { -1 } else { n }
}

fn outcome(o: i32) -> &'static str {
    match v1::TableOutcome::try_from(o) {
        Ok(v1::TableOutcome::NoSolution) => "geen oplossing",
        Ok(v1::TableOutcome::NoMandate) => "geen mandaat aan tafel",
        Ok(v1::TableOutcome::NotCarriedOut) => "afspraak niet uitgevoerd",
        Ok(v1::TableOutcome::NoMeetingInTime) => "niet tijdig aan tafel",
        _ => "onbekend",
    }
}

fn state(s: i32) -> &'static str {
    match v1::CommitmentState::try_from(s) {
        Ok(v1::CommitmentState::Open) => "open",
        Ok(v1::CommitmentState::Done) => "gedaan",
        Ok(v1::CommitmentState::Overdue) => "te laat",
        _ => "?",
    }
}

/// The tier-3 report of `e`, or why there is none.
pub fn report(
    e: &v1::Escalation,
    org_name: impl Fn(&str) -> String,
) -> Result<v1::GetReportResponse, String> {
    let decision = e
        .decision
        .as_ref()
        .filter(|d| d.decided_at.is_some() && d.tier == REPORT_TIER)
        .ok_or_else(|| {
            format!(
                "escalation {} has no tier-{REPORT_TIER} decision",
                e.escalation_id
            )
        })?;
    let tried: Vec<String> = e
        .tables_tried
        .iter()
        .map(|t| format!("trede {} ({}): {}", t.tier, t.table, outcome(t.outcome)))
        .collect();
    let case_description = format!(
        "Casus {} (regio {}), {}aangemeld door {}. Vraag aan tafel: {} Betrokken categorieën: {}. Eerder geprobeerd: {}.",
        e.case_ref,
        e.region,
        if e.urgent { "met spoed " } else { "" },
        org_name(&e.registrant_org),
        e.question,
        e.categories.join(", "),
        if tried.is_empty() {
            "—".to_owned()
        } else {
            tried.join("; ")
        }
    );
    let mut outcomes = format!("{}\n", decision.summary);
    for c in &decision.commitments {
        outcomes.push_str(&format!(
            "- {}: {} (mandaat {}, {})\n",
            org_name(&c.org),
            c.action,
            c.mandate_id,
            state(c.state)
        ));
    }
    let markdown = format!(
        "# Rapportage bestuurlijk escalatieoverleg\n\n## Casusbeschrijving\n\n{case_description}\n\n## Uitkomsten en afspraken\n\n{outcomes}\n## Signalen en lessen voor de regio\n\n{}\n\n## Advies voor landelijke lobby\n\n{}\n",
        if decision.lessons.is_empty() {
            "—"
        } else {
            &decision.lessons
        },
        if decision.national_advice.is_empty() {
            "—"
        } else {
            &decision.national_advice
        },
    );
    Ok(v1::GetReportResponse {
        escalation_id: e.escalation_id.clone(),
        case_description,
        outcomes,
        lessons: decision.lessons.clone(),
        national_advice: decision.national_advice.clone(),
        markdown,
    })
}

fn at(t: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(t).ok())
}

/// Statistics over escalations registered in a period, with their events.
pub fn statistics(
    region: &str,
    escalations: &[(v1::Escalation, Vec<v1::EscalationEvent>)],
    now: SystemTime,
) -> v1::GetStatisticsResponse {
    let mut reached: BTreeMap<u32, i64> = BTreeMap::new();
    let mut solved: BTreeMap<u32, i64> = BTreeMap::new();
    let mut hours: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    let mut categories: BTreeMap<String, i64> = BTreeMap::new();
    let mut overdue = 0;
    for (e, events) in escalations {
        for c in &e.categories {
            *categories.entry(c.clone()).or_default() += 1;
        }
        let mut tiers: Vec<u32> = events.iter().map(|ev| ev.tier).collect();
        tiers.sort();
        tiers.dedup();
        for t in tiers {
            *reached.entry(t).or_default() += 1;
        }
        // Time at a tier: from the event that put it there to the next event at another tier (or
        // closing, or now).
        let mut i = 0;
        while i < events.len() {
            let tier = events[i].tier;
            let start = at(&events[i].occurred_at);
            let mut j = i + 1;
            while j < events.len() && events[j].tier == tier {
                j += 1;
            }
            let closed_at = events[i..j]
                .iter()
                .find(|ev| ev.r#type == v1::EscalationEventType::Closed as i32)
                .and_then(|ev| at(&ev.occurred_at));
            let end = if j < events.len() {
                at(&events[j].occurred_at)
            } else {
                closed_at.or(Some(now))
            };
            if let (Some(s), Some(e)) = (start, end) {
                let h = e.duration_since(s).unwrap_or_default().as_secs_f64() / 3600.0;
                hours.entry(tier).or_default().push(h);
            }
            i = j;
        }
        if e.state == v1::EscalationState::Closed as i32
            && let Some(d) = &e.decision
            && d.decided_at.is_some()
        {
            *solved.entry(d.tier).or_default() += 1;
        }
        overdue += e
            .decision
            .iter()
            .flat_map(|d| &d.commitments)
            .filter(|c| c.state == v1::CommitmentState::Overdue as i32)
            .count() as i64;
    }
    let tiers = reached
        .iter()
        .map(|(tier, cases)| {
            let mut h = hours.get(tier).cloned().unwrap_or_default();
            h.sort_by(|a, b| a.total_cmp(b));
            let median = if (h.len() as i64) < SUPPRESS_BELOW {
                -1.0
            } else {
                h[h.len() / 2]
            };
            v1::TierStatistics {
                tier: *tier,
                cases: suppress(*cases),
                solved: suppress(solved.get(tier).copied().unwrap_or(0)),
                median_hours: median,
            }
        })
        .collect();
    v1::GetStatisticsResponse {
        region: region.to_owned(),
        tiers,
        bottleneck_categories: categories
            .into_iter()
            .map(|(c, n)| (c, suppress(n)))
            .collect(),
        overdue_commitments: suppress(overdue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(h: u64) -> Option<prost_types::Timestamp> {
        Some((SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + h * 3600)).into())
    }

    fn ev(seq: u64, tier: u32, h: u64, kind: v1::EscalationEventType) -> v1::EscalationEvent {
        v1::EscalationEvent {
            sequence: seq,
            tier,
            occurred_at: t(h),
            r#type: kind as i32,
            ..Default::default()
        }
    }

    fn closed_at_3(n: usize) -> Vec<(v1::Escalation, Vec<v1::EscalationEvent>)> {
        (0..n)
            .map(|i| {
                let e = v1::Escalation {
                    escalation_id: format!("esc-{i}"),
                    state: v1::EscalationState::Closed as i32,
                    categories: vec!["eviction_date".into()],
                    decision: Some(v1::Decision {
                        tier: 3,
                        decided_at: t(10),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let events = vec![
                    ev(1, 1, 0, v1::EscalationEventType::Accepted),
                    ev(2, 3, 4, v1::EscalationEventType::Escalated),
                    ev(3, 3, 10, v1::EscalationEventType::Decided),
                    ev(4, 3, 12, v1::EscalationEventType::Closed),
                ];
                (e, events)
            })
            .collect()
    }

    #[test]
    fn small_counts_are_suppressed() {
        let few = statistics("r", &closed_at_3(4), SystemTime::now());
        assert!(
            few.tiers
                .iter()
                .all(|t| t.cases == -1 && t.median_hours < 0.0)
        );
        assert_eq!(few.bottleneck_categories["eviction_date"], -1);
        let many = statistics("r", &closed_at_3(6), SystemTime::now());
        let tier3 = many.tiers.iter().find(|t| t.tier == 3).unwrap();
        assert_eq!((tier3.cases, tier3.solved), (6, 6));
        assert_eq!(tier3.median_hours, 8.0);
        let tier1 = many.tiers.iter().find(|t| t.tier == 1).unwrap();
        assert_eq!(
            (tier1.cases, tier1.solved, tier1.median_hours),
            (6, -1, 4.0)
        );
        assert_eq!(many.overdue_commitments, -1);
    }

    #[test]
    fn the_report_needs_a_tier_3_decision_and_names_no_person() {
        let mut e = closed_at_3(1).remove(0).0;
        e.registrant_org = "00000001999000001001".into();
        e.question = "Ontruiming opschorten?".into();
        e.decision.as_mut().unwrap().summary = "Opgeschort".into();
        e.decision.as_mut().unwrap().lessons = "Eerder opschalen".into();
        let r = report(&e, |_| "Gemeente Hofland".into()).unwrap();
        assert!(r.case_description.contains("Gemeente Hofland"));
        assert!(r.markdown.starts_with("# Rapportage"));
        assert!(r.markdown.contains("Eerder opschalen"));
        e.decision.as_mut().unwrap().tier = 2;
        assert!(report(&e, |_| String::new()).is_err());
    }
}
