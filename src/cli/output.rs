//! How the command line prints: JSON, times, counts.

/// `println!` that does not panic when stdout is gone (a server outlives its terminal).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
pub(crate) use say;

/// Prints `v` as pretty JSON.
pub fn print_json(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON output of plain data")
    );
}

/// `on 2023-11-14 (t=1700000000)`.
pub fn when(at: i64) -> String {
    format!("on {} (t={at})", idgraph::dot::date(at))
}

/// `1 ID`, `2 IDs`.
pub fn ids(n: usize) -> String {
    count(n, "ID")
}

/// `1 link`, `2 links`: `n` and the noun, plural unless `n` is 1.
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
