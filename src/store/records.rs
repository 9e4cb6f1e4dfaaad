//! The record layer: how IDs, events and alias edges sit in sled, read back.
//!
//! The one place that knows that an ID's record lives under its own `i` key *or* as an entry in
//! a block of packed records written by the bulk import (the own key wins), and that an alias
//! edge lives under its own `e` key *or* inside the record of the ID it introduced. Queries,
//! the planner, the bulk path, repair and verification all read through here.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use crate::codec::{
    self, IdRecord, PropMap, StoredEdge, StoredProp, StoredRefusal, StoredValue, compact,
};
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::graph::Graph;
use crate::op::Timestamp;
use crate::store::ExportedEvent;

/// Where [`scan_id_records_with`] found an ID record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordAt {
    /// Under the ID's own `i` key.
    Own,
    /// In the block of packed records whose key names node `.0`.
    Packed(Node),
    /// In the block of packed records whose key names node `.0`, but replaced by the ID's own
    /// key (a stale copy, ignored).
    Shadowed(Node),
}

/// Calls `f` with every stored ID record in its plain encoding: the IDs' own keys, then the
/// blocks of packed records in node order (an entry whose node also has an own key is
/// [`RecordAt::Shadowed`]). With `heads_only`, the records of compact blocks come without
/// their properties (loading the graph reads only the heads).
pub(crate) fn scan_id_records_with(
    db: &sled::Db,
    heads_only: bool,
    mut f: impl FnMut(&str, &[u8], RecordAt) -> Result<()>,
) -> Result<()> {
    let read = if heads_only { Read::Heads } else { Read::Plain };
    scan(db, read, |id, rec, at| match rec {
        Rec::Plain(v) => f(id, v, at),
        Rec::Decoded(_) => unreachable!("decoded records are not asked for"),
    })
}

/// [`scan_id_records_with`] with each record decoded (or why it does not decode): the entries of
/// compact blocks are decoded where they lie, not expanded to their plain encoding first.
pub(crate) fn scan_decoded_records(
    db: &sled::Db,
    mut f: impl FnMut(&str, Result<IdRecord>, RecordAt) -> Result<()>,
) -> Result<()> {
    scan(db, Read::Decoded, |id, rec, at| match rec {
        Rec::Plain(v) => f(id, IdRecord::decode(v), at),
        Rec::Decoded(r) => f(id, Ok(r), at),
    })
}

/// What [`scan`] hands over of the entries of compact blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Their plain encoding.
    Plain,
    /// Their plain encoding without properties.
    Heads,
    /// Decoded.
    Decoded,
}

/// What [`scan`] calls with each entry of a block: its ID, node and record.
type EntryFn<'a> = dyn FnMut(&[u8], Node, Rec<'_>) -> Result<()> + 'a;

/// A record as [`scan`] hands it over.
enum Rec<'a> {
    Plain(&'a [u8]),
    Decoded(IdRecord),
}

fn scan(
    db: &sled::Db,
    read: Read,
    mut f: impl FnMut(&str, Rec<'_>, RecordAt) -> Result<()>,
) -> Result<()> {
    let mut own: Vec<u64> = Vec::new(); // a bit per node
    let not_utf8 = || Error::Corrupt("a stored ID is not UTF-8".into());
    for kv in db.scan_prefix([codec::ID]) {
        let (k, v) = kv?;
        let id = std::str::from_utf8(&k[1..]).map_err(|_| not_utf8())?;
        let node = codec::record_node(&v)?.slot();
        if own.len() <= node / 64 {
            own.resize(node / 64 + 1, 0);
        }
        own[node / 64] |= 1 << (node % 64);
        f(id, Rec::Plain(&v), RecordAt::Own)?;
    }
    for kv in db.scan_prefix([codec::PACKED]) {
        let (k, v) = kv?;
        let block = codec::key_node(&k)?;
        let mut entry = |id: &[u8], node: Node, rec: Rec<'_>| -> Result<()> {
            let id = std::str::from_utf8(id)
                .map_err(|_| Error::Corrupt("a packed ID is not UTF-8".into()))?;
            let node = node.slot();
            let shadowed = own
                .get(node / 64)
                .is_some_and(|w| w & (1 << (node % 64)) != 0);
            let at = if shadowed {
                RecordAt::Shadowed(block)
            } else {
                RecordAt::Packed(block)
            };
            f(id, rec, at)
        };
        let plain_entry = |entry: &mut EntryFn, id: &[u8], rec: &[u8]| -> Result<()> {
            entry(id, codec::record_node(rec)?, Rec::Plain(rec))
        };
        match (read, v.first() == Some(&compact::MARK)) {
            (Read::Heads, true) => {
                compact::ids_heads(&v, |id, rec| plain_entry(&mut entry, id, rec))?;
            }
            (Read::Decoded, true) => {
                compact::ids_records(&v, |id, rec| entry(id, rec.node, Rec::Decoded(rec)))?;
            }
            _ => {
                for (id, rec) in codec::packed_entries(&plain(v)?)? {
                    plain_entry(&mut entry, id.as_bytes(), rec)?;
                }
            }
        }
    }
    Ok(())
}

