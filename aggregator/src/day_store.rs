//! The day cache on disk (`--state-dir`), so that a restarted aggregator reads only
//! the days that changed while it was away, not every day of the windows and cohorts.
//!
//! Why a local file (ARCHITECTURE.md, "The metrics layer"): the cache is the
//! aggregator's own, derived from ClickHouse and checked against it at every load
//! (markers per day, the layer's parts), so losing it costs one cold refresh and
//! nothing else. A file is read back in tens of milliseconds; a table in ClickHouse
//! would add a migration and an insert of the same bytes, and a read that costs
//! ClickHouse what the file costs the disk.
//!
//! The format, hand-written because it is two things: a JSON header (serde_json)
//! naming every set (layer, day, app, length; then the window unions built from
//! them) with what validates it (database, timezone, active-event set, each day's
//! marker, the parts the deletion check saw), then every set's sorted user keys as little-endian `u64` in header order, then a
//! CRC-32 of all the bytes before it. A generic serializer would encode the same
//! arrays element by element; these are written and read as one slice each.
//! Written atomically (temporary file, fsync, rename, fsync of the directory), so a
//! crash leaves the previous file or the new one. Anything that does not check out
//! (magic, version, checksum, lengths, unsorted keys) is refused as a whole, and the
//! caller builds from ClickHouse instead.
//!
//! The keys are the hashed `user_key` of the layer tables; no raw user id is here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::layer_parts::LayerParts;
use crate::rows::Layer;

const MAGIC: &[u8; 16] = b"growth-day-sets\n";
/// Bumped whenever the layout or the meaning of a field changes.
/// 2: the days hold the user keys as read (before identity), and the header the
/// links' fingerprint the unions were built under.
const FORMAT: u32 = 2;

/// Why the file could not be used or written.
#[derive(Debug, thiserror::Error)]
pub enum DayStoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable day cache: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// One cached day of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedDay {
    pub layer: Layer,
    pub day: NaiveDate,
    /// To be read again (its marker had just changed, or a deletion touched it).
    pub unsettled: bool,
    pub marker: BTreeMap<String, u64>,
    /// App → sorted, distinct user keys, as read (persons are derived at load).
    pub users: BTreeMap<String, Arc<Vec<u64>>>,
}

/// The union of one app's active users over the days `first..=last`, as built from
/// the saved days (so the first count after a load need not build it again).
#[derive(Debug, Clone, PartialEq)]
pub struct SavedUnion {
    pub app: String,
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub users: Arc<Vec<u64>>,
}

/// The cache and what it was read for.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedDays {
    pub timezone: String,
    pub active_events: Vec<String>,
    /// The deletion check's view of the layer at the last refresh.
    pub parts: LayerParts,
    pub days: Vec<SavedDay>,
    /// Unions of persons, valid under the links of [`SavedDays::links`].
    pub unions: Vec<SavedUnion>,
    /// The links' fingerprint ([`crate::people::People::fingerprint`]).
    pub links: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    database: String,
    timezone: String,
    active_events: Vec<String>,
    parts: LayerParts,
    days: Vec<DayHeader>,
    /// Their keys follow the days' keys, in this order.
    unions: Vec<UnionHeader>,
    links: u64,
}

#[derive(Serialize, Deserialize)]
struct UnionHeader {
    app: String,
    first: String,
    last: String,
    len: u64,
}

#[derive(Serialize, Deserialize)]
struct DayHeader {
    layer: Layer,
    day: String,
    unsettled: bool,
    marker: BTreeMap<String, u64>,
    /// (app, number of keys), in the order of the keys that follow the header.
    apps: Vec<(String, u64)>,
}

/// Where one database's day cache lives.
#[derive(Debug, Clone)]
pub struct DayStore {
    dir: PathBuf,
    database: String,
}

