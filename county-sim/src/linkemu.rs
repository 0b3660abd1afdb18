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
        let up = Arc::new(Mutex::new(Pipe {
            params,
            free_at: Instant::now(),
            last_out: Instant::now(),
            rng: StdRng::seed_from_u64(seed),
        }));
        let down = Arc::new(Mutex::new(Pipe {
            params,
            free_at: Instant::now(),
            last_out: Instant::now(),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        }));
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
        Ok(LinkEmulator { local_addr, cut, counters, tasks: vec![relay] })
    }

    /// Cuts the link (every packet is lost) or restores it.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

fn forward(
    pipe: &Mutex<Pipe>,
    cut: &AtomicBool,
    counters: &LinkCounters,
    packet: Vec<u8>,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
) {
    counters.packets.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(packet.len() as u64, Ordering::Relaxed);
    let when = if cut.load(Ordering::SeqCst) { None } else { pipe.lock().expect("pipe").schedule(packet.len()) };
    let Some(when) = when else {
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep_until(when).await;
        let _ = socket.send_to(&packet, to).await;
    });
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
