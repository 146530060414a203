#include "crypto/session_cipher.h"

#include <algorithm>
#include <cstring>

#include "crypto/aes_cbc.h"
#include "crypto/ratchet.h"

namespace tern::crypto {
namespace {

// Drops expired skipped keys, then the oldest beyond the cap.
void prune_skipped(SessionState& s, int64_t now_s, const RatchetLimits& limits) {
  std::erase_if(s.skipped, [&](const SkippedKey& k) { return now_s - k.created_at_s > limits.skipped_key_max_age_s; });
  size_t cap = std::min(limits.max_skipped_keys, kMaxStoredSkippedKeys);
  while (s.skipped.size() > cap) s.skipped.pop_front();
}

// Advances `chain` to `until` (exclusive), keeping each skipped key.
Result<void> skip_to(SessionState& s, ReceiverChain& chain, uint32_t until, int64_t now_s,
                     const RatchetLimits& limits) {
  if (until <= chain.index) return {};
  if (until - chain.index > limits.max_skip) return Errc::kTooFarAhead;
  while (chain.index < until) {
    s.skipped.push_back(SkippedKey{chain.ratchet_key, chain.index, chain_message_seed(chain.chain_key), now_s});
    chain.chain_key = chain_next(chain.chain_key);
    ++chain.index;
  }
  return {};
}

// The message key seed for (ratchet key, counter), taking it out of the state. Performs the
// DH ratchet step when the ratchet key is new.
Result<Key32> take_message_seed(SessionState& s, const SignalMessage& m, int64_t now_s, const RatchetLimits& limits) {
  for (auto it = s.skipped.begin(); it != s.skipped.end(); ++it) {
    if (it->counter == m.counter && it->ratchet_key == m.ratchet_key) {
      Key32 seed = it->seed;
      s.skipped.erase(it);  // used keys are gone
      return seed;
    }
  }
  if (!s.receiver || s.receiver->ratchet_key != m.ratchet_key) {
    // DH ratchet step. First keep the old chain's keys up to the sender's previous counter
    // (its last message number there), then derive the new receiving and sending chains.
    if (s.receiver) {
      if (auto r = skip_to(s, *s.receiver, m.previous_counter + 1, now_s, limits); !r.ok()) return r.error();
    }
    auto recv = root_step(s.root_key, s.sender_ratchet_private.bytes, m.ratchet_key);
    if (!recv.ok()) return recv.error();
    KeyPair next = KeyPair::generate();
    auto send = root_step(recv->root_key, next.private_key.span(), m.ratchet_key);
    if (!send.ok()) return send.error();
    s.previous_counter = std::max<uint32_t>(s.sender_index, 1) - 1;
    s.root_key = send->root_key;
    s.sender_ratchet_public = next.public_key;
    s.sender_ratchet_private = Key32(std::span<const uint8_t, 32>(next.private_key.data(), 32));
    s.sender_chain_key = send->chain_key;
    s.sender_index = 0;
    s.receiver = ReceiverChain{m.ratchet_key, recv->chain_key, 0};
  }
  ReceiverChain& chain = *s.receiver;
  if (m.counter < chain.index) return Errc::kDuplicate;  // already used (or expired/evicted)
  if (auto r = skip_to(s, chain, m.counter, now_s, limits); !r.ok()) return r.error();
  Key32 seed = chain_message_seed(chain.chain_key);
  chain.chain_key = chain_next(chain.chain_key);
  chain.index = m.counter + 1;
  return seed;
}

// Decrypts `m` with a copy of `state`; on success returns the plaintext and the updated copy.
Result<std::vector<uint8_t>> decrypt_with(SessionState& state, const SignalMessage& m, int64_t now_s,
                                          const RatchetLimits& limits) {
  auto seed = take_message_seed(state, m, now_s, limits);
  if (!seed.ok()) return seed.error();
  MessageKeys keys = derive_message_keys(*seed);
  if (!m.verify_mac(keys.mac_key.span(), state.remote_identity, state.local_identity)) return Errc::kBadMac;
  auto pt = aes_cbc_decrypt(keys.cipher_key.bytes, keys.iv, m.ciphertext);
  if (!pt.ok()) return pt.error();
  state.pending_prekey.reset();  // the other side has our session: no more prekey messages
  prune_skipped(state, now_s, limits);
  return pt;
}

// Sesame: the active session first, then the archived ones, each on a copy.
Result<std::vector<uint8_t>> decrypt_record(SessionRecord& record, const SignalMessage& m, int64_t now_s,
                                            const RatchetLimits& limits) {
  if (record.empty()) return Errc::kNoSession;
  Errc first_error = Errc::kNoSession;
  if (record.current) {
    SessionState trial = *record.current;
    auto pt = decrypt_with(trial, m, now_s, limits);
    if (pt.ok()) {
      record.current = std::move(trial);
      return pt;
    }
    first_error = pt.error();
  }
  for (size_t i = 0; i < record.archived.size(); ++i) {
    SessionState trial = record.archived[i];
    auto pt = decrypt_with(trial, m, now_s, limits);
    if (pt.ok()) {
      record.archived.erase(record.archived.begin() + static_cast<std::ptrdiff_t>(i));
      record.promote(std::move(trial));
      return pt;
    }
    if (!record.current && i == 0) first_error = pt.error();
  }
  return first_error;  // the active session's reason is the informative one
}

}  // namespace

Result<void> initiate_session(SessionRecord& record, const LocalDevice& local, const PreKeyBundle& bundle) {
  if (!verify_signed_prekey(bundle.identity_key, bundle.signed_pre_key, bundle.signed_pre_key_signature)) {
    return Errc::kBadSignature;
  }
  if (bundle.pre_key_id.has_value() != bundle.pre_key.has_value()) return Errc::kMalformed;
  KeyPair base = KeyPair::generate();
  auto master = x3dh_initiator(local.identity.private_key.span(), base.private_key.span(), bundle.identity_key,
                               bundle.signed_pre_key, bundle.pre_key);
  if (!master.ok()) return master.error();
  // Our first sending chain: a root step against their signed prekey (their first ratchet key).
  KeyPair ratchet = KeyPair::generate();
  auto send = root_step(master->root_key, ratchet.private_key.span(), bundle.signed_pre_key);
  if (!send.ok()) return send.error();

  SessionState s;
  s.local_identity = local.identity.public_key;
  s.remote_identity = bundle.identity_key;
  s.local_registration_id = local.registration_id;
  s.remote_registration_id = bundle.registration_id;
  s.root_key = send->root_key;
  s.sender_ratchet_public = ratchet.public_key;
  s.sender_ratchet_private = Key32(std::span<const uint8_t, 32>(ratchet.private_key.data(), 32));
  s.sender_chain_key = send->chain_key;
  s.receiver = ReceiverChain{bundle.signed_pre_key, master->chain_key, 0};
  s.pending_prekey = PendingPreKey{bundle.pre_key_id, bundle.signed_pre_key_id, base.public_key};
  s.base_key = base.public_key;
  record.promote(std::move(s));
  return {};
}

Result<Ciphertext> session_encrypt(SessionRecord& record, std::span<const uint8_t> plaintext) {
  if (!record.current) return Errc::kNoSession;
  SessionState& s = *record.current;
  if (s.sender_index == UINT32_MAX) return Errc::kTooLarge;  // chain exhausted (never in practice)
  Key32 seed = chain_message_seed(s.sender_chain_key);
  MessageKeys keys = derive_message_keys(seed);
  auto ct = aes_cbc_encrypt(keys.cipher_key.bytes, keys.iv, plaintext);
  if (!ct.ok()) return ct.error();
  SignalMessage m = SignalMessage::make(keys.mac_key.span(), s.sender_ratchet_public, s.sender_index,
                                        s.previous_counter, std::move(*ct), s.local_identity, s.remote_identity);
  s.sender_chain_key = chain_next(s.sender_chain_key);
  ++s.sender_index;
  Ciphertext out;
  if (s.pending_prekey) {
    auto pk = PreKeySignalMessage::make(s.local_registration_id, s.pending_prekey->pre_key_id,
                                        s.pending_prekey->signed_pre_key_id, s.pending_prekey->base_key,
                                        s.local_identity, std::move(m));
    out.type = MessageType::kPreKey;
    out.bytes = std::move(pk.serialized);
  } else {
    out.type = MessageType::kWhisper;
    out.bytes = std::move(m.serialized);
  }
  return out;
}

Result<std::vector<uint8_t>> session_decrypt(SessionRecord& record, std::span<const uint8_t> bytes, int64_t now_s,
                                             const RatchetLimits& limits) {
  auto m = SignalMessage::parse(bytes);
  if (!m.ok()) return m.error();
  return decrypt_record(record, *m, now_s, limits);
}

Result<PreKeyDecrypted> session_decrypt_prekey(SessionRecord& record, const LocalDevice& local,
                                               const PreKeyLookup& keys, std::span<const uint8_t> bytes,
                                               int64_t now_s, const RatchetLimits& limits) {
  auto m = PreKeySignalMessage::parse(bytes);
  if (!m.ok()) return m.error();
  PreKeyDecrypted out;
  out.remote_identity = m->identity_key;
  out.remote_registration_id = m->registration_id;

  // A session already built from this base key (a retransmission, or the initiator sending
  // more before our reply): continue it.
  bool known = (record.current && record.current->base_key == m->base_key &&
                record.current->remote_identity == m->identity_key);
  for (const auto& a : record.archived) {
    known = known || (a.base_key == m->base_key && a.remote_identity == m->identity_key);
  }
  if (known) {
    auto pt = decrypt_record(record, m->message, now_s, limits);
    if (!pt.ok()) return pt.error();
    out.plaintext = std::move(*pt);
    return out;
  }

  const KeyPair* spk = keys.signed_pre_key ? keys.signed_pre_key(m->signed_pre_key_id) : nullptr;
  if (spk == nullptr) return Errc::kNoSession;
  const KeyPair* opk = nullptr;
  if (m->pre_key_id) {
    opk = keys.one_time_pre_key ? keys.one_time_pre_key(*m->pre_key_id) : nullptr;
    if (opk == nullptr) return Errc::kNoSession;  // already used: a replayed set-up
  }
  std::optional<std::span<const uint8_t>> opk_private;
  if (opk) opk_private = opk->private_key.span();
  auto master = x3dh_responder(local.identity.private_key.span(), spk->private_key.span(), opk_private,
                               m->identity_key, m->base_key);
  if (!master.ok()) return master.error();

  SessionState s;
  s.local_identity = local.identity.public_key;
  s.remote_identity = m->identity_key;
  s.local_registration_id = local.registration_id;
  s.remote_registration_id = m->registration_id;
  s.root_key = master->root_key;
  // Our first ratchet key is the signed prekey; the X3DH chain is its sending chain.
  s.sender_ratchet_public = spk->public_key;
  s.sender_ratchet_private = Key32(std::span<const uint8_t, 32>(spk->private_key.data(), 32));
  s.sender_chain_key = master->chain_key;
  s.base_key = m->base_key;
  auto pt = decrypt_with(s, m->message, now_s, limits);
  if (!pt.ok()) return pt.error();  // nothing stored: the record is unchanged
  record.promote(std::move(s));
  out.plaintext = std::move(*pt);
  out.used_pre_key_id = m->pre_key_id;
  out.new_session = true;
  return out;
}

}  // namespace tern::crypto
