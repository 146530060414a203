// Secret key material.
//  * SecretBytes: a variable-length secret in sodium_malloc memory (guard pages, mlock'ed where
//    the OS allows, never swapped when locked) wiped by sodium_free. Used for long-lived
//    private keys and serialized secret state. Each allocation costs an mmap of >= 3 pages,
//    so per-message keys do not use it:
//  * Key32: a 32-byte key by value (root, chain, message keys), wiped by its destructor with
//    sodium_memzero. Copies are allowed (each copy wipes itself).
// Thread-safety: values; one thread at a time per object.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace tern::crypto {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size);  // zero-filled
  static SecretBytes copy_of(std::span<const uint8_t> bytes);
  ~SecretBytes();
  SecretBytes(SecretBytes&& o) noexcept;
  SecretBytes& operator=(SecretBytes&& o) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  SecretBytes clone() const { return copy_of(span()); }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  // Constant-time equality (sizes compared in the clear).
  bool equals(std::span<const uint8_t> other) const;

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

struct Key32 {
  std::array<uint8_t, 32> bytes{};
  Key32() = default;
  explicit Key32(std::span<const uint8_t, 32> b);
  Key32(const Key32&) = default;
  Key32& operator=(const Key32&) = default;
  ~Key32();
  uint8_t* data() { return bytes.data(); }
  const uint8_t* data() const { return bytes.data(); }
  std::span<const uint8_t, 32> span() const { return std::span<const uint8_t, 32>(bytes); }
  bool operator==(const Key32& o) const;  // constant time
};

// Wipes a buffer (sodium_memzero: not optimized away).
void wipe(std::span<uint8_t> bytes);
// Cryptographically secure random bytes (libsodium randombytes_buf).
void random_bytes(std::span<uint8_t> out);
// A random uint32 (registration ids, key ids).
uint32_t random_u32();

}  // namespace tern::crypto
