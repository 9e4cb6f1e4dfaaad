//! Opening a store and its crash story: the format check, the redo record (written by ops that
//! touch several keys, finished at open when a crash interrupted it), and loading the graph.
//!
//! DESIGN.md, "Crash story", says what each step guarantees.

use super::{Counters, IndexState, Policy};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::codec::{self, IdRecord, StoredEdge};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::store::records::{self, RecordAt};
use crate::store::{Config, Store, index, plan};

/// Opens (or creates) the store `c` describes.
pub(crate) fn open(c: Config) -> Result<Store> {
    if let (Some(dir), false) = (&c.path, c.temporary) {
        super::compact::finish_interrupted(dir)?;
        create_durably(dir)?;
    }
    let mut sc = sled::Config::new()
        .cache_capacity(c.cache_capacity)
        .flush_every_ms(c.flush_every_ms);
    sc = if c.temporary {
        sc.temporary(true)
    } else {
        sc.path(c.path.clone().unwrap_or_default())
    };
    let display_path = c.path.clone().unwrap_or_default();
    let db = open_sled(&sc, &display_path)?;
    check_format(&db, &display_path)?;
    finish_redo(&db)?;
    // A current index answers queries without the graph; without one, the graph is loaded
    // now (writers need it) and an index written when the handle closes. A damaged index is
    // as good as none: the graph is rebuilt from the alias log, the index rewritten.
    let index = match (&c.path, db.get(codec::INDEX_STAMP_KEY)?) {
        (Some(dir), Some(stamp)) if !c.temporary => {
            index::GraphIndex::open(dir, &stamp).ok().flatten()
        }
        _ => None,
    };
    let data_counts = db
        .get(codec::DATA_COUNTS_KEY)?
        .as_deref()
        .and_then(codec::decode_data_counts)
        .filter(|v| v[3] == c.limits.max_properties_per_id as u64)
        .map(|[events, properties, at_limit, _]| plan::DataCounts {
            events,
            properties,
            at_limit,
        })
        .map_or_else(|| empty_store_counts(&db), |c| Ok(Some(c)))?;
    let packed_upto = super::events::packed_upto(&db)?;
    let suppressed = super::suppress::Suppressions::load(&db)?;
    let graph = match index {
        Some(_) => None,
        None => Some(load_graph(&db)?),
    };
    Ok(Store {
        db,
        writer: Mutex::new(()),
        graph: RwLock::new(graph),
        loading: Mutex::new(()),
        ix: IndexState {
            due: AtomicBool::new(index.is_none() && !c.temporary && c.path.is_some()),
            unstamped: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            current: index,
        },
        counts: Counters {
            data: Mutex::new(data_counts),
            due: AtomicBool::new(false),
            links_not_recorded: Default::default(),
            refusals_not_logged: Default::default(),
        },
        policy: Policy {
            blocked: crate::id::BlockedIds::new(&c.blocked_ids),
            max_person_size: c.max_person_size,
            max_links_per_person: c.max_links_per_person,
            max_refusals_logged: c.max_refusals_logged,
            limits: c.limits,
        },
        packed_upto: std::sync::atomic::AtomicU64::new(packed_upto),
        suppressed,
        cut: RwLock::new(None),
        removals: Default::default(),
        poisoned: AtomicBool::new(false),
        path: c.path.clone(),
        config: c,
    })
}

/// Creates the store's directory (and its missing ancestors) so that it survives a power cut:
/// each new directory's entry is fsynced in its parent. sled fsyncs what it creates inside.
fn create_durably(dir: &Path) -> Result<()> {
    let io = |e| Error::io(dir.display().to_string(), e);
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    for d in missing.iter().rev() {
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent).map_err(io)?;
    }
    Ok(())
}

