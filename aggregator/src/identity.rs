//! People, not ids: the rules of docs/contract.md ("People") over the links of one
//! app, as a pure function, and the helpers that turn a day's user keys into person
//! keys. The same rules are written in SQL in the view `person_keys`
//! (`schema/migrations/0030_identity_links.sql`); the refresh benchmark and the
//! end-to-end tests hold the two to each other.
//!
//! * A *known* key is the user of any `identify` or `merge`, or the merged key of a
//!   `merge`. Every other key is anonymous until an identify claims it.
//! * An anonymous key belongs to the known key of its earliest identify (ties: the
//!   smallest known key). Later claims by another known key are refused and counted;
//!   an identify naming a known key as the anonymous one is refused and counted.
//! * Merges join known keys into components (transitively, in any order); a
//!   component's person key is the smallest key in it that was never the merged side
//!   of a merge (every key was: the smallest key).
//! * A key's person is its component's person, or its owner's person; keys the links
//!   do not name are their own person.
//!
//! The result depends on the set of links only, never on the order they arrive in:
//! a late identify re-attributes every day of the anonymous key exactly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// One link of one app, as stored in `identity_links`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// A merge (else an identify).
    pub merge: bool,
    /// The anonymous key (identify) or the merged known key (merge).
    pub linked: u64,
    /// The known key: the user of the event.
    pub known: u64,
    /// The event's time, in milliseconds since the epoch.
    pub time_ms: i64,
}

/// The links of one app resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolution {
    /// Every key of a person of two or more keys → that person's key (the person's
    /// own key maps to itself). Keys not here are their own person.
    pub persons: HashMap<u64, u64>,
    /// Identify pairs refused because another known key claimed the anonymous key first.
    pub claimed_by_another: u64,
    /// Identify pairs refused because the "anonymous" key is a known key.
    pub known_as_anonymous: u64,
}

/// Applies the rules to the links of one app.
pub fn resolve<'a>(links: impl IntoIterator<Item = &'a Link>) -> Resolution {
    let links: Vec<&Link> = links.into_iter().collect();
    // Merge components, by union-find.
    let mut parent: HashMap<u64, u64> = HashMap::new();
    fn find(parent: &mut HashMap<u64, u64>, k: u64) -> u64 {
        let mut root = k;
        while let Some(&p) = parent.get(&root) {
            if p == root {
                break;
            }
            root = p;
        }
        // Path compression.
        let mut x = k;
        while let Some(&p) = parent.get(&x) {
            if p == root {
                break;
            }
            parent.insert(x, root);
            x = p;
        }
        root
    }
    let mut away: HashSet<u64> = HashSet::new();
    let mut known: HashSet<u64> = HashSet::new();
    for l in &links {
        known.insert(l.known);
        if l.merge && l.linked != l.known {
            known.insert(l.linked);
            away.insert(l.linked);
            parent.entry(l.linked).or_insert(l.linked);
            parent.entry(l.known).or_insert(l.known);
            let (a, b) = (find(&mut parent, l.linked), find(&mut parent, l.known));
            if a != b {
                parent.insert(a.max(b), a.min(b));
            }
        }
    }
    let members: Vec<u64> = parent.keys().copied().collect();
    // Component root → (smallest key never merged away, smallest key).
    let mut best: HashMap<u64, (Option<u64>, u64)> = HashMap::new();
    for &k in &members {
        let root = find(&mut parent, k);
        let e = best.entry(root).or_insert((None, k));
        e.1 = e.1.min(k);
        if !away.contains(&k) {
            e.0 = Some(e.0.map_or(k, |x| x.min(k)));
        }
    }
    let mut out = Resolution::default();
    for &k in &members {
        let root = find(&mut parent, k);
        let (unmerged, smallest) = best[&root];
        out.persons.insert(k, unmerged.unwrap_or(smallest));
    }
    // Identifies: the earliest claim of an anonymous key wins.
    let mut owner: HashMap<u64, (i64, u64)> = HashMap::new();
    let mut pairs: HashSet<(u64, u64)> = HashSet::new();
    for l in links.iter().filter(|l| !l.merge && l.linked != l.known) {
        if !pairs.insert((l.linked, l.known)) {
            continue;
        }
        if known.contains(&l.linked) {
            out.known_as_anonymous += 1;
            continue;
        }
        let claim = (l.time_ms, l.known);
        owner
            .entry(l.linked)
            .and_modify(|c| *c = (*c).min(claim))
            .or_insert(claim);
    }
    out.claimed_by_another = pairs
        .iter()
        .filter(|(linked, known_key)| owner.get(linked).is_some_and(|(_, o)| o != known_key))
        .count() as u64;
    for (&anonymous, &(_, o)) in &owner {
        let person = out.persons.get(&o).copied().unwrap_or(o);
        out.persons.entry(o).or_insert(o);
        out.persons.insert(anonymous, person);
    }
    out
}

