//! Framing: length-prefixed, zstd-compressed messages on one QUIC stream,
//! read in chunks with bounded buffers, and lost connections in words.

use super::*;

/// What a lost connection means, in words for the staff at the laptop.
pub(super) fn explain(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match e {
        E::TimedOut => format!(
            "the peer stopped answering (nothing heard for {} s): it may have stopped, or the network is down",
            IDLE_TIMEOUT.as_secs()
        ),
        E::ApplicationClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            if reason.is_empty() {
                "the peer closed the connection".into()
            } else {
                format!("the peer closed the connection: {reason}")
            }
        }
        E::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {
            "the peer refused the connection: it is serving as many connections as it can; try again shortly".into()
        }
        E::Reset => "the peer restarted and no longer knows this connection".into(),
        other => format!("the connection failed: {other}"),
    }
}

/// A lost connection as a typed error: the peer's close code says why
/// (see `close`).
pub(super) fn peer_error(e: &quinn::ConnectionError) -> PeerError {
    use quinn::ConnectionError as E;
    let kind = match e {
        E::ApplicationClosed(c) => match u32::try_from(c.error_code.into_inner()) {
            Ok(close::NOT_ADMITTED) => PeerErrorKind::NotAdmitted,
            Ok(close::BUSY) => PeerErrorKind::Busy,
            Ok(close::TOO_SLOW) => PeerErrorKind::TooSlow,
            Ok(close::FAILED) => PeerErrorKind::Protocol,
            _ => PeerErrorKind::Lost,
        },
        E::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => PeerErrorKind::Busy,
        _ => PeerErrorKind::Lost,
    };
    PeerError { kind, message: explain(e) }
}

/// An error of `kind`, in words.
pub(super) fn peer(kind: PeerErrorKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(PeerError { kind, message: message.into() })
}

pub(super) fn read_error(e: quinn::ReadError) -> anyhow::Error {
    match e {
        quinn::ReadError::ConnectionLost(c) => peer_error(&c).into(),
        other => peer(PeerErrorKind::Lost, format!("reading from the peer failed: {other}")),
    }
}

pub(super) fn write_error(e: quinn::WriteError) -> anyhow::Error {
    match e {
        quinn::WriteError::ConnectionLost(c) => peer_error(&c).into(),
        other => peer(PeerErrorKind::Lost, format!("sending to the peer failed: {other}")),
    }
}

/// Encodes a message, refusing one the peer would refuse (an honest batch
/// never comes near the limits).
fn encode(msg: &Message, wire: u8) -> Result<Vec<u8>> {
    let raw = msg.encode_as(wire);
    if raw.len() > MAX_RAW_FRAME {
        bail!("a message of {} bytes is over the {MAX_RAW_FRAME}-byte frame limit", raw.len());
    }
    Ok(raw)
}

/// Compresses an encoded message into a frame body.
fn compress(raw: &[u8]) -> Result<Vec<u8>> {
    let packed = crate::at_rest::compress(raw);
    if packed.len() > MAX_FRAME {
        bail!("a message of {} compressed bytes is over the {MAX_FRAME}-byte frame limit", packed.len());
    }
    Ok(packed)
}

pub(super) async fn write_frame(send: &mut quinn::SendStream, msg: &Message, wire: u8) -> Result<u64> {
    let packed = match msg {
        Message::Batch { .. } => block(|| compress(&encode(msg, wire)?))?,
        // The rest are small (a Hello lists a few heads a chain): encoded
        // in place, and compressed in place unless large.
        _ => {
            let raw = encode(msg, wire)?;
            sized(raw.len(), || compress(&raw))?
        }
    };
    send.write_all(&(packed.len() as u32).to_be_bytes()).await.map_err(write_error)?;
    send.write_all(&packed).await.map_err(write_error)?;
    Ok(4 + packed.len() as u64)
}

