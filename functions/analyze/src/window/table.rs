//! [`SeriesTable`]: the open windows of one boundary, by series, in about
//! half the memory of a hash map of them.
//!
//! A hash table's buckets come in powers of two, so a table sized for `n`
//! entries holds up to `2n` of them, and every bucket of a map is as large
//! as a key and a value (a window: 168 bytes). Here the values sit densely
//! in a vector, sized for `n`, and the hash table holds only 4-byte indices
//! into it: at 8,000 series a boundary that is about 190 bytes a window
//! instead of 330. A table only grows (a group of windows is dropped whole
//! when it closes), so indices never move.

use std::hash::BuildHasher as _;
use std::sync::Arc;

use foldhash::fast::FixedState;

/// The series a value belongs to: its device and metric names, shared
/// (`Arc<str>`) with the analyzer's series map, so a window costs no
/// allocation for them.
pub(crate) type SeriesKey = (Arc<str>, Arc<str>);

/// Values by series, densely stored; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct SeriesTable<V> {
    index: hashbrown::HashTable<u32>,
    entries: Vec<(SeriesKey, V)>,
}

fn hash(device: &str, metric: &str) -> u64 {
    FixedState::default().hash_one((device, metric))
}

impl<V> SeriesTable<V> {
    /// A table with room for `n` series before it grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            index: hashbrown::HashTable::with_capacity(n),
            entries: Vec::with_capacity(n),
        }
    }

    /// Series held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn find(&self, device: &str, metric: &str) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(hash(device, metric), |&i| {
                let (d, m) = &entries[i as usize].0;
                **d == *device && **m == *metric
            })
            .map(|&i| i as usize)
    }

    /// The value of a series.
    pub(crate) fn get(&self, device: &str, metric: &str) -> Option<&V> {
        self.find(device, metric).map(|i| &self.entries[i].1)
    }

    /// The value of a series, made by `make` if the series has none yet;
    /// `true` with it when it was made now.
    pub(crate) fn get_or_insert_with(
        &mut self,
        device: &Arc<str>,
        metric: &Arc<str>,
        make: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        if let Some(i) = self.find(device, metric) {
            return (&mut self.entries[i].1, false);
        }
        let i = self.entries.len();
        // Not reachable: 2^32 windows in one boundary would be 640 GiB of
        // entries, so memory runs out long before. Were it reached, the value
        // would join the newest window instead of a new one (no panic).
        let Ok(at) = u32::try_from(i) else {
            return (&mut self.entries[i - 1].1, false);
        };
        if self.entries.len() == self.entries.capacity() {
            // By half, not double: a boundary's first table is not sized in
            // advance, and doubling would leave up to half of it unused.
            self.entries.reserve_exact((self.entries.len() / 2).max(4));
        }
        self.entries.push(((Arc::clone(device), Arc::clone(metric)), make()));
        let entries = &self.entries;
        self.index.insert_unique(hash(device, metric), at, |&j| {
            let (d, m) = &entries[j as usize].0;
            hash(d, m)
        });
        (&mut self.entries[i].1, true)
    }

    /// Every series and its value, sorted by (device, metric).
    pub(crate) fn into_sorted(self) -> Vec<(SeriesKey, V)> {
        let mut entries = self.entries;
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_series_it_was_given_and_no_other() {
        let mut t: SeriesTable<usize> = SeriesTable::with_capacity(3);
        let names: Vec<(Arc<str>, Arc<str>)> = (0..5000)
            .map(|i| {
                (
                    Arc::from(format!("dev-{}", i % 700)),
                    Arc::from(format!("m{}", i / 700)),
                )
            })
            .collect();
        for (i, (d, m)) in names.iter().enumerate() {
            let (v, made) = t.get_or_insert_with(d, m, || i);
            assert!(made);
            assert_eq!(*v, i);
        }
        assert_eq!(t.len(), 5000);
        for (i, (d, m)) in names.iter().enumerate() {
            assert_eq!(t.get(d, m), Some(&i));
            let (v, made) = t.get_or_insert_with(d, m, || usize::MAX);
            assert!(!made);
            *v += 1;
        }
        assert_eq!(t.get("dev-3", "m0"), Some(&4));
        // Same strings split differently are another series.
        assert_eq!(t.get("dev-3m", "0"), None);
        assert_eq!(t.get("dev-700", "m0"), None);
        let sorted = t.into_sorted();
        assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(sorted.len(), 5000);
    }
}
