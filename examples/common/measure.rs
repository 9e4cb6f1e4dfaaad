//! Measuring helpers shared by the examples (included with `#[path]`; not an example itself).
#![allow(dead_code)] // each example uses a part

/// A `/proc/self/status` field in MiB (`VmHWM` = peak RSS, `VmRSS` = current); NaN elsewhere.
fn status_mib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Peak resident memory of this process so far, MiB.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Current resident memory, MiB.
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// Bytes of all files under `p`.
pub fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                total += if m.is_dir() {
                    dir_size(&e.path())
                } else {
                    m.len()
                };
            }
        }
    }
    total
}

/// What `idgraph import` does to its process before importing (`src/main.rs`,
/// `small_pages_only`): transparent huge pages off, so that a bulk measurement here is the
/// import's.
pub fn like_idgraph_import() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
