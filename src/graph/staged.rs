//! A batch's changes to the graph, staged: [`Staged`] is the graph as the batch sees it while
//! it is planned (the committed graph plus the new IDs and unions, copy-on-write), and
//! [`Delta`] what [`Graph::commit`] applies once the batch is written.

use super::*;

/// The changes a [`Staged`] view planned, detached from the graph it read.
pub(crate) struct Delta {
    pub(super) base: Node,
    pub(super) slots: FxHashMap<Node, Slot>,
    pub(super) new_slots: Vec<Slot>,
    /// The IDs of the new nodes (indexed from `base`).
    pub(super) new_ids: Idents,
    pub(super) edges: Vec<((Node, Node), u64)>,
    pub(super) next_edge: u64,
    pub(super) refused: u64,
}

impl Delta {
    /// The first new node.
    pub fn base(&self) -> Node {
        self.base
    }

    /// The new nodes with their IDs, in node order.
    pub fn new_nodes(&self) -> impl Iterator<Item = (Node, &str)> {
        let base = self.base.index();
        (0..self.new_ids.spans.len())
            .map(move |i| (Node::from_index(base + i as u32), self.new_ids.get_at(i)))
    }
}

/// A writable view of the graph: changes go to an overlay, reads fall through.
pub(crate) struct Staged<'g> {
    pub(super) g: &'g Graph,
    /// Changed slots of committed nodes.
    pub(super) slots: FxHashMap<Node, Slot>,
    /// Slots of the nodes this view adds (node = committed length + index).
    pub(super) new_slots: Vec<Slot>,
    /// The IDs of the new nodes (indexed from the committed length), in one string.
    pub(super) new_ids: Idents,
    /// Index of `new_ids` (each string stored once).
    pub(super) new_index: HashTable<Node>,
    pub(super) edges: Vec<((Node, Node), u64)>,
    pub(super) edge_set: FxHashSet<(Node, Node)>,
    pub(super) next_edge: u64,
    pub(super) refused: u64,
}

impl<'g> Staged<'g> {
    pub fn new(g: &'g Graph) -> Self {
        Staged {
            g,
            slots: FxHashMap::default(),
            new_slots: Vec::new(),
            new_ids: Idents::default(),
            new_index: HashTable::new(),
            edges: Vec::new(),
            edge_set: FxHashSet::default(),
            next_edge: g.next_edge,
            refused: 0,
        }
    }

    pub fn into_delta(self) -> Delta {
        Delta {
            base: self.base(),
            slots: self.slots,
            new_slots: self.new_slots,
            new_ids: self.new_ids,
            edges: self.edges,
            next_edge: self.next_edge,
            refused: self.refused,
        }
    }

    /// Position of a new node in `new_slots` / `new_ids`; `None` for a committed node.
    fn new_pos(&self, n: Node) -> Option<usize> {
        n.slot().checked_sub(self.g.len())
    }

    pub fn lookup(&self, id: &str) -> Option<Node> {
        self.g.lookup(id).or_else(|| {
            let base = self.g.len();
            self.new_index
                .find(self.g.hasher.hash_one(id), |&n| {
                    self.new_ids.is_at(n.slot() - base, id)
                })
                .copied()
        })
    }

    /// The ID of a node.
    pub fn ident(&self, n: Node) -> &str {
        match self.new_pos(n) {
            Some(i) => self.new_ids.get_at(i),
            None => self.g.ident(n),
        }
    }

    /// Adds a new ID as a singleton person and returns its node.
    pub fn add(&mut self, id: &str, flags: Flags) -> Result<Node> {
        let n = Node::from_usize(self.g.len() + self.new_ids.spans.len())
            .ok_or(Error::Full(Node::MAX.as_u64()))?;
        self.new_ids.push(id);
        let base = self.g.len();
        let (ids, hasher) = (&self.new_ids, &self.g.hasher);
        self.new_index.insert_unique(hasher.hash_one(id), n, |&m| {
            hasher.hash_one(ids.get_at(m.slot() - base))
        });
        self.new_slots.push(single(n, flags));
        Ok(n)
    }

    pub fn flags(&self, n: Node) -> Flags {
        self.get(n).value.flags
    }

    /// The first node this view hands out.
    pub fn base(&self) -> Node {
        Node::from_usize(self.g.len()).expect("a committed graph is within the node space")
    }

    /// Whether this view created node `n`.
    pub fn is_new(&self, n: Node) -> bool {
        self.new_pos(n).is_some()
    }

    /// Sets a node's flags and re-decides its person's canonical ID.
    pub fn set_flags(&mut self, n: Node, flags: Flags) {
        self.update(n, |s| s.value.flags = flags);
        let r = self.root(n);
        let ms: Vec<Node> = forest::members(self, r).collect();
        redecide(self, r, &ms);
    }

    pub fn root(&self, n: Node) -> Node {
        forest::find(self, n)
    }

    pub fn size_of_root(&self, r: Node) -> u32 {
        self.get(r).size
    }

    /// Joins two different roots; returns the new root.
    pub fn union_roots(&mut self, ra: Node, rb: Node) -> Node {
        forest::union_roots(self, ra, rb)
    }

    pub fn has_edge(&self, a: Node, b: Node) -> bool {
        let p = pair(a, b);
        self.g.edges.contains_key(&p) || self.edge_set.contains(&p)
    }

    /// The alias links among the IDs of the person rooted at `r`.
    pub fn links_of_root(&self, r: Node) -> u32 {
        self.get(r).value.links
    }

    /// Registers a new edge and returns its sequence number; counted at `a`'s root (a union
    /// that follows adds the other person's links).
    pub fn add_edge(&mut self, a: Node, b: Node) -> u64 {
        let r = self.root(a);
        self.update(r, |x| x.value.links = x.value.links.saturating_add(1));
        let seq = self.next_edge;
        self.next_edge += 1;
        let p = pair(a, b);
        self.edge_set.insert(p);
        self.edges.push((p, seq));
        seq
    }

    pub fn count_refusal(&mut self) {
        self.refused += 1;
    }

    /// Refusal records in the log once this view is committed.
    pub fn refused(&self) -> u64 {
        self.g.refused + self.refused
    }
}

impl ForestStorage for Staged<'_> {
    type Value = IdState;
    fn get(&self, n: Node) -> &Slot {
        match self.new_pos(n) {
            Some(i) => &self.new_slots[i],
            None => self.slots.get(&n).unwrap_or_else(|| self.g.slot(n)),
        }
    }
    fn update(&mut self, n: Node, f: impl FnOnce(&mut Slot)) {
        let g = self.g;
        let s = match self.new_pos(n) {
            Some(i) => &mut self.new_slots[i],
            None => self.slots.entry(n).or_insert_with(|| *g.slot(n)),
        };
        f(s);
    }
}
