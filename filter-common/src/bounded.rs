//! A map that starts over when full: the one shape of every cache the
//! filters keep (decoded payloads and headers, cluster verdicts and
//! policies, answers by cluster name). A mesh has as many distinct keys as
//! it has clusters or workloads, far under the bound; the bound only caps
//! memory against pathological churn, and starting over (rather than
//! evicting one entry) costs nothing per hit and stays correct, since every
//! entry can be computed again.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct BoundedMap<K, V> {
    max: usize,
    entries: HashMap<K, V>,
}

impl<K: Hash + Eq, V> BoundedMap<K, V> {
    /// At most `max` entries (at least one).
    pub fn new(max: usize) -> Self {
        BoundedMap { max: max.max(1), entries: HashMap::new() }
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.entries.get(key)
    }

    /// Inserts, emptying the map first when it is full.
    pub fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.max && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        self.entries.insert(key, value);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_over_when_full_and_never_holds_more_than_its_bound() {
        let mut map = BoundedMap::new(3);
        for i in 0..3 {
            map.insert(i, i * 10);
        }
        assert_eq!((map.len(), map.get(&2)), (3, Some(&20)));
        map.insert(1, 11);
        assert_eq!((map.len(), map.get(&1)), (3, Some(&11)), "replacing a key is not growth");
        map.insert(3, 30);
        assert_eq!((map.len(), map.get(&0), map.get(&3)), (1, None, Some(&30)));
        for i in 0..100 {
            map.insert(i, i);
            assert!(map.len() <= 3);
        }
        map.clear();
        assert!(map.is_empty());
    }

    #[test]
    fn borrowed_lookups() {
        let mut map: BoundedMap<Vec<u8>, u8> = BoundedMap::new(2);
        map.insert(b"ab".to_vec(), 1);
        assert_eq!(map.get(b"ab".as_slice()), Some(&1));
        let mut names: BoundedMap<String, u8> = BoundedMap::new(2);
        names.insert("c".into(), 2);
        assert_eq!(names.get("c"), Some(&2));
    }
}
