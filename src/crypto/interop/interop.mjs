// Interop of tern_crypto with independent implementations of Signal's protocol. Run by the
// ctest test crypto_interop (run_interop.cmake) as: node interop.mjs <path of interop_driver>.
//  * @privacyresearch/libsignal-protocol-typescript (Signal v3: X3DH + Double Ratchet):
//    1-to-1 sessions set up from either side, with and without a one-time prekey, messages
//    both ways over several DH ratchet steps, some delivered out of order.
//  * @signalapp/libsignal-client (Signal's own library): SenderKeyDistributionMessage and
//    SenderKeyMessage both ways; XEdDSA signatures both ways; safety numbers (also against the
//    TypeScript library's FingerprintGenerator). Its 1-to-1 sessions need PQXDH
//    (a Kyber prekey) and refuse our v3 PreKeySignalMessage: asserted below, so that a change
//    there is noticed.
// Any failed assertion exits non-zero. Prints one line per passed check.
import { spawn } from 'node:child_process';
import readline from 'node:readline';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import * as ts from '@privacyresearch/libsignal-protocol-typescript';
import curveLib from '@privacyresearch/curve25519-typescript';
import * as signal from '@signalapp/libsignal-client';

const driverPath = process.argv[2];
assert.ok(driverPath, 'usage: node interop.mjs <interop_driver>');

// ---- the driver: one request, one answer line ----
function startDriver() {
  const child = spawn(driverPath, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = readline.createInterface({ input: child.stdout });
  const waiting = [];
  rl.on('line', (line) => waiting.shift()(JSON.parse(line)));
  const call = (req) =>
    new Promise((resolve) => {
      waiting.push(resolve);
      child.stdin.write(JSON.stringify(req) + '\n');
    });
  const close = () => child.stdin.end();
  return { call, close };
}
async function ok(driver, req) {
  const res = await driver.call(req);
  assert.equal(res.ok, true, `driver ${req.cmd} failed: ${res.error}`);
  return res;
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const fromB64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));
const ab = (u8) => u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength);
const text = (s) => new TextEncoder().encode(s);
const untext = (b) => new TextDecoder().decode(b);
const passed = (what) => console.log('PASS', what);

// ---- @privacyresearch/libsignal-protocol-typescript: an in-memory store ----
class TsStore {
  constructor(identity, registrationId) {
    this.identity = identity;
    this.registrationId = registrationId;
    this.m = new Map();
  }
  async getIdentityKeyPair() { return this.identity; }
  async getLocalRegistrationId() { return this.registrationId; }
  async isTrustedIdentity() { return true; }
  async saveIdentity(addr, key) { this.m.set('id' + addr, key); return false; }
  async loadPreKey(id) { return this.m.get('pk' + id); }
  async storePreKey(id, kp) { this.m.set('pk' + id, kp); }
  async removePreKey(id) { this.m.delete('pk' + id); }
  async storeSession(addr, rec) { this.m.set('s' + addr, rec); }
  async loadSession(addr) { return this.m.get('s' + addr); }
  async loadSignedPreKey(id) { return this.m.get('spk' + id); }
  async storeSignedPreKey(id, kp) { this.m.set('spk' + id, kp); }
  async removeSignedPreKey(id) { this.m.delete('spk' + id); }
}

async function tsDevice() {
  const identity = await ts.KeyHelper.generateIdentityKeyPair();
  const store = new TsStore(identity, ts.KeyHelper.generateRegistrationId());
  return store;
}

// Our message types: 2 SignalMessage, 3 PreKeySignalMessage; the TS library says 1 and 3.
const toOurs = (tsType) => (tsType === 3 ? 3 : 2);

