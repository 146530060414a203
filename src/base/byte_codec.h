// Big-endian length-prefixed binary fields, for what nodes pass each other through Redis
// (bus batches, forwarded sends). The writer appends to a std::string; ByteReader reads with
// bounds checks and turns `ok` false on the first short read (then returns zeros/empties),
// so a decoder checks `ok` once at the end. Header-only; no state shared between threads.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace tern {

inline void put_u32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void put_u64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

struct ByteReader {
  std::string_view in;
  bool ok = true;
  uint64_t num(int bytes) {
    if (in.size() < static_cast<size_t>(bytes)) {
      ok = false;
      return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
    in.remove_prefix(bytes);
    return v;
  }
  std::string str() {
    const uint64_t n = num(4);
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    std::string s(in.substr(0, n));
    in.remove_prefix(n);
    return s;
  }
};

}  // namespace tern
