#pragma once
// Strict reading and plain writing of JSON objects for the event codecs (private to domain).

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "ledger/domain/loan_schedule.hpp"

namespace ledger::domain {

// Reads the fields of one JSON object. It counts the fields it found, so that complete()
// also refuses fields nobody asked for (and duplicated keys).
class FieldReader {
 public:
  static constexpr bool reads = true;
  explicit FieldReader(const rapidjson::Value& object) : object_(object) {}

  void string(const char* key, std::string& out) {
    const rapidjson::Value* value = find(key);
    if (value == nullptr || !value->IsString()) return fail();
    out.assign(value->GetString(), value->GetStringLength());
  }
  // Integers only: 1.5 or 1e3 is not an amount.
  void int64(const char* key, std::int64_t& out) {
    const rapidjson::Value* value = find(key);
    if (value == nullptr || !value->IsInt64()) return fail();
    out = value->GetInt64();
  }
  void int32(const char* key, std::int32_t& out) {
    const rapidjson::Value* value = find(key);
    if (value == nullptr || !value->IsInt()) return fail();
    out = value->GetInt();
  }
  void boolean(const char* key, bool& out) {
    const rapidjson::Value* value = find(key);
    if (value == nullptr || !value->IsBool()) return fail();
    out = value->GetBool();
  }
  // "YYYY-MM-DD"
  void date(const char* key, Date& out) {
    std::string text;
    string(key, text);
    if (const auto parsed = parse_date(text)) {
      out = *parsed;
    } else {
      fail();
    }
  }
  // An array; `each` reads one element and returns false to refuse it.
  template <typename Each>
  void array(const char* key, Each&& each) {
    const rapidjson::Value* value = find(key);
    if (value == nullptr || !value->IsArray()) return fail();
    for (const auto& element : value->GetArray()) {
      if (!each(element)) return fail();
    }
  }
  void uint32(const char* key, std::uint32_t& out) {
    const rapidjson::Value* value = find(key);
    if (value == nullptr || !value->IsUint()) return fail();
    out = value->GetUint();
  }
  template <class Enum, std::size_t N>
  void name(const char* key, Enum& out, const std::string_view (&names)[N]) {
    std::string text;
    string(key, text);
    for (std::size_t i = 0; i < N; ++i) {
      if (names[i] == text) {
        out = static_cast<Enum>(i);
        return;
      }
    }
    fail();
  }

  [[nodiscard]] bool complete() const { return ok_ && found_ == object_.MemberCount(); }
  // For checks across fields (an amount that must be the sum of others).
  void fail() { ok_ = false; }

 private:
  const rapidjson::Value* find(const char* key) {
    const auto member = object_.FindMember(key);
    if (member == object_.MemberEnd()) return nullptr;
    ++found_;
    return &member->value;
  }

  const rapidjson::Value& object_;
  rapidjson::SizeType found_ = 0;
  bool ok_ = true;
};

// Writes the fields FieldReader reads, with the same names, into an open JSON object.
class FieldWriter {
 public:
  static constexpr bool reads = false;
  explicit FieldWriter(rapidjson::Writer<rapidjson::StringBuffer>& writer) : w_(writer) {}

  void string(const char* key, std::string_view value) {
    w_.Key(key);
    w_.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  }
  void int64(const char* key, std::int64_t value) {
    w_.Key(key);
    w_.Int64(value);
  }
  void uint32(const char* key, std::uint32_t value) {
    w_.Key(key);
    w_.Uint(value);
  }
  template <class Enum, std::size_t N>
  void name(const char* key, Enum value, const std::string_view (&names)[N]) {
    string(key, names[static_cast<std::size_t>(value)]);
  }

 private:
  rapidjson::Writer<rapidjson::StringBuffer>& w_;
};

}  // namespace ledger::domain
