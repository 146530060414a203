// Text the CLI shows people, shared by `tern history` and `tern chat`: system messages
// (membership changes) as sentences, and lists of names. Pure functions; thread-safe.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "client/types.h"

namespace tern::cli {

// "a", "a and b", "a, b and c" (each name made printable).
std::string join_names(const std::vector<std::string>& names);
// A system message's JSON as a sentence: "uma created the group climbing with alice and
// bob", "uma added carol", "uma removed carol", "carol left". Unknown shapes fall back to
// "membership changed (<action>)".
std::string system_sentence(std::string_view system_json);
// What a person sees of a message's body: its text, "(expired)" once its expires_at passed
// (the CLI never shows an expired message's content, whatever the server sent), or for an
// attachment message its text and one "[attachment …]" per file with how to save it.
std::string message_text(const client::Message& m, int64_t now_ms);
// "1 h", "24 h", "7 d", "90 s": a disappearing-messages timer for people.
std::string duration_text(int64_t seconds);
// The users a system message adds (create/add) or removes (remove), for keeping a member
// list current; `removed` tells which.
std::vector<std::string> system_users(std::string_view system_json, bool& removed);

}  // namespace tern::cli
