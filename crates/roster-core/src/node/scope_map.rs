//! The home's `(user, scope)` map, kept per user: a user has a few scopes (one per topic of a
//! `topic` scope it is in, one per `global` policy), so per user a list sorted by scope, grown
//! as [`crate::grow_by`] says. An entry costs its own bytes (64 with the home's `UserScope`),
//! where one B-tree over `(user, scope)` cost about 195 per entry (a 40-byte key repeated in
//! every entry, leaves a third empty on average). Iteration is in `(user, scope)` order, as the
//! B-tree's was.

use crate::config::ScopeKey;
use crate::ids::UserId;
use std::collections::BTreeMap;

/// `(user, scope) → V`, in `(user, scope)` order.
#[derive(Debug)]
pub(super) struct ScopeMap<V> {
    by_user: BTreeMap<UserId, Vec<(ScopeKey, V)>>,
    len: usize,
}

impl<V> Default for ScopeMap<V> {
    fn default() -> Self {
        ScopeMap { by_user: BTreeMap::new(), len: 0 }
    }
}

impl<V> ScopeMap<V> {
    fn find(list: &[(ScopeKey, V)], scope: &ScopeKey) -> Result<usize, usize> {
        list.binary_search_by(|(s, _)| s.cmp(scope))
    }

    /// How many `(user, scope)` entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, user: &UserId, scope: &ScopeKey) -> Option<&V> {
        let list = self.by_user.get(user)?;
        Self::find(list, scope).ok().map(|at| &list[at].1)
    }

    pub(super) fn get_mut(&mut self, user: &UserId, scope: &ScopeKey) -> Option<&mut V> {
        let list = self.by_user.get_mut(user)?;
        Self::find(list, scope).ok().map(|at| &mut list[at].1)
    }

    /// The entry of `(user, scope)`, made by `make` if there is none.
    pub(super) fn get_or_insert_with(&mut self, user: &UserId, scope: &ScopeKey, make: impl FnOnce() -> V) -> &mut V {
        if !self.by_user.contains_key(user) {
            self.by_user.insert(user.clone(), Vec::new());
        }
        let list = self.by_user.get_mut(user).expect("inserted above");
        let at = match Self::find(list, scope) {
            Ok(at) => at,
            Err(at) => {
                crate::make_room(list);
                list.insert(at, (scope.clone(), make()));
                self.len += 1;
                at
            }
        };
        &mut list[at].1
    }

    pub(super) fn remove(&mut self, user: &UserId, scope: &ScopeKey) -> Option<V> {
        let list = self.by_user.get_mut(user)?;
        let at = Self::find(list, scope).ok()?;
        let (_, v) = list.remove(at);
        self.len -= 1;
        if list.is_empty() {
            self.by_user.remove(user);
        } else if list.capacity() > 2 * list.len() + 2 {
            list.shrink_to_fit();
        }
        Some(v)
    }

    /// Whether `user` has any entry.
    pub(super) fn has_user(&self, user: &UserId) -> bool {
        self.by_user.contains_key(user)
    }

    /// The entries of `user`, by scope.
    pub(super) fn of_user<'a>(&'a self, user: &UserId) -> impl Iterator<Item = (&'a ScopeKey, &'a V)> + 'a {
        self.by_user.get(user).into_iter().flatten().map(|(scope, v)| (scope, v))
    }

    /// The entries of `user`, by scope, to change.
    pub(super) fn of_user_mut<'a>(&'a mut self, user: &UserId) -> impl Iterator<Item = (&'a ScopeKey, &'a mut V)> + 'a {
        self.by_user.get_mut(user).into_iter().flatten().map(|(scope, v)| (&*scope, v))
    }

    /// Every entry, by user and then scope.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&UserId, &ScopeKey, &V)> {
        self.by_user.iter().flat_map(|(user, list)| list.iter().map(move |(scope, v)| (user, scope, v)))
    }

    /// Every entry, by user and then scope, to change.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&UserId, &ScopeKey, &mut V)> {
        self.by_user.iter_mut().flat_map(|(user, list)| list.iter_mut().map(move |(scope, v)| (&*user, &*scope, v)))
    }

    /// Every entry, by user and then scope, taken out.
    pub(super) fn into_entries(self) -> impl Iterator<Item = (UserId, ScopeKey, V)> {
        self.by_user
            .into_iter()
            .flat_map(|(user, list)| list.into_iter().map(move |(scope, v)| (user.clone(), scope, v)))
    }

    /// Every key, by user and then scope (a copy, to change the map while walking it).
    pub(super) fn keys(&self) -> Vec<(UserId, ScopeKey)> {
        self.iter().map(|(u, s, _)| (u.clone(), s.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyId;
    use crate::ids::Topic;

    fn scope(t: &str) -> ScopeKey {
        ScopeKey::topic(Topic::from(t))
    }

    #[test]
    fn entries_come_back_in_user_then_scope_order_and_removal_forgets_an_empty_user() {
        let mut m: ScopeMap<u32> = ScopeMap::default();
        let (a, b) = (UserId::from("a"), UserId::from("b"));
        *m.get_or_insert_with(&b, &scope("t2"), || 1) += 10;
        m.get_or_insert_with(&a, &scope("t9"), || 2);
        m.get_or_insert_with(&b, &scope("t1"), || 3);
        m.get_or_insert_with(&b, &ScopeKey::global(PolicyId::BuiltIn), || 4);
        assert_eq!(*m.get_or_insert_with(&b, &scope("t2"), || 99), 11, "an existing entry is not replaced");
        assert_eq!(m.len(), 4);
        let mut by_key: Vec<((UserId, ScopeKey), u32)> =
            m.iter().map(|(u, s, v)| ((u.clone(), s.clone()), *v)).collect();
        by_key.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(m.iter().map(|(u, s, v)| ((u.clone(), s.clone()), *v)).collect::<Vec<_>>(), by_key);
        assert_eq!(m.of_user(&b).map(|(_, v)| *v).collect::<Vec<_>>().len(), 3);
        assert_eq!(m.get(&a, &scope("t9")), Some(&2));
        assert_eq!(m.get(&a, &scope("t1")), None);
        assert_eq!(m.remove(&a, &scope("t9")), Some(2));
        assert!(!m.has_user(&a));
        assert_eq!(m.remove(&a, &scope("t9")), None);
        for (_, _, v) in m.iter_mut() {
            *v += 1;
        }
        assert_eq!(m.get(&b, &scope("t1")), Some(&4));
        assert_eq!(m.len(), 3);
        let all: Vec<(UserId, ScopeKey, u32)> = m.into_entries().collect();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|(u, _, _)| *u == b));
    }
}
