//! Regression tests from the second outside review of issue 11: attacks on
//! the first review's fixes, driven by a hostile client or a fake township
//! server built from a real bundle. Each test fails if its attack succeeds.

use node::Bundle;
use proto::sync::{Message, Segment};
use proto::{Body, CaseId, Event, EventId, Hash, Hlc, Lane, NodeId, Seal};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use system_tests::{ok, ok_json, run, runtime, s, take_case, County, Server};

const TOWNSHIP: &str = "511421101";
const VILLAGE: &str = "511421101001";

fn bundle(county: &County, node: &str) -> Bundle {
    Bundle::read(&county.root.path().join(format!("{node}.bundle.json"))).unwrap()
}

async fn write_msg(send: &mut quinn::SendStream, msg: &Message) {
    let body = zstd::bulk::compress(&msg.encode(), 3).unwrap();
    send.write_all(&(body.len() as u32).to_be_bytes()).await.unwrap();
    send.write_all(&body).await.unwrap();
}

async fn read_msg(recv: &mut quinn::RecvStream) -> Option<Message> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    recv.read_exact(&mut buf).await.ok()?;
    Some(Message::decode(&node::sync::unpack(&buf).unwrap()).unwrap())
}

fn show(program: &str, data: &str, case: &str) -> Value {
    ok_json(program, &["case", "show", "--data", data, case, "--json"])
}

fn cases(program: &str, data: &str) -> Vec<Value> {
    ok_json(program, &["case", "list", "--data", data, "--json"]).as_array().unwrap().clone()
}

