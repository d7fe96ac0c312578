//! RFC 9162 (RFC 6962) Merkle tree hashing, proofs and their verification, pure and storage-free.
//!
//! Leaf hash = SHA-256(0x00 ‖ entry), interior = SHA-256(0x01 ‖ left ‖ right), and the tree of n
//! leaves splits at the largest power of two smaller than n (RFC 9162 §2.1.1). Proofs are built
//! from *complete* subtrees, which a [`SubtreeSource`] supplies: in memory for tests and verifiers,
//! from storage plus an in-memory upper tree in the log itself.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Returns SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// Returns proof hashes as they travel in the contract (`repeated bytes`).
pub fn hashes_to_wire(hashes: Vec<Hash>) -> Vec<Vec<u8>> {
    hashes.into_iter().map(|h| h.to_vec()).collect()
}

/// Reads proof hashes from the contract; `None` when one is not 32 bytes.
pub fn hashes_from_wire(hashes: Vec<Vec<u8>>) -> Option<Vec<Hash>> {
    hashes.into_iter().map(|h| h.try_into().ok()).collect()
}

/// Returns SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Returns the root of the empty tree, SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Returns the largest power of two strictly smaller than `n` (`n` ≥ 2): the RFC's split point.
pub fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// A complete subtree: `2^level` leaves starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subtree {
    /// Height; 0 is a leaf.
    pub level: u32,
    /// Position among the subtrees of that height.
    pub index: u64,
}

/// Supplies the hashes of complete subtrees.
pub trait SubtreeSource {
    /// Returns the hash of a complete subtree that lies within the tree.
    fn complete(&self, subtree: Subtree) -> Hash;
}

/// Splits the leaf range `[start, end)` into complete subtrees, largest first.
pub fn decompose(mut start: u64, end: u64) -> Vec<Subtree> {
    let mut out = Vec::new();
    while start < end {
        let remaining = end - start;
        let mut level = 63 - remaining.leading_zeros();
        if start != 0 {
            level = level.min(start.trailing_zeros());
        }
        out.push(Subtree {
            level,
            index: start >> level,
        });
        start += 1 << level;
    }
    out
}

/// Returns `MTH(D[start:end])` for a range the RFC's recursion produces (start aligned).
pub fn range_hash(source: &impl SubtreeSource, start: u64, end: u64) -> Hash {
    let parts = decompose(start, end);
    let mut iter = parts.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    iter.fold(source.complete(*last), |acc, part| {
        node_hash(&source.complete(*part), &acc)
    })
}

/// Returns the ranges whose hashes form the inclusion proof of `index` in a tree of `size`
/// (RFC 9162 §2.1.3.1), leaf to root.
pub fn inclusion_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    fn path(m: u64, start: u64, end: u64, out: &mut Vec<(u64, u64)>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m - start < k {
            path(m, start, start + k, out);
            out.push((start + k, end));
        } else {
            path(m, start + k, end, out);
            out.push((start, start + k));
        }
    }
    let mut out = Vec::new();
    if index < size {
        path(index, 0, size, &mut out);
    }
    out
}

