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
