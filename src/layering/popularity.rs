//! Popularity, as nixpkgs' `popularity_contest` (flatten-references-graph)
//! and `closure-graph.py` (referencesByPopularity) count it, and the order
//! they print.
//!
//! The Python code nests dictionaries and counts recursively; it works out
//! to: with P(u) the number of distinct paths from any root (a vertex no
//! other vertex refers to) to u, P(root) = 1, the popularity of v is the sum
//! of P(u) over v and every u that reaches v. We compute P in topological
//! order and the sums by walking each vertex's referrers, so depth costs
//! no stack. The numbers grow exponentially with depth (a 100-rung ladder
//! needs 71 bits), so they are exact: P is a big integer, and the sums use
//! fixed-width limbs wide enough for the sum of all P.
//!
//! Order: popularity descending, ties by ascending byte order of nixpkgs'
//! `package_name` key, the text after the first `-`, then `-`, then the text
//! before it (`/nix/store/<hash>`).

use anyhow::{bail, Result};
use num_bigint::BigUint;
use rayon::prelude::*;

use crate::graph::{reach, topological_order, Marks};

/// Popularity of every vertex of the DAG given by `children` (edges from
/// referrer to reference, no self-loops, no duplicates). `name` names a
/// vertex for the error on a cycle.
pub fn popularity(children: &[Vec<u32>], name: impl Fn(u32) -> String) -> Result<Vec<BigUint>> {
    popularity_with(children, name, BITSET_MAX_PATHS)
}

fn popularity_with(
    children: &[Vec<u32>],
    name: impl Fn(u32) -> String,
    bitset_max_paths: usize,
) -> Result<Vec<BigUint>> {
    let order = match topological_order(children) {
        Ok(order) => order,
        Err(v) => bail!("reference cycle through {}", name(v)),
    };
    let n = children.len();
    let mut parents = vec![Vec::new(); n];
    for (v, cs) in children.iter().enumerate() {
        for &c in cs {
            parents[c as usize].push(v as u32);
        }
    }
    let p = path_counts(&order, &parents);
    // Every popularity is at most the sum of all P, so that many limbs hold
    // every sum without overflow: in-place additions, no allocation. Each P
    // is stored with only its significant limbs, so small counts stay cheap
    // even when the bottom of a deep graph needs thousands of bits.
    let total: BigUint = p.iter().sum();
    let limbs = usize::try_from(total.bits().div_ceil(64))
        .unwrap_or(usize::MAX)
        .max(1);
    let mut offsets = Vec::with_capacity(n + 1);
    let mut flat: Vec<u64> = Vec::new();
    offsets.push(0);
    for x in &p {
        flat.extend(x.to_u64_digits());
        offsets.push(flat.len());
    }
    let sum_over = |members: &mut dyn Iterator<Item = u32>| {
        let mut sum = vec![0u64; limbs];
        for u in members {
            let u = u as usize;
            add_limbs(&mut sum, &flat[offsets[u]..offsets[u + 1]]);
        }
        from_limbs(&sum)
    };
    if n <= bitset_max_paths {
        let ancestors = ancestor_bitsets(&order, &parents);
        let words = n.div_ceil(64);
        return Ok((0..n)
            .into_par_iter()
            .map(|v| sum_over(&mut set_bits(&ancestors[v * words..(v + 1) * words])))
            .collect());
    }
    Ok((0..n as u32)
        .into_par_iter()
        .map_init(
            || Marks::new(n),
            |marks, v| sum_over(&mut reach([v], |x| &parents[x as usize], marks).into_iter()),
        )
        .collect())
}

/// Up to this many paths, ancestor sets are kept as bitsets (n²/8 bytes:
/// 128 MiB at the limit), which is much faster than walking each vertex's
/// referrers; above it, each set is walked on its own in O(n) memory.
const BITSET_MAX_PATHS: usize = 32_768;

/// Row v: the bitset of v and every vertex that reaches v.
fn ancestor_bitsets(order: &[u32], parents: &[Vec<u32>]) -> Vec<u64> {
    let n = parents.len();
    let words = n.div_ceil(64);
    let mut rows = vec![0u64; n * words];
    let mut row = vec![0u64; words];
    for &v in order {
        let v = v as usize;
        row.iter_mut().for_each(|w| *w = 0);
        for &p in &parents[v] {
            let p = p as usize;
            for (w, &x) in row.iter_mut().zip(&rows[p * words..(p + 1) * words]) {
                *w |= x;
            }
        }
        row[v / 64] |= 1 << (v % 64);
        rows[v * words..(v + 1) * words].copy_from_slice(&row);
    }
    rows
}

fn set_bits(words: &[u64]) -> impl Iterator<Item = u32> + '_ {
    words.iter().enumerate().flat_map(|(i, &w)| {
        let mut w = w;
        std::iter::from_fn(move || {
            if w == 0 {
                return None;
            }
            let bit = w.trailing_zeros();
            w &= w - 1;
            Some(i as u32 * 64 + bit)
        })
    })
}

/// `acc += x` in little-endian limbs, `x` no longer than `acc`; the caller
/// sized `acc` so the result fits.
fn add_limbs(acc: &mut [u64], x: &[u64]) {
    let mut carry = false;
    for (a, &b) in acc.iter_mut().zip(x) {
        let (s1, c1) = a.overflowing_add(b);
        let (s2, c2) = s1.overflowing_add(u64::from(carry));
        *a = s2;
        carry = c1 || c2;
    }
    for a in acc.iter_mut().skip(x.len()) {
        if !carry {
            break;
        }
        let (s, c) = a.overflowing_add(1);
        *a = s;
        carry = c;
    }
}

