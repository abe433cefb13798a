//! Consistent hashing on a ring of virtual nodes: removing a target remaps only the
//! keys that were on it. Hashes are FNV-1a with a 64-bit finaliser, so every gateway
//! node and every version maps a key to the same target.

/// Virtual nodes per unit of weight.
const VNODES: u32 = 160;

/// A hash ring over target identities.
#[derive(Debug)]
pub struct HashRing {
    /// (point, target index), sorted by point.
    points: Vec<(u64, usize)>,
}

impl HashRing {
    /// Builds a ring from each target's stable identity (its URL) and weight.
    pub fn new<'a>(targets: impl Iterator<Item = (&'a str, u32)>) -> Self {
        let mut points = Vec::new();
        for (index, (id, weight)) in targets.enumerate() {
            for v in 0..VNODES.saturating_mul(weight.max(1)) {
                let mut key = Vec::with_capacity(id.len() + 8);
                key.extend_from_slice(id.as_bytes());
                key.push(b'#');
                key.extend_from_slice(v.to_string().as_bytes());
                points.push((stable_hash(&key), index));
            }
        }
        points.sort_unstable();
        HashRing { points }
    }

    /// The owner of `hash`: the first usable target clockwise from it on the ring, so
    /// that an unusable target's keys spread over the others and come back with it.
    pub fn pick(&self, hash: u64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|(p, _)| *p < hash);
        let (before, after) = self.points.split_at(start.min(self.points.len()));
        let mut last = None;
        for &(_, target) in after.iter().chain(before) {
            if last == Some(target) {
                continue;
            }
            last = Some(target);
            if usable(target) {
                return Some(target);
            }
        }
        None
    }
}

/// FNV-1a followed by the splitmix64 finaliser: stable across processes and versions.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_target_moves_only_its_keys() {
        let all = ["http://a:1", "http://b:1", "http://c:1"];
        let ring3 = HashRing::new(all.iter().map(|u| (*u, 1)));
        let ring2 = HashRing::new(all[..2].iter().map(|u| (*u, 1)));
        let mut moved = 0;
        for k in 0..3000u32 {
            let h = stable_hash(format!("user-{k}").as_bytes());
            let before = ring3.pick(h, &|_| true).expect("a target");
            let after = ring2.pick(h, &|_| true).expect("a target");
            if before != 2 {
                assert_eq!(before, after, "key {k} moved although its target stayed");
            } else {
                moved += 1;
            }
        }
        assert!(
            moved > 500 && moved < 1500,
            "the removed target held {moved} of 3000 keys"
        );
    }

    #[test]
    fn spreads_keys_over_targets() {
        let ring = HashRing::new(
            ["http://a:1", "http://b:1", "http://c:1", "http://d:1"]
                .iter()
                .map(|u| (*u, 1)),
        );
        let mut counts = [0usize; 4];
        for k in 0..8000u32 {
            counts[ring
                .pick(stable_hash(&k.to_le_bytes()), &|_| true)
                .expect("a target")] += 1;
        }
        assert!(counts.iter().all(|c| *c > 1200), "{counts:?}");
    }
}
