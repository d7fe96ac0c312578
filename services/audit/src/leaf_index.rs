//! The log's index from leaf hash to leaf index, kept in memory in 8 bytes an entry.
//!
//! A general hash map of 10^7 entries needs about 285 MB and, as it grows, rehashes all of it in
//! one go while the writer holds the state lock, stalling every proof. Here the first 16 bits of
//! a leaf hash pick one of 65,536 buckets, and each bucket is a small vector of packed words: the
//! next 24 bits of the hash above a 40-bit leaf index. An append pushes one word onto one bucket
//! (a bucket holds about 150 words at 10^7 entries, so growing one copies about a kilobyte); a
//! look-up scans one bucket. The 40 bits of hash it compares leave about one false candidate in
//! 10^5 look-ups at 10^7 entries: a candidate is a guess that the caller confirms against the
//! stored leaf hash.

use crate::merkle::Hash;

const BUCKET_BITS: u32 = 16;
const INDEX_BITS: u32 = 40;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// Most leaves the index can address (2^40, about 10^12).
pub const MAX_LEAVES: u64 = 1 << INDEX_BITS;

/// Leaf hash → leaf index candidates.
#[derive(Debug)]
pub struct LeafIndex {
    buckets: Vec<Vec<u64>>,
    len: u64,
}

impl Default for LeafIndex {
    fn default() -> Self {
        Self {
            buckets: vec![Vec::new(); 1 << BUCKET_BITS],
            len: 0,
        }
    }
}

fn split(hash: &Hash) -> (usize, u64) {
    let bucket = u16::from_be_bytes([hash[0], hash[1]]) as usize;
    let tag = u32::from_be_bytes([0, hash[2], hash[3], hash[4]]) as u64;
    (bucket, tag << INDEX_BITS)
}

impl LeafIndex {
    /// Records that the leaf at `index` has hash `hash`. Indexes must be pushed in increasing
    /// order, so the first candidate found for a hash is its lowest index.
    pub fn push(&mut self, hash: &Hash, index: u64) {
        debug_assert!(index < MAX_LEAVES);
        let (bucket, tag) = split(hash);
        self.buckets[bucket].push(tag | (index & INDEX_MASK));
        self.len += 1;
    }

    /// Leaf indexes below `size` whose hash may be `hash`, lowest first. Every leaf with that hash
    /// is among them; a candidate may be another leaf that shares the first 40 bits.
    pub fn candidates(&self, hash: &Hash, size: u64) -> impl Iterator<Item = u64> + '_ {
        let (bucket, tag) = split(hash);
        self.buckets[bucket]
            .iter()
            .filter(move |word| *word & !INDEX_MASK == tag)
            .map(|word| word & INDEX_MASK)
            .take_while(move |index| *index < size)
    }

    /// Number of leaves recorded.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no leaf is recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Releases the spare capacity of every bucket (after a bulk load).
    pub fn shrink_to_fit(&mut self) {
        for bucket in &mut self.buckets {
            bucket.shrink_to_fit();
        }
    }

    /// Bytes of heap the index holds.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Vec<u64>>()
            + self
                .buckets
                .iter()
                .map(|b| b.capacity() * std::mem::size_of::<u64>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;
    use proptest::prelude::*;

    #[test]
    fn finds_every_leaf_and_the_lowest_index_first() {
        let mut index = LeafIndex::default();
        let hashes: Vec<Hash> = (0..10_000u32)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        for (i, h) in hashes.iter().enumerate() {
            index.push(h, i as u64);
        }
        index.push(&hashes[7], 10_000); // the same body appended again
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(index.candidates(h, 20_000).next(), Some(i as u64));
        }
        assert_eq!(
            index.candidates(&hashes[7], 20_000).collect::<Vec<_>>(),
            [7, 10_000]
        );
        assert_eq!(
            index.candidates(&hashes[7], 7).next(),
            None,
            "not in a tree of size 7"
        );
        assert_eq!(index.len(), 10_001);
    }

    #[test]
    fn shares_a_bucket_without_confusing_hashes() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a[4] = 1;
        b[4] = 2;
        let mut index = LeafIndex::default();
        index.push(&a, 0);
        index.push(&b, 1);
        assert_eq!(index.candidates(&b, 2).collect::<Vec<_>>(), [1]);
        assert_eq!(index.candidates(&a, 2).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn holds_eight_bytes_an_entry() {
        let mut index = LeafIndex::default();
        let n = 200_000u32;
        for i in 0..n {
            index.push(&leaf_hash(&i.to_be_bytes()), i as u64);
        }
        index.shrink_to_fit();
        let fixed = (1usize << BUCKET_BITS) * std::mem::size_of::<Vec<u64>>();
        assert_eq!(index.heap_bytes() - fixed, n as usize * 8);
    }

    proptest! {
        #[test]
        fn never_misses_a_recorded_leaf(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 1..300),
            size_cut in 0usize..300,
        ) {
            let mut index = LeafIndex::default();
            let hashes: Vec<Hash> = bodies.iter().map(|b| leaf_hash(b)).collect();
            for (i, h) in hashes.iter().enumerate() {
                index.push(h, i as u64);
            }
            let size = size_cut.min(hashes.len()) as u64;
            for (i, h) in hashes.iter().enumerate() {
                let first = hashes.iter().position(|x| x == h).unwrap() as u64;
                let found: Vec<u64> = index.candidates(h, size).collect();
                if (i as u64) < size {
                    prop_assert!(found.contains(&(i as u64)));
                    prop_assert_eq!(found[0], first);
                } else {
                    prop_assert!(found.iter().all(|c| *c < size));
                }
            }
        }
    }
}
