//! Maps a Secret to exactly the ChatConfigurations that read it, so a Secret event wakes only
//! those objects. Filled by each reconcile with the object's current references.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::runtime::reflector::ObjectRef;

use crate::crd::ChatConfiguration;

type SecretKey = (String, String); // (namespace, name)

#[derive(Default, Clone)]
pub struct SecretIndex {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    by_secret: HashMap<SecretKey, HashSet<ObjectRef<ChatConfiguration>>>,
    by_object: HashMap<ObjectRef<ChatConfiguration>, HashSet<SecretKey>>,
}

impl SecretIndex {
    /// Replaces the Secrets `object` references.
    pub fn set(
        &self,
        object: ObjectRef<ChatConfiguration>,
        namespace: &str,
        secrets: impl IntoIterator<Item = String>,
    ) {
        let keys: HashSet<SecretKey> = secrets
            .into_iter()
            .map(|s| (namespace.to_string(), s))
            .collect();
        let mut inner = self.inner.write().expect("index lock");
        let old = inner.by_object.remove(&object).unwrap_or_default();
        for k in old.difference(&keys) {
            if let Some(set) = inner.by_secret.get_mut(k) {
                set.remove(&object);
                if set.is_empty() {
                    inner.by_secret.remove(k);
                }
            }
        }
        for k in &keys {
            inner
                .by_secret
                .entry(k.clone())
                .or_default()
                .insert(object.clone());
        }
        if !keys.is_empty() {
            inner.by_object.insert(object, keys);
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
            .map(|s| s.iter().cloned().collect())
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