/// The keys whose person differs between two resolutions (in either).
pub fn changed_keys(before: &HashMap<u64, u64>, after: &HashMap<u64, u64>) -> Vec<u64> {
    let mut keys: Vec<u64> = before
        .iter()
        .filter(|(k, p)| after.get(k) != Some(p))
        .map(|(k, _)| *k)
        .chain(
            after
                .iter()
                .filter(|(k, p)| before.get(k) != Some(p))
                .map(|(k, _)| *k),
        )
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether the sorted `users` hold any of the sorted `keys`.
pub fn holds_any(users: &[u64], keys: &[u64]) -> bool {
    if keys.len() * 16 < users.len() {
        keys.iter().any(|k| users.binary_search(k).is_ok())
    } else {
        let (mut i, mut j) = (0, 0);
        while i < users.len() && j < keys.len() {
            match users[i].cmp(&keys[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

/// The persons of a day's sorted user keys, sorted and distinct; the same `Arc` when
/// no key of the day is linked. `keep(person)` decides whether a linked key's
/// person counts (cohorts: only when the day is the person's first day).
pub fn persons_of(
    users: &Arc<Vec<u64>>,
    persons: &HashMap<u64, u64>,
    keep: impl Fn(u64) -> bool,
) -> Arc<Vec<u64>> {
    if persons.is_empty() {
        return users.clone();
    }
    let mut linked: Vec<u64> = Vec::new();
    let mut plain: Vec<u64> = Vec::new();
    let mut any = false;
    for (i, k) in users.iter().enumerate() {
        if let Some(&p) = persons.get(k) {
            if !any {
                any = true;
                plain.reserve(users.len());
                plain.extend_from_slice(&users[..i]);
            }
            if keep(p) {
                linked.push(p);
            }
        } else if any {
            plain.push(*k);
        }
    }
    if !any {
        return users.clone();
    }
    linked.sort_unstable();
    linked.dedup();
    // Merge the two sorted lists.
    let mut out = Vec::with_capacity(plain.len() + linked.len());
    let (mut i, mut j) = (0, 0);
    while i < plain.len() || j < linked.len() {
        let next = match (plain.get(i), linked.get(j)) {
            (Some(a), Some(b)) if a < b => {
                i += 1;
                *a
            }
            (Some(a), Some(b)) if a > b => {
                j += 1;
                *b
            }
            (Some(a), Some(_)) => {
                i += 1;
                j += 1;
                *a
            }
            (Some(a), None) => {
                i += 1;
                *a
            }
            (None, Some(b)) => {
                j += 1;
                *b
            }
            (None, None) => break,
        };
        out.push(next);
    }
    Arc::new(out)
}

/// Each linked person's first day: the earliest first day of any of their keys
/// (`first_days`: key → its first day, `None` when it has no event).
pub fn person_first_days<D: Copy + Ord>(
    persons: &HashMap<u64, u64>,
    first_days: &HashMap<u64, Option<D>>,
) -> HashMap<u64, D> {
    let mut out: HashMap<u64, D> = HashMap::new();
    for (k, p) in persons {
        if let Some(Some(d)) = first_days.get(k) {
            out.entry(*p)
                .and_modify(|x| *x = (*x).min(*d))
                .or_insert(*d);
        }
    }
    out
}

/// Per app, the links as a set (a re-read or repeated link changes nothing).
pub type AppLinks = BTreeMap<String, HashSet<Link>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn identify(anonymous: u64, known: u64, time_ms: i64) -> Link {
        Link {
            merge: false,
            linked: anonymous,
            known,
            time_ms,
        }
    }

    fn merge(merged: u64, into: u64) -> Link {
        Link {
            merge: true,
            linked: merged,
            known: into,
            time_ms: 0,
        }
    }

    #[test]
    fn the_earliest_identify_wins_and_later_claims_are_counted() {
        let links = [
            identify(10, 3, 2_000),
            identify(10, 5, 1_000),
            identify(11, 5, 1_000),
            identify(12, 7, 500),
            identify(12, 6, 500), // a tie: the smallest known key wins
        ];
        let r = resolve(&links);
        assert_eq!(r.persons[&10], 5);
        assert_eq!(r.persons[&11], 5);
        assert_eq!(r.persons[&5], 5);
        assert_eq!(r.persons[&12], 6);
        assert!(!r.persons.contains_key(&3) && !r.persons.contains_key(&7));
        assert_eq!(r.claimed_by_another, 2);
        assert_eq!(r.known_as_anonymous, 0);
    }

    #[test]
    fn known_keys_join_only_by_merge_and_merges_are_transitive() {
        // 5 is known (identify user); 7 names it as anonymous: refused.
        let links = [
            identify(10, 5, 1_000),
            identify(5, 7, 0),
            merge(2, 1),
            merge(3, 2),
            identify(20, 3, 5),
        ];
        let r = resolve(&links);
        assert_eq!(r.known_as_anonymous, 1);
        assert!(!r.persons.contains_key(&7));
        assert_eq!(r.persons[&5], 5);
        for k in [1, 2, 3, 20] {
            assert_eq!(r.persons[&k], 1, "key {k}");
        }
        // Order does not matter; a cycle falls back to the smallest key.
        let mut reversed = links;
        reversed.reverse();
        assert_eq!(resolve(&reversed), r);
        let cycle = resolve(&[merge(2, 1), merge(3, 2), merge(1, 3)]);
        assert_eq!(cycle.persons[&3], 1);
    }

    #[test]
    fn persons_of_maps_sorts_and_dedups() {
        let persons = HashMap::from([(10, 5), (11, 5), (5, 5), (2, 1)]);
        let users = Arc::new(vec![2, 3, 5, 10, 11, 40]);
        assert_eq!(*persons_of(&users, &persons, |_| true), vec![1, 3, 5, 40]);
        let plain = Arc::new(vec![3, 4]);
        assert!(Arc::ptr_eq(&persons_of(&plain, &persons, |_| true), &plain));
        assert_eq!(*persons_of(&users, &persons, |p| p == 1), vec![1, 3, 40]);
        assert!(holds_any(&users, &[4, 11]) && !holds_any(&users, &[4, 12]));
        let first = person_first_days(
            &persons,
            &HashMap::from([(10, Some(3)), (5, Some(4)), (11, None)]),
        );
        assert_eq!(first[&5], 3);
        assert_eq!(
            changed_keys(&HashMap::from([(1, 1), (2, 1)]), &HashMap::from([(2, 2)])),
            vec![1, 2]
        );
    }
}
