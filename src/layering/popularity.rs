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
//! needs 71 bits), so they are exact big integers; a u128 fast path is used
//! when the total provably fits.
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
    if let Some(p) = path_counts_u128(&order, &parents) {
        if p.iter()
            .try_fold(0u128, |acc, x| acc.checked_add(*x))
            .is_some()
        {
            return Ok(sum_over_ancestors(&parents, &p, 0u128, |a, b| *a += *b)
                .into_iter()
                .map(BigUint::from)
                .collect());
        }
    }
    let p = path_counts_big(&order, &parents);
    Ok(sum_over_ancestors(
        &parents,
        &p,
        BigUint::default(),
        |a, b| *a += b,
    ))
}

/// P(u) in u128, or None on overflow.
fn path_counts_u128(order: &[u32], parents: &[Vec<u32>]) -> Option<Vec<u128>> {
    let mut p = vec![0u128; parents.len()];
    for &v in order {
        let ps = &parents[v as usize];
        p[v as usize] = if ps.is_empty() {
            1
        } else {
            ps.iter()
                .try_fold(0u128, |acc, &u| acc.checked_add(p[u as usize]))?
        };
    }
    Some(p)
}

fn path_counts_big(order: &[u32], parents: &[Vec<u32>]) -> Vec<BigUint> {
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

/// For every v, the sum of `p[u]` over u = v and all ancestors of v.
fn sum_over_ancestors<T: Clone + Send + Sync>(
    parents: &[Vec<u32>],
    p: &[T],
    zero: T,
    add: impl Fn(&mut T, &T) + Sync,
) -> Vec<T> {
    (0..parents.len() as u32)
        .into_par_iter()
        .map_init(
            || Marks::new(parents.len()),
            |marks, v| {
                let mut sum = zero.clone();
                for u in reach([v], |x| &parents[x as usize], marks) {
                    add(&mut sum, &p[u as usize]);
                }
                sum
            },
        )
        .collect()
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