/// Returns the ranges whose hashes form the consistency proof from `first` to `second`
/// (RFC 9162 §2.1.4.1).
pub fn consistency_ranges(first: u64, second: u64) -> Vec<(u64, u64)> {
    fn subproof(m: u64, start: u64, end: u64, is_start: bool, out: &mut Vec<(u64, u64)>) {
        let n = end - start;
        if m == n {
            if !is_start {
                out.push((start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(m, start, start + k, is_start, out);
            out.push((start + k, end));
        } else {
            subproof(m - k, start + k, end, false, out);
            out.push((start, start + k));
        }
    }
    let mut out = Vec::new();
    if 0 < first && first < second {
        subproof(first, 0, second, true, &mut out);
    }
    out
}

/// Returns every complete subtree the given ranges need.
pub fn subtrees_of(ranges: &[(u64, u64)]) -> Vec<Subtree> {
    ranges.iter().flat_map(|&(a, b)| decompose(a, b)).collect()
}

/// Builds the inclusion proof of `index` in a tree of `size`.
pub fn inclusion_proof(source: &impl SubtreeSource, index: u64, size: u64) -> Vec<Hash> {
    inclusion_ranges(index, size)
        .into_iter()
        .map(|(a, b)| range_hash(source, a, b))
        .collect()
}

/// Builds the consistency proof from `first` to `second`.
pub fn consistency_proof(source: &impl SubtreeSource, first: u64, second: u64) -> Vec<Hash> {
    consistency_ranges(first, second)
        .into_iter()
        .map(|(a, b)| range_hash(source, a, b))
        .collect()
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index or sizes are out of range.
    #[error("invalid proof request: {0}")]
    Range(String),
    /// The proof has the wrong number of hashes.
    #[error("proof has the wrong length")]
    Length,
    /// The proof does not lead to the expected root.
    #[error("proof does not match the root")]
    Mismatch,
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Range(format!(
            "leaf {index} is not in a tree of {size}"
        )));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::Length);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Length);
    }
    if r != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2) between trees of `first` and `second` leaves.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first == 0 || first > second {
        return Err(ProofError::Range(format!(
            "no consistency proof from {first} to {second}"
        )));
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Length);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::Length);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Length);
    }
    if fr != *first_root || sr != *second_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first. It yields
/// the root in O(log n) and reports each complete subtree as it forms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    /// Returns the number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Rebuilds a frontier for `size` leaves from its complete subtrees (see [`Frontier::parts`]).
    pub fn from_parts(size: u64, source: &impl SubtreeSource) -> Self {
        let nodes = decompose(0, size)
            .into_iter()
            .map(|s| (s.level, source.complete(s)))
            .collect();
        Self { size, nodes }
    }

    /// Returns the complete subtrees that make up a tree of `size` leaves.
    pub fn parts(size: u64) -> Vec<Subtree> {
        decompose(0, size)
    }

    /// Appends a leaf hash and calls `completed` for every complete subtree of height ≥ 1 that
    /// this leaf finishes, lowest first.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(Subtree, &Hash)) {
        let mut level = 0u32;
        let mut hash = leaf;
        let index_after = self.size + 1;
        while let Some(&(top_level, top)) = self.nodes.last() {
            if top_level != level {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&top, &hash);
            level += 1;
            completed(
                Subtree {
                    level,
                    index: (index_after >> level) - 1,
                },
                &hash,
            );
        }
        self.nodes.push((level, hash));
        self.size = index_after;
    }

    /// Returns the tree's root.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, last)) = iter.next() else {
            return empty_root();
        };
        iter.fold(last, |acc, (_, h)| node_hash(h, &acc))
    }
}

/// A whole tree in memory, for tests and for verifiers that download every entry.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// Makes a tree from leaf hashes.
    pub fn from_leaves(leaves: Vec<Hash>) -> Self {
        let mut tree = Self::default();
        for leaf in leaves {
            tree.push(leaf);
        }
        tree
    }

    /// Appends a leaf hash, keeping every complete subtree.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let row = &self.levels[level];
            let hash = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(hash);
            level += 1;
        }
    }

    /// Returns the number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Returns the root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Hash {
        range_hash(self, 0, size)
    }
}

