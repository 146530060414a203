// Attachments in the SDK (issue 11): encrypt + upload (resumable, with progress), download
// (in ranges, resumable, with progress) + verify + decrypt, and the message-body format that
// carries an attachment's key to the recipients.
//
// Body format (inside the message body, which end-to-end encryption protects; the server
// sees only the media ids, in the send frame's clear `media` list):
//   {"text":"…","attachments":[{"media_id":"<64 hex>","key":"<base64 of 32 bytes>",
//                               "size":<plaintext bytes>,"type":"image/jpeg","name":"photo.jpg"}]}
// The media id is the SHA-256 of the uploaded blob, so it is also the digest the recipient
// checks before decrypting (see attachment_cipher.h).
//
// Threading: upload_attachment() and download_attachment() block the calling thread (each
// HTTP exchange on a private io_context, bounded by timeout_ms); call them from an
// application thread, never from the SDK's io thread. The progress callback runs on the
// calling thread. Attachments are held in memory (at most kMaxAttachmentBytes).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"
#include "client/server_url.h"

namespace tern::client {

struct Attachment {
  std::string media_id;
  std::string key;  // 32 raw bytes
  uint64_t size = 0;  // plaintext bytes
  std::string type;   // MIME type, e.g. "image/jpeg"
  std::string name;   // file name shown to the recipient
};

// Bytes transferred so far and the total.
using Progress = std::function<void(uint64_t done, uint64_t total)>;

struct TransferOptions {
  size_t chunk_bytes = 1 << 20;  // per PUT / per Range GET
  int max_attempts = 5;          // per chunk, across dropped connections
  int64_t timeout_ms = 30'000;   // per HTTP exchange
};

Result<Attachment> upload_attachment(const ServerUrl& url, const std::string& token, std::string_view plaintext,
                                     std::string type, std::string name, const Progress& progress = {},
                                     const TransferOptions& options = {});
Result<std::string> download_attachment(const ServerUrl& url, const std::string& token, const Attachment& attachment,
                                        const Progress& progress = {}, const TransferOptions& options = {});

std::string encode_attachment_body(std::string_view text, const std::vector<Attachment>& attachments);
// nullopt when the body is not an attachment message (e.g. plain text).
std::optional<std::pair<std::string, std::vector<Attachment>>> parse_attachment_body(std::string_view body);

}  // namespace tern::client
