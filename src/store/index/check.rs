//! Checking the graph index against the graph rebuilt from the alias log, and its fuzz target.

use xxhash_rust::xxh3::xxh3_64;

use super::*;
use crate::error::Result;
use crate::forest::Node;
use crate::graph::Graph;

use super::read::GraphIndex;

/// Compares the index with the graph rebuilt from the alias log: every ID at its node, found
/// by its table, in the same person with the same canonical ID, and nothing else; and the
/// lists `hubs` keeps. Calls `problem` for each difference (or once, when the index cannot be
/// read).
///
/// Each array is read once, in order (the IDs a chunk at a time), not looked up entry by
/// entry: the index of a large store is many times the page cache of [`GraphIndex`], and
/// random reads would read and check each page again and again (11 s of a 25 s `verify` on
/// 2.74M IDs before). Memory: the table and the person arrays, 12 bytes per node and 8 per
/// table slot.
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
        ids(ix, g, step, &mut problem)?;
        table(ix, g, &mut problem)?;
        persons(ix, g, &mut problem)?;
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

fn u32s(raw: &[u8]) -> Vec<u32> {
    raw.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// Every node's ID (`off` and the IDs, a chunk of nodes at a time) against the graph's.
fn ids(
    ix: &GraphIndex,
    g: &Graph,
    step: &mut dyn FnMut(),
    problem: &mut impl FnMut(String),
) -> Result<()> {
    const CHUNK: u64 = 1 << 16;
    let l = ix.layout;
    // Free nodes at the end are not reloaded: the two may differ in length by them.
    let len = l.nodes.max(g.len() as u64);
    let mut at = 0;
    while at < len {
        let n = CHUNK.min(len - at);
        let inside = n.min(l.nodes.saturating_sub(at));
        let off: Vec<u64> = if inside > 0 {
            ix.read_through(at * 8, (inside + 1) * 8)?
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        } else {
            Vec::new()
        };
        let (lo, hi) = (
            off.first().copied().unwrap_or(0),
            off.last().copied().unwrap_or(0),
        );
        if hi < lo || hi > l.blob_len {
            return Err(ix.corrupt(format!("the IDs of nodes {at}.. are out of range")));
        }
        let blob = ix.read_through(l.blob + lo, hi - lo)?;
        for i in 0..n {
            step();
            let node = Node::from_index((at + i) as u32);
            let live = node.slot() < g.len() && g.is_live(node);
            if i >= inside {
                if live {
                    problem(format!(
                        "the graph index lacks {:?} (node {node})",
                        g.ident(node)
                    ));
                }
                continue;
            }
            let (a, b) = (off[i as usize], off[i as usize + 1]);
            if b < a || b > hi {
                return Err(ix.corrupt(format!("the ID of node {node} is out of range")));
            }
            let id = std::str::from_utf8(&blob[(a - lo) as usize..(b - lo) as usize])
                .map_err(|_| ix.corrupt(format!("the ID of node {node} is not UTF-8")))?;
            if !live {
                if !id.is_empty() {
                    problem(format!("the graph index holds {id:?} at free node {node}"));
                }
            } else if id != g.ident(node) {
                problem(format!(
                    "the graph index holds {id:?} at node {node}, the graph {:?}",
                    g.ident(node)
                ));
            }
        }
        at += n;
    }
    Ok(())
}

/// The table finds every ID: each live node is in it once, at or after its hash's slot with no
/// empty slot between (so a lookup's probe reaches it), and nothing else is in it.
fn table(ix: &GraphIndex, g: &Graph, problem: &mut impl FnMut(String)) -> Result<()> {
    let l = ix.layout;
    let slots = u32s(&ix.read_through(l.table_at, l.table * 4)?);
    let mask = l.table - 1;
    let Some(empty) = slots.iter().position(|&v| v == 0) else {
        problem("the graph index's table has no free slot".into());
        return Ok(());
    };
    let mut found = vec![false; g.len()];
    let mut last_empty = empty as u64;
    for k in 1..=l.table {
        let j = (empty as u64 + k) & mask;
        let v = slots[j as usize];
        if v == 0 {
            last_empty = j;
            continue;
        }
        let node = Node::from_index(v - 1);
        if node.slot() >= g.len() || !g.is_live(node) {
            problem(format!(
                "the graph index's table names node {node}, which has no ID"
            ));
            continue;
        }
        if std::mem::replace(&mut found[node.slot()], true) {
            problem(format!("the graph index's table names node {node} twice"));
        }
        let home = xxh3_64(g.ident(node).as_bytes()) & mask;
        // The run of full slots after the last empty one must hold the home slot.
        if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(last_empty) & mask) {
            problem(format!("the graph index does not find {:?}", g.ident(node)));
        }
    }
    if let Some(n) = g.nodes().find(|&n| g.is_live(n) && !found[n.slot()]) {
        problem(format!("the graph index does not find {:?}", g.ident(n)));
    }
    Ok(())
}

