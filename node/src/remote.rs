//! The county's files in an S3-compatible object store (the province's
//! government cloud, MinIO, SeaweedFS) instead of its own disk: `county-hub
//! config --blobs s3://BUCKET --s3-endpoint URL`, credentials from
//! `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
//!
//! The object store is the files' home; the data directory's `files/`
//! folder is only where a file is put together (`crate::blobs`) and read
//! from. A file is uploaded, sealed exactly as on disk (its bytes never
//! reach the store in clear), once it is whole, and its local copy is
//! then removed; a file asked for that is not on disk is fetched back
//! first. The upload streams in parts, so memory stays flat.

use crate::error::Result;
use anyhow::{anyhow, Context};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use proto::files::FileHash;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Meta key of the object store's settings.
pub const META_KEY: &str = "blobs_remote";

/// Where the county keeps its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConfig {
    pub bucket: String,
    pub endpoint: String,
    pub region: String,
}

impl RemoteConfig {
    /// Parses `s3://BUCKET`.
    pub fn parse(url: &str, endpoint: &str, region: Option<&str>) -> Result<RemoteConfig> {
        let bucket = url
            .strip_prefix("s3://")
            .map(|b| b.trim_end_matches('/'))
            .filter(|b| !b.is_empty() && !b.contains('/'))
            .ok_or_else(|| crate::Declined::Invalid(format!("--blobs {url:?} is not s3://BUCKET")))?;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(crate::Declined::Invalid(format!("--s3-endpoint {endpoint:?} is not an http(s) URL")).into());
        }
        Ok(RemoteConfig {
            bucket: bucket.to_string(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.unwrap_or("us-east-1").to_string(),
        })
    }

    fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_region(&self.region)
            .with_allow_http(self.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|e| anyhow!("the object store settings are not usable: {e}"))?;
        Ok(Arc::new(store))
    }
}

/// The object store a node keeps its files in, if configured (opened
/// once per process and per settings).
pub fn of(conn: &Connection) -> Result<Option<(RemoteConfig, Arc<dyn ObjectStore>)>> {
    static OPEN: Mutex<Option<(RemoteConfig, Arc<dyn ObjectStore>)>> = Mutex::new(None);
    let Some(cfg) = crate::store::meta_get::<RemoteConfig>(conn, META_KEY)? else { return Ok(None) };
    let mut open = OPEN.lock().expect("object store");
    if let Some((c, s)) = open.as_ref().filter(|(c, _)| *c == cfg) {
        return Ok(Some((c.clone(), s.clone())));
    }
    let store = cfg.open()?;
    *open = Some((cfg.clone(), store.clone()));
    Ok(Some((cfg, store)))
}

fn key(hash: &FileHash) -> ObjectPath {
    let hex = hash.to_hex();
    ObjectPath::from(format!("files/{}/{hex}", &hex[..2]))
}

/// Runs an object store call to completion from synchronous code, inside
/// or outside a tokio runtime.
fn wait<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => tokio::task::block_in_place(|| h.block_on(f)),
        Err(_) => tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f),
    }
}

/// Checks that the store answers and takes writes: a probe object is
/// written, read back and removed.
pub fn check(cfg: &RemoteConfig) -> Result<()> {
    let store = cfg.open()?;
    let probe = ObjectPath::from(format!("probe/{:016x}", rand::random::<u64>()));
    wait(async {
        store.put(&probe, b"case-ledger probe".to_vec().into()).await?;
        let back = store.get(&probe).await?.bytes().await?;
        store.delete(&probe).await?;
        anyhow::ensure!(back.as_ref() == b"case-ledger probe", "the store returned other bytes than written");
        Ok::<_, anyhow::Error>(())
    })
    .with_context(|| format!("the object store s3://{} at {} cannot be used", cfg.bucket, cfg.endpoint))?;
    Ok(())
}

/// Moves a whole file from the data directory to the object store (when
/// one is configured): uploaded in parts, then removed locally.
pub fn offload(conn: &Connection, dir: &Path, hash: &FileHash) -> Result<()> {
    let Some((_, store)) = of(conn)? else { return Ok(()) };
    let local = crate::blobs::path_of(dir, hash);
    let mut file = std::fs::File::open(&local).with_context(|| format!("cannot read {}", local.display()))?;
    wait(async {
        let upload = store.put_multipart(&key(hash)).await?;
        let mut write = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            // One part in flight while the next fills: an upload holds at most
            // two 5 MiB parts in memory, whatever the file's size.
            write.wait_for_capacity(0).await?;
            write.write(&buf[..n]);
        }
        write.finish().await?;
        Ok::<_, anyhow::Error>(())
    })
    .with_context(|| format!("uploading file {hash} to the object store failed; it stays on disk"))?;
    std::fs::remove_file(&local)?;
    Ok(())
}

/// Makes sure a held file is on disk: fetched back from the object store
/// when it lives there. Returns false when neither has it.
pub fn ensure_local(conn: &Connection, dir: &Path, hash: &FileHash) -> Result<bool> {
    let local = crate::blobs::path_of(dir, hash);
    if local.exists() {
        return Ok(true);
    }
    let Some((_, store)) = of(conn)? else { return Ok(false) };
    let parent = local.parent().expect("a folder");
    std::fs::create_dir_all(parent)?;
    // A name of its own per fetch: two readers of one file (two sessions,
    // a session and the desk) never write into each other's copy.
    static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{}.fetch.{}.{n}", hash.to_hex(), std::process::id()));
    let fetched = wait(async {
        let got = match store.get(&key(hash)).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(anyhow::Error::from(e)),
        };
        let mut out = std::fs::File::create(&tmp)?;
        let mut stream = got.into_stream();
        use futures_util::StreamExt as _;
        while let Some(chunk) = stream.next().await {
            std::io::Write::write_all(&mut out, &chunk?)?;
        }
        out.sync_all()?;
        Ok(true)
    })
    .with_context(|| format!("fetching file {hash} from the object store failed"))?;
    if fetched {
        // Another reader may have put the same bytes in place meanwhile:
        // the rename replaces them with an identical copy.
        std::fs::rename(&tmp, &local)?;
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(fetched)
}
