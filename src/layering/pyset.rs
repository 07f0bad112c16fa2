//! CPython's set iteration order, emulated, for auto-layer's closure-size ties.
//!
//! nixpkgs' `auto-layer.py` collects the layer ids (frozensets of primary
//! paths) into a `set`, iterates it, and stable-sorts the layers by closure
//! size; layers of equal closure size therefore come out in set order. That
//! order is fixed inside a Nix build: the Python setup hook exports
//! `PYTHONHASHSEED=0`, and CPython 3.11–3.13 (nixpkgs' `python3`) hash
//! strings with SipHash-1-3 under an all-zero key. Emulating the string
//! hash, the frozenset hash and the open-addressing table reproduces
//! nixpkgs' exact layer order even when closure sizes tie, so images share
//! layer digests with nixpkgs-built ones.

/// CPython's `hash(str)` for an ASCII string at `PYTHONHASHSEED=0`.
pub fn str_hash(s: &str) -> i64 {
    if s.is_empty() {
        return 0;
    }
    let h = siphash13(0, 0, s.as_bytes()) as i64;
    if h == -1 {
        -2
    } else {
        h
    }
}

fn siphash13(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let chunks = data.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let m = u64::from_le_bytes(word);
        v[3] ^= m;
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    let b = u64::from_le_bytes(last) | ((data.len() as u64) << 56);
    v[3] ^= b;
    round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..3 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// CPython's `hash(frozenset(...))` from its members' hashes.
pub fn frozenset_hash(member_hashes: impl IntoIterator<Item = i64>) -> i64 {
    let mut acc: u64 = 0;
    let mut count: u64 = 0;
    for h in member_hashes {
        let h = h as u64;
        acc ^= ((h ^ 89_869_747) ^ (h << 16)).wrapping_mul(3_644_798_167);
        count += 1;
    }
    acc ^= (count + 1).wrapping_mul(1_927_868_237);
    acc ^= (acc >> 11) ^ (acc >> 25);
    acc = acc.wrapping_mul(69_069).wrapping_add(907_133_923);
    if acc == u64::MAX {
        acc = 590_923_713;
    }
    acc as i64
}

const LINEAR_PROBES: usize = 9;
const PERTURB_SHIFT: u32 = 5;

/// Iteration order of a CPython set built by adding distinct items with
/// these hashes in this order: returns indices into `hashes`.
pub fn set_order(hashes: &[i64]) -> Vec<usize> {
    let mut table: Vec<Option<usize>> = vec![None; 8];
    let mut used = 0usize;
    for item in 0..hashes.len() {
        insert(&mut table, hashes, item);
        used += 1;
        let mask = table.len() - 1;
        if used * 5 >= mask * 3 {
            let min_used = if used > 50_000 { used * 2 } else { used * 4 };
            let mut size = 8;
            while size <= min_used {
                size <<= 1;
            }
            let old = std::mem::replace(&mut table, vec![None; size]);
            for entry in old.into_iter().flatten() {
                insert(&mut table, hashes, entry);
            }
        }
    }
    table.into_iter().flatten().collect()
}

/// CPython's probe sequence: a run of linear probes, then perturbed jumps.
fn insert(table: &mut [Option<usize>], hashes: &[i64], item: usize) {
    let mask = table.len() - 1;
    let hash = hashes[item] as u64;
    let mut perturb = hash;
    let mut i = (hash as usize) & mask;
    loop {
        let probes = if i + LINEAR_PROBES <= mask {
            LINEAR_PROBES
        } else {
            0
        };
        if let Some(slot) = table[i..=i + probes].iter_mut().find(|s| s.is_none()) {
            *slot = Some(item);
            return;
        }
        perturb >>= PERTURB_SHIFT;
        i = (i
            .wrapping_mul(5)
            .wrapping_add(1)
            .wrapping_add(perturb as usize))
            & mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values printed by CPython 3.11 with PYTHONHASHSEED=0.
    const GLIBC: &str = "/nix/store/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy-glibc-2.40-66";

    #[test]
    fn string_hash_matches_cpython() {
        assert_eq!(str_hash("abc"), -4594863902769663758);
        assert_eq!(str_hash(GLIBC), 1282379880440875060);
        assert_eq!(str_hash(""), 0);
    }

    #[test]
    fn frozenset_hash_matches_cpython() {
        assert_eq!(frozenset_hash([]), 133146708735736);
        assert_eq!(frozenset_hash([str_hash("abc")]), 20382892960253683);
        assert_eq!(
            frozenset_hash([str_hash("abc"), str_hash(GLIBC)]),
            6214744055883384706
        );
    }

    #[test]
    fn set_order_matches_cpython() {
        // list({'k0', …, 'k29'}) in CPython 3.11, PYTHONHASHSEED=0, inserted in order.
        let items: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
        let hashes: Vec<i64> = items.iter().map(|s| str_hash(s)).collect();
        let order: Vec<&str> = set_order(&hashes)
            .into_iter()
            .map(|i| items[i].as_str())
            .collect();
        assert_eq!(order.join(","), EXPECTED_K30);
    }

    // `s = set(); [s.add(f"k{i}") for i in range(30)]; ",".join(s)`
    const EXPECTED_K30: &str = "k1,k28,k25,k8,k14,k18,k7,k29,k15,k9,k3,k0,k10,k5,k20,k24,k19,k22,k17,k6,k16,k11,k12,k23,k21,k2,k26,k27,k13,k4";
}
