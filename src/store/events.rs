//! Events on disk (DESIGN.md, "Packed events"): the bulk path packs them in blocks of about
//! [`codec::EVENT_BLOCK_BYTES`], each block holding whole nodes and keyed by its last node
//! (`b` + node), blocks covering disjoint node ranges; one event at a time writes one `v` key.
//!
//! The rule that makes the two agree: a `v` key is always newer than a block's copy of the
//! same event (same node, second and lower-cased name), so a read prefers it. Writing a block
//! folds in the `v` keys of the nodes it covers (they win over the old block, the import's own
//! events win over both) and removes them in the same sled batch.

use crate::codec::{self, RedoEntry, compact};
use crate::error::{Error, Result};
use crate::forest::Node;
use crate::op::{Properties, Timestamp};

/// One event as stored: its full key (`v` + node, time, lower-cased name) and its value.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// The end of the block keys' range.
const BLOCKS_END: [u8; 1] = [codec::EVENT_BLOCK + 1];

fn full_key(bare: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + bare.len());
    k.push(codec::EVENT);
    k.extend_from_slice(bare);
    k
}

/// The block that would hold `node`'s packed events, as stored: the first whose last node is
/// `node` or later.
fn stored_block_for(db: &sled::Db, node: Node) -> Result<Option<(sled::IVec, sled::IVec)>> {
    let from = codec::event_block_key(node);
    Ok(db.range(&from[..]..&BLOCKS_END[..]).next().transpose()?)
}

/// [`stored_block_for`], the block in its plain layout.
fn block_for(db: &sled::Db, node: Node) -> Result<Option<(sled::IVec, sled::IVec)>> {
    match stored_block_for(db, node)? {
        Some((k, v)) => Ok(Some((k, plain(v)?))),
        None => Ok(None),
    }
}

/// A stored block in its compact layout (a plain block of a format-5 store compacted).
fn as_compact(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    Ok(match stored.first() {
        Some(&compact::MARK) => std::borrow::Cow::Borrowed(stored),
        _ => std::borrow::Cow::Owned(compact::events(stored)?),
    })
}

/// A stored block in its plain layout (compact blocks expanded: [`compact`]).
fn plain(stored: sled::IVec) -> Result<sled::IVec> {
    Ok(match compact::events_plain(&stored)? {
        std::borrow::Cow::Borrowed(_) => stored,
        std::borrow::Cow::Owned(p) => p.into(),
    })
}

/// The packed events of `node`, in key order.
fn packed_of(db: &sled::Db, node: Node) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    if let Some((_, block)) = block_for(db, node)? {
        for e in codec::block_events(&block) {
            let (k, v) = e?;
            match codec::bare_event_node(k)?.cmp(&node) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => out.push((full_key(k), v.to_vec())),
                std::cmp::Ordering::Greater => break,
            }
        }
    }
    Ok(out)
}

/// Calls `f` with the index in `nodes`, time, name and properties of each event of each of
/// `nodes` (ascending), node by node in key order. `packed_upto`: see [`packed_upto`]; a node
/// at or past it has only `v` keys. Nodes sharing a block read it once, in place (only their
/// entries' properties decoded); a plain block of a format-5 store is compacted first.
pub(crate) fn for_nodes(
    db: &sled::Db,
    nodes: &[Node],
    packed_upto: u64,
    mut f: impl FnMut(usize, Timestamp, String, Properties),
) -> Result<()> {
    let mut i = 0;
    while i < nodes.len() {
        let node = nodes[i];
        let block = if node.as_u64() < packed_upto {
            stored_block_for(db, node)?
        } else {
            None
        };
        let Some((bk, stored)) = block else {
            with_loose(db, i, node, Vec::new(), &mut f)?;
            i += 1;
            continue;
        };
        // The run of ascending nodes this block may hold.
        let last = codec::key_node(&bk)?;
        let mut j = i + 1;
        while j < nodes.len() && nodes[j] <= last && nodes[j] > nodes[j - 1] {
            j += 1;
        }
        let bytes = as_compact(&stored)?;
        let mut rd = compact::EventsReader::new(&bytes)?;
        let mut pending = rd.next_head().transpose()?;
        for (k, &node) in nodes.iter().enumerate().take(j).skip(i) {
            let mut mine = Vec::new();
            while let Some(head) = pending.take() {
                match head.node.cmp(&node) {
                    std::cmp::Ordering::Greater => {
                        pending = Some(head);
                        break;
                    }
                    std::cmp::Ordering::Less => rd.skip_properties()?,
                    std::cmp::Ordering::Equal => {
                        let props = rd.properties()?;
                        let odd = head.odd_lower.map(str::to_owned);
                        mine.push((head.time, head.name.to_owned(), odd, props));
                    }
                }
                pending = rd.next_head().transpose()?;
            }
            with_loose(db, k, node, mine, &mut f)?;
        }
        i = j;
    }
    Ok(())
}