fn db(data: &str) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        std::path::Path::new(data).join("node.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

fn count(data: &str, sql: &str) -> i64 {
    db(data).query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Connects to `addr` as `b`'s node, sends Hello and one batch, returns
/// (refused, seconds until acked).
fn send_batch(b: &Bundle, addr: &str, segments: Vec<Segment>) -> (u32, f64) {
    let addr: SocketAddr = addr.parse().unwrap();
    let b = b.clone();
    runtime().block_on(async move {
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let cfg = node::sync::client_config(&b.identity, &b.secrets).unwrap();
        let conn = ep.connect_with(cfg, addr, "peer.node").unwrap().await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_msg(&mut send, &Message::Hello { wall_ms: node::wall_clock_ms(), positions: vec![], heads: vec![] })
            .await;
        let t = Instant::now();
        write_msg(&mut send, &Message::Batch { n: 0, segments, unreadable: vec![] }).await;
        while let Some(m) = tokio::time::timeout(Duration::from_secs(300), read_msg(&mut recv)).await.unwrap() {
            if let Message::Ack { n: 0, quarantined, .. } = m {
                return (quarantined, t.elapsed().as_secs_f64());
            }
        }
        panic!("no ack");
    })
}

fn event(origin: &NodeId, seq: u64, pos: u64, wall: u64, case: &str, ctx: &[(&str, u64)], body: Body) -> Event {
    use crdts::CmRDT;
    let mut context = crdts::VClock::new();
    for (o, c) in ctx {
        context.apply(crdts::Dot::new(NodeId::new(*o), *c));
    }
    Event {
        id: EventId { origin: origin.clone(), seq },
        lane: Lane::Home(NodeId::new(VILLAGE)),
        pos,
        prev: Hash::ZERO,
        hlc: Hlc { wall_ms: wall, logical: 0 },
        actor: "王芳".into(),
        case: CaseId(case.into()),
        context,
        body,
    }
}

/// A server speaking for `b`'s node (its certificate and TLS key).
fn server_endpoint(b: &Bundle) -> quinn::Endpoint {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(b.identity.tls_cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_slice(b.secrets.tls_key_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(b.identity.ca_cert_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    tls.alpn_protocols = vec![b"case-ledger-sync/1".to_vec()];
    let cfg =
        quinn::ServerConfig::with_crypto(Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap()));
    quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A township under attacker control. First session: Hello with no
/// positions (so the village sends its chains, with its genuine seal),
/// then a batch holding ONE junk event at the village's tip + 1 under the
/// village's own genuine seal. Later sessions: send nothing.
async fn junk_session(conn: quinn::Connection, victim: &str, lie: bool) {
    let (mut send, mut recv) = conn.accept_bi().await.unwrap();
    let Some(Message::Hello { positions, .. }) = read_msg(&mut recv).await else { panic!("no hello") };
    let victim = NodeId::new(victim);
    if !lie {
        write_msg(&mut send, &Message::Hello { wall_ms: node::wall_clock_ms(), positions, heads: vec![] }).await;
        write_msg(&mut send, &Message::Done { batches: 0 }).await;
        while let Some(m) = read_msg(&mut recv).await {
            match m {
                Message::Batch { n, .. } => write_msg(&mut send, &Message::Ack { n, quarantined: 0, held: 0 }).await,
                Message::Done { .. } => break,
                _ => {}
            }
        }
        conn.close(0u32.into(), b"done");
        return;
    }
    write_msg(&mut send, &Message::Hello { wall_ms: node::wall_clock_ms(), positions: vec![], heads: vec![] }).await;
    let mut sent = false;
    let mut their_done = false;
    let mut acked = false;
    while let Some(m) = read_msg(&mut recv).await {
        match m {
            Message::Batch { n, segments, .. } => {
                write_msg(&mut send, &Message::Ack { n, quarantined: 0, held: 0 }).await;
                if sent {
                    continue;
                }
                if let Some(seg) =
                    segments.iter().find(|s| s.seal.origin == victim && s.seal.lane == Lane::Home(victim.clone()))
                {
                    let seal = seg.seal.clone();
                    let mut junk = seg.events.last().unwrap().clone();
                    junk.id.seq = seal.seq + 1;
                    junk.pos = seal.pos + 1;
                    junk.actor = "junk".into();
                    write_msg(
                        &mut send,
                        &Message::Batch {
                            n: 0,
                            segments: vec![Segment { events: vec![junk], seal }],
                            unreadable: vec![],
                        },
                    )
                    .await;
                    write_msg(&mut send, &Message::Done { batches: 1 }).await;
                    sent = true;
                }
            }
            Message::Ack { .. } => acked = true,
            Message::Done { .. } => their_done = true,
            _ => {}
        }
        if sent && their_done && acked {
            break;
        }
    }
    conn.close(0u32.into(), b"done");
}

/// Fix 1 bypass: check_batch's `own_diverged` only verifies the seal's
/// signature, not that the events end at it. A township replays the
/// village's own genuine seal with one junk event past its tip: the
/// village "recovers", and with the township withholding its history,
/// re-enters every case under new ids.
#[test]
fn a_genuine_seal_with_junk_events_does_not_make_a_village_renumber() {
    let county = County::new();
    county.enrol(TOWNSHIP, "township-node");
    let v = s(&county.enrol(VILLAGE, "village-node")).to_string();
    let hub_data = s(&county.hub()).to_string();
    let hub = Server::start("county-hub", &["serve", "--data", &hub_data, "--listen", "127.0.0.1:0"]);
    for i in 0..3 {
        take_case(&v, "张三", i);
    }
    ok("village-node", &["sync", "--data", &v, "--peer", &hub.addr]);
    assert_eq!(cases("county-hub", &hub_data).len(), 3);
    let tb = bundle(&county, TOWNSHIP);
    let rt = runtime();
    let ep = rt.block_on(async { server_endpoint(&tb) });
    let evil_addr = ep.local_addr().unwrap().to_string();
    let mut counts = vec![];
    for round in 0..2 {
        let ep2 = ep.clone();
        let server = rt.spawn(async move {
            let mut first = true;
            while let Ok(Some(inc)) = tokio::time::timeout(Duration::from_secs(15), ep2.accept()).await {
                let conn = inc.await.unwrap();
                junk_session(conn, VILLAGE, first).await;
                first = false;
            }
        });
        let out = run("village-node", &["sync", "--data", &v, "--peer", &evil_addr, "--json"]);
        eprintln!(
            "round {round}: exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).chars().take(1500).collect::<String>(),
            String::from_utf8_lossy(&out.stderr)
        );
        server.abort();
        let _ = run("village-node", &["sync", "--data", &v, "--peer", &hub.addr]);
        let _ = run("village-node", &["sync", "--data", &v, "--peer", &hub.addr]);
        let (at_v, at_c) = (cases("village-node", &v).len(), cases("county-hub", &hub_data).len());
        eprintln!("round {round}: cases at the village {at_v}, at the county {at_c}");
        counts.push((at_v, at_c));
    }
    assert_eq!(counts[0], (3, 3), "VULNERABLE: junk past a genuine seal duplicated cases: {counts:?}");
}

/// Vouchers are minted per unknown incarnation named by any seal: a
/// township (vouched in the GLOBAL lane, which every node holds) makes the
/// county write N global events with one unsigned batch.
#[test]
fn unsigned_seals_earn_no_vouchers() {
    let county = County::new();
    county.enrol(TOWNSHIP, "township-node");
    let v = s(&county.enrol(VILLAGE, "village-node")).to_string();
    let hub_data = s(&county.hub()).to_string();
    let hub = Server::start("county-hub", &["serve", "--data", &hub_data, "--listen", "127.0.0.1:0"]);
    ok("village-node", &["sync", "--data", &v, "--peer", &hub.addr]);
    let tb = bundle(&county, TOWNSHIP);
    let bogus_key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let n = 500u32;
    let segments: Vec<Segment> = (0..n)
        .map(|i| {
            let o = NodeId::new(format!("{TOWNSHIP}~{i:08x}"));
            let mut e = event(&o, 1, 1, 1, "*", &[], Body::Rate { level: 1, note: String::new() });
            e.lane = Lane::Global;
            Segment { events: vec![], seal: Seal::sign(&bogus_key, &e) }
        })
        .collect();
    let before = count(
        &hub_data,
        "SELECT COUNT(*) FROM events WHERE lane = (SELECT lane FROM events WHERE case_id='*' LIMIT 1)",
    );
    let (refused, secs) = send_batch(&tb, &hub.addr, segments);
    let after = count(
        &hub_data,
        "SELECT COUNT(*) FROM events WHERE lane = (SELECT lane FROM events WHERE case_id='*' LIMIT 1)",
    );
    let vouchers = count(&hub_data, "SELECT COUNT(*) FROM vouchers");
    eprintln!("one unsigned batch of {n} seals: hub global-lane events {before} -> {after}, vouchers {vouchers}, refused {refused}, {secs:.1} s");
    let out = ok_json("village-node", &["sync", "--data", &v, "--peer", &hub.addr, "--json"]);
    eprintln!("an uninvolved village then receives {} events", out["received_events"]);
    assert!(vouchers < n as i64, "VULNERABLE: {vouchers} global voucher events from one unsigned batch");
}

/// A township decision whose context covers village events the county
/// refuses (signed past the revocation cut; the township took them before
/// it heard of the revocation) is deferred at the county forever, and
/// with it every later event of the township's chain in that lane.
#[test]
fn a_revocation_cut_does_not_stall_a_townships_chain() {
    let county = County::new();
    let t = s(&county.enrol(TOWNSHIP, "township-node")).to_string();
    let v = s(&county.enrol(VILLAGE, "village-node")).to_string();
    let hub_data = s(&county.hub()).to_string();
    let hub = Server::start("county-hub", &["serve", "--data", &hub_data, "--listen", "127.0.0.1:0"]);
    let case = take_case(&v, "张三", 1);
    let other = take_case(&v, "张三", 2);
    for c in [&case, &other] {
        ok("village-node", &["case", "prereview", "--data", &v, c, "--pass", "--as", "王芳"]);
    }
    ok("village-node", &["sync", "--data", &v, "--peer", &hub.addr]);
    ok("township-node", &["sync", "--data", &t, "--peer", &hub.addr]);
    // The laptop is stolen; the thief forwards the case via the township only.
    let town = Server::start_with_env("township-node", &["serve", "--data", &t, "--listen", "127.0.0.1:0"], &[]);
    ok("village-node", &["case", "forward", "--data", &v, &case, "--as", "王芳"]);
    ok("village-node", &["sync", "--data", &v, "--peer", &town.addr]);
    drop(town);
    // Township staff accept it (their context covers the forward).
    ok("township-node", &["case", "accept", "--data", &t, &case, "--as", "乡审批"]);
    // The county revokes the village (its cut: what it held, without the forward).
    ok("county-hub", &["revoke", "--data", &hub_data, "--node", VILLAGE, "--reason", "被盗", "--as", "县管理员"]);
    for i in 0..3 {
        let out = run("township-node", &["sync", "--data", &t, "--peer", &hub.addr, "--json"]);
        let out: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        eprintln!("township sync {i}: sent {} quarantined_by_peer {} ", out["sent_events"], out["quarantined_by_peer"]);
    }
    // Later township work in the same lane (another case of that village).
    let out = run("township-node", &["case", "forward", "--data", &t, &other, "--as", "乡审批"]);
    eprintln!("township forward of other case: {:?} {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    let out = run("township-node", &["case", "accept", "--data", &t, &other, "--as", "乡审批"]);
    eprintln!("township accept of other case: {:?} {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    for _ in 0..2 {
        let out = run("township-node", &["sync", "--data", &t, "--peer", &hub.addr, "--json"]);
        eprintln!("township sync: {}", String::from_utf8_lossy(&out.stdout));
    }
    let at_t: Vec<String> = [&case, &other].iter().map(|c| show("township-node", &t, c)["state"].to_string()).collect();
    let at_c: Vec<String> =
        [&case, &other].iter().map(|c| show("county-hub", &hub_data, c)["state"].to_string()).collect();
    let tship_t = count(&t, &format!("SELECT COUNT(*) FROM events WHERE origin = '{TOWNSHIP}'"));
    let tship_c = count(&hub_data, &format!("SELECT COUNT(*) FROM events WHERE origin = '{TOWNSHIP}'"));
    eprintln!(
        "states at township {at_t:?}, at county {at_c:?}; township events held: township {tship_t}, county {tship_c}"
    );
    assert_eq!(tship_t, tship_c, "VULNERABLE: the township's chain is stalled at the county");
}