/// Decompresses a frame body, never holding more than [`MAX_RAW_FRAME`]
/// bytes of output however much the frame claims or expands to, nor more
/// than [`most_output`] for the bytes it came in.
pub fn unpack(packed: &[u8]) -> Result<Vec<u8>> {
    // A frame that states its size (ours always do) is decompressed in one
    // call by this thread's decompression context, into exactly that room:
    // a frame whose content is larger than it states fails there.
    let most = most_output(packed.len());
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(packed) {
        if size > most as u64 {
            bail!(
                "the peer sent a frame of {} bytes that says it expands to {size}, beyond any honest message",
                packed.len()
            );
        }
        if let Some(room) = one_shot_room(packed.len(), size) {
            return crate::at_rest::decompress(packed, room)
                .map_err(|e| anyhow!("the peer sent a frame that does not decompress: {e}"));
        }
    }
    // Otherwise by the stream, in steps, the buffer never more than twice
    // what has come out, and never past `most`.
    let mut decoder = zstd::stream::read::Decoder::with_buffer(packed)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    let mut raw = Vec::new();
    decoder
        .take(most as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| anyhow!("the peer sent a frame that does not decompress: {e}"))?;
    if raw.len() > most {
        bail!("the peer sent a frame of {} bytes that expands beyond any honest message", packed.len());
    }
    Ok(raw)
}

/// The most a frame of `packed` bytes may expand to: [`MAX_RAW_FRAME`],
/// and at most 1,024 times its size above 1 MiB. Encoded events carry
/// signatures and hashes and compress a few times over; a frame that
/// expands a thousandfold is built to make the receiver hold memory (a
/// 1 KiB frame of zeros would otherwise take 32 MiB, and 64 MiB of room).
fn most_output(packed: usize) -> usize {
    const FLOOR: usize = 1024 * 1024;
    MAX_RAW_FRAME.min(packed.saturating_mul(1024).max(FLOOR))
}

/// How much room a frame of `packed` bytes that states `declared` bytes
/// of content is decompressed into at once: its stated size, unless that
/// is more than an honest frame expands to (encoded events compress a few
/// times over), when it is decompressed by the stream instead, whose
/// buffer grows with what the frame really holds: a 20-byte frame stating
/// 1 MiB does not make the receiver reserve 1 MiB.
fn one_shot_room(packed: usize, declared: u64) -> Option<usize> {
    const MOST_EXPANSION: u64 = 64;
    (declared <= (packed as u64).saturating_mul(MOST_EXPANSION).max(64 * 1024)).then_some(declared as usize)
}