/// A packed event as `events(id)` reads it: time, name, the key's lower-cased name when it is
/// not the name's lower case (not expected), properties.
type Unpacked = (Timestamp, String, Option<String>, Properties);

/// Emits `node`'s packed events (`mine`, in key order) merged with its `v` keys, which win.
/// Their keys are built only when the node has `v` keys.
fn with_loose(
    db: &sled::Db,
    i: usize,
    node: Node,
    mine: Vec<Unpacked>,
    f: &mut impl FnMut(usize, Timestamp, String, Properties),
) -> Result<()> {
    let loose = db
        .scan_prefix(codec::node_key(codec::EVENT, node))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let keyed = !loose.is_empty();
    let mut mine = mine
        .into_iter()
        .map(|(at, name, odd, props)| {
            let key = keyed.then(|| {
                let lower = odd.unwrap_or_else(|| name.to_lowercase());
                codec::event_key(node, at, &lower)
            });
            (key, at, name, props)
        })
        .peekable();
    for (k, v) in loose {
        while let Some((Some(pk), ..)) = mine.peek() {
            match pk[..].cmp(&k[..]) {
                std::cmp::Ordering::Less => {
                    let (_, at, name, props) = mine.next().expect("peeked");
                    f(i, at, name, props);
                }
                std::cmp::Ordering::Equal => drop(mine.next()),
                std::cmp::Ordering::Greater => break,
            }
        }
        let (_, at) = codec::event_key_parts(&k)?;
        let (name, props) = codec::decode_event(&v)?;
        f(i, at, name, props);
    }
    for (_, at, name, props) in mine {
        f(i, at, name, props);
    }
    Ok(())
}

/// One past the last node any block holds (0: no blocks): nodes from it on have no packed
/// events, so their writes and reads skip the block lookup. Read once at open and after a
/// bulk import; a `forget` may leave it too high, which only costs lookups.
pub(crate) fn packed_upto(db: &sled::Db) -> Result<u64> {
    match db
        .scan_prefix([codec::EVENT_BLOCK])
        .keys()
        .next_back()
        .transpose()?
    {
        Some(k) => Ok(codec::key_node(&k)?.as_u64() + 1),
        None => Ok(0),
    }
}

/// Moves the events of nodes from `base` on (new in this batch: no `v` key or block holds
/// events of theirs) out of `writes` into new blocks of packed events, cut at node boundaries
/// every [`codec::EVENT_BLOCK_BYTES`]. `base` must be past every block (a batch's new nodes
/// are). The caller raises `packed_upto` past the new blocks before readers see the nodes.
pub(crate) fn pack_new(writes: &mut super::Writes, base: Node) -> Result<()> {
    let from = codec::node_key(codec::EVENT, base).to_vec();
    let to = vec![codec::EVENT + 1];
    let keys: Vec<Vec<u8>> = writes.range(from..to).map(|(k, _)| k.clone()).collect();
    let mut piece = Vec::with_capacity(codec::EVENT_BLOCK_BYTES + 512);
    let mut last: Option<Node> = None;
    for k in keys {
        let node = codec::key_node(&k)?;
        if let Some(l) = last.filter(|&l| l != node && piece.len() >= codec::EVENT_BLOCK_BYTES) {
            writes.insert(codec::event_block_key(l).to_vec(), compact::events(&piece)?);
            piece.clear();
        }
        let v = writes.remove(&k).expect("listed");
        codec::push_block_event(&mut piece, &k, &v);
        last = Some(node);
    }
    if let Some(l) = last {
        writes.insert(codec::event_block_key(l).to_vec(), compact::events(&piece)?);
    }
    Ok(())
}

