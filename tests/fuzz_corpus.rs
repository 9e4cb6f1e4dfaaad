//! Replays the fuzzers' checked-in corpus (`fuzz/corpus/TARGET/`, what `cargo +nightly fuzz`
//! found interesting, and `fuzz/regressions/TARGET/`, inputs that once failed) through the
//! same entry points, on stable, as an ordinary test: each input must return without a panic.

use std::path::Path;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, run) in idgraph::fuzz::TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(
            corpus.len() >= 5,
            "fuzz/corpus/{target} holds {} inputs: the corpus is missing",
            corpus.len()
        );
        for (name, data) in corpus
            .iter()
            .chain(&inputs(&root.join("regressions").join(target)))
        {
            let ok = std::panic::catch_unwind(|| run(data));
            assert!(ok.is_ok(), "{name} panics the {target} target");
        }
    }
}

#[test]
fn codec_seeds_decode_and_damaged_copies_do_not_panic() {
    for seed in idgraph::fuzz::codec_seeds() {
        idgraph::fuzz::codec_values(&seed);
        // Every truncation and every single-byte flip of a real value.
        for cut in 0..seed.len() {
            idgraph::fuzz::codec_values(&seed[..cut]);
        }
        for i in 1..seed.len() {
            for bit in [0x01, 0x80, 0xff] {
                let mut d = seed.clone();
                d[i] ^= bit;
                idgraph::fuzz::codec_values(&d);
            }
        }
    }
}

/// Writes the codec seeds into `fuzz/corpus/codec/` (run once by hand, `--ignored`).
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_codec_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/codec");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in idgraph::fuzz::codec_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}

/// Real graph indexes of small stores, as the `index` target takes them: the file itself
/// (first byte odd), and its header sizes and arrays with the checksums left to the target
/// (first byte even). Writes them into `fuzz/corpus/index/` (run once by hand, `--ignored`).
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_index_seeds() {
    use idgraph::{Cause, Identity, Op, Properties, Store};
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/index");
    std::fs::create_dir_all(&out).unwrap();
    let id = |s: String| Identity::new(s).unwrap();
    for (k, (n, group)) in [(1, 1), (8, 2), (40, 5), (200, 7), (600, 50)]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut ops = Vec::new();
            for i in 0..n {
                if i % group != 0 {
                    ops.push(Op::alias(
                        id(format!("u{i}")),
                        id(format!("u{}", i - i % group)),
                        i as i64,
                        Cause::Api,
                    ));
                }
                ops.push(Op::record(id(format!("u{i}")), "E", Properties::new(), 1));
            }
            s.apply_batch(&ops).unwrap();
            if n > 8 {
                s.forget("u0").unwrap();
            }
        }
        let file = std::fs::read(dir.path().join("graph.idx")).unwrap();
        let mut raw = vec![1u8];
        raw.extend_from_slice(&file);
        std::fs::write(out.join(format!("file-{k}")), &raw).unwrap();
        // Header fields (little-endian u64 from byte 32): nodes, ids, persons, largest, edges,
        // refused, table, blob length.
        let f = |i: usize| u64::from_le_bytes(file[32 + i * 8..40 + i * 8].try_into().unwrap());
        let mut s = vec![0u8];
        s.extend_from_slice(&(f(0) as u16).to_le_bytes());
        s.extend_from_slice(&(f(1) as u16).to_le_bytes());
        s.push(f(6).trailing_zeros() as u8);
        s.extend_from_slice(&(f(7) as u16).to_le_bytes());
        for i in [2, 3, 4, 5] {
            s.push(f(i) as u8);
        }
        s.extend_from_slice(&file[128..file.len() - (f(9) as usize) * 8]);
        std::fs::write(out.join(format!("sizes-{k}")), &s).unwrap();
    }
}
