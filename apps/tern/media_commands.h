// `tern` attachments (issue 11): uploading a file for `tern send --file`, `tern download`,
// and the chat's /save, with a progress bar on stderr when it is a terminal.
// Runs on the CLI's main thread (the SDK transfer calls block it, bounded per exchange).
#pragma once
#include <optional>
#include <string>

#include "base/ids.h"
#include "client/attachments.h"
#include "commands.h"

namespace tern::cli {

// Reads `path`, encrypts and uploads it (a progress bar on a TTY).
Result<client::Attachment> upload_file(const client::ServerUrl& url, const std::string& token, const std::string& path);
// Saves the attachments of message `seq` of the conversation: into `out` when given (a
// file for one attachment, else a directory), else under their names in the current
// directory; never over an existing file. Returns the paths written.
Result<std::vector<std::string>> save_attachments(const client::Api& api, const client::ServerUrl& url,
                                                  const std::string& token, const std::string& conversation_id, Seq seq,
                                                  const std::string& out);
int cmd_download(const Global& g, const std::string& target, Seq seq, const std::string& out);

}  // namespace tern::cli
