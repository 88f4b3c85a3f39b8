//! Chat configuration state, keyed by (owner, region, name), with an optional JSON state file
//! written atomically (temp file + fsync + rename) after every change.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One chat configuration. `configuration` holds the secrets as sent: never log a `Record`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ram_role: Option<String>,
    pub configuration: serde_json::Map<String, serde_json::Value>,
    pub resource_group_id: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub url: String,
    pub aes_key: Option<String>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field(
                "configuration_keys",
                &self.configuration.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// (owner, region) → name → record. Names sort in byte order, which List paging relies on.
pub type Tables = BTreeMap<(String, String), BTreeMap<String, Record>>;

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    records: Vec<FileRecord>,
}

#[derive(Serialize, Deserialize)]
struct FileRecord {
    owner: String,
    region: String,
    #[serde(flatten)]
    record: Record,
}

const FILE_VERSION: u32 = 1;

pub struct Store {
    tables: Mutex<Tables>,
    file: Option<PathBuf>,
    // Serialises writers so that the last writer always writes the newest snapshot.
    write_lock: Mutex<()>,
}

impl Store {
    /// Open the store, loading `file` when it exists. A corrupt file is an error, not a reset.
    pub fn open(file: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut tables = Tables::new();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let parsed: FileFormat = serde_json::from_slice(&bytes)
                        .with_context(|| format!("state file {} is not valid", path.display()))?;
                    anyhow::ensure!(
                        parsed.version == FILE_VERSION,
                        "state file {} has version {}, expected {FILE_VERSION}",
                        path.display(),
                        parsed.version
                    );
                    for r in parsed.records {
                        tables
                            .entry((r.owner, r.region))
                            .or_default()
                            .insert(r.record.name.clone(), r.record);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading state file {}", path.display()));
                }
            }
        }
        Ok(Self {
            tables: Mutex::new(tables),
            file,
            write_lock: Mutex::new(()),
        })
    }

    /// Run `f` on the tables; when it reports a change, persist before returning.
    pub fn with<T>(&self, f: impl FnOnce(&mut Tables) -> (T, bool)) -> anyhow::Result<T> {
        let (out, changed) = {
            let mut t = self.tables.lock().expect("store lock");
            f(&mut t)
        };
        if changed {
            self.persist()?;
        }
        Ok(out)
    }

    /// Read-only access.
    pub fn read<T>(&self, f: impl FnOnce(&Tables) -> T) -> T {
        f(&self.tables.lock().expect("store lock"))
    }

    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    pub fn clear(&self) -> anyhow::Result<()> {
        self.with(|t| {
            t.clear();
            ((), true)
        })
    }

    /// Every record with its (owner, region), in (owner, region, name) order.
    pub fn snapshot(&self) -> Vec<(String, String, Record)> {
        self.read(|t| {
            t.iter()
                .flat_map(|((owner, region), names)| {
                    names
                        .values()
                        .map(move |r| (owner.clone(), region.clone(), r.clone()))
                })
                .collect()
        })
    }

    pub fn len(&self) -> usize {
        self.read(|t| t.values().map(BTreeMap::len).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn persist(&self) -> anyhow::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let _w = self.write_lock.lock().expect("write lock");
        // Snapshot under the write lock: a later writer always sees at least our changes.
        let bytes = {
            let t = self.tables.lock().expect("store lock");
            let records = t
                .iter()
                .flat_map(|((owner, region), names)| {
                    names.values().map(move |r| FileRecord {
                        owner: owner.clone(),
                        region: region.clone(),
                        record: r.clone(),
                    })
                })
                .collect();
            serde_json::to_vec_pretty(&FileFormat {
                version: FILE_VERSION,
                records,
            })?
        };
        write_atomically(path, &bytes)
    }
}

/// Write `bytes` to a temp file beside `path`, fsync it, rename it over `path`, fsync the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .context("state file path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        // The file holds client secrets.
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
