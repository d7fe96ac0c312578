//! Cases, their facts, the consents and legal bases that cover them, and their links to
//! escalations' case references.

use std::collections::BTreeSet;
use std::time::SystemTime;

use doorzet_domain::disclosure::{Basis, FactCategory, GivenBy, Purpose, Recipient};
use doorzet_domain::{Oin, OrgKind};
use doorzet_store::Database;

use crate::Error;

pub use doorzet_store::{from_millis, millis};

/// Joins vocabulary values or ids for a list column.
pub fn join<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    let mut joined = String::new();
    let _ = write_joined(&mut joined, values);
    joined
}

/// A list column's text: written into a formatter, or as a string value of a serde serializer
/// (the disclosure writer's JSON rows).
pub struct Joined<'a, T>(pub &'a [T]);

impl<T: std::fmt::Display> std::fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_joined(f, self.0)
    }
}

impl<T: AsRef<str>> serde::Serialize for Joined<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // One string, escaped in one pass: through `collect_str` every value and every comma was
        // a formatter call of its own, on every disclosure record.
        let mut joined = String::with_capacity(self.0.iter().map(|v| v.as_ref().len() + 1).sum());
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                joined.push(',');
            }
            joined.push_str(v.as_ref());
        }
        s.serialize_str(&joined)
    }
}

fn write_joined<T: std::fmt::Display>(
    out: &mut impl std::fmt::Write,
    values: impl IntoIterator<Item = T>,
) -> std::fmt::Result {
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write!(out, "{v}")?;
    }
    Ok(())
}

/// Splits a list column, failing on a value that no longer parses.
pub fn split<T: std::str::FromStr>(column: &str) -> Result<Vec<T>, Error> {
    column
        .split(',')
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| Error::Corrupt(format!("stored list value `{v}` does not parse")))
        })
        .collect()
}

/// A stored case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Node-assigned id.
    pub case_id: String,
    /// The organisation's own identifier.
    pub local_id: String,
    /// Whether a sealed BSN is stored.
    pub has_bsn: bool,
    /// When it was created.
    pub created_at: SystemTime,
}

/// A stored fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// Node-assigned id.
    pub fact_id: String,
    /// The case.
    pub case_id: String,
    /// Category.
    pub category: FactCategory,
    /// The statement (personal data: never logged).
    pub value: String,
    /// Where it comes from.
    pub source: String,
    /// When it was recorded.
    pub recorded_at: SystemTime,
}

impl Fact {
    /// The contract's view of the fact.
    pub fn to_pb(&self) -> doorzet_proto::v1::Fact {
        doorzet_proto::v1::Fact {
            fact_id: self.fact_id.clone(),
            category: self.category.as_str().to_owned(),
            value: self.value.clone(),
            source: self.source.clone(),
            recorded_at: Some(self.recorded_at.into()),
        }
    }
}

/// A stored consent or legal basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBasis {
    /// Node-assigned id.
    pub basis_id: String,
    /// The case.
    pub case_id: String,
    /// The rule's view of it.
    pub basis: Basis,
    /// Subject of the token that recorded it.
    pub recorded_by: String,
}

/// A case's link to an escalation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The case.
    pub case_id: String,
    /// The escalation's case reference.
    pub case_ref: String,
    /// The subject pseudonym, when computed.
    pub subject_pseudonym: Option<String>,
    /// When linked.
    pub linked_at: SystemTime,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `AlreadyExists` (saying `what`) when `e` is a unique violation; otherwise `e` itself.
fn taken(e: sqlx::Error, what: impl FnOnce() -> String) -> Error {
    if is_unique_violation(&e) {
        Error::AlreadyExists(what())
    } else {
        e.into()
    }
}

/// Creates a case (with its sealed BSN, if any); a `local_id` already in use is `AlreadyExists`.
pub async fn create_case(
    db: &Database,
    case_id: &str,
    local_id: &str,
    bsn_sealed: Option<Vec<u8>>,
    created_by: &str,
    now: SystemTime,
) -> Result<Case, Error> {
    let has_bsn = bsn_sealed.is_some();
    sqlx::query(
        "INSERT INTO cases (case_id, local_id, bsn_sealed, created_at, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(case_id)
    .bind(local_id)
    .bind(bsn_sealed)
    .bind(millis(now))
    .bind(created_by)
    .execute(db.pool())
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::AlreadyExists("a case with this local_id exists".into())
        } else {
            e.into()
        }
    })?;
    Ok(Case {
        case_id: case_id.to_owned(),
        local_id: local_id.to_owned(),
        has_bsn,
        created_at: from_millis(millis(now)),
    })
}

type CaseRow = (String, String, Option<Vec<u8>>, i64);

fn case_of((case_id, local_id, bsn, created_at): CaseRow) -> Case {
    Case {
        case_id,
        local_id,
        has_bsn: bsn.is_some(),
        created_at: from_millis(created_at),
    }
}

