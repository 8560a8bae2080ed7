#pragma once
// Forms PostgreSQL reads fast: COPY's text format, array literals (for unnest/ANY) and arrays
// in the binary wire format (parameters the server reads without parsing text).

#include <cstddef>
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

// Builds a one-dimensional array in PostgreSQL's binary format (what array_recv reads), for a
// parameter sent in binary (pqxx 6 sends a pqxx::binarystring so) to a statement that casts it,
// e.g. `unnest($1::bytea[])`: the server copies each element's bytes, parsing no text, and
// checks the element type against the cast. No element is NULL.
class BinaryArray {
 public:
  // The element types the engine sends, by their fixed PostgreSQL type OIDs.
  enum class Element : std::uint32_t {
    bytea = 17,
    int8 = 20,
    int2 = 21,
    text = 25,
    timestamptz = 1184,
    uuid = 2950,
    jsonb = 3802,
  };

  explicit BinaryArray(Element element);
  void add_int8(std::int64_t value);
  void add_int2(std::int16_t value);
  // text and bytea: the bytes as they are.
  void add_bytes(std::string_view bytes);
  // Microseconds since the Unix epoch; throws std::out_of_range before timestamptz's range
  // (4714-11-24 BC) and adds nothing.
  void add_timestamp(std::int64_t micros_since_epoch);
  // A UUID in its canonical text form (lowercase, 8-4-4-4-12); throws std::invalid_argument for
  // any other spelling and adds nothing.
  void add_uuid(std::string_view text);
  // A JSON document (the server still parses it into jsonb).
  void add_jsonb(std::string_view json);
  [[nodiscard]] std::size_t size() const { return count_; }
  // The whole array; the builder is empty afterwards.
  std::string finish();

 private:
  // A one-dimensional array's header: dimensions, NULL flag, element type, length, lower bound.
  static constexpr std::size_t header_bytes = 20;
  Element element_;
  std::string elements_;  // the header's room, then the elements
  std::size_t count_ = 0;
};

}  // namespace ledger::db
