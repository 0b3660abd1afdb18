//! A user-space link emulator: a UDP relay that adds one-way delay, jitter,
//! random loss, a bandwidth cap and cut-offs, in both directions. The
//! kernel's netem is not available on the machines this runs on, so slow,
//! lossy rural links are emulated here, in front of a node's real QUIC port.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The character of the emulated link (applied to each direction).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way delay (half the round-trip time).
    pub delay: Duration,
    /// Uniform extra delay in `0..=jitter` per packet.
    pub jitter: Duration,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Bits per second; 0 is unlimited.
    pub bandwidth_bps: u64,
}

impl LinkParams {
    /// A rural village link: 300 ms RTT, 1 Mbit/s, 3 % loss.
    pub fn rural() -> LinkParams {
        LinkParams {
            delay: Duration::from_millis(150),
            jitter: Duration::from_millis(20),
            loss: 0.03,
            bandwidth_bps: 1_000_000,
        }
    }
}

/// Counters of a running emulator.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped: AtomicU64,
}

/// A running emulator; dropping it stops the relay.
pub struct LinkEmulator {
    pub local_addr: SocketAddr,
    cut: Arc<AtomicBool>,
    pub counters: Arc<LinkCounters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One direction of the link: its schedule, and the one task that puts
/// its packets on the far end's socket, in the order they were scheduled.
/// (A task per packet, each sleeping until its time, reordered packets due
/// within one tick of the runtime's timer: QUIC drops a 1-RTT packet that
/// overtakes the handshake's last one, so a session waited for a
/// retransmission that no physical path would have caused.)
struct Direction {
    pipe: Mutex<Pipe>,
    wire: mpsc::UnboundedSender<Delivery>,
}

/// A packet due at the far end of a direction.
struct Delivery {
    when: Instant,
    packet: Vec<u8>,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
}

impl Direction {
    /// A direction and the task that delivers its packets.
    fn start(pipe: Pipe) -> (Arc<Direction>, tokio::task::JoinHandle<()>) {
        let (wire, mut due) = mpsc::unbounded_channel::<Delivery>();
        let task = tokio::spawn(async move {
            while let Some(d) = due.recv().await {
                tokio::time::sleep_until(d.when).await;
                let _ = d.socket.send_to(&d.packet, d.to).await;
            }
        });
        (Arc::new(Direction { pipe: Mutex::new(pipe), wire }), task)
    }
}

/// One direction of the link: serialises packets at the bandwidth cap, then
/// delays, jitters or drops them.
struct Pipe {
    params: LinkParams,
    free_at: Instant,
    /// When the last packet leaves the far end: packets of one direction
    /// arrive in the order they were sent (jitter delays, never reorders,
    /// as on one physical path).
    last_out: Instant,
    rng: StdRng,
}

impl Pipe {
    /// When a packet of `len` bytes entering now arrives, or `None` if lost.
    fn schedule(&mut self, len: usize) -> Option<Instant> {
        let now = Instant::now();
        let start = self.free_at.max(now);
        // Time on the wire at the bandwidth cap; no cap (0) means none.
        let wire = Duration::from_nanos(
            (len as u64 * 8).saturating_mul(1_000_000_000).checked_div(self.params.bandwidth_bps).unwrap_or(0),
        );
        self.free_at = start + wire;
        if self.rng.gen_bool(self.params.loss.clamp(0.0, 1.0)) {
            return None;
        }
        let jitter = if self.params.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(self.rng.gen_range(0..=self.params.jitter.as_micros() as u64))
        };
        let out = (self.free_at + self.params.delay + jitter).max(self.last_out);
        self.last_out = out;
        Some(out)
    }
}

impl LinkEmulator {
    /// Relays datagrams arriving at `listen` to `target` and the replies
    /// back, through the emulated link. `seed` makes loss and jitter
    /// repeatable.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        params: LinkParams,
        seed: u64,
    ) -> std::io::Result<LinkEmulator> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let local_addr = front.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(LinkCounters::default());
        let pipe =
            |seed| Pipe { params, free_at: Instant::now(), last_out: Instant::now(), rng: StdRng::seed_from_u64(seed) };
        let (up, up_wire) = Direction::start(pipe(seed));
        let (down, down_wire) = Direction::start(pipe(seed ^ 0x5eed));
        // One upstream socket per client address, so the target sees each
        // client as its own peer.
        let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let (front2, cut2, counters2) = (front.clone(), cut.clone(), counters.clone());
        let relay = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, client)) = front2.recv_from(&mut buf).await else { break };
                let existing = clients.lock().expect("client map").get(&client).cloned();
                let upstream = match existing {
                    Some(s) => s,
                    None => {
                        let bind: SocketAddr =
                            if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("addr");
                        let Ok(sock) = UdpSocket::bind(bind).await else { continue };
                        let sock = Arc::new(sock);
                        clients.lock().expect("client map").insert(client, sock.clone());
                        // Replies from the target travel back down the link.
                        let (sock2, front3, down2, cut3, counters3) =
                            (sock.clone(), front2.clone(), down.clone(), cut2.clone(), counters2.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok((n, _)) = sock2.recv_from(&mut buf).await {
                                forward(&down2, &cut3, &counters3, buf[..n].to_vec(), front3.clone(), client);
                            }
                        });
                        sock
                    }
                };
                forward(&up, &cut2, &counters2, buf[..n].to_vec(), upstream, target);
            }
        });
        Ok(LinkEmulator { local_addr, cut, counters, tasks: vec![relay, up_wire, down_wire] })
    }

    /// Cuts the link (every packet is lost) or restores it.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

