// In-browser checks of the server's proofs (RFC 9162 Merkle trees, C2SP signed checkpoints), so a person
// can see for themselves that a ledger entry or an audit export is what the signed checkpoint commits to.
const enc = new TextEncoder();

export function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function b64ToBytes(b64) {
  const s = atob(b64);
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

async function sha256(...parts) {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const buf = new Uint8Array(total);
  let o = 0;
  for (const p of parts) { buf.set(p, o); o += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
}

const ZERO = Uint8Array.of(0);
const ONE = Uint8Array.of(1);

export const leafHash = (bytes) => sha256(ZERO, bytes);
const nodeHash = (l, r) => sha256(ONE, l, r);

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

// RFC 9162 section 2.1.3.2.
export async function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(r, root);
}

// The checkpoint inside a signed note: {origin, size, root (bytes), text, signatures}.
export function parseCheckpoint(note) {
  const cut = note.indexOf("\n\n");
  if (cut < 0) throw new Error("not a signed note");
  const text = note.slice(0, cut + 1);
  const [origin, size, root] = text.slice(0, -1).split("\n");
  const signatures = note.slice(cut + 2).split("\n").filter(Boolean).map((line) => {
    const [, name, blob] = line.split(" ");
    return { name, raw: b64ToBytes(blob) };
  });
  return { origin, size: Number(size), root: b64ToBytes(root), text, signatures };
}

// Verify the note's Ed25519 signature with one of the verifier keys ("name+hash+base64(0x01||key)").
// Returns true / false, or null when this browser has no Ed25519 in WebCrypto.
export async function verifyNote(note, verifierKeys) {
  const cp = parseCheckpoint(note);
  for (const vkey of verifierKeys) {
    const [name, khash, ...rest] = vkey.split("+");
    let raw;
    try { raw = b64ToBytes(rest.join("+")); } catch { continue; }
    if (raw[0] !== 1 || raw.length !== 33) continue;
    const expectHash = (await sha256(enc.encode(name + "\n"), raw)).slice(0, 4);
    if (bytesToHex(expectHash) !== khash) continue;
    for (const sig of cp.signatures) {
      if (sig.name !== name || !equal(sig.raw.slice(0, 4), expectHash)) continue;
      let key;
      try {
        key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
      } catch {
        return null;
      }
      return crypto.subtle.verify({ name: "Ed25519" }, key, sig.raw.slice(4), enc.encode(cp.text));
    }
  }
  return false;
}

// Verify a JSONL export: every entry's leaf hash, the recomputed root against the header, and the header
// against its signed checkpoint. Returns {ok, entries, size, root, reason, badIndex, signature}.
export async function verifyExport(text, verifierKeys) {
  const lines = text.split("\n");
  let header;
  try {
    header = JSON.parse(lines[0]);
  } catch {
    return { ok: false, reason: "no checkpoint at the start of the export" };
  }
  if (!header || header.type !== "checkpoint") return { ok: false, reason: "no checkpoint at the start of the export" };
  const cp = parseCheckpoint(header.note);
  const signature = verifierKeys && verifierKeys.length ? await verifyNote(header.note, verifierKeys) : null;
  if (signature === false) return { ok: false, reason: "the checkpoint signature does not verify", signature };
  if (cp.size !== header.size || bytesToHex(cp.root) !== header.root_hash) {
    return { ok: false, reason: "the export header does not match its signed checkpoint", signature };
  }
  const stack = [];
  let count = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (!line) continue;
    const marker = line.indexOf(',"entry":');
    let obj;
    try { obj = JSON.parse(line); } catch { return { ok: false, reason: "unreadable line", badIndex: count, signature }; }
    if (obj.index !== count) return { ok: false, reason: "entries missing, extra or reordered", badIndex: count, signature };
    const body = enc.encode(line.slice(marker + 9, -1));
    let h = await leafHash(body);
    if (bytesToHex(h) !== obj.leaf_hash) {
      return { ok: false, reason: "entry content does not match its leaf hash", badIndex: count, signature };
    }
    let n = count;
    while (n % 2 === 1) { h = await nodeHash(stack.pop(), h); n = Math.floor(n / 2); }
    stack.push(h);
    count++;
  }
  if (count !== cp.size) return { ok: false, reason: `${count} entries where the checkpoint commits to ${cp.size}`, signature };
  let root = stack.pop();
  while (stack.length) root = await nodeHash(stack.pop(), root);
  if (!root || !equal(root, cp.root)) return { ok: false, reason: "the recomputed root differs from the checkpoint", signature };
  return { ok: true, entries: count, size: cp.size, root: bytesToHex(cp.root), signature };
}