/// Reads one frame. The buffer grows with the bytes that arrive, so a
/// peer that declares a large frame and sends little costs little.
/// Reads one frame, in the format version `wire` the connection agreed on
/// (a message in another is a protocol violation).
pub(super) async fn read_frame(recv: &mut quinn::RecvStream, wire: u8) -> Result<Option<(Message, u64)>> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => {
            return Err(peer(PeerErrorKind::Protocol, "the peer ended the stream inside a frame header"))
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(read_error(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(peer(
            PeerErrorKind::Protocol,
            format!("the peer announced a frame of {len} bytes, over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut buf = Vec::new();
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await.map_err(read_error)? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => {
                return Err(peer(
                    PeerErrorKind::Protocol,
                    format!("the peer ended the stream inside a frame ({} of {len} bytes)", buf.len()),
                ))
            }
        }
    }
    // Decompressing and decoding take what the frame expands to (the size
    // its first zstd frame states: unknown counts as large) and what it
    // holds (more frames may follow the first, each read in turn).
    let raw_len = zstd::zstd_safe::get_frame_content_size(&buf).ok().flatten().map_or(usize::MAX, |n| n as usize);
    let msg = sized(raw_len.max(len), || -> Result<Message> {
        let raw = unpack(&buf)?;
        drop(buf);
        let expected = proto::wire::message_version(wire);
        if raw.get(1).is_some_and(|v| *v != expected) {
            bail!(
                "the peer sent a message of version {}, not version {expected} of the sync format {wire} agreed on",
                raw[1]
            );
        }
        Ok(Message::decode(&raw)?)
    })
    .map_err(|e| peer(PeerErrorKind::Protocol, format!("{e:#}")))?;
    Ok(Some((msg, 4 + len as u64)))
}

/// The peer's messages, read by a task of their own (so that reading
/// overlaps checking and storing) and handed over one at a time: at most
/// one decoded message waits while another is read. The task ends with the
/// stream or when this is dropped.
pub(super) struct Frames {
    pub(super) rx: tokio::sync::mpsc::Receiver<Result<(Message, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Frames {
    pub(super) fn spawn(mut recv: quinn::RecvStream, wire: u8) -> Frames {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let task = spawn_in_session(async move {
            loop {
                // The stream's end closes the channel: `next` tells a
                // reader still waiting (a session that ends as it should
                // reads no further, and makes no error).
                let item = match read_frame(&mut recv, wire).await {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    break;
                }
            }
        });
        Frames { rx, task }
    }

    /// The next message, waiting at most `deadline`.
    pub(super) async fn next(&mut self, deadline: Duration, what: &str) -> Result<(Message, u64)> {
        match tokio::time::timeout(deadline, self.rx.recv()).await {
            Err(_) => {
                Err(peer(PeerErrorKind::TooSlow, format!("no {what} from the peer within {} s", deadline.as_secs())))
            }
            Ok(None) => Err(peer(PeerErrorKind::Lost, "the peer ended the stream")),
            Ok(Some(r)) => r,
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame is decompressed at once into the room it states only when
    /// that is plausible for its size; otherwise by the stream, whose
    /// buffer grows with what the frame really holds. Both give the same
    /// message; a lying frame is refused either way.
    #[test]
    fn a_small_frame_stating_a_large_size_reserves_no_room_for_it() {
        assert_eq!(one_shot_room(20, 1024 * 1024), None, "20 bytes stating 1 MiB");
        assert_eq!(one_shot_room(20, 1_000), Some(1_000), "small frames always at once");
        assert_eq!(one_shot_room(100_000, 1_000_000), Some(1_000_000), "an honest batch at once");
        // Repetitive content (beyond the plausible ratio for one go, within
        // what a frame may expand to) still decompresses, by the stream.
        let raw = vec![7u8; 1024 * 1024];
        let packed = zstd::bulk::compress(&raw, 3).unwrap();
        assert!(one_shot_room(packed.len(), raw.len() as u64).is_none());
        assert_eq!(unpack(&packed).unwrap(), raw);
        // A frame cut short of what it states is refused.
        let mut cut = zstd::bulk::compress(&[1u8; 1000], 3).unwrap();
        cut.truncate(cut.len() - 1);
        assert!(unpack(&cut).is_err());
    }

    /// A kilobyte that expands to 32 MiB (zeros, with or without its size
    /// stated) is refused once past what its size allows, not held.
    #[test]
    fn a_frame_expanding_a_thousandfold_is_refused() {
        let zeros = vec![0u8; 32 * 1024 * 1024];
        let stated = zstd::bulk::compress(&zeros, 3).unwrap();
        assert!(stated.len() < 4096, "{}", stated.len());
        let err = unpack(&stated).unwrap_err();
        assert!(format!("{err:#}").contains("beyond any honest message"), "{err:#}");
        let mut unstated = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut unstated, 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
        enc.finish().unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&unstated).ok().flatten(), None);
        let err = unpack(&unstated).unwrap_err();
        assert!(format!("{err:#}").contains("beyond any honest message"), "{err:#}");
        // What such a frame may expand to is still accepted.
        let mb = zstd::bulk::compress(&zeros[..1024 * 1024], 3).unwrap();
        assert_eq!(unpack(&mb).unwrap().len(), 1024 * 1024);
    }
}
