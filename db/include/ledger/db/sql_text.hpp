#pragma once
// Text forms PostgreSQL parses fast: COPY's text format and array literals (for unnest/ANY).

#include <cstdint>
#include <string>
#include <string_view>

namespace ledger::db {

// Appends one field of COPY's text format (tab-separated, backslash escapes).
void copy_text(std::string& line, std::string_view value);
// Appends bytea in COPY's text format (hex).
void copy_bytes(std::string& line, std::string_view bytes);
// Appends a timestamptz (UTC) from microseconds since the Unix epoch.
void copy_timestamp(std::string& line, std::int64_t micros_since_epoch);

// Builds a PostgreSQL array literal in text form, element by element.
class ArrayLiteral {
 public:
  ArrayLiteral() { text_.push_back('{'); }
  void add_number(std::int64_t value);
  void add_text(std::string_view value);
  void add_bytes(std::string_view bytes);
  [[nodiscard]] bool empty() const { return text_.size() == 1; }
  std::string finish();

 private:
  void separate() {
    if (text_.size() > 1) text_.push_back(',');
  }
  std::string text_;
};

}  // namespace ledger::db
