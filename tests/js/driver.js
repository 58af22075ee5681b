// Drives Twilio's own twilio-sync SDK (pinned in package.json) for the Python tests.
// Protocol: one JSON command per stdin line, one JSON message per stdout line.
//   {"id": N, "op": "client", "name": "a", "token": "..."}                      create a SyncClient
//   {"id": N, "op": "open", "client": "a", "kind": "document|list|map|stream", "arg": ..., "as": "d"}
//   {"id": N, "op": "call", "obj": "d", "method": "set", "args": [...], "fn": "js body", "as": "p"}
//   {"id": N, "op": "client_call", "client": "a", "method": "updateToken", "args": [...]}
//   {"id": N, "op": "close", "client": "a"}                                     client.shutdown()
// Answers {"id": N, "ok": true, "result": ...} or {"id": N, "ok": false, "error": {...}}; every SDK
// event of every client and object arrives as {"event": name, "source": name, "args": [...]}.
'use strict';
const readline = require('readline');
const { SyncClient } = require('twilio-sync');

const URL_BASE = process.env.SYNC_URL; // e.g. http://127.0.0.1:8080
const WS_URL = URL_BASE.replace(/^http/, 'ws') + '/v3/wsconnect';
const clients = {};
const objects = {};

function out(msg) {
  process.stdout.write(JSON.stringify(msg) + '\n');
}

function plain(value) {
  if (value === null || value === undefined) return value ?? null;
  if (Array.isArray(value)) return value.map(plain);
  if (value instanceof Date) return value.toISOString();
  if (typeof value !== 'object') return value;
  if (value.items !== undefined && typeof value.hasNextPage === 'boolean') {
    return { items: value.items.map(plain), hasNextPage: value.hasNextPage, hasPrevPage: value.hasPrevPage };
  }
  const ctor = value.constructor && value.constructor.name;
  if (ctor === 'SyncDocument') {
    return { sid: value.sid, uniqueName: value.uniqueName, data: value.data, revision: value.revision };
  }
  if (ctor === 'SyncMapItem') {
    return { key: value.key, data: value.data, revision: value.revision, dateExpires: plain(value.dateExpires) };
  }
  if (ctor === 'SyncListItem') {
    return { index: value.index, data: value.data, revision: value.revision, dateExpires: plain(value.dateExpires) };
  }
  if (ctor === 'SyncList' || ctor === 'SyncMap' || ctor === 'SyncStream') {
    return { sid: value.sid, uniqueName: value.uniqueName };
  }
  const result = {};
  for (const [k, v] of Object.entries(value)) result[k] = plain(v);
  return result;
}

function errorOf(e) {
  return { message: String(e && e.message), status: e && e.status, code: e && e.code };
}

const OBJECT_EVENTS = [
  'updated', 'removed', 'itemAdded', 'itemUpdated', 'itemRemoved', 'messagePublished', '_subscriptionStateChanged',
];
const CLIENT_EVENTS = ['connectionStateChanged', 'connectionError', 'tokenAboutToExpire', 'tokenExpired'];

function watch(name, obj, events) {
  for (const ev of events) obj.on(ev, (...args) => out({ event: ev, source: name, args: args.map(plain) }));
}

async function run(cmd) {
  switch (cmd.op) {
    case 'client': {
      const client = new SyncClient(cmd.token, { twilsock: { uri: WS_URL }, cdsUri: URL_BASE, ...(cmd.options || {}) });
      clients[cmd.name] = client;
      watch(cmd.name, client, CLIENT_EVENTS);
      return null;
    }
    case 'open': {
      const obj = await clients[cmd.client][cmd.kind](cmd.arg);
      objects[cmd.as] = obj;
      watch(cmd.as, obj, OBJECT_EVENTS);
      return plain(obj);
    }
    case 'call': {
      const target = objects[cmd.obj];
      const args = (cmd.args || []).slice();
      if (cmd.fn) args.splice(cmd.fnAt ?? args.length, 0, new Function('value', cmd.fn));
      const result = await target[cmd.method](...args);
      if (cmd.as) objects[cmd.as] = result;
      return plain(result);
    }
    case 'client_call': {
      const result = await clients[cmd.client][cmd.method](...(cmd.args || []));
      return plain(result);
    }
    case 'close': {
      await clients[cmd.client].shutdown();
      return null;
    }
    default:
      throw new Error('unknown op ' + cmd.op);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  run(cmd)
    .then((result) => out({ id: cmd.id, ok: true, result: result === undefined ? null : result }))
    .catch((e) => out({ id: cmd.id, ok: false, error: errorOf(e) }));
});
rl.on('close', () => process.exit(0));
process.on('unhandledRejection', (e) => out({ event: 'unhandledRejection', source: 'process', args: [errorOf(e)] }));
