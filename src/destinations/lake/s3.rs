//! `s3://` tables without deltalake's `s3` feature (which would pull in the AWS SDK).
//!
//! deltalake-core only knows `file://` and `memory://` until a storage crate registers more
//! schemes in its process-wide factory registries. syncline already builds S3 stores with
//! `object_store`'s `aws` feature, so this module registers a factory that builds the store from
//! the table URL and the storage options (`aws_endpoint`, `aws_region`, `aws_access_key_id`, ...,
//! the keys `object_store::aws::AmazonS3ConfigKey` accepts), and deltalake's default log store
//! over it.
//!
//! The default log store commits a version with a put-if-absent (`If-None-Match: *`), which
//! AWS S3 and MinIO honour, so two writers can never both commit the same table version; no
//! DynamoDB lock table is needed. A store that ignores conditional puts (some older
//! S3-compatible servers) would break that guarantee; syncline's per-stream run lock still keeps
//! its own writers apart.

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, Path};
use url::Url;

/// Builds an `object_store` S3 client from the raw storage options.
#[derive(Debug, Default)]
struct S3StoreFactory;

impl ObjectStoreFactory for S3StoreFactory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let options = config
            .raw()
            .map(|(key, value)| (key.clone(), value.clone()));
        let (store, path) = crate::storage::build_store(url, options)?;
        Ok((Arc::from(store), path))
    }
}

/// deltalake's default (put-if-absent) log store.
#[derive(Debug, Default)]
struct S3LogStoreFactory;

impl LogStoreFactory for S3LogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers the `s3://` and `s3a://` handlers once per process. Handlers registered before
/// (by an embedding application using deltalake's own `s3` feature) are left in place.
pub(crate) fn register_handlers() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            let Ok(url) = Url::parse(scheme) else {
                continue;
            };
            let stores = object_store_factories();
            if !stores.contains_key(&url) {
                stores.insert(url.clone(), Arc::new(S3StoreFactory));
            }
            let log_stores = logstore_factories();
            if !log_stores.contains_key(&url) {
                log_stores.insert(url, Arc::new(S3LogStoreFactory));
            }
        }
    });
}
