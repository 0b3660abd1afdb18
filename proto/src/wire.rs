//! The sync message's layouts on the wire, one per format version, and the
//! conversion between them and [`Message`].
//!
//! A network of laptops that stay offline for weeks always runs several
//! releases at once, so a node speaks every format version it knows and the
//! two ends of a connection agree on the newest both know (the driver
//! offers them as TLS ALPN names, [`alpn`]).
//!
//! - **Version 1** carries each event whole (header and body inline). A
//!   node that meets a body kind it does not know cannot decode the message
//!   at all: it could only refuse the batch.
//! - **Version 2** carries each event as its header fields and its content
//!   (actor, case, context, body) as tagged bytes, the very bytes whose hash
//!   the chain covers. A receiver that does not know the content's format
//!   version (a newer release wrote it) still decodes the rest of the
//!   message, and *holds* that run of the chain for after its upgrade:
//!   nothing is quarantined, nothing refused, and the sender is told how
//!   many events wait. `prev` does not travel (the receiver rebuilds it).
//!
//! - **Version 3** sends version 2's messages, behind version 2's byte, and
//!   adds one rule to the session: a client may end its file stream
//!   without a message, leaving the file phase out (a village whose county
//!   receipt says nothing would move; `node::sync`). A server of version 2
//!   would take that for a broken stream, so only a version 3 client
//!   leaves it out, and only with a version 3 server.
//!
//! Rule for later releases: a new body kind bumps
//! [`codec::EVENT_CONTENT`]'s version for the events that use it (older
//! kinds keep the version older releases read), and a sender speaking
//! version 1 stops a chain before the first event of content version 2 or
//! more.

use crate::codec::{self, DecodeError, DecodeErrorKind, Tag};
use crate::event::{Lane, Seal};
use crate::hlc::Hlc;
use crate::ids::EventId;
use crate::sync::{Message, Positions, Segment, Unreadable};
use crate::{Event, Hash};
use serde::{Deserialize, Serialize};

/// Format versions of sync messages this release speaks, newest first.
pub const VERSIONS: [u8; 3] = [3, 2, 1];
/// The newest format version this release speaks.
pub const NEWEST: u8 = VERSIONS[0];

/// The first format version whose client may leave the file phase out.
pub const FILES_LEFT_OUT: u8 = 3;

/// The version byte messages of format `version` carry (version 3's are
/// version 2's).
pub fn message_version(version: u8) -> u8 {
    version.min(2)
}

/// The newest event content format a peer speaking sync message format
/// `version` reads: version 1 predates content versions.
pub fn content_versions(version: u8) -> u8 {
    if version <= 1 {
        1
    } else {
        codec::EVENT_CONTENT_NEWEST
    }
}

/// The TLS ALPN name of a format version.
pub fn alpn(version: u8) -> Vec<u8> {
    format!("case-ledger-sync/{version}").into_bytes()
}

/// The format version an ALPN name stands for, if this release speaks it.
pub fn version_of_alpn(name: &[u8]) -> Option<u8> {
    VERSIONS.into_iter().find(|v| alpn(*v) == name)
}

fn tag(version: u8) -> Tag {
    Tag { version, ..codec::SYNC_MESSAGE }
}

/// Encodes a message in format `version` (one of [`VERSIONS`]).
pub fn encode(msg: &Message, version: u8) -> Vec<u8> {
    match version {
        1 => codec::encode_tagged(tag(1), &V1::from(msg)),
        2 | 3 => codec::encode_tagged(tag(message_version(version)), &V2::from(msg)),
        other => panic!("sync message format version {other} is not one this release speaks"),
    }
}

/// Decodes a message of any format version this release speaks; a newer
/// one is a typed error ([`DecodeErrorKind::UnsupportedVersion`]).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    match bytes.get(1) {
        Some(1) => Ok(codec::decode_tagged::<V1>(tag(1), bytes)?.into()),
        _ => codec::decode_tagged::<V2>(tag(2), bytes)?.try_into(),
    }
}

/// Version 1: `Message` as the first release derived it. Frozen: the
/// golden-bytes tests pin it, and it must decode what that release sends.
#[derive(Serialize, Deserialize)]
enum V1 {
    Hello { wall_ms: u64, positions: Positions, heads: Vec<Seal> },
    Batch { n: u32, segments: Vec<Segment> },
    Ack { n: u32, quarantined: u32, held: u32 },
    Done { batches: u32 },
}