/// Returns a case's sealed BSN, if one is stored.
pub async fn sealed_bsn(db: &Database, case_id: &str) -> Result<Option<Vec<u8>>, Error> {
    let row: Option<(Option<Vec<u8>>,)> =
        sqlx::query_as("SELECT bsn_sealed FROM cases WHERE case_id = $1")
            .bind(case_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.and_then(|(b,)| b))
}

/// Returns a case, or `NotFound`.
pub async fn get_case(db: &Database, case_id: &str) -> Result<Case, Error> {
    let row: Option<CaseRow> = sqlx::query_as(
        "SELECT case_id, local_id, bsn_sealed, created_at FROM cases WHERE case_id = $1",
    )
    .bind(case_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(case_of)
        .ok_or_else(|| Error::NotFound(format!("no case `{case_id}`")))
}

/// Lists up to `limit` cases, newest first, created before `before` (a case id) when given.
pub async fn list_cases(
    db: &Database,
    limit: u32,
    before: Option<&str>,
) -> Result<Vec<Case>, Error> {
    let before_at = match before {
        Some(id) => millis(get_case(db, id).await?.created_at),
        None => i64::MAX,
    };
    let rows: Vec<CaseRow> = sqlx::query_as(
        "SELECT case_id, local_id, bsn_sealed, created_at FROM cases WHERE created_at < $1 \
         ORDER BY created_at DESC, case_id LIMIT $2",
    )
    .bind(before_at)
    .bind(limit as i64)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(case_of).collect())
}

/// Records a fact.
pub async fn add_fact(db: &Database, fact: &Fact, recorded_by: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO facts (fact_id, case_id, category, value, source, recorded_at, recorded_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&fact.fact_id)
    .bind(&fact.case_id)
    .bind(fact.category.as_str())
    .bind(&fact.value)
    .bind(&fact.source)
    .bind(millis(fact.recorded_at))
    .bind(recorded_by)
    .execute(db.pool())
    .await
    .map_err(|e| taken(e, || format!("fact `{}` exists", fact.fact_id)))?;
    Ok(())
}

/// Returns a case's facts, in the order recorded.
pub async fn facts(db: &Database, case_id: &str) -> Result<Vec<Fact>, Error> {
    let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
        "SELECT fact_id, case_id, category, value, source, recorded_at FROM facts \
         WHERE case_id = $1 ORDER BY recorded_at, fact_id",
    )
    .bind(case_id)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|(fact_id, case_id, category, value, source, at)| {
            Ok(Fact {
                fact_id,
                case_id,
                category: category
                    .parse()
                    .map_err(|_| Error::Corrupt(format!("fact category `{category}`")))?,
                value,
                source,
                recorded_at: from_millis(at),
            })
        })
        .collect()
}

/// Records a consent or legal basis.
pub async fn add_basis(db: &Database, stored: &StoredBasis, now: SystemTime) -> Result<(), Error> {
    let b = &stored.basis;
    let (given_by, law, article) = match &b.given_by {
        GivenBy::Person => ("person", None, None),
        GivenBy::Representative => ("representative", None, None),
        GivenBy::Law { law, article } => ("law", Some(law.as_str()), Some(article.as_str())),
    };
    let orgs = b.recipients.iter().filter_map(|r| match r {
        Recipient::Org(o) => Some(o.to_string()),
        Recipient::Kind(_) => None,
    });
    let kinds = b.recipients.iter().filter_map(|r| match r {
        Recipient::Kind(k) => Some(k.to_string()),
        Recipient::Org(_) => None,
    });
    sqlx::query(
        "INSERT INTO bases (basis_id, case_id, given_by, law, article, categories, recipient_orgs, \
         recipient_kinds, purposes, valid_from, valid_until, withdrawn_at, recorded_at, recorded_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $13)",
    )
    .bind(&stored.basis_id)
    .bind(&stored.case_id)
    .bind(given_by)
    .bind(law)
    .bind(article)
    .bind(join(&b.categories))
    .bind(join(orgs))
    .bind(join(kinds))
    .bind(join(&b.purposes))
    .bind(millis(b.valid_from))
    .bind(b.valid_until.map(millis))
    .bind(millis(now))
    .bind(&stored.recorded_by)
    .execute(db.pool())
    .await
    .map_err(|e| taken(e, || format!("`{}` exists", stored.basis_id)))?;
    Ok(())
}

type BasisRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
);

const BASIS_COLUMNS: &str = "basis_id, case_id, given_by, law, article, categories, \
    recipient_orgs, recipient_kinds, purposes, valid_from, valid_until, withdrawn_at, recorded_by";

