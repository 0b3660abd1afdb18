//! Group commit on the serving side: the batches of concurrent sessions,
//! each checked on its session's own ledger, are stored by one writer in
//! one transaction, made durable by one commit, and only then acknowledged
//! to each session. Each batch is applied inside its own savepoint, so a
//! batch that fails to store is rolled back alone and its session alone
//! hears of it.

use super::*;

/// One checked batch waiting to be stored.
struct Job {
    from: NodeId,
    verdict: Verdict,
    now: u64,
    done: tokio::sync::oneshot::Sender<Result<Verdict>>,
}

/// Most batches stored by one commit.
pub const GROUP_MAX: usize = 64;

/// Hands checked batches to the server's writer thread.
pub struct Committer {
    jobs: std::sync::mpsc::Sender<Job>,
    stats: Arc<CommitStats>,
}

/// What the writer has done since it started.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Durable commits.
    pub commits: AtomicUsize,
    /// Batches stored by them.
    pub batches: AtomicUsize,
}

/// A batch handed to the writer.
pub struct Pending(tokio::sync::oneshot::Receiver<Result<Verdict>>);

impl Pending {
    /// The batch's verdict once it is durable, or why it was not stored.
    pub async fn stored(self) -> Result<Verdict> {
        self.0.await.map_err(|_| anyhow!("the server's writer stopped before storing a batch"))?
    }
}

/// The writer's side: runs on its own thread until every [`Committer`]
/// handle is gone.
pub struct Writer {
    ledger: Ledger,
    jobs: std::sync::mpsc::Receiver<Job>,
    stats: Arc<CommitStats>,
    /// Panics once inside the next group's transaction (a test's fault).
    #[cfg(test)]
    panic_next: bool,
}

impl Committer {
    /// A committer and its writer over `ledger` (a handle of its own on the
    /// server's store); run the writer with [`Writer::run`].
    pub fn new(ledger: Ledger) -> (Committer, Writer) {
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let writer = Writer {
            ledger,
            jobs: rx,
            stats: stats.clone(),
            #[cfg(test)]
            panic_next: false,
        };
        (Committer { jobs: tx, stats }, writer)
    }

    /// Starts the writer on its own thread.
    pub(super) fn spawn(ledger: Ledger) -> Result<Committer> {
        let (committer, writer) = Committer::new(ledger);
        std::thread::Builder::new().name("group-commit".into()).spawn(move || writer.run())?;
        Ok(committer)
    }

    /// Stores `verdict` (received from `from`); returns it once it is
    /// durable, or why it could not be stored (nothing of it is).
    pub async fn store(&self, from: &NodeId, verdict: Verdict, now: u64) -> Result<Verdict> {
        self.submit(from, verdict, now)?.stored().await
    }

    /// Queues `verdict` for the writer at once; [`Pending::stored`] waits
    /// for the outcome.
    pub fn submit(&self, from: &NodeId, verdict: Verdict, now: u64) -> Result<Pending> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job { from: from.clone(), verdict, now, done })
            .map_err(|_| anyhow!("the server's writer has stopped"))?;
        Ok(Pending(wait))
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }
}

