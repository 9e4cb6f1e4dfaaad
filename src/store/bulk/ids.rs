//! Writing what the planner decided: sled batches of a fixed size, and the ID records with
//! the properties aggregated in the one pass.

use rustc_hash::FxHashMap;

use super::props::PropAgg;
use crate::codec::{self, IdRecord};
use crate::error::Result;
use crate::forest::Node;
use crate::store::Store;
use crate::store::plan::{DataCounts, NewId};
use crate::store::records::known_id_record;

/// Writes keys in sled batches of a fixed size (1 = plain inserts).
pub(super) struct BatchWriter<'a> {
    db: &'a sled::Db,
    batch: sled::Batch,
    len: usize,
    max: usize,
    pub(super) written: u64,
}

impl<'a> BatchWriter<'a> {
    pub(super) fn new(db: &'a sled::Db, max: usize) -> Self {
        BatchWriter {
            db,
            batch: sled::Batch::default(),
            len: 0,
            max: max.max(1),
            written: 0,
        }
    }

    pub(super) fn put(&mut self, k: Vec<u8>, v: Vec<u8>) -> Result<()> {
        if self.max == 1 {
            self.db.insert(k, v)?;
        } else {
            self.batch.insert(k, v);
            self.len += 1;
            if self.len >= self.max {
                self.flush()?;
            }
        }
        self.written += 1;
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        if self.len > 0 {
            self.db.apply_batch(std::mem::take(&mut self.batch))?;
            self.len = 0;
        }
        Ok(())
    }
}

/// The ID records the bulk path writes, with the properties aggregated in pass 1.
pub(super) struct Ids {
    pub(super) base: Node,
    pub(super) new: Vec<NewId>,
    pub(super) old: Vec<(String, IdRecord)>,
    pub(super) props: PropAgg,
}

impl Ids {
    /// Writes the new IDs' records packed in blocks, in node order (so that an edge inside one
    /// names a node whose record is already on disk), then the known IDs' changed records.
    pub(super) fn write(
        mut self,
        db: &sled::Db,
        store: &Store,
        w: &mut BatchWriter,
        added: &mut DataCounts,
    ) -> Result<()> {
        self.props.index();
        let max = self.props.max_per_id;
        let mut count = |before: usize, after: usize| {
            added.properties += (after - before) as u64;
            added.at_limit += u64::from(before < max && after >= max);
        };
        let g = store.graph()?;
        let base = self.base;
        let mut blocks = crate::store::records::IdBlocks::new();
        let mut put = |k, v| w.put(k, v);
        for (new, n) in self.new.iter().zip(Node::all(g.len()).skip(base.slot())) {
            let mut rec = new.record(n);
            let before = rec.props.0.len();
            self.props.merge_into(n, &mut rec.props)?;
            count(before, rec.props.0.len());
            blocks.push(n, g.ident(n), &rec, &mut put)?;
        }
        blocks.flush(&mut put)?;
        let mut old: FxHashMap<String, IdRecord> = self.old.into_iter().collect();
        let mut idents: Vec<String> = old.keys().cloned().collect();
        idents.extend(
            self.props
                .old_nodes(base)
                .into_iter()
                .map(|n| g.ident(n).to_owned()),
        );
        idents.sort_unstable();
        idents.dedup();
        for id in idents {
            let key = codec::id_key(&id);
            let (mut rec, mut changed) = match old.remove(&id) {
                Some(r) => (r, true),
                None => {
                    let n = g.lookup(&id).expect("a node of the committed graph");
                    (known_id_record(db, &id, n)?, false)
                }
            };
            let before = rec.props.0.len();
            changed |= self.props.merge_into(rec.node, &mut rec.props)?;
            count(before, rec.props.0.len());
            if changed {
                w.put(key, rec.encode()?)?;
            }
        }
        Ok(())
    }
}
