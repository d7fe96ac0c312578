//! What `QueryFacts` reads for a case reference (the linked case, its facts and its consents and
//! legal bases), kept in memory between writes. Every write to a case clears the cache after it
//! commits, and a read that raced with a write is not cached (a generation counter), so a
//! withdrawal is in force for every request after it commits, as without the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use doorzet_domain::disclosure::{Basis, FactCategory};
use doorzet_proto::v1;
use doorzet_store::Database;

use crate::Error;
use crate::store::cases;

/// A case as `QueryFacts` sees it.
#[derive(Debug)]
pub struct CaseView {
    /// The node's case id.
    pub case_id: String,
    /// Its facts.
    pub facts: Vec<CachedFact>,
    /// Its consents and legal bases.
    pub bases: Vec<Basis>,
}

/// A fact as `QueryFacts` judges and answers it: its category for the rule, and the answer's
/// message built once (cloned into every answer that discloses it).
#[derive(Debug)]
pub struct CachedFact {
    /// Its category.
    pub category: FactCategory,
    /// The contract's view of it.
    pub pb: v1::Fact,
}

/// The cache; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CaseCache {
    views: Arc<RwLock<HashMap<String, Option<Arc<CaseView>>>>>,
    generation: Arc<AtomicU64>,
}

/// Most case references kept; past it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

impl CaseCache {
    /// The case linked to `case_ref` (None when none is), from memory or the database.
    pub async fn get(&self, db: &Database, case_ref: &str) -> Result<Option<Arc<CaseView>>, Error> {
        if let Some(view) = self
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(case_ref)
        {
            return Ok(view.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let view = match cases::case_for_ref(db, case_ref).await? {
            None => None,
            Some(case_id) => Some(Arc::new(CaseView {
                facts: cases::facts(db, &case_id)
                    .await?
                    .iter()
                    .map(|f| CachedFact {
                        category: f.category,
                        pb: f.to_pb(),
                    })
                    .collect(),
                bases: cases::bases(db, &case_id)
                    .await?
                    .into_iter()
                    .map(|b| b.basis)
                    .collect(),
                case_id,
            })),
        };
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        // A write committed while this read ran: answer with what was read, cache nothing.
        if self.generation.load(Ordering::Acquire) == generation {
            if views.len() >= MAX_ENTRIES {
                views.clear();
            }
            views.insert(case_ref.to_owned(), view.clone());
        }
        Ok(view)
    }

    /// Forgets everything; call after a write to any case has committed.
    pub fn invalidate(&self) {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        views.clear();
    }
}