fn basis_of(row: BasisRow) -> Result<StoredBasis, Error> {
    let (
        basis_id,
        case_id,
        given_by,
        law,
        article,
        cats,
        orgs,
        kinds,
        purposes,
        from,
        until,
        w,
        by,
    ) = row;
    let given_by = match given_by.as_str() {
        "person" => GivenBy::Person,
        "representative" => GivenBy::Representative,
        "law" => GivenBy::Law {
            law: law.unwrap_or_default(),
            article: article.unwrap_or_default(),
        },
        other => return Err(Error::Corrupt(format!("basis given_by `{other}`"))),
    };
    let mut recipients: BTreeSet<Recipient> = split::<Oin>(&orgs)?
        .into_iter()
        .map(Recipient::Org)
        .collect();
    recipients.extend(split::<OrgKind>(&kinds)?.into_iter().map(Recipient::Kind));
    Ok(StoredBasis {
        basis_id,
        case_id,
        basis: Basis {
            given_by,
            categories: split::<FactCategory>(&cats)?.into_iter().collect(),
            recipients,
            purposes: split::<Purpose>(&purposes)?.into_iter().collect(),
            valid_from: from_millis(from),
            valid_until: until.map(from_millis),
            withdrawn_at: w.map(from_millis),
        },
        recorded_by: by,
    })
}

/// Returns a case's consents and legal bases, in the order recorded.
pub async fn bases(db: &Database, case_id: &str) -> Result<Vec<StoredBasis>, Error> {
    let rows: Vec<BasisRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BASIS_COLUMNS} FROM bases WHERE case_id = $1 ORDER BY recorded_at, basis_id"
    )))
    .bind(case_id)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(basis_of).collect()
}

/// Withdraws a consent at `at` (the earlier withdrawal stands when withdrawn twice); a legal basis
/// cannot be withdrawn.
pub async fn withdraw(db: &Database, basis_id: &str, at: SystemTime) -> Result<StoredBasis, Error> {
    let row: Option<BasisRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BASIS_COLUMNS} FROM bases WHERE basis_id = $1"
    )))
    .bind(basis_id)
    .fetch_optional(db.pool())
    .await?;
    let stored = basis_of(row.ok_or_else(|| Error::NotFound(format!("no consent `{basis_id}`")))?)?;
    if matches!(stored.basis.given_by, GivenBy::Law { .. }) {
        return Err(Error::FailedPrecondition(
            "a legal basis is not withdrawn; record its end with valid_until".into(),
        ));
    }
    sqlx::query("UPDATE bases SET withdrawn_at = $1 WHERE basis_id = $2 AND withdrawn_at IS NULL")
        .bind(millis(at))
        .bind(basis_id)
        .execute(db.pool())
        .await?;
    let row: BasisRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BASIS_COLUMNS} FROM bases WHERE basis_id = $1"
    )))
    .bind(basis_id)
    .fetch_one(db.pool())
    .await?;
    basis_of(row)
}

/// Links a case to a case reference; a reference already linked to another case is
/// `AlreadyExists`, the same link again is returned unchanged.
pub async fn link(
    db: &Database,
    case_id: &str,
    case_ref: &str,
    pseudonym: Option<&str>,
    now: SystemTime,
) -> Result<Link, Error> {
    get_case(db, case_id).await?;
    let inserted = sqlx::query(
        "INSERT INTO case_links (case_ref, case_id, subject_pseudonym, linked_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(case_ref)
    .bind(case_id)
    .bind(pseudonym)
    .bind(millis(now))
    .execute(db.pool())
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let existing = links_where(db, "case_ref", case_ref).await?;
    match existing.into_iter().next() {
        Some(l) if l.case_id == case_id => Ok(l),
        _ => Err(Error::AlreadyExists(
            "case_ref is linked to another case".into(),
        )),
    }
}

async fn links_where(db: &Database, column: &str, value: &str) -> Result<Vec<Link>, Error> {
    let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT case_id, case_ref, subject_pseudonym, linked_at FROM case_links WHERE {column} = $1 ORDER BY linked_at"
    )))
    .bind(value)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(case_id, case_ref, subject_pseudonym, at)| Link {
            case_id,
            case_ref,
            subject_pseudonym,
            linked_at: from_millis(at),
        })
        .collect())
}

/// Returns a case's links.
pub async fn links(db: &Database, case_id: &str) -> Result<Vec<Link>, Error> {
    links_where(db, "case_id", case_id).await
}

/// Returns the case linked to `case_ref`, if any.
pub async fn case_for_ref(db: &Database, case_ref: &str) -> Result<Option<String>, Error> {
    Ok(links_where(db, "case_ref", case_ref)
        .await?
        .into_iter()
        .next()
        .map(|l| l.case_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_joins_the_same_as_text_and_as_a_json_string() {
        let values = ["a", "b\"c", "d\\e", "ü"];
        assert_eq!(join(values), "a,b\"c,d\\e,ü");
        assert_eq!(Joined(&values).to_string(), join(values));
        assert_eq!(
            serde_json::to_string(&Joined(&values)).unwrap(),
            serde_json::to_string(&join(values)).unwrap()
        );
        assert_eq!(join(Vec::<String>::new()), "");
        assert_eq!(
            serde_json::to_string(&Joined::<String>(&[])).unwrap(),
            "\"\""
        );
    }
}
