//! Maps a Secret to exactly the ChatConfigurations that read it, so a Secret event wakes only
//! those objects. Filled by each reconcile with the object's current references.
//!
//! Kept small (one entry per object in each direction, plain names, short vectors): with
//! `ObjectRef` keys (which carry the resourceVersion and UID they were made from) and a hash
//! set per entry it took about 1 KiB per object.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::runtime::reflector::ObjectRef;

use crate::crd::ChatConfiguration;

/// (namespace, name): a Secret, or a ChatConfiguration.
type Key = (String, String);

#[derive(Default, Clone)]
pub struct SecretIndex {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Secret → the objects reading it.
    by_secret: HashMap<Key, Vec<String>>,
    /// Object → the Secrets it reads (all in its namespace).
    by_object: HashMap<Key, Vec<String>>,
}

fn key_of(object: &ObjectRef<ChatConfiguration>, namespace: &str) -> Key {
    (
        object
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string()),
        object.name.clone(),
    )
}

impl SecretIndex {
    /// Replaces the Secrets `object` references (Secrets of its namespace; `namespace` is
    /// used for an object without one).
    pub fn set(
        &self,
        object: ObjectRef<ChatConfiguration>,
        namespace: &str,
        secrets: impl IntoIterator<Item = String>,
    ) {
        let mut names: Vec<String> = secrets.into_iter().collect();
        names.sort();
        names.dedup();
        let key = key_of(&object, namespace);
        let mut inner = self.inner.write().expect("index lock");
        if inner.by_object.get(&key).is_some_and(|old| *old == names) {
            return;
        }
        let old = inner.by_object.remove(&key).unwrap_or_default();
        for secret in old.iter().filter(|s| !names.contains(s)) {
            let skey = (key.0.clone(), secret.clone());
            if let Some(users) = inner.by_secret.get_mut(&skey) {
                users.retain(|u| *u != key.1);
                if users.is_empty() {
                    inner.by_secret.remove(&skey);
                }
            }
        }
        for secret in &names {
            let users = inner
                .by_secret
                .entry((key.0.clone(), secret.clone()))
                .or_default();
            if !users.contains(&key.1) {
                users.push(key.1.clone());
            }
        }
        if !names.is_empty() {
            names.shrink_to_fit();
            inner.by_object.insert(key, names);
        }
    }

    pub fn remove(&self, object: &ObjectRef<ChatConfiguration>) {
        self.set(object.clone(), "", std::iter::empty());
    }

    pub fn lookup(&self, namespace: &str, name: &str) -> Vec<ObjectRef<ChatConfiguration>> {
        let inner = self.inner.read().expect("index lock");
        inner
            .by_secret
            .get(&(namespace.to_string(), name.to_string()))
            .map(|users| {
                users
                    .iter()
                    .map(|u| ObjectRef::new(u).within(namespace))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("index lock").by_secret.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_secrets_to_exactly_their_users() {
        let idx = SecretIndex::default();
        let a = ObjectRef::<ChatConfiguration>::new("a").within("ns");
        let b = ObjectRef::<ChatConfiguration>::new("b").within("ns");
        idx.set(a.clone(), "ns", ["s1".to_string(), "shared".to_string()]);
        idx.set(b.clone(), "ns", ["shared".to_string()]);
        assert_eq!(idx.lookup("ns", "s1"), vec![a.clone()]);
        assert_eq!(idx.lookup("ns", "shared").len(), 2);
        assert!(
            idx.lookup("other", "s1").is_empty(),
            "namespaces are separate"
        );
        idx.set(a.clone(), "ns", ["s2".to_string()]);
        assert!(idx.lookup("ns", "s1").is_empty(), "stale reference dropped");
        assert_eq!(idx.lookup("ns", "shared"), vec![b.clone()]);
        idx.remove(&b);
        assert!(idx.lookup("ns", "shared").is_empty());
        assert_eq!(idx.len(), 1);
    }
}
