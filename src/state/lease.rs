//! Stream leases: who may write a stream's state, and for how long.
//!
//! A lease is a chain of generation objects `{dir}/{generation:020}.json`, each created only
//! if absent (`PutMode::Create`: `If-None-Match: *` on S3, GCS and Azure; a hard link that
//! fails on an existing name on the local file system). The holder of the highest generation
//! holds the lease. Every move creates the next generation, so two movers always compete for
//! one name and exactly one wins:
//! - taking a free lease (none yet, the last one released, or expired) creates `g + 1`;
//! - renewing (in the background every third of the TTL, and before every state write and
//!   merge) creates `g + 1` over the holder's own `g`; if that name is taken, another run took
//!   the lease over and this run has lost it for good;
//! - releasing creates `g + 1` marked released, then deletes the older generations.
//!
//! After each create the mover lists the chain again and holds only if nothing higher exists:
//! a mover that read a chain before the holder released (and deleted old generations) could
//! otherwise recreate a deleted name. The same mechanism runs on every store, so the race
//! tests over the local file system cover S3's code path too.
//!
//! A lease expires `ttl` after its last renewal, by the writer's clock: takers trust clocks to
//! agree within a small fraction of the TTL. A lease written by a process on this host that no
//! longer runs (a crash, a SIGKILL) is free at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::warn;

use super::StateError;
use crate::Result;

/// What a generation object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    /// Which lease (one run of one stream) wrote this generation.
    token: String,
    /// The run (process) that took the lease: [`run_id`]. Empty in leases written before
    /// runs had ids.
    #[serde(default)]
    run_id: String,
    host: String,
    pid: u32,
    /// When this run took the lease.
    acquired_at: DateTime<Utc>,
    /// When this generation was written; the lease expires `ttl_ms` later.
    written_at: DateTime<Utc>,
    ttl_ms: u64,
    #[serde(default)]
    released: bool,
}

impl LeaseRecord {
    fn expires_at(&self) -> DateTime<Utc> {
        // A record from outside (or an old config) may hold any TTL: never overflow.
        i64::try_from(self.ttl_ms)
            .ok()
            .and_then(chrono::Duration::try_milliseconds)
            .and_then(|ttl| self.written_at.checked_add_signed(ttl))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Whether another run may take this lease now.
    fn is_free(&self, now: DateTime<Utc>, host: &str) -> bool {
        self.released
            || now >= self.expires_at()
            || (self.host == host && self.pid != std::process::id() && !process_alive(self.pid))
    }
}

/// The id of this process's run, written into every lease it takes (and shown by `status`),
/// so an operator can tell which run of an orchestrator holds a stream.
pub fn run_id() -> &'static str {
    static RUN_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN_ID.get_or_init(|| uuid::Uuid::now_v7().to_string())
}

/// Who holds a stream's lease, as its newest generation says (`syncline status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseHolder {
    pub host: String,
    pub pid: u32,
    /// The holding run's id (empty for leases written before runs had ids).
    pub run_id: String,
    /// When the run took the lease.
    pub since: DateTime<Utc>,
    /// Its last renewal.
    pub renewed_at: DateTime<Utc>,
    /// When it expires unless renewed again.
    pub expires_at: DateTime<Utc>,
    /// Free for the next run to take: expired, or written on this host by a process that is
    /// gone (a crash).
    pub expired: bool,
}

/// Who holds the lease under `dir` now; `None` when nobody ever took it or its last holder
/// released it. Reads only: it never moves the chain.
pub async fn holder(store: &dyn ObjectStore, dir: &Path) -> Result<Option<LeaseHolder>> {
    let Some((_, record)) = latest(store, dir).await? else {
        return Ok(None);
    };
    if record.released {
        return Ok(None);
    }
    Ok(Some(LeaseHolder {
        expired: record.is_free(Utc::now(), &hostname()),
        expires_at: record.expires_at(),
        host: record.host,
        pid: record.pid,
        run_id: record.run_id,
        since: record.acquired_at,
        renewed_at: record.written_at,
    }))
}

/// A held lease. Renewed in the background while it lives; `check` before any write that
/// must be fenced; `release` at the end of the run.
#[derive(Debug)]
pub struct Lease {
    inner: Arc<Inner>,
    renewer: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    stream: String,
    record: LeaseRecord,
    /// The generation this lease last wrote; moves are serialised through it.
    generation: Mutex<u64>,
    /// Set once another run has taken the lease over: never cleared.
    lost: AtomicBool,
}

