//! Names of new instances: `<group>-<suffix>`, the suffix random for
//! instances created one at a time and stable (derived from the group's uid)
//! for a bootstrap's initial set.

use tikv_operator_api::names;

/// Source of the random suffixes of new instance names
/// ([`names::INSTANCE_SUFFIX_LEN`] characters, DNS-label safe).
pub trait SuffixSource {
    /// A fresh suffix.
    fn next_suffix(&mut self) -> String;
}

/// Characters of generated suffixes: lower-case consonants and digits
/// without look-alikes (as Kubernetes' own generated names), so no suffix
/// spells a word and every name stays a DNS label.
pub const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The production [`SuffixSource`]: random suffixes from the process's
/// randomly seeded hasher state and a counter (no extra dependency; the
/// planner rejects the rare collision with an existing name).
#[derive(Debug)]
pub struct RandomSuffix {
    state: std::hash::RandomState,
    counter: u64,
}

impl Default for RandomSuffix {
    fn default() -> Self {
        Self {
            state: std::hash::RandomState::new(),
            counter: 0,
        }
    }
}

impl SuffixSource for RandomSuffix {
    fn next_suffix(&mut self) -> String {
        use std::hash::BuildHasher;
        self.counter += 1;
        suffix_of(self.state.hash_one(self.counter))
    }
}

/// The suffix spelled by the digits of `x` in [`SUFFIX_ALPHABET`].
fn suffix_of(mut x: u64) -> String {
    let base = SUFFIX_ALPHABET.len() as u64;
    (0..names::INSTANCE_SUFFIX_LEN)
        .map(|_| {
            let c = SUFFIX_ALPHABET[(x % base) as usize];
            x /= base;
            char::from(c)
        })
        .collect()
}

/// The suffixes of a bootstrap's initial members: derived from the group's
/// uid (a stable FNV-1a hash, the same in every process), so a bootstrap
/// retried after an ambiguous failure (the create committed, the answer was
/// lost) creates the same names again instead of a second initial set
/// (safety rule 7).
#[derive(Debug)]
pub struct StableSuffix<'a> {
    seed: &'a str,
    counter: u64,
}

impl<'a> StableSuffix<'a> {
    /// Suffixes derived from `seed` (the group's uid).
    pub fn new(seed: &'a str) -> Self {
        Self { seed, counter: 0 }
    }
}

impl SuffixSource for StableSuffix<'_> {
    fn next_suffix(&mut self) -> String {
        self.counter += 1;
        let mut x: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self
            .seed
            .as_bytes()
            .iter()
            .chain(b"/")
            .chain(&self.counter.to_le_bytes())
        {
            x ^= u64::from(*b);
            x = x.wrapping_mul(0x0100_0000_01b3);
        }
        suffix_of(x)
    }
}

/// A new instance name `<group>-<suffix>` that `taken` does not reject.
pub fn fresh_name(
    group: &str,
    taken: impl Fn(&str) -> bool,
    suffixes: &mut dyn SuffixSource,
) -> String {
    loop {
        let name = names::instance(group, &suffixes.next_suffix());
        if !taken(&name) {
            return name;
        }
    }
}

/// Value of an object's [`tikv_operator_api::labels::DELETE_PRIORITY`]
/// annotation (0 when absent or not an integer): instances with a higher
/// one are removed first on scale-in.
pub fn delete_priority(meta: &kube::api::ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(tikv_operator_api::labels::DELETE_PRIORITY))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_suffixes_are_dns_safe_and_distinct() {
        let mut r = RandomSuffix::default();
        let all: std::collections::BTreeSet<String> = (0..1000).map(|_| r.next_suffix()).collect();
        assert_eq!(all.len(), 1000);
        for s in &all {
            assert_eq!(s.len(), names::INSTANCE_SUFFIX_LEN);
            assert!(s.bytes().all(|b| SUFFIX_ALPHABET.contains(&b)), "{s}");
        }
        // Two sources (two operator processes) do not produce the same sequence.
        let mut other = RandomSuffix::default();
        assert_ne!(
            (0..4).map(|_| other.next_suffix()).collect::<Vec<_>>(),
            (0..4)
                .map(|_| RandomSuffix::default().next_suffix())
                .collect::<Vec<_>>()
        );
    }
    /// A taken name is skipped; the priority annotation parses leniently.
    #[test]
    fn fresh_names_skip_taken_ones_and_priorities_parse() {
        struct Fixed(Vec<&'static str>);
        impl SuffixSource for Fixed {
            fn next_suffix(&mut self) -> String {
                self.0.remove(0).to_owned()
            }
        }
        let mut s = Fixed(vec!["aaaaa", "bbbbb", "ccccc"]);
        let taken = ["g-aaaaa", "g-bbbbb"];
        assert_eq!(fresh_name("g", |n| taken.contains(&n), &mut s), "g-ccccc");
        for (value, want) in [
            (None, 0),
            (Some("5"), 5),
            (Some(" -3 "), -3),
            (Some("high"), 0),
        ] {
            let meta = kube::api::ObjectMeta {
                annotations: value.map(|v| {
                    [(
                        tikv_operator_api::labels::DELETE_PRIORITY.to_owned(),
                        v.to_owned(),
                    )]
                    .into()
                }),
                ..Default::default()
            };
            assert_eq!(delete_priority(&meta), want, "{value:?}");
        }
    }
}
