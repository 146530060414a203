// Errors of tern_crypto and Result<T>, a value or an error code. tern_crypto depends on no
// other tern target, so it carries its own small result type (no exceptions: decrypting
// untrusted input fails with a code, never a throw). Thread-safe: plain values.
#pragma once
#include <cassert>
#include <string_view>
#include <utility>
#include <variant>

namespace tern::crypto {

enum class Errc {
  kMalformed,           // bytes do not parse (truncated, overlong, bad field, wrong length)
  kUnsupportedVersion,  // a message or record version we do not speak
  kInvalidKey,          // a key that is not a valid point / all-zero DH output
  kBadMac,              // MAC or AEAD/CBC padding check failed
  kBadSignature,        // XEdDSA / Ed25519 signature did not verify
  kDuplicate,           // message key already used or chain already past it (replay)
  kTooFarAhead,         // more than MAX_SKIP messages skipped in one chain
  kNoSession,           // no session/sender key for that address or key id
  kTooLarge,            // input over a size limit
  kInternal,            // library failure (OpenSSL) — a bug or resource exhaustion
};

std::string_view errc_name(Errc e);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Errc e) : v_(std::in_place_index<1>, e) {}                   // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  Errc error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Errc> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Errc e) : e_(e), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  Errc error() const { assert(!ok_); return e_; }

 private:
  Errc e_ = Errc::kInternal;
  bool ok_ = true;
};

}  // namespace tern::crypto