impl Writer {
    /// Stores batches until every sender is gone: waits for one, takes every
    /// other already waiting (they queued while the last commit was made
    /// durable), stores them in one transaction, acknowledges each.
    pub fn run(mut self) {
        while let Ok(first) = self.jobs.recv() {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match self.jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            // A bug that panics while storing one group must not stop the
            // server storing for everyone: the group's transaction rolls
            // back as it unwinds, its sessions hear that the writer failed
            // (their replies are dropped), and the writer goes on.
            let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.store_group(group)));
            if stored.is_err() {
                tracing::error!("the server's writer failed on a group of batches; nothing of it was stored");
            }
        }
    }

    fn store_group(&mut self, group: Vec<Job>) {
        #[cfg(test)]
        if std::mem::take(&mut self.panic_next) {
            let _tx = self.ledger.store_mut().write();
            panic!("a fault injected by a test");
        }
        // Another handle may have begun a new incarnation (a recovery).
        if let Err(e) = self.ledger.reload() {
            let why = format!("{e:#}");
            for job in group {
                let _ = job.done.send(Err(anyhow!("cannot store the batch: {why}")));
            }
            return;
        }
        let origin = self.ledger.origin().clone();
        let mut outcomes: Vec<Result<()>> = Vec::with_capacity(group.len());
        let committed = (|| -> Result<()> {
            let mut tx = self.ledger.store_mut().write()?;
            for job in &group {
                let mut sp = tx.savepoint()?;
                match apply_verdict_in(&sp, &origin, &job.from, &job.verdict, job.now) {
                    Ok(()) => {
                        sp.commit()?;
                        outcomes.push(Ok(()));
                    }
                    Err(e) => {
                        sp.rollback()?;
                        outcomes.push(Err(e));
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = committed {
            let why = format!("{e:#}");
            for job in group {
                let _ = job.done.send(Err(anyhow!("storing the batch failed: {why}")));
            }
            return;
        }
        // Committed: one outcome per job. (The writer's own catalogues are
        // never read; the next group's `reload` follows publications.)
        self.stats.commits.fetch_add(1, Ordering::SeqCst);
        self.stats.batches.fetch_add(outcomes.iter().filter(|o| o.is_ok()).count(), Ordering::SeqCst);
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let result = outcome.map(|()| job.verdict).map_err(|e| e.context("storing the batch failed"));
            let _ = job.done.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proto::event::Lane;
    use proto::topology::NodeInfo;

    /// A county store with an identity and a map, as `init` leaves one.
    fn county(dir: &Path) -> Ledger {
        let store = crate::store::Store::create(dir).unwrap();
        let node = NodeInfo {
            id: NodeId::new("511421"),
            tier: Tier::County,
            parent: None,
            name: "县".into(),
            verifying_key: None,
            former_parents: Vec::new(),
            retired: false,
            retired_at: None,
        };
        let topology = proto::Topology::new(String::new(), vec![node.clone()]).unwrap();
        let identity =
            Identity { node, tls_cert_pem: String::new(), ca_cert_pem: String::new(), hub_address: String::new() };
        crate::store::meta_set(store.conn(), "identity", &identity).unwrap();
        crate::store::meta_set(store.conn(), "topology", &topology).unwrap();
        drop(store);
        Ledger::open(dir).unwrap()
    }

    /// A writer running on its own thread over a county store, with a
    /// runtime to wait for its answers.
    struct Writing {
        dir: tempfile::TempDir,
        committer: Committer,
        thread: std::thread::JoinHandle<()>,
        rt: tokio::runtime::Runtime,
    }

    fn running_writer() -> Writing {
        let dir = tempfile::tempdir().unwrap();
        let (committer, writer) = Committer::new(county(dir.path()));
        let thread = std::thread::spawn(move || writer.run());
        Writing { dir, committer, thread, rt: tokio::runtime::Builder::new_current_thread().build().unwrap() }
    }

    impl Writing {
        /// A session's batch from `from`, stored (or refused) by the writer.
        fn store(&self, from: &NodeId, verdict: Verdict) -> Result<Verdict> {
            self.rt.block_on(self.committer.submit(from, verdict, 1).unwrap().stored())
        }

        /// Stops the writer and opens what it stored.
        fn finish(self) -> (tempfile::TempDir, crate::store::Store) {
            drop(self.committer);
            self.thread.join().unwrap();
            let store = crate::store::Store::open(self.dir.path()).unwrap();
            (self.dir, store)
        }
    }

    /// A verdict accepting `events`, as a session's check leaves one.
    fn accepting(events: &[&Event]) -> Verdict {
        Verdict { accept: events.iter().map(|e| ((*e).clone(), e.hash())).collect(), ..Verdict::default() }
    }

    fn equivocations(store: &crate::store::Store) -> i64 {
        store.conn().query_row("SELECT COUNT(*) FROM equivocations", [], |r| r.get(0)).unwrap()
    }

    /// Batches of concurrent sessions that queue while the writer makes
    /// the last commit durable are stored by one commit, and each session
    /// gets its own verdict back only after it.
    #[test]
    fn batches_waiting_together_share_one_durable_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (committer, writer) = Committer::new(county(dir.path()));
        // Queued before the writer runs: five sessions' batches at once.
        let pending: Vec<_> = (1..=5usize)
            .map(|i| {
                let verdict = Verdict { deferred: i, ..Verdict::default() };
                committer.submit(&NodeId::new(format!("51142110100{i}")), verdict, 1).unwrap()
            })
            .collect();
        let writing = std::thread::spawn(move || writer.run());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(rt.block_on(p.stored()).unwrap().deferred, i + 1, "each session gets its own verdict");
        }
        assert_eq!(committer.stats().commits.load(Ordering::SeqCst), 1, "one commit for five batches");
        assert_eq!(committer.stats().batches.load(Ordering::SeqCst), 5);
        // A batch sent after the writer went idle gets a commit of its own.
        let later = committer.submit(&NodeId::new("511421101001"), Verdict::default(), 2).unwrap();
        rt.block_on(later.stored()).unwrap();
        assert_eq!(committer.stats().commits.load(Ordering::SeqCst), 2);
        drop(committer);
        writing.join().unwrap();
    }

    /// A twin of a stored creation (same origin and position, another
    /// case: a second copy of a village wrote it) is kept as evidence and
    /// makes no case row: the store does not hold it as an event.
    #[test]
    fn a_twin_creation_makes_no_case_row() {
        let writing = running_writer();
        let village = NodeId::new("511421101001");
        let first = crate::at_rest::tests::creation(&village, 1, proto::Hash::ZERO);
        let mut twin = crate::at_rest::tests::creation(&village, 2, proto::Hash::ZERO);
        (twin.id.seq, twin.pos) = (1, 1);
        assert_ne!(first.case, twin.case);
        for e in [&first, &twin] {
            writing.store(&village, accepting(&[e])).unwrap();
        }
        let (_dir, store) = writing.finish();
        assert!(crate::store::get_case(store.conn(), &first.case).unwrap().is_some());
        assert!(crate::store::get_case(store.conn(), &twin.case).unwrap().is_none(), "a case row of an unstored event");
        assert_eq!(equivocations(&store), 1);
    }

    /// Two sessions checked batches of one chain against the same tip (a
    /// township relaying a village's event, a restored copy of the village
    /// sending another one at that position and the next): once the first
    /// is stored, the second no longer continues the stored chain and is
    /// refused whole, nothing of it stored, rather than storing an event
    /// that links to an event the store does not hold.
    #[test]
    fn a_batch_whose_chain_changed_since_its_check_is_refused_whole() {
        let writing = running_writer();
        let village = NodeId::new("511421101001");
        let first = crate::at_rest::tests::creation(&village, 1, proto::Hash::ZERO);
        let mut twin = crate::at_rest::tests::creation(&village, 3, proto::Hash::ZERO);
        (twin.id.seq, twin.pos) = (1, 1);
        let after_twin = crate::at_rest::tests::creation(&village, 2, twin.hash());
        writing.store(&village, accepting(&[&first])).unwrap();
        let refused = writing.store(&village, accepting(&[&twin, &after_twin])).unwrap_err();
        assert!(format!("{refused:#}").contains("changed while this batch was checked"), "{refused:#}");
        let (_dir, store) = writing.finish();
        let lane = Lane::Home(village.clone());
        assert_eq!(crate::store::hash_at(store.conn(), &village, &lane, 2).unwrap(), None, "nothing of it stored");
        assert_eq!(equivocations(&store), 0, "the refused batch's twin was rolled back with it");
    }

    /// The county's revocation of `key` of `village`, cut at `upto`.
    fn revocation(village: &NodeId, key: proto::event::KeyId, upto: Vec<(Lane, NodeId, u64, proto::Hash)>) -> Event {
        Event {
            id: proto::EventId { origin: NodeId::new("511421"), seq: 1 },
            lane: Lane::Global,
            pos: 1,
            prev: proto::Hash::ZERO,
            hlc: proto::Hlc { wall_ms: 1_760_000_100_000, logical: 0 },
            actor: "县管理员".into(),
            case: CaseId(proto::event::GLOBAL_CASE.into()),
            context: Default::default(),
            body: proto::Body::Revoke {
                node: village.clone(),
                reason: "笔记本遗失".into(),
                key,
                certificate: proto::Hash([9; 32]),
                upto,
            },
        }
    }

    /// The seal `key` puts on `e`'s chain at `e`.
    fn seal_of(e: &Event, key: proto::event::KeyId) -> Seal {
        Seal {
            origin: e.id.origin.clone(),
            lane: e.lane.clone(),
            pos: e.pos,
            seq: e.id.seq,
            head: e.hash(),
            key,
            signature: vec![0; 64],
        }
    }

    /// A village's batch judged under its key before the county's
    /// revocation of that key was stored (by another session, or earlier
    /// in the same group) is refused whole when stored, nothing of it
    /// kept: its session syncs again, and the check then holds it to the
    /// revocation's cut.
    #[test]
    fn a_batch_judged_under_a_key_revoked_since_is_refused_whole() {
        let writing = running_writer();
        let village = NodeId::new("511421101001");
        let home = Lane::Home(village.clone());
        let key = proto::event::KeyId([7; 32]);
        let vouched = crate::at_rest::tests::creation(&village, 1, proto::Hash::ZERO);
        writing.store(&village, Verdict { seals: vec![seal_of(&vouched, key)], ..accepting(&[&vouched]) }).unwrap();
        let revoke = revocation(&village, key, vec![(home.clone(), village.clone(), 1, vouched.hash())]);
        writing.store(&NodeId::new("511421"), accepting(&[&revoke])).unwrap();
        // The thief's batch, judged by its session while the key was live.
        let stolen = crate::at_rest::tests::creation(&village, 2, vouched.hash());
        let late = Verdict { keys_relied: [(village.clone(), key)].into(), ..accepting(&[&stolen]) };
        let refused = writing.store(&village, late).unwrap_err();
        assert!(format!("{refused:#}").contains("revoked key"), "{refused:#}");
        let (_dir, store) = writing.finish();
        assert_eq!(crate::store::hash_at(store.conn(), &village, &home, 2).unwrap(), None, "stored past the cut");
        assert!(crate::store::get_case(store.conn(), &stolen.case).unwrap().is_none(), "its case row stayed");
        assert!(crate::store::get_case(store.conn(), &vouched.case).unwrap().is_some(), "the vouched case is kept");
    }

    /// Events stored before a revocation arrived, of a segment accepted in
    /// part (so without its seal), are held to the cut like sealed ones;
    /// a case whose creation goes with them keeps no row, though another
    /// node's event on it stays stored.
    #[test]
    fn a_revocation_purges_past_its_cut_what_was_stored_without_a_seal() {
        let writing = running_writer();
        let (village, township) = (NodeId::new("511421101001"), NodeId::new("511421101"));
        let home = Lane::Home(village.clone());
        let key = proto::event::KeyId([7; 32]);
        let vouched = crate::at_rest::tests::creation(&village, 1, proto::Hash::ZERO);
        // A new incarnation of the village (its laptop restored), whose
        // first segment waited in part: stored with no seal.
        let incarnation = NodeId::new("511421101001~abcd1234");
        let mut unsealed = crate::at_rest::tests::creation(&incarnation, 1, proto::Hash::ZERO);
        unsealed.lane = home.clone();
        let mut context = crdts::VClock::new();
        crdts::CmRDT::apply(&mut context, crdts::Dot::new(incarnation.clone(), 1));
        let township_step = Event {
            id: proto::EventId { origin: township.clone(), seq: 1 },
            lane: home.clone(),
            pos: 1,
            prev: proto::Hash::ZERO,
            hlc: proto::Hlc { wall_ms: 1_760_000_050_000, logical: 0 },
            actor: "乡镇窗口".into(),
            case: unsealed.case.clone(),
            context,
            body: proto::Body::SetField {
                field: "note".into(), value: proto::event::FieldValue::Text("已核".into())
            },
        };
        let stored = accepting(&[&vouched, &unsealed, &township_step]);
        writing.store(&village, Verdict { seals: vec![seal_of(&vouched, key)], ..stored }).unwrap();
        let revoke = revocation(&village, key, vec![(home.clone(), village.clone(), 1, vouched.hash())]);
        writing.store(&NodeId::new("511421"), accepting(&[&revoke])).unwrap();
        let (_dir, store) = writing.finish();
        assert_eq!(crate::store::hash_at(store.conn(), &incarnation, &home, 1).unwrap(), None, "kept past the cut");
        assert!(crate::store::get_case(store.conn(), &unsealed.case).unwrap().is_none(), "a case row with no creation");
        assert!(crate::store::get_case(store.conn(), &vouched.case).unwrap().is_some());
        assert_eq!(
            crate::store::hash_at(store.conn(), &township, &home, 1).unwrap(),
            Some(township_step.hash()),
            "the township's event stays stored"
        );
        let quarantined: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM quarantine WHERE kind = 'key_revoked' AND origin = ?1",
                [&incarnation.0],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(quarantined, 1, "kept for administrators");
    }

    /// A panic while storing one group fails that group's sessions only:
    /// the writer goes on storing for the next ones (it is the one writer
    /// of every session on the server).
    #[test]
    fn a_panic_in_the_writer_fails_one_group_and_the_next_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (committer, mut writer) = Committer::new(county(dir.path()));
        let peer = NodeId::new("511421101001");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        writer.panic_next = true;
        let first = committer.submit(&peer, Verdict::default(), 1).unwrap();
        let writing = std::thread::spawn(move || writer.run());
        assert!(rt.block_on(first.stored()).is_err(), "the group that panicked is not acknowledged");
        let second = committer.submit(&peer, Verdict { deferred: 7, ..Verdict::default() }, 2).unwrap();
        assert_eq!(rt.block_on(second.stored()).unwrap().deferred, 7, "the writer went on");
        assert_eq!(committer.stats().commits.load(Ordering::SeqCst), 1);
        drop(committer);
        writing.join().unwrap();
    }
}