/// The block of packed ID records that would hold `node`: the one with the greatest key not
/// above it.
pub(crate) fn packed_block_of(
    db: &sled::Db,
    node: Node,
) -> Result<Option<(sled::IVec, sled::IVec)>> {
    match stored_block_of(db, node)? {
        Some((k, v)) => Ok(Some((k, plain(v)?))),
        None => Ok(None),
    }
}

/// Cuts ID records, added in node order, into compact blocks of packed records (`p` + the
/// block's first node, ~[`codec::PACKED_BLOCK_BYTES`] plain each): what the bulk import and a
/// batch of many new IDs write.
pub(crate) struct IdBlocks {
    block: Vec<u8>,
    first: Option<Node>,
}

impl IdBlocks {
    pub(crate) fn new() -> Self {
        IdBlocks {
            block: Vec::with_capacity(codec::PACKED_BLOCK_BYTES + 1024),
            first: None,
        }
    }

    /// Adds the record of `id`, node `n`, handing a full block to `put` (key, value).
    pub(crate) fn push(
        &mut self,
        n: Node,
        id: &str,
        rec: &IdRecord,
        put: &mut impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.first.get_or_insert(n);
        codec::push_packed(&mut self.block, id, &rec.encode()?);
        if self.block.len() >= codec::PACKED_BLOCK_BYTES {
            self.flush(put)?;
        }
        Ok(())
    }

    /// Hands the last block, if any, to `put`.
    pub(crate) fn flush(
        &mut self,
        put: &mut impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        if let Some(first) = self.first.take() {
            let key = codec::node_key(codec::PACKED, first).to_vec();
            put(key, compact::ids(&self.block)?)?;
            self.block.clear();
        }
        Ok(())
    }
}

/// The block of packed ID records that would hold `node`, as stored.
fn stored_block_of(db: &sled::Db, node: Node) -> Result<Option<(sled::IVec, sled::IVec)>> {
    let lo: &[u8] = &[codec::PACKED];
    let hi = codec::node_key(codec::PACKED, node);
    Ok(db.range(lo..=&hi[..]).next_back().transpose()?)
}

/// A stored block of packed records in its plain layout (compact blocks expanded:
/// [`compact`]).
fn plain(stored: sled::IVec) -> Result<sled::IVec> {
    Ok(match compact::ids_plain(&stored)? {
        std::borrow::Cow::Borrowed(_) => stored,
        std::borrow::Cow::Owned(p) => p.into(),
    })
}

/// The record of `ident`, node `node`: under its own key, else its entry in a block of packed
/// records. `None` when neither holds it.
pub(crate) fn read_id_record(db: &sled::Db, ident: &str, node: Node) -> Result<Option<IdRecord>> {
    if let Some(v) = db.get(codec::id_key(ident))? {
        return IdRecord::decode(&v).map(Some);
    }
    let Some((_, block)) = stored_block_of(db, node)? else {
        return Ok(None);
    };
    // A compact block is read in place up to the entry; a plain one (format 5) as it is.
    if block.first() == Some(&compact::MARK) {
        return match compact::ids_find(&block, node)? {
            Some((id, rec)) if id == ident.as_bytes() => Ok(Some(rec)),
            _ => Ok(None),
        };
    }
    match codec::find_packed(&block, node)? {
        Some((id, rec)) if id == ident.as_bytes() => IdRecord::decode(rec).map(Some),
        _ => Ok(None),
    }
}

/// The record of a known ID, which must exist (the graph holds the ID).
pub(crate) fn known_id_record(db: &sled::Db, ident: &str, node: Node) -> Result<IdRecord> {
    read_id_record(db, ident, node)?.ok_or_else(|| {
        Error::Corrupt(format!(
            "ID {ident:?} is in memory but has no record on disk"
        ))
    })
}