fn forward(
    direction: &Direction,
    cut: &AtomicBool,
    counters: &LinkCounters,
    packet: Vec<u8>,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
) {
    counters.packets.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(packet.len() as u64, Ordering::Relaxed);
    if cut.load(Ordering::SeqCst) {
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // Scheduled and queued under one lock: the queue's order is the
    // schedule's, whichever client's task forwards.
    let mut pipe = direction.pipe.lock().expect("pipe");
    match pipe.schedule(packet.len()) {
        Some(when) => {
            let _ = direction.wire.send(Delivery { when, packet, socket, to });
        }
        None => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_with_delay_loss_and_cut() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(&buf[..n], from).await;
            }
        });
        let params =
            LinkParams { delay: Duration::from_millis(40), jitter: Duration::ZERO, loss: 0.0, bandwidth_bps: 0 };
        let link = LinkEmulator::start("127.0.0.1:0".parse().unwrap(), server_addr, params, 1).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = std::time::Instant::now();
        client.send_to(b"ping", link.local_addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert!(started.elapsed() >= Duration::from_millis(80), "round trip took {:?}", started.elapsed());

        link.set_cut(true);
        client.send_to(b"lost", link.local_addr).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await.is_err());
        assert!(link.counters.dropped.load(Ordering::Relaxed) >= 1);
    }

    /// A burst sent back to back arrives in the order it was sent, as on
    /// one physical path (the handshake's last packet and the first
    /// request behind it, sent within a millisecond).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_arrives_in_the_order_it_was_sent() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let params =
            LinkParams { delay: Duration::from_millis(20), jitter: Duration::ZERO, loss: 0.0, bandwidth_bps: 0 };
        let link = LinkEmulator::start("127.0.0.1:0".parse().unwrap(), server_addr, params, 1).await.unwrap();
        // Read as they come; a datagram the loopback's buffers drop only
        // shortens the sequence checked.
        let received = tokio::spawn(async move {
            let (mut got, mut buf) = (Vec::new(), [0u8; 16]);
            while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(1), server.recv_from(&mut buf)).await {
                got.push(u32::from_be_bytes(buf[..n].try_into().unwrap()));
            }
            got
        });
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        const N: u32 = 500;
        for i in 0..N {
            client.send_to(&i.to_be_bytes(), link.local_addr).await.unwrap();
        }
        let got = received.await.unwrap();
        assert!(got.len() > N as usize / 2, "{} of {N} arrived", got.len());
        let out_of_order = got.windows(2).filter(|w| w[0] > w[1]).count();
        assert_eq!(out_of_order, 0, "{out_of_order} packets overtook the one before");
    }

    #[test]
    fn bandwidth_cap_spaces_packets() {
        let mut pipe = Pipe {
            params: LinkParams { delay: Duration::ZERO, jitter: Duration::ZERO, loss: 0.0, bandwidth_bps: 8_000 },
            free_at: Instant::now(),
            last_out: Instant::now(),
            rng: StdRng::seed_from_u64(1),
        };
        let a = pipe.schedule(1000).unwrap();
        let b = pipe.schedule(1000).unwrap();
        // 1000 bytes at 8 kbit/s take one second.
        assert!(b - a >= Duration::from_millis(999), "{:?}", b - a);
    }

    /// Jitter delays packets but never reorders them (one physical path).
    #[test]
    fn jitter_keeps_packets_in_order() {
        let mut pipe = Pipe {
            params: LinkParams {
                delay: Duration::from_millis(50),
                jitter: Duration::from_millis(40),
                loss: 0.0,
                bandwidth_bps: 0,
            },
            free_at: Instant::now(),
            last_out: Instant::now(),
            rng: StdRng::seed_from_u64(3),
        };
        let times: Vec<Instant> = (0..200).map(|_| pipe.schedule(1200).unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}