async function tsEncrypt(cipher, s) {
  const m = await cipher.encrypt(ab(text(s)));
  return { type: toOurs(m.type), body: b64(Buffer.from(m.body, 'binary')) };
}
async function tsDecrypt(cipher, msg) {
  const bytes = ab(fromB64(msg.body));
  const pt = msg.type === 3 ? await cipher.decryptPreKeyWhisperMessage(bytes) : await cipher.decryptWhisperMessage(bytes);
  return untext(new Uint8Array(pt));
}
async function oursDecrypt(driver, peer, msg) {
  const res = await ok(driver, { cmd: 'decrypt', peer, type: msg.type, body: msg.body });
  return untext(fromB64(res.plaintext));
}
async function oursEncrypt(driver, peer, s) {
  const res = await ok(driver, { cmd: 'encrypt', peer, plaintext: b64(text(s)) });
  return { type: res.type, body: res.body };
}

// Several rounds both ways; in each, the second message is delivered before the first.
async function converse(label, driver, peer, cipher) {
  for (let round = 0; round < 4; round++) {
    const a = await tsEncrypt(cipher, `ts ${round} a`);
    const b = await tsEncrypt(cipher, `ts ${round} b`);
    assert.equal(await oursDecrypt(driver, peer, b), `ts ${round} b`);
    assert.equal(await oursDecrypt(driver, peer, a), `ts ${round} a`);
    const c = await oursEncrypt(driver, peer, `ours ${round} c`);
    const d = await oursEncrypt(driver, peer, `ours ${round} d`);
    assert.equal(c.type, 2, 'after the first answer we send SignalMessages');
    assert.equal(await tsDecrypt(cipher, d), `ours ${round} d`);
    assert.equal(await tsDecrypt(cipher, c), `ours ${round} c`);
  }
  passed(`${label}: 4 rounds both ways, out-of-order pairs, across DH ratchet steps`);
}

async function tsInitiates(withOneTime) {
  const label = `typescript initiates (${withOneTime ? 'with' : 'without'} one-time prekey)`;
  const driver = startDriver();
  const { bundle } = await ok(driver, { cmd: 'bundle', one_time: withOneTime });
  const store = await tsDevice();
  const addr = new ts.SignalProtocolAddress('ours', 1);
  const device = {
    registrationId: bundle.registrationId,
    identityKey: ab(fromB64(bundle.identityKey)),
    signedPreKey: { keyId: bundle.signedPreKeyId, publicKey: ab(fromB64(bundle.signedPreKey)), signature: ab(fromB64(bundle.signature)) },
  };
  if (withOneTime) device.preKey = { keyId: bundle.preKeyId, publicKey: ab(fromB64(bundle.preKey)) };
  // The TS library verifies our XEdDSA signature of the signed prekey here.
  await new ts.SessionBuilder(store, addr).processPreKey(device);
  const cipher = new ts.SessionCipher(store, addr);
  const first = await tsEncrypt(cipher, 'hello from typescript');
  const second = await tsEncrypt(cipher, 'second before any answer');
  assert.equal(first.type, 3);
  assert.equal(second.type, 3);
  assert.equal(await oursDecrypt(driver, 'ts', first), 'hello from typescript');
  assert.equal(await oursDecrypt(driver, 'ts', second), 'second before any answer');
  const reply = await oursEncrypt(driver, 'ts', 'hello typescript, from tern');
  assert.equal(reply.type, 2);
  assert.equal(await tsDecrypt(cipher, reply), 'hello typescript, from tern');
  await converse(label, driver, 'ts', cipher);
  driver.close();
}