/// Keys under `prefix`.
pub(crate) fn count_prefix(db: &sled::Db, prefix: u8) -> Result<u64> {
    let mut n = 0;
    for k in db.scan_prefix([prefix]).keys() {
        k?;
        n += 1;
    }
    Ok(n)
}

/// The stored detail of edge `seq` between the IDs `x` and `y` (with their nodes): under its
/// own `e` key, or inside the record of the endpoint it introduced.
pub(crate) fn edge_detail(
    db: &sled::Db,
    seq: u64,
    x: (Node, &str),
    y: (Node, &str),
) -> Result<StoredEdge> {
    if let Some(v) = db.get(codec::edge_key(seq))? {
        return codec::decode(&v, "an edge");
    }
    for (n, id) in [x, y] {
        if let Some(rec) = read_id_record(db, id, n)?
            && let Some((s, e)) = rec.intro
            && s == seq
        {
            return Ok(e);
        }
    }
    Err(Error::Corrupt(format!(
        "alias edge {seq} between {:?} and {:?} is missing",
        x.1, y.1
    )))
}

/// Deletes edge `seq` between `a` and `b` on disk, in one write: its own key, or the record of
/// the endpoint that holds it rewritten without it (under the ID's own key, which replaces a
/// packed entry).
pub(crate) fn remove_edge(db: &sled::Db, seq: u64, a: (Node, &str), b: (Node, &str)) -> Result<()> {
    if db.remove(codec::edge_key(seq))?.is_some() {
        return Ok(());
    }
    for (n, id) in [a, b] {
        if let Some(mut rec) = read_id_record(db, id, n)?
            && rec.intro.as_ref().is_some_and(|(s, _)| *s == seq)
        {
            rec.intro = None;
            db.insert(codec::id_key(id), rec.encode()?)?;
            return Ok(());
        }
    }
    Err(Error::Corrupt(format!(
        "alias edge {seq} between {:?} and {:?} is missing on disk",
        a.1, b.1
    )))
}

/// What deleting a person takes on disk: the removals (and packed blocks rewritten without its
/// IDs) for one redo record, and the counts of events and refusals among them.
pub(crate) struct PersonRemoval {
    pub writes: Vec<codec::RedoEntry>,
    pub events: u64,
    pub refusals: u64,
}

/// The writes that delete the IDs `members` with their records, events, the edges `edges`,
/// and the refused-merge records that name one of them.
pub(crate) fn person_removal(
    db: &sled::Db,
    members: &[(Node, String)],
    edges: &[u64],
) -> Result<PersonRemoval> {
    let mut out = PersonRemoval {
        writes: Vec::new(),
        events: 0,
        refusals: 0,
    };
    // Blocks of packed records holding members: rewritten without them (or removed).
    let mut blocks: BTreeMap<Vec<u8>, (sled::IVec, FxHashSet<&str>)> = BTreeMap::new();
    for (m, ident) in members {
        if let Some((k, v)) = packed_block_of(db, *m)? {
            blocks
                .entry(k.to_vec())
                .or_insert_with(|| (v, FxHashSet::default()))
                .1
                .insert(ident);
        }
    }
    for (k, (v, gone)) in &blocks {
        let mut kept = Vec::with_capacity(v.len());
        let mut removed = false;
        for (id, rec) in codec::packed_entries(v)? {
            if gone.contains(id) {
                removed = true;
            } else {
                codec::push_packed(&mut kept, id, rec);
            }
        }
        if removed {
            let kept = if kept.is_empty() {
                None
            } else {
                Some(compact::ids(&kept)?)
            };
            out.writes.push((k.clone(), kept));
        }
    }
    for (_, ident) in members {
        out.writes.push((codec::id_key(ident), None));
    }
    let nodes: Vec<Node> = members.iter().map(|(m, _)| *m).collect();
    let (writes, events) = super::events::forget(db, &nodes)?;
    out.writes.extend(writes);
    out.events = events;
    for seq in edges {
        // A no-op for edges held in ID records.
        out.writes.push((codec::edge_key(*seq).to_vec(), None));
    }
    let names: FxHashSet<&str> = members.iter().map(|(_, s)| s.as_str()).collect();
    for kv in db.scan_prefix([codec::REFUSAL]) {
        let (k, v) = kv?;
        let r: StoredRefusal = codec::decode(&v, "a refusal")?;
        if names.contains(r.a.as_str()) || names.contains(r.b.as_str()) {
            out.writes.push((k.to_vec(), None));
            out.refusals += 1;
        }
    }
    Ok(out)
}

