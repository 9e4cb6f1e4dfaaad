//! A fixed read workload for counting instructions (repeatable where the clock is not): one
//! person of 101 IDs with 200 events, then `events` of the person and `properties` of one ID,
//! 300 times each.
//!
//! ```sh
//! cargo build --release --example read_path
//! valgrind --tool=callgrind --toggle-collect='*Store*events*' \
//!     --toggle-collect='*Store*properties*' target/release/examples/read_path
//! ```
//! BENCHMARKS.md ("After the restructuring of #12") quotes the count before and after.

use idgraph::{Cause, Config, Identity, Op, Properties};

fn main() -> idgraph::Result<()> {
    let store = Config::temporary().open()?;
    let mut ops = Vec::new();
    for k in 0..100 {
        let anon = Identity::new(format!("anon{k}"))?;
        ops.push(Op::alias(
            Identity::new("user")?,
            anon.clone(),
            1,
            Cause::Identify,
        ));
        ops.push(Op::record(anon.clone(), "Viewed", Properties::new(), 5 + k));
        let props = Properties::new().with("x", "1")?;
        ops.push(Op::record(anon, "Clicked", props, 7 + k));
    }
    store.apply_batch(&ops)?;
    let mut n = 0;
    for _ in 0..300 {
        n += store.events("user")?.len();
        n += store.properties("anon3")?.len();
    }
    assert_eq!(n, 300 * (200 + 1));
    println!("read {n} events and properties");
    Ok(())
}