async function oursInitiates(withOneTime) {
  const label = `tern initiates (${withOneTime ? 'with' : 'without'} one-time prekey)`;
  const driver = startDriver();
  const store = await tsDevice();
  const spk = await ts.KeyHelper.generateSignedPreKey(store.identity, 5);
  await store.storeSignedPreKey(5, spk.keyPair);
  const bundle = {
    registrationId: store.registrationId,
    identityKey: b64(new Uint8Array(store.identity.pubKey)),
    signedPreKeyId: 5,
    signedPreKey: b64(new Uint8Array(spk.keyPair.pubKey)),
    signature: b64(new Uint8Array(spk.signature)),
  };
  if (withOneTime) {
    const pk = await ts.KeyHelper.generatePreKey(31);
    await store.storePreKey(31, pk.keyPair);
    bundle.preKeyId = 31;
    bundle.preKey = b64(new Uint8Array(pk.keyPair.pubKey));
  }
  // We verify the TS library's signature of its signed prekey here.
  await ok(driver, { cmd: 'initiate', peer: 'ts', bundle });
  const cipher = new ts.SessionCipher(store, new ts.SignalProtocolAddress('ours', 1));
  const first = await oursEncrypt(driver, 'ts', 'hello from tern');
  assert.equal(first.type, 3);
  assert.equal(await tsDecrypt(cipher, first), 'hello from tern');
  if (withOneTime) assert.equal(await store.loadPreKey(31), undefined, 'the TS side used and removed its one-time prekey');
  const second = await oursEncrypt(driver, 'ts', 'more before an answer');
  assert.equal(second.type, 3);
  assert.equal(await tsDecrypt(cipher, second), 'more before an answer');
  const reply = await tsEncrypt(cipher, 'hello tern');
  assert.equal(reply.type, 2);
  assert.equal(await oursDecrypt(driver, 'ts', reply), 'hello tern');
  await converse(label, driver, 'ts', cipher);
  driver.close();
}

// ---- @signalapp/libsignal-client: sender keys ----
class MemSenderKeyStore extends signal.SenderKeyStore {
  constructor() { super(); this.m = new Map(); }
  key(sender, dist) { return `${sender.name()}.${sender.deviceId()}/${dist}`; }
  async saveSenderKey(sender, dist, record) { this.m.set(this.key(sender, dist), record.serialize()); }
  async getSenderKey(sender, dist) {
    const b = this.m.get(this.key(sender, dist));
    return b ? signal.SenderKeyRecord.deserialize(b) : null;
  }
}