impl SubtreeSource for MemoryTree {
    fn complete(&self, s: Subtree) -> Hash {
        self.levels[s.level as usize][s.index as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The RFC 6962 test vectors (as published with the Certificate Transparency and
    /// transparency-dev/merkle implementations).
    fn reference() -> MemoryTree {
        let leaves = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ];
        MemoryTree::from_leaves(
            leaves
                .iter()
                .map(|l| leaf_hash(&hex::decode(l).unwrap()))
                .collect(),
        )
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_match_the_rfc_6962_vectors() {
        let tree = reference();
        for (size, root) in ROOTS.iter().enumerate() {
            assert_eq!(tree.root(size as u64), h(root), "size {size}");
        }
        let mut frontier = Frontier::default();
        for i in 0..8 {
            frontier.push(tree.complete(Subtree { level: 0, index: i }), |_, _| {});
            assert_eq!(frontier.root(), h(ROOTS[i as usize + 1]));
        }
    }

    #[test]
    fn inclusion_proofs_match_the_vectors() {
        let tree = reference();
        let cases = [
            (
                0,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, size, want) in cases {
            let proof = inclusion_proof(&tree, index, size);
            assert_eq!(proof, want.iter().map(|s| h(s)).collect::<Vec<_>>());
            let leaf = tree.complete(Subtree { level: 0, index });
            verify_inclusion(index, size, &leaf, &proof, &tree.root(size)).unwrap();
        }
    }

    #[test]
    fn consistency_proofs_match_the_vectors() {
        let tree = reference();
        let cases = [
            (
                1,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (first, second, want) in cases {
            let proof = consistency_proof(&tree, first, second);
            assert_eq!(
                proof,
                want.iter().map(|s| h(s)).collect::<Vec<_>>(),
                "{first}->{second}"
            );
            verify_consistency(first, second, &tree.root(first), &tree.root(second), &proof)
                .unwrap();
        }
    }

    fn tree_of(n: u64) -> MemoryTree {
        MemoryTree::from_leaves((0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn inclusion_proofs_verify_and_mutations_fail(
            n in 1u64..300, i in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8,
        ) {
            let tree = tree_of(n);
            let index = i.index(n as usize) as u64;
            let leaf = tree.complete(Subtree { level: 0, index });
            let root = tree.root(n);
            let proof = inclusion_proof(&tree, index, n);
            prop_assert!(verify_inclusion(index, n, &leaf, &proof, &root).is_ok());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = flip.index(bad.len());
                bad[k][0] ^= 1 << bit;
                prop_assert!(verify_inclusion(index, n, &leaf, &bad, &root).is_err());
                let mut short = proof.clone();
                short.pop();
                prop_assert!(verify_inclusion(index, n, &leaf, &short, &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(root);
            prop_assert!(verify_inclusion(index, n, &leaf, &longer, &root).is_err());
            if n > 1 {
                let other = (index + 1) % n;
                prop_assert!(verify_inclusion(other, n, &leaf, &proof, &root).is_err());
            }
            prop_assert!(verify_inclusion(index, n, &leaf_hash(b"forged"), &proof, &root).is_err());
        }

        #[test]
        fn consistency_proofs_verify_and_mutations_fail(
            n in 1u64..300, m in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8,
        ) {
            let tree = tree_of(n);
            let first = m.index(n as usize) as u64 + 1;
            let (r1, r2) = (tree.root(first), tree.root(n));
            let proof = consistency_proof(&tree, first, n);
            prop_assert!(verify_consistency(first, n, &r1, &r2, &proof).is_ok());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = flip.index(bad.len());
                bad[k][31] ^= 1 << bit;
                prop_assert!(verify_consistency(first, n, &r1, &r2, &bad).is_err());
            }
            // A different history for the first tree is caught.
            let mut forged = r1;
            forged[0] ^= 1;
            prop_assert!(verify_consistency(first, n, &forged, &r2, &proof).is_err());
        }

        #[test]
        fn frontier_agrees_with_the_full_tree_and_reports_every_subtree(n in 0u64..600) {
            let tree = tree_of(n);
            let mut frontier = Frontier::default();
            let mut completed = Vec::new();
            for i in 0..n {
                frontier.push(tree.complete(Subtree { level: 0, index: i }), |s, h| completed.push((s, *h)));
            }
            prop_assert_eq!(frontier.root(), tree.root(n));
            for (s, hash) in completed {
                prop_assert_eq!(hash, tree.complete(s));
            }
            prop_assert_eq!(Frontier::from_parts(n, &tree), frontier);
        }
    }
}
