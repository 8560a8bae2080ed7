#include "ledger/db/sql_text.hpp"

#include <cstdio>
#include <ctime>

#include "ledger/core/hex.hpp"

namespace ledger::db {

void copy_text(std::string& line, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\': line += "\\\\"; break;
      case '\t': line += "\\t"; break;
      case '\n': line += "\\n"; break;
      case '\r': line += "\\r"; break;
      default: line.push_back(c);
    }
  }
}

void copy_bytes(std::string& line, std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  line += "\\\\x";
  const std::size_t start = line.size();
  line.resize(start + bytes.size() * 2);
  char* out = line.data() + start;
  for (unsigned char byte : bytes) {
    *out++ = digits[byte >> 4];
    *out++ = digits[byte & 0xf];
  }
}

void copy_timestamp(std::string& line, std::int64_t micros_since_epoch) {
  const std::int64_t seconds = micros_since_epoch >= 0 ? micros_since_epoch / 1'000'000
                                                       : (micros_since_epoch - 999'999) / 1'000'000;
  const std::int64_t micros = micros_since_epoch - seconds * 1'000'000;
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<long long>(micros));
  line += buffer;
}

void ArrayLiteral::add_number(std::int64_t value) {
  separate();
  text_ += std::to_string(value);
}

void ArrayLiteral::add_text(std::string_view value) {
  separate();
  text_.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') text_.push_back('\\');
    text_.push_back(c);
  }
  text_.push_back('"');
}

void ArrayLiteral::add_bytes(std::string_view bytes) {
  separate();
  text_ += "\"\\\\x";
  text_ += to_hex(bytes);
  text_.push_back('"');
}

std::string ArrayLiteral::finish() {
  text_.push_back('}');
  return std::move(text_);
}

}  // namespace ledger::db
