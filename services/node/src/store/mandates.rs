//! The organisation's mandates, their conversion from and to the contract, and the listing filter.

use std::time::SystemTime;

use doorzet_domain::Oin;
use doorzet_domain::mandate::{DecisionType, Domain, Mandate, check_term};
use doorzet_proto::convert::{ConvertError, time};
use doorzet_proto::v1;
use doorzet_store::Database;

use crate::Error;
use crate::store::cases::{from_millis, join, millis, split};

/// A stored mandate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMandate {
    /// Its id.
    pub mandate_id: String,
    /// Its terms.
    pub terms: Mandate,
}

impl StoredMandate {
    /// The contract's view at `now`.
    pub fn to_pb(&self, org: Oin, now: SystemTime) -> v1::Mandate {
        let m = &self.terms;
        v1::Mandate {
            mandate_id: self.mandate_id.clone(),
            org_id: org.to_string(),
            role: m.role.clone(),
            person: m.person.clone().unwrap_or_default(),
            tiers: m.tiers.iter().copied().collect(),
            domains: m.domains.iter().cloned().collect(),
            decision_types: m.decision_types.iter().cloned().collect(),
            legal_basis: m.legal_basis.clone(),
            valid_from: Some(m.valid_from.into()),
            valid_until: m.valid_until.map(Into::into),
            review_date: Some(m.review_date.into()),
            is_current: m.is_current(now),
            is_review_overdue: m.is_review_overdue(now),
            ended_at: m.ended_at.map(Into::into),
        }
    }
}

/// The terms in a contract `Mandate` (valid_from defaults to `now`; review date required).
pub fn terms_from_pb(pb: &v1::Mandate, now: SystemTime) -> Result<Mandate, ConvertError> {
    Ok(Mandate {
        role: pb.role.clone(),
        person: (!pb.person.is_empty()).then(|| pb.person.clone()),
        tiers: pb.tiers.iter().copied().collect(),
        domains: pb.domains.iter().cloned().collect(),
        decision_types: pb.decision_types.iter().cloned().collect(),
        legal_basis: pb.legal_basis.clone(),
        valid_from: time("mandate.valid_from", pb.valid_from)?.unwrap_or(now),
        valid_until: time("mandate.valid_until", pb.valid_until)?,
        review_date: time("mandate.review_date", pb.review_date)?
            .ok_or_else(|| ConvertError::new("mandate.review_date", "must be set"))?,
        ended_at: None,
    })
}

/// A listing filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    tier: Option<u32>,
    role: Option<String>,
    domain: Option<String>,
    decision_type: Option<String>,
    at: SystemTime,
}

impl Filter {
    /// Checks a request's filter; unset moment = `now`.
    pub fn parse(req: v1::ListMandatesRequest, now: SystemTime) -> Result<Self, ConvertError> {
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let domain = nonempty(req.domain);
        if let Some(d) = &domain {
            check_term::<Domain>("domain", d).map_err(|e| ConvertError::new("domain", e.reason))?;
        }
        let decision_type = nonempty(req.decision_type);
        if let Some(d) = &decision_type {
            check_term::<DecisionType>("decision_type", d)
                .map_err(|e| ConvertError::new("decision_type", e.reason))?;
        }
        Ok(Self {
            tier: req.tier,
            role: nonempty(req.role),
            domain,
            decision_type,
            at: time("valid_at", req.valid_at)?.unwrap_or(now),
        })
    }

    fn matches(&self, m: &Mandate) -> bool {
        self.tier.is_none_or(|t| m.tiers.contains(&t))
            && self.role.as_ref().is_none_or(|r| *r == m.role)
            && self.domain.as_ref().is_none_or(|d| m.domains.contains(d))
            && self
                .decision_type
                .as_ref()
                .is_none_or(|d| m.decision_types.contains(d))
    }
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    i64,
    Option<i64>,
);

fn mandate_of(row: Row) -> Result<StoredMandate, Error> {
    let (id, role, person, tiers, domains, types, basis, from, until, review, ended) = row;
    Ok(StoredMandate {
        mandate_id: id,
        terms: Mandate {
            role,
            person: (!person.is_empty()).then_some(person),
            tiers: split::<u32>(&tiers)?.into_iter().collect(),
            domains: split::<String>(&domains)?.into_iter().collect(),
            decision_types: split::<String>(&types)?.into_iter().collect(),
            legal_basis: basis,
            valid_from: from_millis(from),
            valid_until: until.map(from_millis),
            review_date: from_millis(review),
            ended_at: ended.map(from_millis),
        },
    })
}

const COLUMNS: &str = "mandate_id, role, person, tiers, domains, decision_types, legal_basis, \
    valid_from, valid_until, review_date, ended_at";

/// Lists the mandates matching `filter`: those valid at its moment and not overdue for review,
/// or, with `include_not_current`, all of them.
pub async fn list(
    db: &Database,
    filter: &Filter,
    include_not_current: bool,
) -> Result<Vec<StoredMandate>, Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM mandates ORDER BY mandate_id"
    )))
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let m = mandate_of(row)?;
        let served =
            m.terms.is_valid_at(filter.at) && !m.terms.is_review_overdue(SystemTime::now());
        if filter.matches(&m.terms) && (include_not_current || served) {
            out.push(m);
        }
    }
    Ok(out)
}

/// Returns one mandate, or `NotFound`.
pub async fn get(db: &Database, mandate_id: &str) -> Result<StoredMandate, Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM mandates WHERE mandate_id = $1"
    )))
    .bind(mandate_id)
    .fetch_optional(db.pool())
    .await?;
    mandate_of(row.ok_or_else(|| Error::NotFound(format!("no mandate `{mandate_id}`")))?)
}

/// Inserts (`create`) or replaces the terms of a mandate.
pub async fn save(
    db: &Database,
    m: &StoredMandate,
    by: &str,
    create: bool,
    now: SystemTime,
) -> Result<(), Error> {
    let t = &m.terms;
    let sql = if create {
        "INSERT INTO mandates (role, person, tiers, domains, decision_types, legal_basis, valid_from, \
         valid_until, review_date, ended_at, updated_at, updated_by, mandate_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    } else {
        "UPDATE mandates SET role = $1, person = $2, tiers = $3, domains = $4, decision_types = $5, \
         legal_basis = $6, valid_from = $7, valid_until = $8, review_date = $9, ended_at = $10, \
         updated_at = $11, updated_by = $12 WHERE mandate_id = $13"
    };
    let done = sqlx::query(sql)
        .bind(&t.role)
        .bind(t.person.clone().unwrap_or_default())
        .bind(join(&t.tiers))
        .bind(join(&t.domains))
        .bind(join(&t.decision_types))
        .bind(&t.legal_basis)
        .bind(millis(t.valid_from))
        .bind(t.valid_until.map(millis))
        .bind(millis(t.review_date))
        .bind(t.ended_at.map(millis))
        .bind(millis(now))
        .bind(by)
        .bind(&m.mandate_id)
        .execute(db.pool())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Error::AlreadyExists(format!("mandate `{}` exists", m.mandate_id))
            }
            _ => e.into(),
        })?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("no mandate `{}`", m.mandate_id)));
    }
    Ok(())
}
