//! Per-client write budgets: how much of the one writer a client may take.
//!
//! Every tracking op goes through one writer thread, so a client whose ops are expensive — the
//! largest bodies the limits allow, properties set on an ID that already holds thousands of
//! long values (every set rewrites the record) — takes the writer from everyone else. Each
//! client (an IPv4 address, or an IPv6 /64: one host usually holds a whole /64) has a budget
//! in bytes: a request costs the bytes it sent plus about the bytes its op wrote
//! ([`Store::apply_batch_costed`](crate::Store::apply_batch_costed)). The budget refills at
//! `rate` bytes a second up to `burst`; a client that has spent more than its burst is
//! answered `429` with `Retry-After` until its debt has drained, before its body is read.
//!
//! [`OpenConnections`] bounds the connections one client holds open at once, so that no one
//! client can take every connection slot (requests waiting out a `429`, slow bodies).
//!
//! The table of clients is bounded: at most `max_clients` entries. When it is full, the
//! entries of clients that owe nothing any more are dropped (at most once a second); when
//! none can be, new clients share one entry until some can.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The address that stands for every client the full table could not take.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The write budgets of all clients.
pub(crate) struct Budgets {
    /// Bytes a second each client's budget refills by; 0: no budgets.
    rate: f64,
    /// Bytes a client may owe and still be served.
    burst: f64,
    max_clients: usize,
    inner: Mutex<Table>,
}

struct Table {
    /// Each client's debt in bytes, as of the instant next to it.
    debts: HashMap<IpAddr, (f64, Instant)>,
    /// When entries were last dropped to make room.
    swept: Option<Instant>,
}

/// The client a request comes from: its IPv4 address (also when written as IPv4-mapped IPv6),
/// or the /64 of its IPv6 address.
pub(crate) fn client_of(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl Budgets {
    /// Budgets refilling at `rate` bytes a second up to `burst` bytes (`rate` 0: none), for at
    /// most `max_clients` clients at once.
    pub(crate) fn new(rate: u64, burst: u64, max_clients: usize) -> Self {
        Budgets {
            rate: rate as f64,
            burst: burst as f64,
            max_clients: max_clients.max(1),
            inner: Mutex::new(Table {
                debts: HashMap::new(),
                swept: None,
            }),
        }
    }

    /// `Ok` when `client` may be served now, else how long until it may.
    pub(crate) fn admit(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let t = self.inner.lock();
        let key = if t.debts.contains_key(&client) {
            client
        } else if t.debts.len() < self.max_clients {
            return Ok(());
        } else {
            OVERFLOW
        };
        let Some(&(debt, at)) = t.debts.get(&key) else {
            return Ok(());
        };
        let owed = self.drained(debt, at, now);
        if owed <= self.burst {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((owed - self.burst) / self.rate))
        }
    }

    /// Adds `cost` bytes to what `client` owes.
    pub(crate) fn charge(&self, client: IpAddr, cost: u64, now: Instant) {
        if self.rate == 0.0 {
            return;
        }
        let mut t = self.inner.lock();
        let key = self.entry_for(&mut t, client, now);
        let (debt, at) = t.debts.get(&key).copied().unwrap_or((0.0, now));
        let owed = self.drained(debt, at, now) + cost as f64;
        t.debts.insert(key, (owed, now));
    }

    /// How many clients the table holds now.
    pub(crate) fn clients(&self) -> usize {
        self.inner.lock().debts.len()
    }

    /// `debt` as of `at`, drained at `rate` until `now`.
    fn drained(&self, debt: f64, at: Instant, now: Instant) -> f64 {
        (debt - self.rate * now.saturating_duration_since(at).as_secs_f64()).max(0.0)
    }

    /// The key `client` is charged under: its own, unless the table is full and no entry can
    /// be dropped (then the shared [`OVERFLOW`] entry).
    fn entry_for(&self, t: &mut Table, client: IpAddr, now: Instant) -> IpAddr {
        if t.debts.contains_key(&client) || t.debts.len() < self.max_clients {
            return client;
        }
        let due = t
            .swept
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1));
        if due {
            t.swept = Some(now);
            t.debts
                .retain(|_, &mut (debt, at)| self.drained(debt, at, now) > 0.0);
            if t.debts.len() < self.max_clients {
                return client;
            }
        }
        OVERFLOW
    }
}

/// The connections each client holds open, at most `max` (0: no limit); peers in `exempt`
/// (trusted proxies, which carry many clients) are not counted. The table holds only clients
/// with a connection open, so it is bounded by the server's connection limit.
pub(crate) struct OpenConnections {
    max: usize,
    exempt: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Connections closed at once because their client held `max`.
    pub(crate) refused: AtomicU64,
}

/// One counted connection; dropping it (the connection ended) frees its place.
pub(crate) struct Held {
    table: Arc<OpenConnections>,
    client: Option<IpAddr>,
}

