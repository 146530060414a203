#include "terminal.h"

#include <sys/ioctl.h>
#include <unistd.h>

namespace tern::cli {

RawMode::RawMode(int fd) : fd_(fd) {
  if (!::isatty(fd) || ::tcgetattr(fd, &saved_) != 0) return;
  termios raw = saved_;
  // Byte at a time, no echo, our own handling of ^C/^D; output processing stays on so
  // '\n' still returns the carriage.
  raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO | ISIG | IEXTEN);
  raw.c_iflag &= ~static_cast<tcflag_t>(IXON | ICRNL);
  raw.c_cc[VMIN] = 0;
  raw.c_cc[VTIME] = 0;
  active_ = ::tcsetattr(fd, TCSANOW, &raw) == 0;
}

RawMode::~RawMode() {
  if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
}

WindowSize window_size(int fd) {
  winsize ws{};
  WindowSize out;
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
    out.rows = ws.ws_row;
    out.cols = ws.ws_col;
  }
  return out;
}

namespace {
// Length of the UTF-8 sequence at s[i] if valid, else 0.
size_t utf8_len(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  return n;
}
}  // namespace

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_len(text, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
      continue;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (n == 1 && (c < 0x20 || c == 0x7f)) {
      out.push_back(c == '\t' ? ' ' : '?');
    } else if (n == 2 && c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0) {
      out.push_back('?');  // C1 controls U+0080..U+009F
    } else {
      out.append(text.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string clip(std::string_view text, size_t max) {
  size_t i = 0, count = 0;
  while (i < text.size() && count < max) {
    const size_t n = utf8_len(text, i);
    i += n ? n : 1;
    ++count;
  }
  return std::string(text.substr(0, i));
}

size_t width(std::string_view text) {
  size_t i = 0, count = 0;
  while (i < text.size()) {
    const size_t n = utf8_len(text, i);
    i += n ? n : 1;
    ++count;
  }
  return count;
}

bool valid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_len(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void pop_code_point(std::string& text) {
  while (!text.empty()) {
    const auto c = static_cast<unsigned char>(text.back());
    text.pop_back();
    if ((c & 0xc0) != 0x80) break;  // removed the lead byte (or an ASCII char)
  }
}

}  // namespace tern::cli