async function groupsBothWays() {
  const driver = startDriver();
  // Signal's library sends; we receive.
  const sigAddr = signal.ProtocolAddress.new('signal-sender', 1);
  const sigStore = new MemSenderKeyStore();
  const dist1 = crypto.randomUUID();
  const skdm = await signal.SenderKeyDistributionMessage.create(sigAddr, dist1, sigStore);
  await ok(driver, { cmd: 'sk_process', sender: 'signal-sender', skdm: b64(skdm.serialize()) });
  const sent = [];
  for (let i = 0; i < 5; i++) {
    const m = await signal.groupEncrypt(sigAddr, dist1, sigStore, text(`signal group ${i}`));
    sent.push(b64(m.serialize()));
  }
  for (const i of [1, 0, 4, 2, 3]) {
    const res = await ok(driver, { cmd: 'sk_decrypt', sender: 'signal-sender', body: sent[i] });
    assert.equal(untext(fromB64(res.plaintext)), `signal group ${i}`);
  }
  const replay = await driver.call({ cmd: 'sk_decrypt', sender: 'signal-sender', body: sent[2] });
  assert.equal(replay.ok, false);
  const tampered = fromB64(sent[0]);
  tampered[tampered.length - 70] ^= 1;
  const bad = await driver.call({ cmd: 'sk_decrypt', sender: 'signal-sender', body: b64(tampered) });
  assert.equal(bad.ok, false);
  assert.equal(bad.error, 'bad_signature');
  passed('libsignal-client SenderKeyDistributionMessage + 5 SenderKeyMessages decrypted by tern (out of order; replay and tampering refused)');

  // We send; Signal's library receives.
  const ourAddr = signal.ProtocolAddress.new('ours', 1);
  const recvStore = new MemSenderKeyStore();
  const dist2 = crypto.randomUUID();
  const ours = await ok(driver, { cmd: 'sk_create', dist: dist2 });
  const parsed = signal.SenderKeyDistributionMessage.deserialize(fromB64(ours.skdm));
  assert.equal(parsed.distributionId(), dist2);
  await signal.processSenderKeyDistributionMessage(ourAddr, parsed, recvStore);
  const ourSent = [];
  for (let i = 0; i < 5; i++) {
    const res = await ok(driver, { cmd: 'sk_encrypt', dist: dist2, plaintext: b64(text(`tern group ${i}`)) });
    ourSent.push(fromB64(res.body));
  }
  for (const i of [2, 0, 1, 4, 3]) {
    const pt = await signal.groupDecrypt(ourAddr, recvStore, ourSent[i]);
    assert.equal(untext(pt), `tern group ${i}`);
  }
  const t2 = new Uint8Array(ourSent[0]);
  t2[t2.length - 70] ^= 1;
  await assert.rejects(signal.groupDecrypt(ourAddr, recvStore, t2));
  passed('tern SenderKeyDistributionMessage + 5 SenderKeyMessages decrypted by libsignal-client (out of order; tampering refused)');

  // XEdDSA both ways.
  const msg = crypto.randomBytes(40);
  const sig = await ok(driver, { cmd: 'sign', message: b64(msg) });
  const ourKey = signal.PublicKey.deserialize(fromB64(sig.public_key));
  assert.equal(ourKey.verify(new Uint8Array(msg), fromB64(sig.signature)), true);
  assert.equal(ourKey.verify(new Uint8Array(crypto.randomBytes(40)), fromB64(sig.signature)), false);
  const curve = await curveLib.Curve25519Wrapper.create();
  const raw = fromB64(sig.public_key).slice(1);
  assert.equal(curve.signatureIsValid(ab(raw), ab(new Uint8Array(msg)), ab(fromB64(sig.signature))), true);
  assert.equal(curve.signatureIsValid(ab(raw), ab(new Uint8Array(crypto.randomBytes(40))), ab(fromB64(sig.signature))), false);
  for (let i = 0; i < 8; i++) {
    const k = signal.PrivateKey.generate();
    const m2 = crypto.randomBytes(33);
    const s2 = k.sign(new Uint8Array(m2));
    const v = await ok(driver, { cmd: 'verify', public_key: b64(k.getPublicKey().serialize()), message: b64(m2), signature: b64(s2) });
    assert.equal(v.valid, true);
  }
  passed('XEdDSA: tern signatures verify in libsignal-client and curve25519-typescript; libsignal-client signatures verify in tern');
  driver.close();
}

// ---- @signalapp/libsignal-client: 1-to-1 needs PQXDH; our v3 set-up is refused ----
class MemSessionStore extends signal.SessionStore {
  constructor() { super(); this.m = new Map(); }
  async saveSession(a, r) { this.m.set(a.toString(), r.serialize()); }
  async getSession(a) { const b = this.m.get(a.toString()); return b ? signal.SessionRecord.deserialize(b) : null; }
  async getExistingSessions(as) { return (await Promise.all(as.map((a) => this.getSession(a)))).filter(Boolean); }
}
class MemIdentityStore extends signal.IdentityKeyStore {
  constructor(priv, regId) { super(); this.priv = priv; this.regId = regId; this.m = new Map(); }
  async getIdentityKey() { return this.priv; }
  async getLocalRegistrationId() { return this.regId; }
  async saveIdentity(a, k) { this.m.set(a.toString(), k); return 0; }
  async isTrustedIdentity() { return true; }
  async getIdentity(a) { return this.m.get(a.toString()) ?? null; }
}
class MemPreKeyStore extends signal.PreKeyStore {
  constructor() { super(); this.m = new Map(); }
  async savePreKey(id, r) { this.m.set(id, r); }
  async getPreKey(id) { return this.m.get(id); }
  async removePreKey(id) { this.m.delete(id); }
}
class MemSignedPreKeyStore extends signal.SignedPreKeyStore {
  constructor() { super(); this.m = new Map(); }
  async saveSignedPreKey(id, r) { this.m.set(id, r); }
  async getSignedPreKey(id) { return this.m.get(id); }
}
class MemKyberStore extends signal.KyberPreKeyStore {
  async saveKyberPreKey() {}
  async getKyberPreKey() { throw new Error('no kyber prekey'); }
  async markKyberPreKeyUsed() {}
}

