//! Checking the graph index against the graph rebuilt from the alias log, and its fuzz target.

use xxhash_rust::xxh3::xxh3_64;

use super::*;
use crate::error::Result;
use crate::forest::Node;
use crate::graph::Graph;

use super::read::GraphIndex;

/// Compares the index with the graph rebuilt from the alias log: every ID at its node, in the
/// same person with the same canonical ID, and nothing else. Calls `problem` for each
/// difference (or once, when the index cannot be read).
pub(crate) fn check(
    ix: &GraphIndex,
    g: &Graph,
    step: &mut dyn FnMut(),
    mut problem: impl FnMut(String),
) {
    let mut run = || -> Result<()> {
        if ix.counts.ids != g.live() as u64 {
            problem(format!(
                "the graph index holds {} IDs, the graph {}",
                ix.counts.ids,
                g.live()
            ));
            return Ok(());
        }
        // Free nodes at the end are not reloaded: the two may differ in length by them.
        let len = (ix.layout.nodes as usize).max(g.len());
        for n in Node::all(len) {
            step();
            if n.slot() >= ix.layout.nodes as usize {
                if g.is_live(n) {
                    problem(format!("the graph index lacks {:?} (node {n})", g.ident(n)));
                }
                continue;
            }
            let id = ix.ident(n)?;
            if n.slot() >= g.len() || !g.is_live(n) {
                if !id.is_empty() {
                    problem(format!("the graph index holds {id:?} at free node {n}"));
                }
                continue;
            }
            if id != g.ident(n) {
                problem(format!(
                    "the graph index holds {id:?} at node {n}, the graph {:?}",
                    g.ident(n)
                ));
                continue;
            }
            if ix.lookup(&id)? != Some(n) {
                problem(format!("the graph index does not find {id:?}"));
                continue;
            }
            // Roots are how each side happens to be built (the order of unions, splits), not
            // what it means: each person of the graph must be, whole, one person of the index
            // with the same canonical ID. As both partition the same IDs, that is equality.
            if g.is_person_root(n) {
                let (canon, members) = ix.person(n)?;
                if canon != g.slot(n).value.canon() || members != g.members_sorted(n) {
                    problem(format!(
                        "the graph index gives the person of {id:?} other IDs or another \
                         canonical ID than the alias log"
                    ));
                }
            }
        }
        // The lists kept for `hubs`, and the scan that answers past them.
        let want = crate::store::repair::hubs(g, HUBS as usize);
        if ix.hubs(HUBS as usize)? != want {
            problem("the graph index keeps other largest or most linked IDs than the graph".into());
        }
        if ix.hubs_scan(HUBS as usize)? != want {
            problem("the graph index's persons and links give other hubs than the graph".into());
        }
        Ok(())
    };
    if let Err(e) = run() {
        problem(format!("the graph index cannot be read: {e}"));
    }
}

/// The fuzz target `index` (see `crate::fuzz`): an index file made of `data`, then read as a
/// query would. From the first byte on: either `data` itself is the file (odd first byte:
/// what damage on disk looks like, refused by the checksums), or a file whose header sizes come
/// from `data[1..12]` and whose arrays are the rest of `data`, with checksums made to match —
/// so that the structure, not the checksums, is what the reads face. Every read must end in
/// an answer or `Error::Corrupt`, never a panic, a hang or an allocation out of proportion.
pub(crate) fn fuzz(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let stamp = [7u8; 16];
    let file = if mode % 2 == 1 || rest.len() < 11 {
        rest.to_vec()
    } else {
        let u16_at = |i: usize| u64::from(u16::from_le_bytes([rest[i], rest[i + 1]]));
        let nodes = u16_at(0) % 2048;
        let ids = u16_at(2) % (nodes + 1);
        let table = 1u64 << (rest[4] % 13);
        let blob_len = u16_at(5);
        let layout = Layout::new(nodes, ids, u64::from(rest[9]), table, blob_len);
        let counts = Counts {
            ids,
            persons: u64::from(rest[7]),
            largest_person: u64::from(rest[8]),
            edges: u64::from(rest[9]),
            refused: u64::from(rest[10]),
        };
        let mut body = rest[11..].to_vec();
        body.resize(layout.data_len as usize, 0);
        let sums: Vec<u64> = body.chunks(PAGE as usize).map(xxh3_64).collect();
        let mut f = encode_header(stamp, &layout, &counts, &sums).to_vec();
        f.extend_from_slice(&body);
        f.extend(sums.iter().flat_map(|s| s.to_le_bytes()));
        f
    };
    let dir = std::env::temp_dir().join(format!("idgraph-fuzz-index-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(path_in(&dir), &file).is_err() {
        return;
    }
    if let Ok(Some(ix)) = GraphIndex::open(&dir, &stamp) {
        for n in Node::all((ix.layout.nodes as usize).min(64)) {
            if let Ok(id) = ix.ident(n) {
                let _ = ix.lookup(&id);
            }
            let _ = ix.person(n);
        }
        for id in ["", "a", "user0@example.com"] {
            let _ = ix.lookup(id);
        }
        let _ = ix.hubs(10);
        let _ = ix.hubs_scan(10);
        let _ = ix.load_graph();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
