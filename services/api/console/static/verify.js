// Vigil console: verify a session's evidence bundle (format
// vigil.evidence/v1, docs/ledger.md) in the browser, with WebCrypto only:
// recompute every record's canonical bytes and RFC 6962 leaf hash, walk
// its inclusion proof to the root, and check the Ed25519 signatures of
// the checkpoint and of the session manifest. Nothing the server says
// about validity is trusted; it is the same check as `vigil verify`.
'use strict';

const VigilVerify = (function () {
  const enc = new TextEncoder();

  // A JSON parser that keeps number literals exactly as written (the
  // canonical form does not re-format numbers).
  class Num { constructor(s) { this.s = s; } }
  function parse(text) {
    let i = 0;
    const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
    const fail = (m) => { throw new Error('invalid JSON at ' + i + ': ' + m); };
    function value() {
      ws();
      const ch = text[i];
      if (ch === '{') {
        i++; const m = new Map(); ws();
        if (text[i] === '}') { i++; return m; }
        for (;;) {
          ws(); if (text[i] !== '"') fail('expected a key');
          const k = str(); ws(); if (text[i++] !== ':') fail('expected :');
          m.set(k, value()); ws();
          if (text[i] === ',') { i++; continue; }
          if (text[i] === '}') { i++; return m; }
          fail('expected , or }');
        }
      }
      if (ch === '[') {
        i++; const a = []; ws();
        if (text[i] === ']') { i++; return a; }
        for (;;) {
          a.push(value()); ws();
          if (text[i] === ',') { i++; continue; }
          if (text[i] === ']') { i++; return a; }
          fail('expected , or ]');
        }
      }
      if (ch === '"') return str();
      for (const [lit, v] of [['true', true], ['false', false], ['null', null]]) {
        if (text.startsWith(lit, i)) { i += lit.length; return v; }
      }
      const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
      if (!m) fail('unexpected ' + JSON.stringify(ch));
      i += m[0].length;
      return new Num(m[0]);
    }
    function str() {
      const start = i; i++;
      while (i < text.length && text[i] !== '"') { if (text[i] === '\\') i++; i++; }
      if (i >= text.length) fail('unterminated string');
      i++;
      return JSON.parse(text.slice(start, i));
    }
    const v = value(); ws();
    if (i !== text.length) fail('trailing data');
    return v;
  }

  // Strings are escaped as Go's encoding/json does without HTML escaping.
  function quote(s) {
    let out = '"';
    for (const ch of s) {
      const c = ch.codePointAt(0);
      if (ch === '"') out += '\\"';
      else if (ch === '\\') out += '\\\\';
      else if (c === 0x08) out += '\\b';
      else if (c === 0x0c) out += '\\f';
      else if (ch === '\n') out += '\\n';
      else if (ch === '\r') out += '\\r';
      else if (ch === '\t') out += '\\t';
      else if (c < 0x20) out += '\\u00' + c.toString(16).padStart(2, '0');
      else if (c === 0x2028 || c === 0x2029) out += '\\u' + c.toString(16);
      else if (c >= 0xd800 && c <= 0xdfff) out += '\ufffd'; // a lone surrogate: invalid UTF-8 in Go
      else out += ch;
    }
    return out + '"';
  }
  function byteCompare(a, b) {
    const x = enc.encode(a), y = enc.encode(b);
    for (let k = 0; k < Math.min(x.length, y.length); k++) if (x[k] !== y[k]) return x[k] - y[k];
    return x.length - y.length;
  }
  function canonical(v) {
    if (v === null) return 'null';
    if (v === true) return 'true';
    if (v === false) return 'false';
    if (v instanceof Num) return v.s;
    if (typeof v === 'string') return quote(v);
    if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
    const keys = Array.from(v.keys()).sort(byteCompare);
    return '{' + keys.map((k) => quote(k) + ':' + canonical(v.get(k))).join(',') + '}';
  }

  async function sha256(...parts) {
    const n = parts.reduce((s, p) => s + p.length, 0);
    const buf = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { buf.set(p, o); o += p.length; }
    return new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
  }
  const leafHash = async (canon) => sha256(new Uint8Array([0]), await sha256(enc.encode(canon)));
  const node = (l, r) => sha256(new Uint8Array([1]), l, r);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  function unhex(s) {
    s = String(s).replace(/^sha256:/, '');
    if (!/^[0-9a-f]{64}$/.test(s)) throw new Error(JSON.stringify(s) + ' is not a sha256 hash');
    return new Uint8Array(s.match(/../g).map((h) => parseInt(h, 16)));
  }
  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const eq = (a, b) => a.length === b.length && a.every((x, k) => x === b[k]);

  // RFC 9162 §2.1.3.2: the root an inclusion proof leads to.
  async function rootFromProof(index, size, leaf, path) {
    if (index >= size) throw new Error('index ' + index + ' is beyond the tree size ' + size);
    let fn = index, sn = size - 1n, r = leaf;
    for (const p of path) {
      if (sn === 0n) throw new Error('proof is too long');
      if ((fn & 1n) === 1n || fn === sn) {
        r = await node(p, r);
        if ((fn & 1n) === 0n) { while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; } }
      } else {
        r = await node(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) throw new Error('proof is too short');
    return r;
  }

  // A C2SP signed note checked against a note verifier key
  // ("name+hash+base64(0x01 ‖ ed25519 key)"); returns the note text.
  async function openNote(signed, vkey) {
    const [name, khash, kb64] = String(vkey).split('+');
    const kraw = b64(kb64 || '');
    if (kraw.length !== 33 || kraw[0] !== 1) throw new Error('public key is not an Ed25519 note key');
    const want = (await sha256(enc.encode(name + '\n'), kraw)).slice(0, 4);
    if (hex(want) !== khash) throw new Error('public key hash does not match its name');
    const cut = signed.lastIndexOf('\n\n');
    if (cut < 0) throw new Error('not a signed note');
    const text = signed.slice(0, cut + 1);
    const key = await crypto.subtle.importKey('raw', kraw.slice(1), { name: 'Ed25519' }, false, ['verify']);
    for (const line of signed.slice(cut + 2).split('\n')) {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const sig = b64(m[2]);
      if (sig.length !== 68 || !eq(sig.slice(0, 4), want)) continue;
      if (await crypto.subtle.verify({ name: 'Ed25519' }, key, sig.slice(4), enc.encode(text))) return text;
      throw new Error('signature does not verify');
    }
    throw new Error('no signature by ' + name);
  }

  // verify returns {ok, records, problems[]} for a bundle's text.
  async function verify(text) {
    const problems = [];
    const fail = (m) => problems.push(m);
    let b;
    try { b = parse(text); } catch (e) { return { ok: false, records: 0, problems: ['bundle: ' + e.message] }; }
    if (!(b instanceof Map)) return { ok: false, records: 0, problems: ['bundle: not a JSON object'] };
    const g = (k) => b.get(k);
    const s = (v) => (v instanceof Num ? v.s : typeof v === 'string' ? v : '');
    if (g('format') !== 'vigil.evidence/v1') fail('format is ' + JSON.stringify(g('format')) + ', want "vigil.evidence/v1"');
    const records = Array.isArray(g('records')) ? g('records') : [];
    let cpRoot, cpSize;
    try {
      const body = (await openNote(String(g('checkpoint')), g('publicKey'))).split('\n');
      if (body[0] !== g('origin')) fail('checkpoint: signed for origin ' + body[0] + ', bundle says ' + g('origin'));
      cpSize = BigInt(body[1]);
      cpRoot = b64(body[2]);
      if (String(cpSize) !== s(g('treeSize'))) fail('checkpoint: signed tree size ' + cpSize + ', bundle says ' + s(g('treeSize')));
      if (hex(cpRoot) !== String(g('rootHash')).replace(/^sha256:/, '')) fail('checkpoint: signed root sha256:' + hex(cpRoot) + ', bundle says ' + g('rootHash'));
    } catch (e) {
      fail('checkpoint: bad signature or origin: ' + e.message);
      return { ok: false, records: records.length, problems };
    }
    let manifest = null;
    try {
      const l = (await openNote(String(g('manifest')), g('publicKey'))).split('\n');
      if (l.length !== 7 || l[0] !== 'vigil.ledger/session-manifest/v1') throw new Error('not a session manifest');
      manifest = { origin: l[1], session: l[2], count: Number(l[3]), size: BigInt(l[4]), digest: b64(l[5]) };
      if (manifest.origin !== g('origin') || manifest.session !== g('sessionId')) fail('manifest: signed for another log or session');
      if (manifest.size !== cpSize) fail('manifest: signed at tree size ' + manifest.size + ', checkpoint is ' + cpSize);
      if (String(manifest.count) !== s(g('recordCount'))) fail('count mismatch: manifest commits ' + manifest.count + ' records, bundle says recordCount ' + s(g('recordCount')));
      if (manifest.count !== records.length) fail('count mismatch: ' + manifest.count + ' records committed for the session, bundle holds ' + records.length + ' (records removed or added)');
    } catch (e) {
      fail('manifest: bad signature or format: ' + e.message);
    }
    const seen = new Set();
    const pairs = [];
    const packs = new Set();
    for (const rec of records) {
      const idx = BigInt(s(rec.get('ledgerIndex')) || '-1');
      const name = 'record ' + rec.get('kind') + ':' + rec.get('id') + ' (ledger index ' + idx + ')';
      if (seen.has(idx)) fail(name + ': ledger index appears twice');
      seen.add(idx);
      const env = rec.get('record');
      if (!(env instanceof Map)) { fail(name + ': record is not a JSON object'); continue; }
      if (s(env.get('v')) !== '1') { fail(name + ': unsupported record format'); continue; }
      if (env.get('kind') !== rec.get('kind') || env.get('id') !== rec.get('id')) fail(name + ': record bytes changed: it is ' + env.get('kind') + ':' + env.get('id'));
      if (env.get('tenant') !== g('tenant') || env.get('session') !== g('sessionId')) fail(name + ': belongs to tenant ' + env.get('tenant') + ' session ' + env.get('session') + ', not this bundle\'s');
      const leaf = await leafHash(canonical(env));
      if ('sha256:' + hex(leaf) !== rec.get('leafHash')) fail(name + ': record bytes changed: they hash to leaf sha256:' + hex(leaf) + ', the bundle says ' + rec.get('leafHash'));
      try {
        const path = (rec.get('inclusionProof') || []).map(unhex);
        const root = await rootFromProof(idx, cpSize, leaf, path);
        if (!eq(root, cpRoot)) throw new Error('the proof leads to another root');
      } catch (e) {
        fail(name + ': bad proof: not included in the checkpoint at this index: ' + e.message);
      }
      pairs.push([idx, leaf]);
      if (env.get('kind') === 'decision') {
        const r = env.get('record');
        const res = r instanceof Map ? r.get('result') : null;
        if (res instanceof Map && res.get('packHash')) packs.add(res.get('packHash'));
      }
    }
    if (manifest) {
      pairs.sort((a, c) => (a[0] < c[0] ? -1 : a[0] > c[0] ? 1 : 0));
      const parts = [];
      for (const [idx, leaf] of pairs) {
        const be = new Uint8Array(8);
        new DataView(be.buffer).setBigUint64(0, idx);
        parts.push(be, leaf);
      }
      if (!eq(await sha256(...parts), manifest.digest)) fail('manifest: the records differ from those the ledger signed for the session (removed, replaced or reordered)');
    }
    const listed = (g('policyPackHashes') || []).slice().sort().join(',');
    const used = Array.from(packs).sort().join(',');
    if (listed !== used) fail('policy pack hashes: bundle lists [' + listed + '], its decisions used [' + used + ']');
    return { ok: problems.length === 0, records: records.length, treeSize: String(cpSize), problems, key: String(g('publicKey')) };
  }

  function show(out, report, source, ledgerKey) {
    out.replaceChildren();
    const h = document.createElement('p');
    h.className = report.ok ? 'verdict valid' : 'verdict tampered';
    h.textContent = report.ok
      ? 'VALID: ' + report.records + ' records of ' + source + ' are in the signed ledger (tree size ' + report.treeSize + '); checkpoint and manifest signatures verify.'
      : 'TAMPERED: ' + source + ' failed verification (' + report.problems.length + ' problems).';
    out.append(h);
    if (report.key && ledgerKey) {
      // The bundle's own key proves integrity; whose key it is, the
      // auditor checks against the one they pinned (vigil ledger key).
      const k = document.createElement('p');
      k.className = 'hint';
      k.id = 'verify-key';
      k.textContent = report.key === ledgerKey
        ? 'Signed with this deployment\'s ledger key ' + ledgerKey + ' (compare it with the key you pinned: vigil ledger key).'
        : 'Signed with ' + report.key + ', which is NOT this deployment\'s ledger key ' + ledgerKey + '.';
      k.dataset.match = String(report.key === ledgerKey);
      out.append(k);
    }
    if (report.problems.length) {
      const ul = document.createElement('ul');
      for (const p of report.problems) { const li = document.createElement('li'); li.textContent = p; ul.append(li); }
      out.append(ul);
    }
    out.dataset.result = report.ok ? 'valid' : 'tampered';
  }

  document.addEventListener('DOMContentLoaded', () => {
    const sec = document.getElementById('evidence');
    if (!sec) return;
    const out = document.getElementById('verify-result');
    document.getElementById('verify-server').addEventListener('click', async () => {
      out.textContent = 'verifying…';
      delete out.dataset.result;
      const res = await fetch(sec.dataset.bundle, { credentials: 'same-origin' });
      if (!res.ok) { out.textContent = 'could not download the bundle: HTTP ' + res.status; out.dataset.result = 'error'; return; }
      show(out, await verify(await res.text()), 'the downloaded bundle', sec.dataset.ledgerKey);
    });
    document.getElementById('verify-file').addEventListener('change', async (ev) => {
      const f = ev.target.files[0];
      if (!f) return;
      out.textContent = 'verifying…';
      delete out.dataset.result;
      show(out, await verify(await f.text()), f.name, sec.dataset.ledgerKey);
    });
  });

  return { verify, canonical, parse };
})();
