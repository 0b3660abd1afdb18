//! Reading and altering a node's stored event rows as someone with the
//! disk in hand would, to show what the receivers and the store's own
//! check catch. A row (`event_rows`) keeps its header fields as columns,
//! origin, lane and case as ids into `names`, and its content at rest
//! (`Event::content_at_rest`: the content bytes without the case id the
//! row names, packed with the event dictionary, `node::at_rest`); `prev`
//! is the stored hash of the row before it in its chain. The `events`
//! view reads them with their names.

use proto::{Event, EventId, Hash, Hlc, Lane, NodeId};
use rusqlite::{params, Connection, OptionalExtension};

fn read(conn: &Connection, filter: &str, args: impl rusqlite::Params) -> Option<Event> {
    let sql = format!(
        "SELECT e.origin, e.seq, e.lane, e.pos, e.hlc_wall, e.hlc_logical, e.content,
                (SELECT p.hash FROM events p WHERE p.lane = e.lane AND p.origin = e.origin AND p.pos = e.pos - 1),
                e.case_id
         FROM events e WHERE {filter}"
    );
    conn.query_row(&sql, args, |r| {
        let prev: Option<Vec<u8>> = r.get(7)?;
        let stored: Vec<u8> = r.get(6)?;
        let content = node::at_rest::event_content(&stored).expect("a stored content unpacks");
        let case: String = r.get(8)?;
        Ok(Event::from_stored(
            EventId { origin: NodeId::new(r.get::<_, String>(0)?), seq: r.get(1)? },
            Lane::from_key(&r.get::<_, String>(2)?),
            r.get(3)?,
            prev.map_or(Hash::ZERO, |h| Hash(h.try_into().unwrap())),
            Hlc { wall_ms: r.get(4)?, logical: r.get(5)? },
            &case,
            &content,
        )
        .expect("a stored event decodes"))
    })
    .optional()
    .unwrap()
}

/// The stored event `(origin, seq)`.
pub fn stored_event(conn: &Connection, origin: &str, seq: u64) -> Event {
    read(conn, "e.origin = ?1 AND e.seq = ?2", params![origin, seq]).expect("the event is stored")
}

/// The last stored event of `origin` (highest seq).
pub fn last_stored_event(conn: &Connection, origin: &str) -> Event {
    read(conn, "e.origin = ?1 ORDER BY e.seq DESC LIMIT 1", [origin]).expect("the origin has events")
}

/// `e`'s content as a row keeps it.
fn at_rest(e: &Event) -> Vec<u8> {
    let content = e.content_bytes();
    node::at_rest::pack_event_content(&Event::content_at_rest(&content, e.case.as_str()).unwrap_or(content))
}

/// Stores `e` as a row of its chain, as the node's own code would (a
/// forger writing into a store it holds).
pub fn insert_stored_event(conn: &Connection, e: &Event) {
    conn.execute(
        "INSERT OR IGNORE INTO names (name) VALUES (?1), (?2), (?3)",
        params![e.id.origin.as_str(), e.lane.key(), e.case.as_str()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO event_rows (origin, seq, lane, pos, hash, case_no, hlc_wall, hlc_logical, content)
         VALUES ((SELECT id FROM names WHERE name = ?1), ?2, (SELECT id FROM names WHERE name = ?3), ?4, ?5,
                 (SELECT id FROM names WHERE name = ?6), ?7, ?8, ?9)",
        params![
            e.id.origin.as_str(),
            e.id.seq,
            e.lane.key(),
            e.pos,
            e.hash().0.to_vec(),
            e.case.as_str(),
            e.hlc.wall_ms,
            e.hlc.logical,
            at_rest(e)
        ],
    )
    .unwrap();
}

/// Replaces a stored event by `altered` (same id and position) and stores
/// fresh hashes for it and every later event of its chain, so that each
/// row still matches its stored hash: only the chain's end no longer
/// matches its origin's seal.
pub fn rewrite_stored_event(conn: &Connection, altered: &Event) {
    let (origin, lane) = (altered.id.origin.as_str(), altered.lane.key());
    conn.execute(
        "UPDATE event_rows SET content = ?1, hash = ?2 WHERE origin = (SELECT id FROM names WHERE name = ?3) AND seq = ?4",
        params![at_rest(altered), altered.hash().0.to_vec(), origin, altered.id.seq],
    )
    .unwrap();
    let mut pos = altered.pos + 1;
    while let Some(e) = read(conn, "e.lane = ?1 AND e.origin = ?2 AND e.pos = ?3", params![lane, origin, pos]) {
        conn.execute(
            "UPDATE event_rows SET hash = ?1 WHERE origin = (SELECT id FROM names WHERE name = ?2) AND seq = ?3",
            params![e.hash().0.to_vec(), origin, e.id.seq],
        )
        .unwrap();
        pos += 1;
    }
}