/// Calls `f` with every ID, its person's canonical ID and the time the store first saw it, in
/// node order. The caller holds the writer lock.
pub(crate) fn for_each_id(
    db: &sled::Db,
    g: &Graph,
    mut f: impl FnMut(&str, &str, Timestamp) -> Result<()>,
) -> Result<()> {
    // Nodes come in increasing order, so do the blocks of packed records: keep the current
    // block's entries (node, first seen) and move on through the blocks as nodes pass them.
    let mut blocks = db.scan_prefix([codec::PACKED]).peekable();
    let mut block: Vec<(Node, Timestamp)> = Vec::new();
    for n in g.nodes().filter(|&n| g.is_live(n)) {
        let id = g.ident(n);
        let first_seen = match db.get(codec::id_key(id))? {
            Some(v) => IdRecord::decode_head(&v)?.first_seen,
            None => {
                while let Some(Ok((k, _))) = blocks.peek()
                    && codec::key_node(k)? <= n
                {
                    let (_, v) = blocks.next().expect("peeked")?;
                    let v = plain(v)?;
                    block.clear();
                    for (_, rec) in codec::packed_entries(&v)? {
                        let head = IdRecord::decode_head(rec)?;
                        block.push((head.node, head.first_seen));
                    }
                }
                if let Some(Err(_)) = blocks.peek() {
                    blocks.next().expect("peeked")?;
                }
                match block.binary_search_by_key(&n, |e| e.0) {
                    Ok(i) => block[i].1,
                    Err(_) => 0,
                }
            }
        };
        f(id, g.person_id(n), first_seen)?;
    }
    Ok(())
}

/// Calls `f` with every event, node by node and in time order within a node, with its
/// person's canonical ID. The caller holds the writer lock.
pub(crate) fn for_each_event(
    db: &sled::Db,
    g: &Graph,
    mut f: impl FnMut(ExportedEvent) -> Result<()>,
) -> Result<()> {
    let mut cached: Option<(Node, String, String)> = None;
    super::events::for_each(db, |k, decoded| {
        let (node, at) = codec::event_key_parts(k)?;
        if cached.as_ref().is_none_or(|c| c.0 != node) {
            if node.slot() >= g.len() || !g.is_live(node) {
                return Err(Error::Corrupt(format!("event of unknown node {node}")));
            }
            cached = Some((node, g.ident(node).to_owned(), g.person_id(node).to_owned()));
        }
        let (_, id, person) = cached.as_ref().expect("set above");
        let (event, properties) = decoded?;
        f(ExportedEvent {
            id: id.clone(),
            person: person.clone(),
            event,
            at,
            properties,
        })
    })
}

/// What [`PropMap::merge_within`] did with one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PropMerge {
    /// The value was set (the name new, or its stored value not later).
    Set,
    /// The stored value is later: nothing changed.
    Older,
    /// The name is new and the map is full: nothing changed, the name is refused.
    NoRoom,
}

/// The rule of property values, the same for every write path: the latest value wins.
impl PropMap {
    /// Sets `name` unless the stored value is later; equal times: this one (applied last).
    /// The first spelling of a name is kept. A name new to the map is added only while the map
    /// holds fewer than `max` names.
    pub(crate) fn merge_within(
        &mut self,
        name: &str,
        value: StoredValue,
        at: Timestamp,
        seq: u64,
        max: usize,
    ) -> PropMerge {
        match self
            .0
            .binary_search_by(|p| crate::op::cmp_ignore_case(&p.name, name))
        {
            Ok(i) => {
                let p = &mut self.0[i];
                if p.at > at {
                    return PropMerge::Older;
                }
                p.value = value;
                p.at = at;
                p.seq = seq;
                PropMerge::Set
            }
            Err(_) if self.0.len() >= max => PropMerge::NoRoom,
            Err(i) => {
                self.0.insert(
                    i,
                    StoredProp {
                        name: name.to_owned(),
                        value,
                        at,
                        seq,
                    },
                );
                PropMerge::Set
            }
        }
    }

    /// [`merge_within`](Self::merge_within) without a limit (the unit tests' shorthand).
    #[cfg(test)]
    pub(crate) fn merge(
        &mut self,
        name: &str,
        value: StoredValue,
        at: Timestamp,
        seq: u64,
    ) -> bool {
        self.merge_within(name, value, at, seq, usize::MAX) == PropMerge::Set
    }
}