impl From<&Message> for V1 {
    fn from(msg: &Message) -> V1 {
        match msg.clone() {
            Message::Hello { wall_ms, positions, heads } => V1::Hello { wall_ms, positions, heads },
            Message::Batch { n, segments, .. } => V1::Batch { n, segments },
            Message::Ack { n, quarantined, held } => V1::Ack { n, quarantined, held },
            Message::Done { batches } => V1::Done { batches },
        }
    }
}

impl From<V1> for Message {
    fn from(msg: V1) -> Message {
        match msg {
            V1::Hello { wall_ms, positions, heads } => Message::Hello { wall_ms, positions, heads },
            V1::Batch { n, segments } => Message::Batch { n, segments, unreadable: vec![] },
            V1::Ack { n, quarantined, held } => Message::Ack { n, quarantined, held },
            V1::Done { batches } => Message::Done { batches },
        }
    }
}

/// Version 2: events as header fields and tagged content bytes.
#[derive(Serialize, Deserialize)]
enum V2 {
    Hello { wall_ms: u64, positions: Positions, heads: Vec<Seal> },
    Batch { n: u32, segments: Vec<V2Segment> },
    Ack { n: u32, quarantined: u32, held: u32 },
    Done { batches: u32 },
}

#[derive(Serialize, Deserialize)]
struct V2Segment {
    events: Vec<V2Event>,
    seal: Seal,
}

#[derive(Serialize, Deserialize)]
struct V2Event {
    id: EventId,
    lane: Lane,
    pos: u64,
    hlc: Hlc,
    /// `codec::EVENT_CONTENT`-tagged (actor, case, context, body).
    content: Vec<u8>,
}

impl From<&Message> for V2 {
    fn from(msg: &Message) -> V2 {
        match msg {
            Message::Hello { wall_ms, positions, heads } => {
                V2::Hello { wall_ms: *wall_ms, positions: positions.clone(), heads: heads.clone() }
            }
            Message::Batch { n, segments, .. } => V2::Batch {
                n: *n,
                segments: segments
                    .iter()
                    .map(|s| V2Segment {
                        events: s
                            .events
                            .iter()
                            .map(|e| V2Event {
                                id: e.id.clone(),
                                lane: e.lane.clone(),
                                pos: e.pos,
                                hlc: e.hlc,
                                content: e.content_bytes(),
                            })
                            .collect(),
                        seal: s.seal.clone(),
                    })
                    .collect(),
            },
            Message::Ack { n, quarantined, held } => V2::Ack { n: *n, quarantined: *quarantined, held: *held },
            Message::Done { batches } => V2::Done { batches: *batches },
        }
    }
}

impl TryFrom<V2> for Message {
    type Error = DecodeError;
    fn try_from(msg: V2) -> Result<Message, DecodeError> {
        Ok(match msg {
            V2::Hello { wall_ms, positions, heads } => Message::Hello { wall_ms, positions, heads },
            V2::Batch { n, segments: wire } => {
                let mut segments = Vec::with_capacity(wire.len());
                let mut unreadable = Vec::new();
                'segments: for V2Segment { events: wire_events, seal } in wire {
                    let mut events = Vec::with_capacity(wire_events.len());
                    for e in &wire_events {
                        match Event::decode_content(&e.content) {
                            Ok((actor, case, context, body)) => events.push(Event {
                                id: e.id.clone(),
                                lane: e.lane.clone(),
                                pos: e.pos,
                                prev: Hash::ZERO,
                                hlc: e.hlc,
                                actor,
                                case,
                                context,
                                body,
                            }),
                            Err(DecodeError { kind: DecodeErrorKind::UnsupportedVersion(v), .. })
                                if v > codec::EVENT_CONTENT_NEWEST =>
                            {
                                unreadable.push(Unreadable {
                                    origin: seal.origin.clone(),
                                    lane: seal.lane.clone(),
                                    first_pos: wire_events.first().map_or(0, |e| e.pos),
                                    events: wire_events.len() as u32,
                                    content_version: v,
                                });
                                continue 'segments;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    segments.push(Segment { events, seal });
                }
                Message::Batch { n, segments, unreadable }
            }
            V2::Ack { n, quarantined, held } => Message::Ack { n, quarantined, held },
            V2::Done { batches } => Message::Done { batches },
        })
    }
}