async function signalRefusesV3Sessions() {
  const driver = startDriver();
  const identity = signal.PrivateKey.generate();
  const spk = signal.PrivateKey.generate();
  const spkSig = identity.sign(spk.getPublicKey().serialize());
  const opk = signal.PrivateKey.generate();
  const spkStore = new MemSignedPreKeyStore();
  await spkStore.saveSignedPreKey(5, signal.SignedPreKeyRecord.new(5, Date.now(), spk.getPublicKey(), spk, spkSig));
  const pkStore = new MemPreKeyStore();
  await pkStore.savePreKey(31, signal.PreKeyRecord.new(31, opk.getPublicKey(), opk));
  await ok(driver, {
    cmd: 'initiate', peer: 'signal',
    bundle: {
      registrationId: 77, identityKey: b64(identity.getPublicKey().serialize()), signedPreKeyId: 5,
      signedPreKey: b64(spk.getPublicKey().serialize()), signature: b64(spkSig), preKeyId: 31,
      preKey: b64(opk.getPublicKey().serialize()),
    },
  });
  const first = await oursEncrypt(driver, 'signal', 'v3 hello');
  assert.equal(first.type, 3);
  const message = signal.PreKeySignalMessage.deserialize(fromB64(first.body));
  assert.equal(message.version(), 3);
  let refusal = null;
  try {
    await signal.signalDecryptPreKey(message, signal.ProtocolAddress.new('ours', 1), signal.ProtocolAddress.new('signal', 1),
      new MemSessionStore(), new MemIdentityStore(identity, 77), pkStore, spkStore, new MemKyberStore());
  } catch (e) {
    refusal = e;
  }
  assert.ok(refusal, 'libsignal-client accepted a v3 (non-PQXDH) session: extend the interop tests to 1-to-1');
  passed(`libsignal-client parses our v3 PreKeySignalMessage but refuses the session: "${refusal.message}"`);
  driver.close();
}

// ---- safety numbers: libsignal-client's Fingerprint and the TS FingerprintGenerator ----
async function safetyNumbers() {
  const driver = startDriver();
  for (const [localId, remoteId] of [['alice', 'bob'], ['zed', 'amy'], ['+15551234567', '+15557654321']]) {
    const remote = signal.PrivateKey.generate().getPublicKey();
    const ours = await ok(driver, {
      cmd: 'safety_number', local_id: b64(text(localId)), remote_id: b64(text(remoteId)), remote_key: b64(remote.serialize()),
    });
    const ourKey = signal.PublicKey.deserialize(fromB64(ours.public_key));
    const theirs = signal.Fingerprint.new(5200, 2, text(localId), ourKey, text(remoteId), remote);
    assert.equal(ours.number, theirs.displayableFingerprint().toString());
    const tsNumber = await new ts.FingerprintGenerator(5200).createFor(
      localId, ab(fromB64(ours.public_key)), remoteId, ab(new Uint8Array(remote.serialize())));
    assert.equal(ours.number, tsNumber);
  }
  passed('safety numbers equal libsignal-client Fingerprint and libsignal-protocol-typescript FingerprintGenerator (3 pairs)');
  driver.close();
}

await tsInitiates(true);
await tsInitiates(false);
await oursInitiates(true);
await oursInitiates(false);
await groupsBothWays();
await signalRefusesV3Sessions();
await safetyNumbers();
console.log('ALL INTEROP CHECKS PASSED');
