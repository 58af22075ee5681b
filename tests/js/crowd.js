// N of Twilio's own twilio-sync SyncClients in this one process, each subscribed to one Document:
// the subscribers of tests/bench/sdk_fanout.py. Protocol: JSON lines.
//   stdin  {"sid": "ET…", "tokens": [...]}        open one SyncClient per token, then the Document
//   stdout {"ready": n, "first": s, "last": s}     all subscribed (monotonic seconds, as Python's)
//   stdin  {"op": "start"}                         a write phase begins: sequence numbers restart at 1
//   stdin  {"op": "report", "expected": E}         wait until every client's Document shows write E
//                                                  (or nothing arrived for 10 s), then answer:
//   stdout {"total", "last", "lat", "missed", "dup", "disorder", "skipped"}
// Each write's data is {"t": wall-clock send time, "n": sequence number, …} (fanout.write_loop). A
// client that sees n at or below the last it saw counts a duplicate or disorder; one that jumps
// ahead counts the states skipped (the server conflates a backed-up Document to its latest state);
// one that never reaches E is missed.
'use strict';
const readline = require('readline');
const { SyncClient } = require('twilio-sync');

const URL_BASE = process.env.SYNC_URL;
const WS_URL = URL_BASE.replace(/^http/, 'ws') + '/v3/wsconnect';
const now = () => Number(process.hrtime.bigint()) / 1e9; // CLOCK_MONOTONIC, like time.monotonic()
const out = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');

const subs = [];
let phase = { total: 0, last: 0, lat: [], dup: 0, disorder: 0, skipped: 0, at: 0 };

function fresh() {
  for (const s of subs) s.last = 0;
  phase = { total: 0, last: 0, lat: [], dup: 0, disorder: 0, skipped: 0, at: now() };
}

async function subscribe(token, sid) {
  const client = new SyncClient(token, { twilsock: { uri: WS_URL }, cdsUri: URL_BASE, logLevel: 'silent' });
  const doc = await client.document({ id: sid, mode: 'open_existing' });
  const sub = { client, last: 0 };
  await new Promise((resolve) => doc.on('_subscriptionStateChanged', (state) => state === 'established' && resolve()));
  doc.on('updated', ({ data }) => {
    const t = now();
    phase.total += 1;
    phase.last = t;
    phase.at = t;
    phase.lat.push(Date.now() - data.t * 1000);
    if (data.n === sub.last) phase.dup += 1;
    else if (data.n < sub.last) phase.disorder += 1;
    else {
      phase.skipped += data.n - sub.last - 1;
      sub.last = data.n;
    }
  });
  subs.push(sub);
}

async function report(expected) {
  while (subs.some((s) => s.last < expected) && now() - phase.at < 10) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const { total, last, lat, dup, disorder, skipped } = phase;
  out({ total, last, lat, dup, disorder, skipped, missed: subs.filter((s) => s.last < expected).length });
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
  const cmd = JSON.parse(line);
  if (cmd.sid) {
    const first = now();
    await Promise.all(cmd.tokens.map((token) => subscribe(token, cmd.sid)));
    out({ ready: subs.length, first, last: now() });
  } else if (cmd.op === 'start') {
    fresh();
  } else if (cmd.op === 'report') {
    await report(cmd.expected);
  }
});
lines.on('close', async () => {
  await Promise.all(subs.map((s) => s.client.shutdown().catch(() => {})));
  process.exit(0);
});