impl OpenConnections {
    pub(crate) fn new(max: usize, exempt: Vec<IpAddr>) -> Arc<Self> {
        Arc::new(OpenConnections {
            max,
            exempt,
            open: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection from `peer`, or `None` when its client holds `max`.
    pub(crate) fn open(self: &Arc<Self>, peer: SocketAddr) -> Option<Held> {
        if self.max == 0 || self.exempt.contains(&peer.ip()) {
            return Some(Held {
                table: self.clone(),
                client: None,
            });
        }
        let client = client_of(peer);
        let mut open = self.open.lock();
        let n = open.entry(client).or_default();
        if *n >= self.max {
            drop(open);
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        *n += 1;
        Some(Held {
            table: self.clone(),
            client: Some(client),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(c) = self.client {
            let mut open = self.table.open.lock();
            if let Some(n) = open.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_past_its_burst_waits_until_its_debt_has_drained() {
        let b = Budgets::new(1000, 4000, 10);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(b.admit(a, t0), Ok(()));
        b.charge(a, 3000, t0);
        assert_eq!(b.admit(a, t0), Ok(()), "within the burst");
        b.charge(a, 3000, t0);
        let wait = b.admit(a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-6, "{wait:?}");
        // Someone else is not affected.
        assert_eq!(b.admit(ip("10.0.0.2"), t0), Ok(()));
        let t1 = t0 + Duration::from_millis(1500);
        assert!(b.admit(a, t1).is_err());
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(b.admit(a, t2), Ok(()));
        // The debt keeps draining: 6000 - 1000 * 10 < 0 → 0, then a fresh burst.
        let t3 = t0 + Duration::from_secs(10);
        b.charge(a, 4000, t3);
        assert_eq!(b.admit(a, t3), Ok(()));
    }

    #[test]
    fn a_client_holds_at_most_max_connections_and_a_closed_one_frees_its_place() {
        let t = OpenConnections::new(2, vec![ip("10.9.9.9")]);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let a = t.open(sa("10.0.0.1:1")).unwrap();
        let _b = t.open(sa("10.0.0.1:2")).unwrap();
        assert!(t.open(sa("10.0.0.1:3")).is_none());
        assert_eq!(t.refused.load(Relaxed), 1);
        let _other = t.open(sa("10.0.0.2:1")).unwrap();
        let proxy: Vec<_> = (0..5)
            .map(|i| t.open(sa(&format!("10.9.9.9:{i}"))))
            .collect();
        assert!(
            proxy.iter().all(Option::is_some),
            "a trusted proxy is not counted"
        );
        drop(a);
        assert!(t.open(sa("10.0.0.1:4")).is_some());
        drop(_other);
        assert!(
            !t.open.lock().contains_key(&ip("10.0.0.2")),
            "no entry without a connection"
        );
    }

    #[test]
    fn rate_zero_admits_everything_and_keeps_nothing() {
        let b = Budgets::new(0, 0, 10);
        let t0 = Instant::now();
        b.charge(ip("10.0.0.1"), u64::MAX, t0);
        assert_eq!(b.admit(ip("10.0.0.1"), t0), Ok(()));
        assert_eq!(b.clients(), 0);
    }

    #[test]
    fn ipv6_clients_are_their_64_and_mapped_v4_is_v4() {
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert_eq!(
            client_of(sa("[2001:db8:1:2:aaaa::1]:80")),
            client_of(sa("[2001:db8:1:2:bbbb::9]:443"))
        );
        assert_ne!(
            client_of(sa("[2001:db8:1:2::1]:80")),
            client_of(sa("[2001:db8:1:3::1]:80"))
        );
        assert_eq!(client_of(sa("[::ffff:10.1.2.3]:80")), ip("10.1.2.3"));
        assert_eq!(client_of(sa("10.1.2.3:80")), ip("10.1.2.3"));
    }

    #[test]
    fn the_table_stays_bounded_and_a_full_table_shares_one_entry() {
        let b = Budgets::new(1000, 100, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            b.charge(ip(&format!("10.0.0.{i}")), 10_000, t0);
        }
        // All three owe: a fourth client shares the overflow entry, and pays for it.
        let d = ip("10.0.0.9");
        b.charge(d, 500, t0);
        assert!(b.clients() <= 4, "{}", b.clients());
        assert!(b.admit(d, t0).is_err(), "charged to the shared entry");
        assert!(
            b.admit(ip("10.0.0.10"), t0).is_err(),
            "and so is any other newcomer"
        );
        // Once the debts have drained (and a second has passed) the entries make room.
        let t1 = t0 + Duration::from_secs(11);
        b.charge(ip("10.0.0.20"), 1, t1);
        assert_eq!(b.admit(d, t1), Ok(()));
        assert!(b.clients() <= 3, "{}", b.clients());
        assert!(b.inner.lock().debts.contains_key(&ip("10.0.0.20")));
    }

    #[test]
    fn under_many_clients_and_threads_the_table_never_passes_its_bound() {
        let b = std::sync::Arc::new(Budgets::new(1_000_000, 1000, 64));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..5000u32 {
                        let c = IpAddr::from([10, t, (i >> 8) as u8, i as u8]);
                        let now = Instant::now();
                        let _ = b.admit(c, now);
                        b.charge(c, 100, now);
                        assert!(b.clients() <= 65);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(b.clients() <= 65);
    }
}