impl Lease {
    /// Takes the lease of `stream` under `dir` if it is free, or fails with
    /// `StateError::Held` naming the holder.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        dir: Path,
        stream: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let now = Utc::now();
        let mut record = LeaseRecord {
            token: uuid::Uuid::new_v4().to_string(),
            run_id: run_id().to_string(),
            host: hostname(),
            pid: std::process::id(),
            acquired_at: now,
            written_at: now,
            ttl_ms: ttl.as_millis().min(u64::MAX as u128) as u64,
            released: false,
        };
        // A lost race means another run moved the chain: look again, a few times.
        for _ in 0..5 {
            let next = match latest(store.as_ref(), &dir).await? {
                None => 1,
                Some((generation, holder)) => {
                    if !holder.is_free(Utc::now(), &record.host) {
                        return Err(StateError::Held {
                            stream: stream.to_string(),
                            pid: holder.pid,
                            host: holder.host.clone(),
                            run_id: holder.run_id.clone(),
                            since: holder.acquired_at,
                            until: holder.expires_at(),
                            path: dir.to_string(),
                        }
                        .into());
                    }
                    if !holder.released {
                        warn!(stream, holder_pid = holder.pid, holder_host = %holder.host, "taking over an expired lease");
                    }
                    generation + 1
                }
            };
            record.written_at = Utc::now();
            if create(store.as_ref(), &dir, next, &record).await?
                && highest(store.as_ref(), &dir).await? == Some(next)
            {
                let inner = Arc::new(Inner {
                    store,
                    dir,
                    stream: stream.to_string(),
                    record,
                    generation: Mutex::new(next),
                    lost: AtomicBool::new(false),
                });
                let renewer = tokio::spawn(renew_in_background(inner.clone(), ttl));
                return Ok(Lease { inner, renewer });
            }
        }
        Err(StateError::TakenOver {
            stream: stream.to_string(),
        }
        .into())
    }

    /// Proves the lease is still this run's and extends it by a full TTL: call right before
    /// a write only the holder may make. Fails with `StateError::TakenOver` once it was lost.
    pub async fn check(&self) -> Result<()> {
        self.inner.renew().await
    }

    /// A handle that checks this lease, for code that writes without owning the lease.
    pub fn fence(&self) -> Fence {
        Fence(self.inner.clone())
    }

    /// Whether the lease is known to be lost (without asking the store).
    pub fn is_lost(&self) -> bool {
        self.inner.lost.load(Ordering::SeqCst)
    }

    /// The generation this lease last wrote (for tests and logs).
    pub async fn generation(&self) -> u64 {
        *self.inner.generation.lock().await
    }

    /// Ends the lease: the next run takes it at once. A lease already lost is left alone.
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        let inner = &self.inner;
        let mut generation = inner.generation.lock().await;
        if inner.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut record = inner.record.clone();
        record.written_at = Utc::now();
        record.released = true;
        let next = *generation + 1;
        if !create(inner.store.as_ref(), &inner.dir, next, &record).await? {
            inner.lost.store(true, Ordering::SeqCst);
            warn!(stream = %inner.stream, "the lease was taken over before it was released");
            return Ok(());
        }
        *generation = next;
        // Older generations are history; the released one stays as the chain's head.
        for old in generations(inner.store.as_ref(), &inner.dir).await? {
            if old < next {
                match inner.store.delete(&generation_path(&inner.dir, old)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

/// Checks a lease held elsewhere in the process (`Lease::fence`).
#[derive(Debug, Clone)]
pub struct Fence(Arc<Inner>);

impl Fence {
    /// See [`Lease::check`].
    pub async fn check(&self) -> Result<()> {
        self.0.renew().await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl Inner {
    async fn renew(&self) -> Result<()> {
        let mut generation = self.generation.lock().await;
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.taken_over());
        }
        let mut record = self.record.clone();
        record.written_at = Utc::now();
        let next = *generation + 1;
        let won = create(self.store.as_ref(), &self.dir, next, &record).await?;
        if !won || highest(self.store.as_ref(), &self.dir).await? != Some(next) {
            self.lost.store(true, Ordering::SeqCst);
            return Err(self.taken_over());
        }
        *generation = next;
        Ok(())
    }

    fn taken_over(&self) -> crate::Error {
        StateError::TakenOver {
            stream: self.stream.clone(),
        }
        .into()
    }
}

/// Renews every third of the TTL until the lease is lost or released. A renewal that fails
/// for a passing reason (the network) is retried at the next tick; the lease is lost only
/// when another run took it, which `check` then reports.
async fn renew_in_background(inner: Arc<Inner>, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        match inner.renew().await {
            Ok(()) => {}
            Err(err) if inner.lost.load(Ordering::SeqCst) => {
                warn!(stream = %inner.stream, error = %err, "lost the stream lease");
                return;
            }
            Err(err) => {
                warn!(stream = %inner.stream, error = %err, "could not renew the stream lease")
            }
        }
    }
}

fn generation_path(dir: &Path, generation: u64) -> Path {
    dir.clone().join(format!("{generation:020}.json"))
}

/// Creates generation `generation` unless it exists; `false` when it did.
async fn create(
    store: &dyn ObjectStore,
    dir: &Path,
    generation: u64,
    record: &LeaseRecord,
) -> Result<bool> {
    let options = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .put_opts(
            &generation_path(dir, generation),
            serde_json::to_vec(record)?.into(),
            options,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn generations(store: &dyn ObjectStore, dir: &Path) -> Result<Vec<u64>> {
    let listed: Vec<_> = store.list(Some(dir)).try_collect().await?;
    Ok(listed
        .iter()
        .filter_map(|meta| {
            meta.location
                .filename()?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect())
}

async fn highest(store: &dyn ObjectStore, dir: &Path) -> Result<Option<u64>> {
    Ok(generations(store, dir).await?.into_iter().max())
}

/// The chain's head and what it says. A head deleted between the listing and the read (a
/// release) is looked up again; one that is not a lease record is treated as free.
async fn latest(store: &dyn ObjectStore, dir: &Path) -> Result<Option<(u64, LeaseRecord)>> {
    loop {
        let Some(generation) = highest(store, dir).await? else {
            return Ok(None);
        };
        match store.get(&generation_path(dir, generation)).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let record = serde_json::from_slice(&bytes).unwrap_or_else(|_| LeaseRecord {
                    token: String::new(),
                    run_id: String::new(),
                    host: String::new(),
                    pid: 0,
                    acquired_at: DateTime::<Utc>::MIN_UTC,
                    written_at: DateTime::<Utc>::MIN_UTC,
                    ttl_ms: 0,
                    released: true,
                });
                return Ok(Some((generation, record)));
            }
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence without sending anything.
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 has no effect on the target process.
    unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicUsize;

    use object_store::local::LocalFileSystem;

    use super::*;

    fn local() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (dir, Arc::new(store))
    }

    fn lease_dir() -> Path {
        Path::from("crm/_locks/contacts")
    }

    #[tokio::test]
    async fn a_held_lease_is_refused_and_a_released_one_is_free() {
        let (_dir, store) = local();
        let ttl = Duration::from_secs(60);
        let first = Lease::acquire(store.clone(), lease_dir(), "contacts", ttl)
            .await
            .unwrap();
        let refused = Lease::acquire(store.clone(), lease_dir(), "contacts", ttl)
            .await
            .unwrap_err();
        assert!(
            refused
                .report()
                .contains("stream contacts is being synced by pid"),
            "{}",
            refused.report()
        );
        assert_eq!(refused.exit_code(), 1);
        first.check().await.unwrap();
        let held = holder(store.as_ref(), &lease_dir()).await.unwrap().unwrap();
        assert_eq!(held.pid, std::process::id());
        first.release().await.unwrap();
        assert_eq!(holder(store.as_ref(), &lease_dir()).await.unwrap(), None);
        let second = Lease::acquire(store.clone(), lease_dir(), "contacts", ttl)
            .await
            .unwrap();
        // Release left only the released head behind; the new holder built on it.
        assert_eq!(
            generations(store.as_ref(), &lease_dir())
                .await
                .unwrap()
                .len(),
            2
        );
        second.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_taken_over_after_expiry_is_lost_for_good() {
        let (_dir, store) = local();
        // Expired at once; without its renewer, it stays expired.
        let old = Lease::acquire(store.clone(), lease_dir(), "contacts", Duration::ZERO)
            .await
            .unwrap();
        old.renewer.abort();
        let new = Lease::acquire(
            store.clone(),
            lease_dir(),
            "contacts",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let err = old.check().await.unwrap_err();
        assert!(err.report().contains("lost its lease"), "{}", err.report());
        assert!(old.is_lost());
        new.check().await.unwrap();
        // The loser's release leaves the winner's lease alone.
        old.release().await.unwrap();
        new.check().await.unwrap();
    }

    /// Two takers race for a lease in a loop over the local file system. With a zero TTL
    /// every lease is expired at once, so every round is a takeover race: no generation may
    /// ever have two holders. With a long TTL and releases, the holder proves it is alone by
    /// creating a marker only one may hold at a time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_takers_racing_in_a_loop_never_both_hold() {
        let (dir, store) = local();
        let rounds = 300;
        let held: Arc<std::sync::Mutex<Vec<u64>>> = Default::default();
        let mut takers = Vec::new();
        for _ in 0..2 {
            let store = store.clone();
            let held = held.clone();
            takers.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    if let Ok(lease) =
                        Lease::acquire(store.clone(), lease_dir(), "contacts", Duration::ZERO).await
                    {
                        let generation = lease.generation().await;
                        held.lock().unwrap().push(generation);
                        // Renewals race the other taker too; each one won is a generation held.
                        if lease.check().await.is_ok() {
                            let generation = lease.generation().await;
                            held.lock().unwrap().push(generation);
                        }
                    }
                }
            }));
        }
        for taker in takers {
            taker.await.unwrap();
        }
        let held = held.lock().unwrap();
        let unique: BTreeSet<u64> = held.iter().copied().collect();
        assert!(held.len() > rounds / 2, "only {} holds", held.len());
        assert_eq!(unique.len(), held.len(), "a generation had two holders");

        let marker = dir.path().join("holder");
        let holders = Arc::new(AtomicUsize::new(0));
        let store2 =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap()) as Arc<dyn ObjectStore>;
        let mut takers = Vec::new();
        for _ in 0..2 {
            let store = store2.clone();
            let marker = marker.clone();
            let holders = holders.clone();
            takers.push(tokio::spawn(async move {
                let mut mine = 0;
                while mine < rounds / 2 {
                    let Ok(lease) = Lease::acquire(
                        store.clone(),
                        Path::from("crm/_locks/deals"),
                        "deals",
                        Duration::from_secs(60),
                    )
                    .await
                    else {
                        tokio::task::yield_now().await;
                        continue;
                    };
                    mine += 1;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&marker)
                        .expect("only one holder at a time");
                    holders.fetch_add(1, Ordering::SeqCst);
                    lease.check().await.unwrap();
                    std::fs::remove_file(&marker).unwrap();
                    lease.release().await.unwrap();
                }
            }));
        }
        for taker in takers {
            taker.await.unwrap();
        }
        assert_eq!(holders.load(Ordering::SeqCst), rounds);
    }

    /// Two takers of one expired lease, 300 times: at most one may win each round. (The lock
    /// before leases took over on the local file system by delete-then-create: the same race
    /// gave both takers the lock in 56 of 300 rounds.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_takers_of_an_expired_lease_never_both_win() {
        let (_dir, store) = local();
        let expired = LeaseRecord {
            token: "crashed".into(),
            run_id: String::new(),
            host: "elsewhere".into(),
            pid: 1,
            acquired_at: DateTime::<Utc>::MIN_UTC,
            written_at: DateTime::<Utc>::MIN_UTC,
            ttl_ms: 1000,
            released: false,
        };
        let mut won = 0;
        for round in 0..300u64 {
            let dir = Path::from(format!("crm/_locks/s{round}"));
            assert!(create(store.as_ref(), &dir, 1, &expired).await.unwrap());
            let ttl = Duration::from_secs(60);
            let (a, b) = tokio::join!(
                tokio::spawn(Lease::acquire(store.clone(), dir.clone(), "s", ttl)),
                tokio::spawn(Lease::acquire(store.clone(), dir.clone(), "s", ttl)),
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!(
                !(a.is_ok() && b.is_ok()),
                "round {round}: both takers hold the lease"
            );
            won += usize::from(a.is_ok() || b.is_ok());
        }
        // A loser that found the winner's fresh generation is refused; one that lost the
        // create race may retry and be refused too. Someone wins every round.
        assert_eq!(won, 300);
    }

    /// Two processes (this test binary, started twice as `lease_racer`) race for one lease
    /// on the local file system, 300 rounds each, every lease expired as it is taken (TTL 0)
    /// so every round is a takeover race: no generation is ever held by both.
    #[test]
    fn two_processes_racing_takeovers_never_both_hold() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let racers: Vec<_> = (0..2)
            .map(|i| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "state::lease::tests::lease_racer", "--ignored"])
                    .env("SYNCLINE_LEASE_RACER", dir.path())
                    .env(
                        "SYNCLINE_LEASE_RACER_OUT",
                        dir.path().join(format!("held-{i}")),
                    )
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::fs::write(&go, b"").unwrap();
        let mut held = Vec::new();
        for (i, mut racer) in racers.into_iter().enumerate() {
            assert!(racer.wait().unwrap().success(), "racer {i} failed");
            let text = std::fs::read_to_string(dir.path().join(format!("held-{i}"))).unwrap();
            let mine: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
            assert!(!mine.is_empty(), "racer {i} never held the lease");
            held.extend(mine);
        }
        let unique: BTreeSet<u64> = held.iter().copied().collect();
        assert!(held.len() > 300, "only {} holds", held.len());
        assert_eq!(unique.len(), held.len(), "a generation had two holders");
    }

    /// One side of `two_processes_racing_takeovers_never_both_hold`; does nothing when run
    /// on its own.
    #[test]
    #[ignore = "started by two_processes_racing_takeovers_never_both_hold"]
    fn lease_racer() {
        let (Some(dir), Some(out)) = (
            std::env::var_os("SYNCLINE_LEASE_RACER"),
            std::env::var_os("SYNCLINE_LEASE_RACER_OUT"),
        ) else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        while !dir.join("go").exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let held = runtime.block_on(async {
            let store: Arc<dyn ObjectStore> =
                Arc::new(LocalFileSystem::new_with_prefix(&dir).unwrap());
            let mut held = Vec::new();
            for _ in 0..300 {
                if let Ok(lease) =
                    Lease::acquire(store.clone(), lease_dir(), "contacts", Duration::ZERO).await
                {
                    held.push(lease.generation().await);
                    if lease.check().await.is_ok() {
                        held.push(lease.generation().await);
                    }
                }
            }
            held
        });
        let text: String = held.iter().map(|g| format!("{g}\n")).collect();
        std::fs::write(out, text).unwrap();
    }

    /// `holder` reads who holds a lease without moving it: nobody before the first run, the
    /// run while it holds it, nobody once released, and an expired lease says so.
    #[tokio::test]
    async fn the_holder_is_read_without_moving_the_lease() {
        let (_dir, store) = local();
        assert_eq!(holder(store.as_ref(), &lease_dir()).await.unwrap(), None);
        let lease = Lease::acquire(
            store.clone(),
            lease_dir(),
            "contacts",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let generation = lease.generation().await;
        let held = holder(store.as_ref(), &lease_dir())
            .await
            .unwrap()
            .expect("held");
        assert_eq!(held.pid, std::process::id());
        assert_eq!(held.run_id, run_id());
        assert_eq!(held.host, hostname());
        assert!(!held.expired);
        assert!(held.expires_at > held.renewed_at && held.renewed_at >= held.since);
        assert_eq!(
            lease.generation().await,
            generation,
            "reading moved the lease"
        );
        lease.release().await.unwrap();
        assert_eq!(holder(store.as_ref(), &lease_dir()).await.unwrap(), None);

        let stale = Lease::acquire(store.clone(), lease_dir(), "contacts", Duration::ZERO)
            .await
            .unwrap();
        stale.renewer.abort();
        let held = holder(store.as_ref(), &lease_dir()).await.unwrap().unwrap();
        assert!(held.expired, "{held:?}");
    }

    /// A run that outlives its TTL keeps its lease: the background renewer extends it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_outliving_its_ttl_is_renewed_and_kept() {
        let (_dir, store) = local();
        let ttl = Duration::from_millis(300);
        let lease = Lease::acquire(store.clone(), lease_dir(), "contacts", ttl)
            .await
            .unwrap();
        let first = lease.generation().await;
        // Wait for several renewals, however long that takes on a loaded machine.
        while lease.generation().await < first + 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lease.check().await.unwrap();
        let other = Lease::acquire(store.clone(), lease_dir(), "contacts", ttl).await;
        assert!(other.is_err(), "a renewed lease was taken over");
        lease.release().await.unwrap();
    }
}