// RFC 9162 section 2.1.4.2: is the tree of `first` leaves (firstRoot) a prefix of the tree of `second`?
export async function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  if (first > second) return false;
  if (first === second) return proof.length === 0 && equal(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0;
  if (!proof.length) return false;
  const path = (first & (first - 1)) === 0 ? [firstRoot, ...proof] : [...proof];
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(fr, firstRoot) && equal(sr, secondRoot);
}

// C2SP tlog-cosignature (cosignature/v1, Ed25519): how many of the witness keys
// ("name+hash+base64(0x04||key)") cosigned the note; null when this browser has no Ed25519 in WebCrypto.
export async function countCosignatures(note, witnessKeys) {
  const cp = parseCheckpoint(note);
  let count = 0;
  for (const vkey of witnessKeys || []) {
    const [name, khash, ...rest] = vkey.split("+");
    let raw;
    try { raw = b64ToBytes(rest.join("+")); } catch { continue; }
    if (raw[0] !== 4 || raw.length !== 33) continue;
    const id = (await sha256(enc.encode(name + "\n"), raw)).slice(0, 4);
    if (bytesToHex(id) !== khash) continue;
    for (const sig of cp.signatures) {
      if (sig.name !== name || sig.raw.length !== 76 || !equal(sig.raw.slice(0, 4), id)) continue;
      let ts = 0n;
      for (const b of sig.raw.slice(4, 12)) ts = (ts << 8n) | BigInt(b);
      let key;
      try {
        key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
      } catch {
        return null;
      }
      const msg = enc.encode(`cosignature/v1\ntime ${ts}\n${cp.text}`);
      if (await crypto.subtle.verify({ name: "Ed25519" }, key, sig.raw.slice(12), msg)) { count++; break; }
    }
  }
  return count;
}

// Checkpoint memory: the last verified checkpoint of each log in this browser's storage. `current` is the
// server's answer ({note, verifier_keys, witness_keys, witness_quorum}); `consistency(first, second)` fetches
// a proof (list of hex hashes). Returns {status, remembered, current}: status "first" | "same" | "extended"
// (all fine, now remembered) or "fork" | "rollback" | "unsigned" | "witnesses" (kept the old one).
export async function checkAgainstMemory(current, consistency, storage = globalThis.localStorage) {
  const cp = parseCheckpoint(current.note);
  const key = `dataspace.checkpoint.${cp.origin}`;
  let saved = null;
  try { saved = JSON.parse(storage.getItem(key) || "null"); } catch { saved = null; }
  const keys = (saved && saved.keys) || current.verifier_keys || [];
  const remembered = saved ? saved.note : null;
  if ((await verifyNote(current.note, keys)) === false) return { status: "unsigned", remembered, current: current.note };
  const quorum = current.witness_quorum || 0;
  if (quorum > 0) {
    const n = await countCosignatures(current.note, current.witness_keys);
    if (n !== null && n < quorum) return { status: "witnesses", remembered, current: current.note };
  }
  let status = "first";
  if (remembered) {
    const old = parseCheckpoint(remembered);
    if (old.size > cp.size) return { status: "rollback", remembered, current: current.note };
    if (old.size === cp.size) {
      if (!equal(old.root, cp.root)) return { status: "fork", remembered, current: current.note };
      status = "same";
    } else {
      const proof = old.size === 0 ? [] : (await consistency(old.size, cp.size)).map(hexToBytes);
      if (!(await verifyConsistency(old.size, cp.size, old.root, cp.root, proof))) {
        return { status: "fork", remembered, current: current.note };
      }
      status = "extended";
    }
  }
  storage.setItem(key, JSON.stringify({ note: current.note, keys }));
  return { status, remembered, current: current.note };
}
