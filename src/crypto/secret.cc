#include "crypto/secret.h"

#include <sodium.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "crypto/xeddsa.h"  // init()

namespace tern::crypto {

SecretBytes::SecretBytes(size_t size) : size_(size) {
  init();
  if (size == 0) return;
  data_ = static_cast<uint8_t*>(sodium_malloc(size));
  if (data_ == nullptr) throw std::bad_alloc();  // out of memory, like operator new
  std::memset(data_, 0, size);
}

SecretBytes SecretBytes::copy_of(std::span<const uint8_t> bytes) {
  SecretBytes s(bytes.size());
  if (!bytes.empty()) std::memcpy(s.data_, bytes.data(), bytes.size());
  return s;
}

SecretBytes::~SecretBytes() {
  if (data_ != nullptr) sodium_free(data_);  // sodium_free wipes before unmapping
}

SecretBytes::SecretBytes(SecretBytes&& o) noexcept : data_(o.data_), size_(o.size_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) sodium_free(data_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

bool SecretBytes::equals(std::span<const uint8_t> other) const {
  if (other.size() != size_) return false;
  if (size_ == 0) return true;
  return sodium_memcmp(data_, other.data(), size_) == 0;
}

Key32::Key32(std::span<const uint8_t, 32> b) { std::memcpy(bytes.data(), b.data(), 32); }
Key32::~Key32() { sodium_memzero(bytes.data(), bytes.size()); }
bool Key32::operator==(const Key32& o) const { return sodium_memcmp(bytes.data(), o.bytes.data(), 32) == 0; }

void wipe(std::span<uint8_t> bytes) {
  if (!bytes.empty()) sodium_memzero(bytes.data(), bytes.size());
}

void random_bytes(std::span<uint8_t> out) {
  init();
  if (out.empty()) return;  // randombytes_buf's pointer must not be null
  randombytes_buf(out.data(), out.size());
}

uint32_t random_u32() {
  init();
  return randombytes_random();
}

}  // namespace tern::crypto