impl DayStore {
    /// The cache of `database` in `dir` (created when first written).
    pub fn new(dir: &Path, database: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            database: database.to_owned(),
        }
    }

    /// The file (`day-sets-<database>.bin`; database names are plain identifiers).
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("day-sets-{}.bin", self.database))
    }

    /// Reads the cache; `Ok(None)` when there is none yet.
    pub fn load(&self) -> Result<Option<SavedDays>, DayStoreError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(DayStoreError::Io { path, source }),
        };
        decode(&bytes, &self.database)
            .map(Some)
            .map_err(|reason| DayStoreError::Corrupt { path, reason })
    }

    /// Writes the cache atomically; returns its size in bytes.
    pub fn save(&self, days: &SavedDays) -> Result<usize, DayStoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DayStoreError::Io { path, source }
        };
        let bytes = encode(days, &self.database);
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.path();
        let temp = self
            .dir
            .join(format!(".day-sets-{}.bin.tmp", self.database));
        let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
        file.write_all(&bytes).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        // The rename itself survives a crash once the directory is synced.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(bytes.len())
    }
}

pub(crate) fn encode(saved: &SavedDays, database: &str) -> Vec<u8> {
    let header = Header {
        links: saved.links,
        database: database.to_owned(),
        timezone: saved.timezone.clone(),
        active_events: saved.active_events.clone(),
        parts: saved.parts.clone(),
        days: saved
            .days
            .iter()
            .map(|d| DayHeader {
                layer: d.layer,
                day: d.day.to_string(),
                unsettled: d.unsettled,
                marker: d.marker.clone(),
                apps: d
                    .users
                    .iter()
                    .map(|(app, u)| (app.clone(), u.len() as u64))
                    .collect(),
            })
            .collect(),
        unions: saved
            .unions
            .iter()
            .map(|u| UnionHeader {
                app: u.app.clone(),
                first: u.first.to_string(),
                last: u.last.to_string(),
                len: u.users.len() as u64,
            })
            .collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    let json = serde_json::to_vec(&header).unwrap_or_default();
    let sets = || {
        saved
            .days
            .iter()
            .flat_map(|d| d.users.values())
            .chain(saved.unions.iter().map(|u| &u.users))
    };
    let keys: usize = sets().map(|u| u.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + json.len() + keys * 8 + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for users in sets() {
        for k in users.iter() {
            out.extend_from_slice(&k.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode(bytes: &[u8], database: &str) -> Result<SavedDays, String> {
    let body_len = bytes
        .len()
        .checked_sub(4)
        .ok_or("shorter than its checksum")?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("checksum mismatch".into());
    }
    let rest = body.strip_prefix(MAGIC).ok_or("not a day cache file")?;
    let (format, rest) = take::<4>(rest)?;
    let format = u32::from_le_bytes(format);
    if format != FORMAT {
        return Err(format!("format {format}, this build reads {FORMAT}"));
    }
    let (len, rest) = take::<8>(rest)?;
    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| "header too long")?;
    if len > rest.len() {
        return Err("header longer than the file".into());
    }
    let (json, mut keys) = rest.split_at(len);
    let header: Header = serde_json::from_slice(json).map_err(|e| format!("header: {e}"))?;
    if header.database != database {
        return Err(format!(
            "written for database {:?}, not {database:?}",
            header.database
        ));
    }
    let mut days = Vec::with_capacity(header.days.len());
    for d in header.days {
        let day = d
            .day
            .parse::<NaiveDate>()
            .map_err(|e| format!("day {:?}: {e}", d.day))?;
        let mut users = BTreeMap::new();
        for (app, n) in d.apps {
            let set = take_keys(&mut keys, n).map_err(|e| format!("{day} {app}: {e}"))?;
            users.insert(app, set);
        }
        days.push(SavedDay {
            layer: d.layer,
            day,
            unsettled: d.unsettled,
            marker: d.marker,
            users,
        });
    }
    let mut unions = Vec::with_capacity(header.unions.len());
    for u in header.unions {
        let date = |s: &str| {
            s.parse::<NaiveDate>()
                .map_err(|e| format!("union day {s:?}: {e}"))
        };
        let (first, last) = (date(&u.first)?, date(&u.last)?);
        let users = take_keys(&mut keys, u.len).map_err(|e| format!("union of {}: {e}", u.app))?;
        unions.push(SavedUnion {
            app: u.app,
            first,
            last,
            users,
        });
    }
    if !keys.is_empty() {
        return Err("more keys than the header says".into());
    }
    Ok(SavedDays {
        timezone: header.timezone,
        active_events: header.active_events,
        parts: header.parts,
        days,
        unions,
        links: header.links,
    })
}

/// The next `n` keys of `keys`, which must be sorted and distinct.
fn take_keys(keys: &mut &[u8], n: u64) -> Result<Arc<Vec<u64>>, String> {
    let bytes = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(8))
        .filter(|b| *b <= keys.len())
        .ok_or("fewer keys than the header says")?;
    let (set, rest) = keys.split_at(bytes);
    *keys = rest;
    let set: Vec<u64> = set
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    if !set.windows(2).all(|w| w[0] < w[1]) {
        return Err("keys not sorted".into());
    }
    Ok(Arc::new(set))
}

fn take<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), String> {
    if bytes.len() < N {
        return Err("truncated".into());
    }
    let (head, rest) = bytes.split_at(N);
    Ok((head.try_into().unwrap_or([0; N]), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedDays {
        let day = |s: &str| s.parse::<NaiveDate>().expect("date");
        SavedDays {
            timezone: "Europe/Berlin".into(),
            active_events: vec!["expense_logged".into()],
            parts: LayerParts::default(),
            links: 7,
            days: vec![
                SavedDay {
                    layer: Layer::Activity,
                    day: day("2026-12-01"),
                    unsettled: false,
                    marker: BTreeMap::from([("app".into(), 12), ("other".into(), 3)]),
                    users: BTreeMap::from([
                        ("app".into(), Arc::new(vec![1, 5, u64::MAX])),
                        ("other".into(), Arc::new(vec![])),
                    ]),
                },
                SavedDay {
                    layer: Layer::FirstSeen,
                    day: day("2026-11-30"),
                    unsettled: true,
                    marker: BTreeMap::from([("app".into(), 2)]),
                    users: BTreeMap::from([("app".into(), Arc::new(vec![7, 9]))]),
                },
            ],
            unions: vec![SavedUnion {
                app: "app".into(),
                first: day("2026-11-25"),
                last: day("2026-12-01"),
                users: Arc::new(vec![1, 2, 5, u64::MAX]),
            }],
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("day-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = temp_dir("round-trip");
        let store = DayStore::new(&dir, "growth");
        assert!(store.load().expect("no file is fine").is_none());
        let saved = sample();
        store.save(&saved).expect("save");
        assert_eq!(store.load().expect("load"), Some(saved.clone()));
        let mut newer = saved;
        newer.days.pop();
        newer.unions.clear();
        store.save(&newer).expect("save again");
        assert_eq!(store.load().expect("load"), Some(newer));
        // Another database's file is another file.
        assert!(DayStore::new(&dir, "other").load().expect("none").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_or_foreign_files_are_refused() {
        let bytes = encode(&sample(), "growth");
        assert!(decode(&bytes, "growth").is_ok());
        for i in [0, 20, bytes.len() / 2, bytes.len() - 9, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad, "growth").is_err(), "byte {i} flipped");
        }
        assert!(decode(&bytes[..bytes.len() - 8], "growth").is_err());
        assert!(decode(&[], "growth").is_err());
        assert!(decode(&bytes, "other").is_err());
        // A well-formed file whose keys are not sorted is refused too.
        let mut unsorted = sample();
        unsorted.days[0]
            .users
            .insert("app".into(), Arc::new(vec![5, 1]));
        assert!(decode(&encode(&unsorted, "growth"), "growth").is_err());
    }
}
