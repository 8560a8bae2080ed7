#include "ledger/db/sql_text.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>
#include <stdexcept>
#include <utility>

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

namespace {

// Writes `value` as exactly `width` decimal digits at `out` (the caller's range keeps it short).
void put_digits(char* out, int width, std::int64_t value) {
  for (int i = width - 1; i >= 0; --i) {
    out[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

// Years 1 to 9999, the four-digit years the fast path writes: [0001-01-01, 10000-01-01) UTC.
constexpr std::int64_t four_digit_years_first_us = -62'135'596'800LL * 1'000'000;
constexpr std::int64_t four_digit_years_end_us = 253'402'300'800LL * 1'000'000;

}  // namespace

void copy_timestamp(std::string& line, std::int64_t micros_since_epoch) {
  if (micros_since_epoch < four_digit_years_first_us ||
      micros_since_epoch >= four_digit_years_end_us) {
    // Years before 1 or past 9999 (an import of odd data): the formatting used before, kept
    // as it was (PostgreSQL reads years past 9999 so; it has no year 0).
    const std::int64_t seconds = micros_since_epoch >= 0
                                     ? micros_since_epoch / 1'000'000
                                     : (micros_since_epoch - 999'999) / 1'000'000;
    const std::int64_t micros = micros_since_epoch - seconds * 1'000'000;
    const std::time_t t = static_cast<std::time_t>(seconds);
    std::tm utc{};
    gmtime_r(&t, &utc);
    char buffer[48];
    std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00",
                  utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                  utc.tm_sec, static_cast<long long>(micros));
    line += buffer;
    return;
  }
  // Every read-model row carries a time: formatting it with snprintf and gmtime_r was a few
  // percent of a projector's CPU in a catch-up (issue 18). The calendar is <chrono>'s.
  using namespace std::chrono;  // NOLINT(google-build-using-namespace)
  const sys_time<microseconds> at{microseconds{micros_since_epoch}};
  const sys_days day = floor<days>(at);
  const year_month_day date{day};
  const std::int64_t of_day = (at - day).count();  // [0, 86,400,000,000)
  char text[] = "YYYY-MM-DD hh:mm:ss.uuuuuu+00";
  put_digits(text, 4, static_cast<int>(date.year()));
  put_digits(text + 5, 2, static_cast<unsigned>(date.month()));
  put_digits(text + 8, 2, static_cast<unsigned>(date.day()));
  put_digits(text + 11, 2, of_day / 3'600'000'000LL);
  put_digits(text + 14, 2, of_day / 60'000'000 % 60);
  put_digits(text + 17, 2, of_day / 1'000'000 % 60);
  put_digits(text + 20, 6, of_day % 1'000'000);
  line.append(text, sizeof text - 1);
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

namespace {

// The binary format is big-endian throughout.
void put_u16(std::string& out, std::uint16_t value) {
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value));
}

void put_u32(std::string& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

void put_u64(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

// An element's length prefix: the format has 32 bits for it (PostgreSQL caps a value at 1 GB).
void put_length(std::string& out, std::size_t length) {
  if (length > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    throw std::length_error("an array element longer than PostgreSQL's binary format allows");
  }
  put_u32(out, static_cast<std::uint32_t>(length));
}

// timestamptz counts microseconds from 2000-01-01 00:00:00 UTC.
constexpr std::int64_t postgres_epoch_micros = 946'684'800'000'000;

}  // namespace

BinaryArray::BinaryArray(Element element) : element_(element), elements_(header_bytes, '\0') {}

void BinaryArray::add_int8(std::int64_t value) {
  put_u32(elements_, 8);
  put_u64(elements_, static_cast<std::uint64_t>(value));
  ++count_;
}

void BinaryArray::add_int2(std::int16_t value) {
  put_u32(elements_, 2);
  put_u16(elements_, static_cast<std::uint16_t>(value));
  ++count_;
}

void BinaryArray::add_bytes(std::string_view bytes) {
  put_length(elements_, bytes.size());
  elements_ += bytes;
  ++count_;
}

void BinaryArray::add_timestamp(std::int64_t micros_since_epoch) {
  // timestamptz starts at 4714-11-24 BC (in microseconds from 2000: `lowest`); the server
  // refuses earlier values, and the first int64 below them would wrap. Its end (294276 AD) lies
  // beyond every int64 of Unix microseconds.
  constexpr std::int64_t lowest = -211'813'488'000'000'000;
  std::int64_t micros = 0;
  if (__builtin_sub_overflow(micros_since_epoch, postgres_epoch_micros, &micros) || micros < lowest) {
    throw std::out_of_range("a time before PostgreSQL's timestamptz range: " +
                            std::to_string(micros_since_epoch) + " µs since the Unix epoch");
  }
  add_int8(micros);
}

void BinaryArray::add_uuid(std::string_view text) {
  // Only the canonical form: the hash chain covers an event id's text, and the column keeps
  // 16 bytes that read back canonical, so any other spelling would fail verification forever.
  bool canonical = text.size() == 36;
  for (std::size_t at = 0; canonical && at < text.size(); ++at) {
    const char c = text[at];
    canonical = at == 8 || at == 13 || at == 18 || at == 23 ? c == '-'
                                                            : (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }
  if (!canonical) {
    throw std::invalid_argument("not a UUID in canonical form (lowercase 8-4-4-4-12): \"" +
                                std::string(text) + "\"");
  }
  put_u32(elements_, 16);
  // The five groups of hex digits between the hyphens (checked above).
  static constexpr std::pair<std::size_t, std::size_t> groups[] = {
      {0, 8}, {9, 4}, {14, 4}, {19, 4}, {24, 12}};
  for (const auto& [at, digits] : groups) (void)append_from_hex(elements_, text.substr(at, digits));
  ++count_;
}

void BinaryArray::add_jsonb(std::string_view json) {
  put_length(elements_, json.size() + 1);
  elements_.push_back('\1');  // jsonb's binary format version
  elements_ += json;
  ++count_;
}

std::string BinaryArray::finish() {
  std::string array;
  if (count_ == 0) {
    put_u32(array, 0);  // an empty array has no dimensions
    put_u32(array, 0);
    put_u32(array, static_cast<std::uint32_t>(element_));
    return array;
  }
  // The header goes into the room left before the elements (no copy of them).
  std::string header;
  put_u32(header, 1);  // dimensions
  put_u32(header, 0);  // no NULL elements
  put_u32(header, static_cast<std::uint32_t>(element_));
  put_length(header, count_);
  put_u32(header, 1);  // lower bound
  elements_.replace(0, header_bytes, header);
  array = std::move(elements_);
  elements_.assign(header_bytes, '\0');
  count_ = 0;
  return array;
}

}  // namespace ledger::db