fn from_limbs(limbs: &[u64]) -> BigUint {
    BigUint::new(
        limbs
            .iter()
            .flat_map(|&l| [l as u32, (l >> 32) as u32])
            .collect(),
    )
}

/// P(u): the number of distinct paths from any root to u (1 for a root).
fn path_counts(order: &[u32], parents: &[Vec<u32>]) -> Vec<BigUint> {
    let mut p = vec![BigUint::default(); parents.len()];
    for &v in order {
        let ps = &parents[v as usize];
        let mut sum = BigUint::from(ps.is_empty() as u8);
        for &u in ps {
            sum += &p[u as usize];
        }
        p[v as usize] = sum;
    }
    p
}

/// nixpkgs' `package_name` tie-break key: `name-…` + `-` + `/nix/store/hash`.
pub fn package_name_key(path: &str) -> String {
    match path.split_once('-') {
        Some((start, rest)) => format!("{rest}-{start}"),
        None => path.to_owned(),
    }
}

/// Vertex indices, most popular first, ties by [`package_name_key`].
pub fn order_by_popularity(paths: &[&str], popularity: &[BigUint]) -> Vec<u32> {
    let keys: Vec<String> = paths.iter().map(|p| package_name_key(p)).collect();
    let mut order: Vec<u32> = (0..paths.len() as u32).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        popularity[b]
            .cmp(&popularity[a])
            .then_with(|| keys[a].as_bytes().cmp(keys[b].as_bytes()))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pops(children: &[Vec<u32>]) -> Vec<u64> {
        popularity(children, |v| v.to_string())
            .unwrap()
            .iter()
            .map(|b| u64::try_from(b).unwrap())
            .collect()
    }

    #[test]
    fn nixpkgs_doc_example() {
        // A→B,G; B→C,E; C→D,E; D→F; E→F (popularity_contest.py's comment).
        let (a, b, c, d, e, f, g) = (0, 1, 2, 3, 4, 5, 6);
        let mut ch = vec![Vec::new(); 7];
        ch[a] = vec![b as u32, g as u32];
        ch[b] = vec![c as u32, e as u32];
        ch[c] = vec![d as u32, e as u32];
        ch[d] = vec![f as u32];
        ch[e] = vec![f as u32];
        assert_eq!(pops(&ch), vec![1, 2, 3, 4, 5, 9, 2]);
    }

    #[test]
    fn diamond() {
        // app → left, right → base: base 5, left 2, right 2, app 1.
        let ch = vec![vec![1, 2], vec![3], vec![3], vec![]];
        assert_eq!(pops(&ch), vec![1, 2, 2, 5]);
    }

    #[test]
    fn exceeds_128_bits_exactly() {
        // A ladder of 200 rungs: path counts are Fibonacci numbers.
        let rungs = 200;
        let mut ch = vec![Vec::new(); 2 * rungs];
        for r in 0..rungs - 1 {
            let (a, b, na, nb) = (2 * r, 2 * r + 1, 2 * r + 2, 2 * r + 3);
            ch[a] = vec![na as u32, nb as u32];
            ch[b] = vec![na as u32, nb as u32];
        }
        let p = popularity(&ch, |v| v.to_string()).unwrap();
        let bottom = &p[2 * rungs - 1];
        assert!(bottom.bits() > 128, "{}", bottom.bits());
        // Rung r has 2^r paths to each of its two vertices (two roots);
        // popularity = 1 + 2·(1 + 2 + … + 2^(r-1)) + 2^r... checked as a sum.
        let mut expected = BigUint::from(0u8);
        for r in 0..rungs - 1 {
            expected += BigUint::from(2u8).pow(r as u32) * 2u8;
        }
        expected += BigUint::from(2u8).pow(rungs as u32 - 1);
        assert_eq!(bottom, &expected);
    }

    #[test]
    fn bitsets_and_walks_agree() {
        // A pseudo-random DAG of 300 vertices, edges only to later ones.
        let mut x = 12345u64;
        let ch: Vec<Vec<u32>> = (0..300u32)
            .map(|i| {
                let mut out: Vec<u32> = (i + 1..300)
                    .filter(|&j| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        // i+1 and i+2 always: Fibonacci path counts, > 64 bits.
                        x >> 60 == 0 || j <= i + 2
                    })
                    .collect();
                out.dedup();
                out
            })
            .collect();
        let a = popularity_with(&ch, |v| v.to_string(), usize::MAX).unwrap();
        let b = popularity_with(&ch, |v| v.to_string(), 0).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().any(|p| p.bits() > 64), "exercise multi-limb sums");
    }

    #[test]
    fn tie_break_key() {
        let paths = [
            "/nix/store/bbbb-alpha",
            "/nix/store/aaaa-alpha+1",
            "/nix/store/cccc-libsigc",
            "/nix/store/dddd-libsigc++",
            "/nix/store/eeee-Zeta-1",
        ];
        let zero = vec![BigUint::default(); paths.len()];
        let order: Vec<&str> = order_by_popularity(&paths, &zero)
            .into_iter()
            .map(|i| paths[i as usize])
            .collect();
        assert_eq!(
            order,
            [
                "/nix/store/eeee-Zeta-1",
                "/nix/store/aaaa-alpha+1",
                "/nix/store/bbbb-alpha",
                "/nix/store/dddd-libsigc++",
                "/nix/store/cccc-libsigc",
            ]
        );
    }
}
