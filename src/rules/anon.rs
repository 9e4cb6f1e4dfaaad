//! Anonymous IDs in KISSmetrics' format, from an injectable source.

use base64::Engine;
use rand::{RngCore, SeedableRng, rngs::StdRng};

/// Where a [`Visitor`](super::Visitor) gets new anonymous IDs from.
pub trait AnonIdSource: Send {
    /// The next anonymous ID.
    fn next_anon_id(&mut self) -> String;
}

impl<F: FnMut() -> String + Send> AnonIdSource for F {
    fn next_anon_id(&mut self) -> String {
        self()
    }
}

/// Formats 20 bytes as a KISSmetrics anonymous ID: standard base64, 28 characters ending in `=`.
pub fn format_anon_id(bytes: &[u8; 20]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Random anonymous IDs (20 random bytes each), from the OS's entropy or a seed.
pub struct RandomIds(StdRng);

impl RandomIds {
    /// Seeded from the operating system: different every run.
    pub fn new() -> Self {
        RandomIds(StdRng::from_os_rng())
    }

    /// Deterministic: the same seed gives the same IDs.
    pub fn seeded(seed: u64) -> Self {
        RandomIds(StdRng::seed_from_u64(seed))
    }
}

impl Default for RandomIds {
    fn default() -> Self {
        Self::new()
    }
}

impl AnonIdSource for RandomIds {
    fn next_anon_id(&mut self) -> String {
        let mut b = [0u8; 20];
        self.0.fill_bytes(&mut b);
        format_anon_id(&b)
    }
}

/// The given IDs in order (test vectors list the anonymous IDs a browser will generate), then
/// seeded random ones.
pub struct ListIds {
    ids: std::vec::IntoIter<String>,
    rest: RandomIds,
}

impl ListIds {
    /// Hands out `ids` first.
    pub fn new(ids: Vec<String>) -> Self {
        ListIds {
            ids: ids.into_iter(),
            rest: RandomIds::seeded(0),
        }
    }
}

impl AnonIdSource for ListIds {
    fn next_anon_id(&mut self) -> String {
        self.ids.next().unwrap_or_else(|| self.rest.next_anon_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_kissmetrics_format() {
        let mut g = RandomIds::seeded(1);
        for _ in 0..100 {
            let id = g.next_anon_id();
            assert_eq!(id.len(), 28);
            assert!(crate::is_kissmetrics_anonymous(&id), "{id}");
        }
        assert_eq!(
            RandomIds::seeded(5).next_anon_id(),
            RandomIds::seeded(5).next_anon_id()
        );
    }
}
