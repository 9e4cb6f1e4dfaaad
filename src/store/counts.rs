//! Counts: IDs and persons from the graph (or the index's header), events and properties
//! kept by the writers (or counted by a scan), and what the guardrails left out.

use super::{Store, codec, events, index, plan, records};
use crate::error::Result;

/// Counts that describe a store; see [`Store::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// IDs known.
    pub ids: u64,
    /// Persons (sets of IDs).
    pub persons: u64,
    /// IDs of the largest person.
    pub largest_person: u64,
    /// Alias edges in the log.
    pub edges: u64,
    /// Merges refused by a guardrail (distinct ID pairs).
    pub refused_merges: u64,
    /// Stored events.
    pub events: u64,
    /// Stored property values (one per ID and property name).
    pub properties: u64,
    /// Redundant links (between IDs already one person) not recorded since the store was
    /// opened, because the person held
    /// [`Config::max_links_per_person`](crate::Config::max_links_per_person) links.
    pub links_not_recorded: u64,
    /// Refused merges of pairs not written to the refusal log since the store was opened,
    /// because it held [`Config::max_refusals_logged`](crate::Config::max_refusals_logged)
    /// records (the merges were refused all the same).
    pub refusals_not_logged: u64,
    /// IDs that hold [`Limits::max_properties_per_id`](crate::Limits::max_properties_per_id)
    /// names: new names sent to them are not kept.
    pub ids_at_property_limit: u64,
    /// Bytes sled uses on disk.
    pub disk_bytes: u64,
    /// IDs forgotten and suppressed (`forget`; lifted by `unsuppress`).
    pub suppressed: u64,
}

/// What the state guardrails left out since the handle opened; see [`Store::guardrails`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guardrails {
    /// Records in the refusal log (at most
    /// [`Config::max_refusals_logged`](crate::Config::max_refusals_logged)).
    pub refusals_logged: u64,
    /// As [`Stats::links_not_recorded`].
    pub links_not_recorded: u64,
    /// As [`Stats::refusals_not_logged`].
    pub refusals_not_logged: u64,
}

impl Store {
    /// The refusal log's size and what the state guardrails left out since this handle
    /// opened. O(1).
    pub fn guardrails(&self) -> Guardrails {
        use std::sync::atomic::Ordering::Relaxed;
        Guardrails {
            refusals_logged: self.counts_now().refused,
            links_not_recorded: self.counts.links_not_recorded.load(Relaxed),
            refusals_not_logged: self.counts.refusals_not_logged.load(Relaxed),
        }
    }

    /// IDs and persons in the store, in O(1) (counters kept with the graph): what a monitoring
    /// scrape can afford to ask for as often as it likes.
    pub fn counts(&self) -> (u64, u64) {
        let c = self.counts_now();
        (c.ids, c.persons)
    }

    /// The graph's counters: from the graph when loaded, else from the index's header.
    pub(super) fn counts_now(&self) -> index::Counts {
        let g = self.graph.read();
        match (&*g, &self.ix.current) {
            (Some(g), _) => index::Counts {
                ids: g.live() as u64,
                persons: g.persons() as u64,
                largest_person: 0,
                edges: g.edges().len() as u64,
                refused: g.refused(),
            },
            (None, Some(ix)) => ix.counts(),
            // Not reached: a store without an index loads its graph at open.
            (None, None) => index::Counts::default(),
        }
    }

    /// Counts of IDs, persons, edges and refusals from memory only (no scan of events and
    /// properties; those counts are 0). O(IDs): the largest person is found by a walk.
    pub fn stats_quick(&self) -> Stats {
        // Before the read lock below: `guardrails` takes its own, and a second read lock in
        // one thread can deadlock against a waiting writer.
        let guard = self.guardrails();
        let c = self.counts_now();
        let mut s = Stats {
            ids: c.ids,
            persons: c.persons,
            largest_person: c.largest_person,
            edges: c.edges,
            refused_merges: c.refused,
            links_not_recorded: guard.links_not_recorded,
            refusals_not_logged: guard.refusals_not_logged,
            suppressed: self.suppressed.len() as u64,
            ..Stats::default()
        };
        if let Some(g) = &*self.graph.read() {
            for n in g.nodes().filter(|&n| g.is_person_root(n)) {
                s.largest_person = s.largest_person.max(u64::from(g.slot(n).size));
            }
        }
        s
    }

    /// Counts of IDs, persons, edges, events, properties and bytes on disk.
    ///
    /// # Cost
    /// O(1) when the counts of events and properties are known: kept by this handle's writes,
    /// or saved by the handle that last wrote. Otherwise (after an import or a `forget`, or on
    /// a store not closed cleanly) one scan of the events and ID records, holding the writer;
    /// the counts are then kept, and saved at close.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when sled cannot be read.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = self.stats_quick();
        let c = self.data_counts()?;
        s.events = c.events;
        s.properties = c.properties;
        s.ids_at_property_limit = c.at_limit;
        s.disk_bytes = self.db.size_on_disk()?;
        Ok(s)
    }

    /// The counts of events and properties: kept, or counted now by a scan of the store
    /// (holding the writer, so that no write slips between the scan and the counts), then
    /// kept, and saved when the handle closes.
    pub(super) fn data_counts(&self) -> Result<plan::DataCounts> {
        if let Some(c) = *self.counts.data.lock() {
            return Ok(c);
        }
        let _w = self.writer.lock();
        if let Some(c) = *self.counts.data.lock() {
            return Ok(c);
        }
        let mut c = plan::DataCounts {
            events: events::count(&self.db)?,
            ..Default::default()
        };
        records::scan_decoded_records(&self.db, |_, rec, at| {
            if !matches!(at, records::RecordAt::Shadowed(_)) {
                let n = rec?.props.0.len();
                c.properties += n as u64;
                c.at_limit += u64::from(n >= self.policy.limits.max_properties_per_id);
            }
            Ok(())
        })?;
        *self.counts.data.lock() = Some(c);
        self.counts
            .due
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(c)
    }

    /// Saves the data counts under `m data_counts` if they changed since they were read or
    /// saved (with the property limit they were counted for, so that a handle opened with
    /// another limit counts again).
    pub(super) fn save_data_counts(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let _w = self.writer.lock();
        if !self.counts.due.load(SeqCst) || self.poisoned.load(SeqCst) {
            return Ok(());
        }
        if let Some(c) = *self.counts.data.lock() {
            let limit = self.policy.limits.max_properties_per_id as u64;
            let v = codec::encode_data_counts([c.events, c.properties, c.at_limit, limit]);
            self.db.insert(codec::DATA_COUNTS_KEY, &v)?;
            self.db.flush()?;
        }
        self.counts.due.store(false, SeqCst);
        Ok(())
    }
}