/// fsyncs a directory: the entries created, renamed or removed in it become durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Opens sled, waiting a moment when the directory is still locked: sled's I/O threads can
/// hold the lock for a few milliseconds after the previous handle in this process is dropped.
fn open_sled(sc: &sled::Config, path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match sc.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Locked(path.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Accepts this format, upgrades an older readable one in place (its marker rewritten, so that
/// an older build refuses what it would misread), marks a new store, refuses anything else.
fn check_format(db: &sled::Db, path: &Path) -> Result<()> {
    let refuse = |found: String| Error::IncompatibleFormat {
        path: path.to_path_buf(),
        found,
        expected: codec::FORMAT_VERSION,
    };
    match db.get(codec::FORMAT_KEY)? {
        Some(v) => match codec::decode_format(&v) {
            Some(codec::FORMAT_VERSION) => {}
            Some(old) if codec::READABLE_VERSIONS.contains(&old) => {
                db.insert(codec::FORMAT_KEY, &codec::format_value())?;
            }
            other => {
                return Err(refuse(
                    other.map_or_else(|| "unreadable".into(), |v| v.to_string()),
                ));
            }
        },
        None if db.is_empty() => {
            db.insert(codec::FORMAT_KEY, &codec::format_value())?;
        }
        None => {
            return Err(refuse(
                "none (not an idgraph store, or written before format versions)".into(),
            ));
        }
    }
    Ok(())
}

/// An op interrupted by a crash between its redo record and its writes: finish it.
fn finish_redo(db: &sled::Db) -> Result<()> {
    if let Some(v) = db.get(codec::INTENT_KEY)? {
        replay(db, codec::decode_intent(&v)?, false, &mut |_, _| {})?;
        db.flush()?;
    }
    Ok(())
}

/// Writes (or removes) each key of a redo record in order, then removes the record. `faults`:
/// honour the crash-test hook (the first run of an op, not its recovery). `inserted` is told
/// each inserted key and whether it replaced a value.
fn replay(
    db: &sled::Db,
    writes: Vec<codec::RedoEntry>,
    faults: bool,
    inserted: &mut dyn FnMut(&[u8], bool),
) -> Result<()> {
    for (i, (k, v)) in writes.into_iter().enumerate() {
        if faults {
            fault_point(db, i)?;
        }
        match v {
            Some(v) => {
                let old = db.insert(&k, v)?;
                inserted(&k, old.is_some());
            }
            None => {
                db.remove(k)?;
            }
        };
    }
    db.remove(codec::INTENT_KEY)?;
    Ok(())
}

/// The graph from every ID record and the alias log: the edges under `e` keys and those kept
/// in ID records, replayed in sequence order.
pub(crate) fn load_graph(db: &sled::Db) -> Result<Graph> {
    let mut g = Graph::loading(0, String::new());
    let mut edges = Vec::new();
    records::scan_id_records_with(db, true, |id, v, at| {
        if matches!(at, RecordAt::Shadowed(_)) {
            return Ok(());
        }
        let rec = IdRecord::decode_head(v)?;
        if let Some((seq, e)) = rec.intro {
            edges.push((seq, e.a, e.b));
        }
        g.add_loaded(rec.node, id, rec.flags)
    })?;
    for kv in db.scan_prefix([codec::EDGE]) {
        let (k, v) = kv?;
        let e: StoredEdge = codec::decode(&v, "an edge")?;
        edges.push((codec::key_u64(&k)?, e.a, e.b));
    }
    edges.sort_unstable();
    if let Some(w) = edges.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::Corrupt(format!(
            "two alias edges have number {}",
            w[0].0
        )));
    }
    let refused = records::count_prefix(db, codec::REFUSAL)?;
    g.finish_load(edges.into_iter(), refused)
}

/// Writes several keys so that a crash leaves all or none of them: a redo record holding them
/// all, then plain inserts and removals, then the record's removal; opening finishes a record
/// that survived a crash. Plain writes cost a fraction of a sled batch, whose memory also grows
/// with its size (DESIGN.md, "Applying a batch"). The caller holds the writer lock.
///
/// # Errors
/// [`Error::Storage`] when the redo record cannot be written (nothing changed);
/// [`Error::Interrupted`] when a later write fails: the handle then refuses writes.
pub(crate) fn write_redo(store: &Store, writes: Vec<codec::RedoEntry>) -> Result<()> {
    write_redo_telling(store, writes, &mut |_, _| {})
}

/// [`write_redo`], telling `inserted` each inserted key and whether it replaced a value.
pub(crate) fn write_redo_telling(
    store: &Store,
    writes: Vec<codec::RedoEntry>,
    inserted: &mut dyn FnMut(&[u8], bool),
) -> Result<()> {
    let db = &store.db;
    store.preserve(writes.iter().map(|(k, _)| k))?;
    db.insert(codec::INTENT_KEY, codec::encode_intent(&writes))?;
    replay(db, writes, true, inserted).map_err(|e| {
        // Part of the op is in sled, none of it in memory: writing on could reuse nodes.
        // Refuse further writes; reopening finishes the op from its record.
        store.poisoned.store(true, Ordering::SeqCst);
        Error::Interrupted(Some(Box::new(e)))
    })
}

/// `Err` once a write was interrupted halfway (see [`Error::Interrupted`]).
pub(crate) fn check_writable(poisoned: &AtomicBool) -> Result<()> {
    if poisoned.load(Ordering::SeqCst) {
        return Err(Error::Interrupted(None));
    }
    Ok(())
}

/// Crash-test hook (debug builds only): with `IDGRAPH_FAULT_AFTER_WRITES=N`, the process
/// flushes and aborts before the `N`-th key of a multi-key op (0 = right after its redo
/// record), so that tests can check recovery at the exact point a kill would hit.
fn fault_point(db: &sled::Db, i: usize) -> Result<()> {
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var_os("IDGRAPH_FAULT_AFTER_WRITES")
        && n.to_str().and_then(|n| n.parse::<usize>().ok()) == Some(i)
    {
        db.flush()?;
        std::process::abort();
    }
    let _ = (db, i);
    Ok(())
}

/// The data counts of a store that holds no ID and no event: all zero (so that a new store
/// keeps its counts from the first write on); `None` otherwise.
fn empty_store_counts(db: &sled::Db) -> Result<Option<plan::DataCounts>> {
    for prefix in [codec::ID, codec::PACKED, codec::EVENT, codec::EVENT_BLOCK] {
        if db.scan_prefix([prefix]).next().transpose()?.is_some() {
            return Ok(None);
        }
    }
    Ok(Some(plan::DataCounts::default()))
}