/// Roots are how each side happens to be built (the order of unions, splits), not what it
/// means: each person of the graph must be, whole, one person of the index with the same
/// canonical ID. As both partition the same IDs, that is equality.
fn persons(ix: &GraphIndex, g: &Graph, problem: &mut impl FnMut(String)) -> Result<()> {
    let l = ix.layout;
    let root = u32s(&ix.read_through(l.root, l.nodes * 4)?);
    let canon = u32s(&ix.read_through(l.canon, l.nodes * 4)?);
    let moff = u32s(&ix.read_through(l.moff, (l.nodes + 1) * 4)?);
    let members = u32s(&ix.read_through(l.members, ix.counts.ids * 4)?);
    let at = |v: &[u32], i: usize, what: &str| {
        v.get(i)
            .copied()
            .ok_or_else(|| ix.corrupt(format!("{what} {i} is out of range")))
    };
    for n in g.nodes().filter(|&n| g.is_person_root(n)) {
        let id = g.ident(n);
        let r = at(&root, n.slot(), "the root of node")?;
        if r == FREE {
            problem(format!("the graph index has no person for {id:?}"));
            continue;
        }
        let r = r as usize;
        let (a, b) = (
            at(&moff, r, "node")? as usize,
            at(&moff, r + 1, "node")? as usize,
        );
        let run = members
            .get(a..b)
            .ok_or_else(|| ix.corrupt(format!("the members of node {r} are out of range")))?;
        let want = g.members_sorted(n);
        let same_members = run.len() == want.len()
            && run.iter().zip(&want).all(|(&m, w)| m == w.index())
            && want.iter().all(|m| root.get(m.slot()) == Some(&(r as u32)));
        if at(&canon, r, "node")? != g.slot(n).value.canon().index() || !same_members {
            problem(format!(
                "the graph index gives the person of {id:?} other IDs or another canonical ID \
                 than the alias log"
            ));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Flags;

    fn graph(ids: &[String], edges: &[(u32, u32)]) -> Graph {
        let mut g = Graph::loading(ids.len(), String::new());
        for (i, id) in ids.iter().enumerate() {
            g.add_loaded(Node::from_index(i as u32), id, Flags::NONE)
                .unwrap();
        }
        let log: Vec<(u64, Node, Node)> = edges
            .iter()
            .enumerate()
            .map(|(s, &(a, b))| (s as u64, Node::from_index(a), Node::from_index(b)))
            .collect();
        g.finish_load(log.into_iter(), 0).unwrap()
    }

    /// The problems `check` finds in the index of `written` against `checked`, and the steps
    /// it told.
    fn checked(written: &Graph, checked: &Graph) -> (Vec<String>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let stamp = [3u8; 16];
        write(dir.path(), written, stamp).unwrap();
        let ix = GraphIndex::open(dir.path(), &stamp).unwrap().unwrap();
        let mut out = Vec::new();
        let mut steps = 0;
        check(&ix, checked, &mut || steps += 1, |p| out.push(p));
        (out, steps)
    }

    fn problems(written: &Graph, against: &Graph) -> Vec<String> {
        checked(written, against).0
    }

    #[test]
    fn the_check_finds_every_difference_from_the_graph() {
        // More IDs than one chunk of `ids` reads, persons of 1 to 3.
        let ids: Vec<String> = (0..70_000).map(|i| format!("id{i}")).collect();
        let edges: Vec<(u32, u32)> = (0..30_000)
            .map(|i| (i, i + 30_000))
            .chain([(7, 69_999)])
            .collect();
        let g = graph(&ids, &edges);
        assert_eq!(
            checked(&g, &g),
            (Vec::new(), 70_000),
            "no problem, a step per node"
        );

        // Another partition of the same IDs: one more link.
        let mut more = edges.clone();
        more.push((5, 65_000));
        let p = problems(&g, &graph(&ids, &more));
        assert!(
            p.iter().any(|p| p.contains("another canonical ID")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("largest or most linked")),
            "{p:?}"
        );

        // The same IDs at other nodes: the IDs differ, and the table does not find them.
        let mut swapped = ids.clone();
        swapped.swap(3, 40_000);
        let p = problems(&g, &graph(&swapped, &edges));
        assert!(
            p.iter()
                .any(|p| p.contains(r#"holds "id3" at node 3, the graph "id40000""#)),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.contains("does not find")), "{p:?}");

        // One ID fewer in the graph (the same count of IDs is checked first).
        let p = problems(&g, &graph(&ids[..69_999], &edges[..30_000]));
        assert_eq!(p, ["the graph index holds 70000 IDs, the graph 69999"]);
    }
}
