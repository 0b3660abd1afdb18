// The peer: PouchDB 9 clients (memory adapter) replicating to
// express-pouchdb on loopback, through a TCP proxy that counts bytes.
// Prints one JSON line per phase.
//
// node peer.js --villages 293 --cases 20 --changes 4 [--noop] [--delay-ms 0]
'use strict';
const express = require('express');
const net = require('net');
const PouchDB = require('pouchdb').plugin(require('pouchdb-adapter-memory'));

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf('--' + name);
  return i >= 0 ? args[i + 1] : def;
};
const VILLAGES = +opt('villages', 293);
const CASES = +opt('cases', 20);
const CHANGES = +opt('changes', 4);
const CONCURRENCY = +opt('concurrency', 24);
const DELAY_MS = +opt('delay-ms', 0); // one-way delay added per chunk by the proxy
const KBPS = +opt('kbps', 0); // bandwidth cap of the proxy, each way (0: none)
const ATTACHMENTS = +opt('attachments', 0); // files per case, as attachments
const ATTACHMENT_KB = +opt('attachment-kb', 500);
const CUT_AT = +opt('cut-at', 0); // cut every connection once this fraction of the upload passed, once

let peakRss = 0;
setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 20).unref();

const ServerDB = PouchDB.defaults({ adapter: 'memory' });
let requests = 0;

async function main() {
  const app = express();
  app.use((req, res, next) => { requests++; next(); });
  app.use('/', require('express-pouchdb')(ServerDB, { mode: 'minimumForPouchDB', logPath: '/dev/null' }));
  const server = await new Promise((ok) => { const s = app.listen(0, '127.0.0.1', () => ok(s)); });
  // A day's attachments over a slow link take minutes in one request: no
  // server-side request time limit (Node's default of 300 s cut it).
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  const target = server.address().port;

  // Byte-counting proxy (optionally delaying each chunk).
  let up = 0, down = 0;
  // Equal delays keep order (timers of equal delay run first in, first out);
  // the end of a stream travels with the same delay as its data. With a
  // bandwidth cap, each direction serialises its chunks at the cap, in order.
  const later = (f) => (DELAY_MS ? setTimeout(f, DELAY_MS) : f());
  const freeAt = { up: 0, down: 0 };
  const capped = (dir, n, f) => {
    if (!KBPS) return later(f);
    const now = Date.now();
    const start = Math.max(now, freeAt[dir]);
    freeAt[dir] = start + (n * 8) / KBPS; // ms at KBPS kbit/s
    setTimeout(f, freeAt[dir] - now + DELAY_MS);
  };
  const sockets = new Set();
  let cutDone = false;
  const proxy = net.createServer((c) => {
    const s = net.connect(target, '127.0.0.1');
    sockets.add(c); sockets.add(s);
    const pipe = (from, to, dir, count) => {
      from.on('data', (d) => { count(d.length); capped(dir, d.length, () => { if (!to.destroyed) to.write(d); }); });
      from.on('end', () => capped(dir, 0, () => to.end()));
    };
    pipe(c, s, 'up', (n) => {
      up += n;
      if (CUT_AT && !cutDone && TOTAL_UP && up >= CUT_AT * TOTAL_UP) {
        cutDone = true;
        for (const x of sockets) x.destroy();
      }
    });
    pipe(s, c, 'down', (n) => { down += n; });
    c.on('error', () => s.destroy()); s.on('error', () => c.destroy());
    c.on('close', () => sockets.delete(c)); s.on('close', () => sockets.delete(s));
  });
  let TOTAL_UP = 0;
  await new Promise((ok) => proxy.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${proxy.address().port}/county`;
  await new ServerDB('county').info();

  // Local databases: the same cases and the same number of changes per case.
  const locals = [];
  for (let v = 0; v < VILLAGES; v++) {
    const db = new PouchDB(`village${v}`, { adapter: 'memory' });
    for (let c = 0; c < CASES; c++) {
      let doc = {
        _id: `v${v}-case${c}`, item: 'V001', item_name: '城乡居民基本医疗保险参保登记',
        applicant: '张伟', id_number: { masked: '511421********1234', lookup: 'x'.repeat(64), sealed: 'y'.repeat(60) },
        phone: { masked: '138****1234', lookup: 'x'.repeat(64), sealed: 'y'.repeat(50) },
        materials: ['居民身份证'], state: 'received', history: [],
      };
      if (ATTACHMENTS) {
        doc._attachments = {};
        for (let a = 0; a < ATTACHMENTS; a++) {
          const bytes = require('crypto').randomBytes(ATTACHMENT_KB * 1024);
          doc._attachments[`file${a}.pdf`] = { content_type: 'application/pdf', data: bytes };
        }
      }
      const r = await db.put(doc);
      doc._rev = r.rev;
      for (let k = 1; k < CHANGES; k++) {
        doc.state = ['pre_reviewed', 'forwarded', 'accepted', 'approved', 'issued', 'closed'][(k - 1) % 6];
        doc.history.push({ actor: '王芳', step: doc.state, at: Date.now() });
        const r2 = await db.put(doc);
        doc._rev = r2.rev;
      }
    }
    locals.push(db);
  }

  async function replicateAll() {
    const started = process.hrtime.bigint();
    const [u0, d0, q0] = [up, down, requests];
    const cpu0 = process.cpuUsage();
    let next = 0, docs = 0;
    const sessions = [];
    async function worker() {
      while (next < locals.length) {
        const db = locals[next++];
        const t = process.hrtime.bigint();
        const res = await db.replicate.to(url);
        sessions.push(Number(process.hrtime.bigint() - t) / 1e9);
        docs += res.docs_written;
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    sessions.sort((a, b) => a - b);
    const pct = (q) => sessions[Math.min(sessions.length - 1, Math.floor(q * sessions.length))];
    return {
      seconds, bytes_up: up - u0, bytes_down: down - d0, requests: requests - q0, docs_written: docs,
      session_p50: pct(0.5), session_p99: pct(0.99),
      // Clients and server share this one process.
      cpu_seconds: (cpu.user + cpu.system) / 1e6,
    };
  }

  if (CUT_AT) {
    // What an uncut upload takes, to know where half is: the attachments'
    // bytes (a lower bound of what goes up).
    TOTAL_UP = VILLAGES * CASES * ATTACHMENTS * ATTACHMENT_KB * 1024;
    let cutRun = null;
    const before = up;
    try { cutRun = await replicateAll(); } catch (e) { cutRun = { error: String(e), bytes_up: up - before }; }
    const resumed = await replicateAll();
    console.log(JSON.stringify({ phase: 'cut', cut_at: CUT_AT, first: cutRun, resumed, peak_rss: peakRss }));
    server.close(); proxy.close();
    process.exit(0);
  }
  const first = await replicateAll();
  console.log(JSON.stringify({ phase: 'push', villages: VILLAGES, cases: CASES, changes: CHANGES, ...first, peak_rss: peakRss }));
  if (args.includes('--noop')) {
    const again = await replicateAll();
    console.log(JSON.stringify({ phase: 'noop', villages: VILLAGES, ...again, peak_rss: peakRss }));
  }
  server.close(); proxy.close();
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
