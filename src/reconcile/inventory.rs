//! Per-(credentials, region) inventory of remote chat configurations, refreshed with
//! ListChatConfigurations (all pages) when older than the caller's resync interval, or on demand.
//! Reconciles read it instead of calling Get per object, so N objects cost one List per interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oos_client::client::OosClient;
use oos_client::error::OosError;
use oos_client::types::ChatConfigurationSummary;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InventoryKey {
    /// AccessKeyId of explicit credentials, or `default` for the operator's credential chain.
    pub credentials: String,
    pub region: String,
}

struct Snapshot {
    fetched_at: Instant,
    items: HashMap<String, ChatConfigurationSummary>,
}

#[derive(Default)]
struct Slot {
    snapshot: Option<Snapshot>,
}

/// Shared by every reconcile of the process.
#[derive(Default, Clone)]
pub struct Inventory {
    slots: Arc<Mutex<HashMap<InventoryKey, Arc<tokio::sync::Mutex<Slot>>>>>,
    /// Items per snapshot, readable without waiting for a slot (for the size metric).
    sizes: Arc<Mutex<HashMap<InventoryKey, usize>>>,
}

impl Inventory {
    /// Remote configurations across every snapshot.
    pub fn len(&self) -> usize {
        self.sizes.lock().expect("inventory sizes").values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record_size(&self, key: &InventoryKey, slot: &Slot) {
        let n = slot.snapshot.as_ref().map_or(0, |s| s.items.len());
        self.sizes
            .lock()
            .expect("inventory sizes")
            .insert(key.clone(), n);
    }

    fn slot(&self, key: &InventoryKey) -> Arc<tokio::sync::Mutex<Slot>> {
        self.slots
            .lock()
            .expect("inventory lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The remote named `name`, from a snapshot younger than `max_age` (refreshing it if not, or
    /// if `force`). Concurrent callers of one key share a single List (the slot lock).
    pub async fn lookup(
        &self,
        key: &InventoryKey,
        client: &OosClient,
        name: &str,
        max_age: Duration,
        force: bool,
    ) -> Result<Option<ChatConfigurationSummary>, OosError> {
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        let stale = slot
            .snapshot
            .as_ref()
            .is_none_or(|s| s.fetched_at.elapsed() >= max_age);
        if stale || force {
            // Dropped first, so the old and the new listing are never both held (a stale
            // snapshot is listed again on the next lookup anyway if this List fails).
            slot.snapshot = None;
            let items = client
                .list_chat_configurations(&key.region, &[], Some(100))
                .await?;
            slot.snapshot = Some(Snapshot {
                fetched_at: Instant::now(),
                items: items
                    .into_iter()
                    .map(|i| (i.name.clone(), compact(i)))
                    .collect(),
            });
            self.record_size(key, &slot);
        }
        Ok(slot
            .snapshot
            .as_ref()
            .and_then(|s| s.items.get(name).cloned()))
    }

    /// Records what our own write produced, so the next reconcile needs no List.
    pub async fn upsert(&self, key: &InventoryKey, item: ChatConfigurationSummary) {
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        if let Some(s) = slot.snapshot.as_mut() {
            s.items.insert(item.name.clone(), compact(item));
        }
        self.record_size(key, &slot);
    }

    pub async fn remove(&self, key: &InventoryKey, name: &str) {
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        if let Some(s) = slot.snapshot.as_mut() {
            s.items.remove(name);
        }
        self.record_size(key, &slot);
    }
}

/// Frees what an item keeps for nothing: `Outputs` parses into a map and takes `URL` and
/// `AesKey` out of it, which leaves an empty but allocated map in nearly every item (about
/// 0.6 KiB each: a third of the inventory at N = 5,000).
fn compact(mut item: ChatConfigurationSummary) -> ChatConfigurationSummary {
    if let Some(o) = item.outputs.as_mut()
        && o.extra.is_empty()
    {
        o.extra = Default::default();
    }
    item
}
