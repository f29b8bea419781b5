//! The staged loads of a stream as a whole: listing them with their size, and deleting one
//! (for `syncline loads`, `replay` and `gc`).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::{Manifest, Stage};
use crate::Result;

/// One folder under `{pipeline}/{stream}/loads/`.
#[derive(Debug, Clone)]
pub struct StagedLoad {
    pub load_id: String,
    /// `None`: staging never completed (or `gc` collected the load and kept its dead letters).
    pub manifest: Option<Manifest>,
    /// Bytes of every object in the folder.
    pub bytes: u64,
    /// Only dead-letter files are left (what `gc` keeps by default).
    pub dead_letters_only: bool,
    objects: Vec<Path>,
}

impl StagedLoad {
    /// The load's dead-letter files: listed from the folder, so those `gc` kept after
    /// collecting the load (and its manifest) are found too.
    pub fn dead_letter_files(&self) -> impl Iterator<Item = &Path> {
        self.objects.iter().filter(|path| {
            path.parts().any(|part| part.as_ref() == "dead_letter")
                && path.as_ref().ends_with(".parquet")
        })
    }
}

impl Stage {
    /// Every staged load of `stream`, oldest first (load ids are time-ordered UUIDv7).
    pub async fn list_loads(&self, pipeline: &str, stream: &str) -> Result<Vec<StagedLoad>> {
        let prefix = self.path(&[pipeline, stream, "loads"]);
        let listed: Vec<ObjectMeta> = self.store().list(Some(&prefix)).try_collect().await?;
        let mut folders: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
        for meta in listed {
            let Some(load_id) = meta
                .location
                .prefix_match(&prefix)
                .and_then(|mut parts| parts.next())
                .map(|part| part.as_ref().to_string())
            else {
                continue;
            };
            folders.entry(load_id).or_default().push(meta);
        }
        let mut loads = Vec::new();
        for (load_id, objects) in folders {
            let manifest = self.read_manifest(pipeline, stream, &load_id).await?;
            let dead_letters_only = manifest.is_none()
                && objects
                    .iter()
                    .all(|o| o.location.parts().any(|p| p.as_ref() == "dead_letter"));
            loads.push(StagedLoad {
                bytes: objects.iter().map(|o| o.size).sum(),
                objects: objects.into_iter().map(|o| o.location).collect(),
                load_id,
                manifest,
                dead_letters_only,
            });
        }
        Ok(loads)
    }

    /// Deletes a staged load's objects, its manifest first (so a half-deleted load is never
    /// taken for a complete one); with `keep_dead_letters`, its dead-letter files stay.
    /// Returns the bytes deleted.
    pub async fn delete_load(&self, load: &StagedLoad, keep_dead_letters: bool) -> Result<u64> {
        let mut objects: Vec<&Path> = load
            .objects
            .iter()
            .filter(|p| !(keep_dead_letters && p.parts().any(|x| x.as_ref() == "dead_letter")))
            .collect();
        objects.sort_by_key(|p| p.filename() != Some("manifest.json"));
        let mut deleted = 0;
        for path in objects {
            let size = self.store().head(path).await.map(|m| m.size).unwrap_or(0);
            match self.store().delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += size,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deleted)
    }
}
