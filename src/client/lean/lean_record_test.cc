#include "client/lean/lean_record.h"

#include <gtest/gtest.h>

#include "base/base64.h"

namespace tern::client::lean {
namespace {

TEST(LeanRecord, RoundTripsAndIsValidBase64OfTheRequestedSize) {
  for (size_t size : {0u, 24u, 25u, 100u, 1000u}) {
    BodyEncoder enc(size);
    std::string b64;
    const BodyRecord r{4242, 0x0123456789ull, 1700000000123456LL};
    enc.encode(r, b64);
    auto raw = base64_decode(b64);
    ASSERT_TRUE(raw.has_value()) << size;
    EXPECT_EQ(raw->size(), enc.body_bytes());
    EXPECT_GE(raw->size(), std::max<size_t>(size, kRecordBytes));
    EXPECT_EQ(raw->size() % 3, 0u);
    auto back = decode_body(b64);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, r);
  }
}

TEST(LeanRecord, ForeignBodiesAreNotRecords) {
  EXPECT_FALSE(decode_body("aGk=").has_value());
  EXPECT_FALSE(decode_body(base64_encode(std::string(40, 'z'))).has_value());
  EXPECT_FALSE(decode_body(std::string(40, '*')).has_value());
}

TEST(LeanRecord, RawRecordForBinaryPayloads) {
  const BodyRecord r{7, 123456789ull, 1700000000123456LL};
  for (size_t size : {0u, 24u, 100u}) {
    std::string out;
    encode_record_raw(r, size, out);
    EXPECT_EQ(out.size(), std::max<size_t>(size, kRecordBytes));
    auto back = decode_record_raw(out);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, r);
  }
  EXPECT_FALSE(decode_record_raw(std::string(23, 'x')).has_value());
  EXPECT_FALSE(decode_record_raw(std::string(40, 'x')).has_value());
}

}  // namespace
}  // namespace tern::client::lean