/// Whether a block holds an event under `key` (a full `v` key). Reads the block in place,
/// up to the node's entries.
pub(crate) fn packed_contains(db: &sled::Db, key: &[u8]) -> Result<bool> {
    let node = codec::key_node(key)?;
    let Some((_, stored)) = stored_block_for(db, node)? else {
        return Ok(false);
    };
    let bytes = as_compact(&stored)?;
    let mut rd = compact::EventsReader::new(&bytes)?;
    let mut k = Vec::with_capacity(key.len());
    while let Some(head) = rd.next_head() {
        let head = head?;
        match head.node.cmp(&node) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                head.key_into(codec::EVENT, &mut k);
                if k == key {
                    return Ok(true);
                }
            }
            std::cmp::Ordering::Greater => return Ok(false),
        }
        rd.skip_properties()?;
    }
    Ok(false)
}

/// Calls `f` with every event's full key and what `entry` reads of it, in key order: blocks
/// and `v` keys merged, each event once (a `v` key replaces the block's entry of the same
/// key). Blocks are read in place: `entry` is given each block entry's head and the reader
/// positioned at its properties (which it must read or skip), or a `v` key's value. `block` is
/// told each block's key and its entries' nodes before its entries. A block that cannot be
/// read is an error (`Corrupt`).
fn merged<T>(
    db: &sled::Db,
    mut block: impl FnMut(&[u8], &[Node]),
    mut entry: impl FnMut(Stored<'_, '_, '_>) -> Result<T>,
    mut f: impl FnMut(&[u8], T) -> Result<()>,
) -> Result<()> {
    let mut loose = db.scan_prefix([codec::EVENT]).peekable();
    // Emits the `v` keys before `upto` (all when `None`); true when one equals it.
    let mut loose_upto = |upto: Option<&[u8]>,
                          entry: &mut dyn FnMut(Stored<'_, '_, '_>) -> Result<T>,
                          f: &mut dyn FnMut(&[u8], T) -> Result<()>|
     -> Result<bool> {
        while let Some(peek) = loose.peek() {
            let order = match peek {
                Ok((k, _)) => upto.map(|u| k[..].cmp(u)),
                Err(_) => None,
            };
            if order == Some(std::cmp::Ordering::Greater) {
                return Ok(false);
            }
            let (k, v) = loose.next().expect("peeked")?;
            f(&k, entry(Stored::Loose(&v))?)?;
            if order == Some(std::cmp::Ordering::Equal) {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let (mut nodes, mut keys, mut read) = (Vec::new(), Vec::new(), Vec::new());
    let mut key = Vec::new();
    for kv in db.scan_prefix([codec::EVENT_BLOCK]) {
        let (bk, stored) = kv?;
        let bytes = as_compact(&stored)?;
        nodes.clear();
        keys.clear();
        let mut rd = compact::EventsReader::new(&bytes)?;
        while let Some(head) = rd.next_head() {
            let head = head?;
            nodes.push(head.node);
            head.key_into(codec::EVENT, &mut key);
            keys.extend_from_slice(&key);
            read.push((keys.len(), entry(Stored::Packed(&head, &mut rd))?));
        }
        block(&bk, &nodes);
        let mut from = 0;
        for (end, t) in read.drain(..) {
            let k = &keys[from..end];
            from = end;
            if !loose_upto(Some(k), &mut entry, &mut f)? {
                f(k, t)?;
            }
        }
    }
    loose_upto(None, &mut entry, &mut f)?;
    Ok(())
}

/// An event as [`merged`] shows it to its reader.
enum Stored<'h, 'r, 'a> {
    /// A block's entry: its head, and the reader at its properties.
    Packed(
        &'h compact::EventHead<'a>,
        &'r mut compact::EventsReader<'a>,
    ),
    /// A `v` key's value.
    Loose(&'r [u8]),
}

/// Calls `f` with every event, in key order (blocks and `v` keys merged, each event once):
/// its full key, and its name and properties or why its value does not decode. What export
/// reads.
pub(crate) fn for_each(
    db: &sled::Db,
    f: impl FnMut(&[u8], Result<(String, Properties)>) -> Result<()>,
) -> Result<()> {
    merged(
        db,
        |_, _| {},
        |e| {
            Ok(match e {
                Stored::Packed(head, rd) => Ok((head.name.to_owned(), rd.properties()?)),
                Stored::Loose(v) => codec::decode_event(v),
            })
        },
        f,
    )
}

/// Calls `f` with every event's full key, in key order (blocks and `v` keys merged, each event
/// once), and whether its value decodes: its properties read and checked, not kept (what
/// `verify` and the counts read). `block` is told each block's key and its entries' nodes
/// before its entries. A block that cannot be read is an error (`Corrupt`).
pub(crate) fn for_each_key(
    db: &sled::Db,
    block: impl FnMut(&[u8], &[Node]),
    f: impl FnMut(&[u8], Result<()>) -> Result<()>,
) -> Result<()> {
    merged(
        db,
        block,
        |e| {
            Ok(match e {
                Stored::Packed(_, rd) => Ok(rd.skip_properties()?),
                Stored::Loose(v) => codec::decode_event(v).map(drop),
            })
        },
        f,
    )
}

/// The number of events (packed or not, each counted once).
pub(crate) fn count(db: &sled::Db) -> Result<u64> {
    let mut n = 0;
    for_each_key(
        db,
        |_, _| {},
        |_, _| {
            n += 1;
            Ok(())
        },
    )?;
    Ok(n)
}

/// The writes that delete every event of `nodes`, and how many events that is. A block
/// holding several of them is rewritten once.
pub(crate) fn forget(db: &sled::Db, nodes: &[Node]) -> Result<(Vec<RedoEntry>, u64)> {
    let mut writes = Vec::new();
    let mut n = 0u64;
    let mut blocks: std::collections::BTreeMap<Vec<u8>, (sled::IVec, Vec<Node>)> =
        Default::default();
    for &node in nodes {
        let packed = packed_of(db, node)?;
        let mut loose = Vec::new();
        for k in db.scan_prefix(codec::node_key(codec::EVENT, node)).keys() {
            loose.push(k?.to_vec());
        }
        // Each event once: a `v` key shadowing a packed copy is one event.
        let shadowed = packed.iter().filter(|(k, _)| loose.contains(k)).count();
        n += (packed.len() + loose.len() - shadowed) as u64;
        writes.extend(loose.into_iter().map(|k| (k, None)));
        if !packed.is_empty()
            && let Some((bk, bv)) = block_for(db, node)?
        {
            blocks
                .entry(bk.to_vec())
                .or_insert((bv, Vec::new()))
                .1
                .push(node);
        }
    }
    for (bk, (bv, gone)) in blocks {
        let mut kept = Vec::with_capacity(bv.len());
        for e in codec::block_events(&bv) {
            let (k, v) = e?;
            if !gone.contains(&codec::bare_event_node(k)?) {
                codec::push_block_event(&mut kept, &full_key(k), v);
            }
        }
        let kept = if kept.is_empty() {
            None
        } else {
            Some(compact::events(&kept)?)
        };
        writes.push((bk, kept));
    }
    Ok((writes, n))
}

/// One write of [`write_sorted`]: a new block, or the rewrite of an existing one in one sled
/// batch with the removal of the `v` keys it folds in.
pub(crate) enum BlockUpdate {
    Insert([u8; 9], Vec<u8>),
    /// The batch, and the bytes of the keys and values in it.
    Batch(sled::Batch, usize),
}

impl BlockUpdate {
    /// Whether it removes keys (a rewrite of a stored block, or `v` keys folded in).
    pub(crate) fn folds(&self) -> bool {
        matches!(self, BlockUpdate::Batch(..))
    }

    pub(crate) fn apply(self, db: &sled::Db) -> Result<()> {
        match self {
            BlockUpdate::Insert(k, v) => {
                db.insert(k, v)?;
            }
            BlockUpdate::Batch(b, _) => db.apply_batch(b)?,
        }
        Ok(())
    }

    /// The bytes of keys and values it writes.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            BlockUpdate::Insert(k, v) => k.len() + v.len(),
            BlockUpdate::Batch(_, bytes) => *bytes,
        }
    }
}

/// Writes key-ordered events (no two with one key) into blocks: into the existing blocks
/// their nodes fall in (each rewritten once, in one sled batch with the removal of the `v`
/// keys it folds in) and new blocks past them. Returns the number of events that are new
/// (not replacing a stored one) and the number of blocks written.
///
/// The writes go to `out`, in order, which may apply them later: each step reads only the
/// blocks and `v` keys of its own node range, which no earlier write touches.
pub(crate) fn write_sorted(
    db: &sled::Db,
    events: &mut dyn Iterator<Item = Result<Entry>>,
    block_bytes: usize,
    out: &mut dyn FnMut(BlockUpdate) -> Result<()>,
) -> Result<(u64, u64)> {
    let mut events = events.peekable();
    let mut added = 0u64;
    let mut blocks = 0u64;
    while let Some(first) = events.peek() {
        let first = match first {
            Ok(e) => codec::key_node(&e.0)?,
            Err(_) => return Err(events.next().expect("peeked").expect_err("an error")),
        };
        // The range this pass covers: the existing block holding `first` (its old entries
        // merged in), or everything past the last block.
        let old = block_for(db, first)?;
        let hi = old.as_ref().map(|(k, _)| codec::key_node(k)).transpose()?;
        let mut old_entries: std::collections::VecDeque<Entry> = Default::default();
        if let Some((_, v)) = &old {
            for e in codec::block_events(v) {
                let (k, v) = e?;
                old_entries.push_back((full_key(k), v.to_vec()));
            }
        }
        let loose_end = match hi {
            Some(h) => codec::node_key(codec::EVENT, h.next()).to_vec(),
            None => vec![codec::EVENT + 1],
        };
        let loose_from = codec::node_key(codec::EVENT, first).to_vec();
        let mut loose = db.range(loose_from..loose_end).peekable();
        let in_range = |k: &[u8]| -> Result<bool> {
            Ok(hi.is_none_or(|h| codec::key_node(k).is_ok_and(|n| n <= h)))
        };
        let mut packer = BlockPacker::new(hi, block_bytes);
        loop {
            // The smallest key among the three sources; of equal keys the import's wins over
            // a `v` key, which wins over the old block.
            let new_key = match events.peek() {
                Some(Ok(e)) if in_range(&e.0)? => Some(e.0.clone()),
                Some(Err(_)) => return Err(events.next().expect("peeked").expect_err("err")),
                _ => None,
            };
            let loose_key = match loose.peek() {
                Some(Ok((k, _))) => Some(k.to_vec()),
                Some(Err(_)) => {
                    loose.next().expect("peeked")?;
                    unreachable!("an error was returned above");
                }
                None => None,
            };
            let old_key = old_entries.front().map(|e| e.0.clone());
            let Some(key) = [&new_key, &loose_key, &old_key]
                .into_iter()
                .flatten()
                .min()
                .cloned()
            else {
                break;
            };
            let node = codec::key_node(&key)?;
            packer.before(node, out)?;
            let mut existed = false;
            let mut value = None;
            if old_key.as_ref() == Some(&key) {
                value = old_entries.pop_front().map(|e| e.1);
                existed = true;
            }
            if loose_key.as_ref() == Some(&key) {
                let (k, v) = loose.next().expect("peeked")?;
                value = Some(v.to_vec());
                packer.folded.push(k);
                existed = true;
            }
            if new_key.as_ref() == Some(&key) {
                value = Some(events.next().expect("peeked")?.1);
                added += u64::from(!existed);
            }
            packer.push(node, &key, &value.expect("one source had it"));
        }
        blocks += packer.finish(old.map(|(k, _)| k), out)?;
        if hi.is_none() && events.peek().is_some() {
            return Err(Error::Internal(
                "packing events: input left past the last block".into(),
            ));
        }
    }
    Ok((added, blocks))
}

/// Packs one node range of [`write_sorted`] into blocks: the events, in key order, fill a
/// block until it reaches the target size at a node boundary. Past the last block each new
/// block is its own insert; inside an existing block's range everything (the new blocks, the
/// `v` keys folded in, the old block's removal unless a new block takes its key) goes in one
/// sled batch, so that a crash leaves the old block or the new ones.
struct BlockPacker {
    /// The last node of the existing block this range rewrites (`None`: past every block).
    hi: Option<Node>,
    rewrites: bool,
    block_bytes: usize,
    /// The block being filled (plain layout), and its last node.
    piece: Vec<u8>,
    piece_last: Option<Node>,
    /// `v` keys whose events the block being filled holds: removed with its write.
    folded: Vec<sled::IVec>,
    /// The one batch of a rewrite, and its bytes.
    batch: sled::Batch,
    batch_bytes: usize,
    /// Whether a new block took the old block's key.
    wrote_old_key: bool,
    blocks: u64,
}

impl BlockPacker {
    fn new(hi: Option<Node>, block_bytes: usize) -> Self {
        BlockPacker {
            hi,
            rewrites: hi.is_some(),
            block_bytes,
            piece: Vec::with_capacity(block_bytes + 512),
            piece_last: None,
            folded: Vec::new(),
            batch: sled::Batch::default(),
            batch_bytes: 0,
            wrote_old_key: false,
            blocks: 0,
        }
    }

    /// Before an event of `node`: ends the block being filled when it is full and `node`
    /// starts a new node (a node's events never span two blocks).
    fn before(&mut self, node: Node, out: &mut dyn FnMut(BlockUpdate) -> Result<()>) -> Result<()> {
        match self.piece_last {
            Some(last) if last != node && self.piece.len() >= self.block_bytes => {
                self.flush(last, out)
            }
            _ => Ok(()),
        }
    }

    fn push(&mut self, node: Node, key: &[u8], value: &[u8]) {
        codec::push_block_event(&mut self.piece, key, value);
        self.piece_last = Some(node);
    }

    /// Writes the block being filled, whose last node is `last`.
    fn flush(&mut self, last: Node, out: &mut dyn FnMut(BlockUpdate) -> Result<()>) -> Result<()> {
        let key = codec::event_block_key(last);
        let stored = compact::events(&self.piece)?;
        self.piece.clear();
        self.blocks += 1;
        if self.hi == Some(last) {
            self.wrote_old_key = true;
        }
        if !self.rewrites && self.folded.is_empty() {
            return out(BlockUpdate::Insert(key, stored));
        }
        self.batch_bytes += key.len() + stored.len();
        self.batch.insert(&key[..], stored);
        for k in self.folded.drain(..) {
            self.batch_bytes += k.len();
            self.batch.remove(k);
        }
        if !self.rewrites {
            out(BlockUpdate::Batch(
                std::mem::take(&mut self.batch),
                std::mem::take(&mut self.batch_bytes),
            ))?;
        }
        Ok(())
    }

    /// Writes the last block, and the rewrite's batch (with the old block's removal, `old`,
    /// unless a new block took its key). Returns the blocks written.
    fn finish(
        mut self,
        old: Option<sled::IVec>,
        out: &mut dyn FnMut(BlockUpdate) -> Result<()>,
    ) -> Result<u64> {
        if let Some(last) = self.piece_last {
            self.flush(last, out)?;
        }
        if let Some(k) = old {
            if !self.wrote_old_key {
                self.batch_bytes += k.len();
                self.batch.remove(k);
            }
            if self.batch_bytes > 0 {
                out(BlockUpdate::Batch(self.batch, self.batch_bytes))?;
            }
        }
        Ok(self.blocks)
    }
}

/// One event as an export sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedEvent {
    /// The ID it was recorded under.
    pub id: String,
    /// The canonical ID of its person now.
    pub person: String,
    /// The event name.
    pub event: String,
    /// When.
    pub at: Timestamp,
    /// Its properties.
    pub properties: Properties,
}
