#include "jsonb_text.hpp"

#include <rapidjson/document.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace ledger::projections {

namespace {

// PostgreSQL's escape_json: the two-character escapes, other control characters as \u00xx
// (lower-case hex), everything else (UTF-8 included) as it is.
void write_string(std::string& out, const char* text, std::size_t size) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < size; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c < ' ') {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void write_value(std::string& out, const rapidjson::Value& value) {
  switch (value.GetType()) {
    case rapidjson::kNullType: out += "null"; break;
    case rapidjson::kFalseType: out += "false"; break;
    case rapidjson::kTrueType: out += "true"; break;
    case rapidjson::kStringType: write_string(out, value.GetString(), value.GetStringLength()); break;
    case rapidjson::kNumberType:
      if (value.IsInt64()) {
        out += std::to_string(value.GetInt64());
      } else if (value.IsUint64()) {
        out += std::to_string(value.GetUint64());
      } else {
        // No event field is fractional (amounts are minor units); jsonb would print numeric's
        // own text, which a double cannot promise to match.
        throw std::invalid_argument("jsonb_text: a fractional number");
      }
      break;
    case rapidjson::kArrayType: {
      out += '[';
      bool first = true;
      for (const auto& item : value.GetArray()) {
        if (!first) out += ", ";
        first = false;
        write_value(out, item);
      }
      out += ']';
      break;
    }
    case rapidjson::kObjectType: {
      // jsonb keeps one value per key (the last) and orders keys by length, then bytes.
      std::vector<const rapidjson::Value::Member*> members;
      for (const auto& member : value.GetObject()) members.push_back(&member);
      std::stable_sort(members.begin(), members.end(), [](const auto* a, const auto* b) {
        const auto la = a->name.GetStringLength();
        const auto lb = b->name.GetStringLength();
        if (la != lb) return la < lb;
        return std::memcmp(a->name.GetString(), b->name.GetString(), la) < 0;
      });
      out += '{';
      for (std::size_t i = 0; i < members.size(); ++i) {
        const auto* member = members[i];
        const bool superseded = i + 1 < members.size() &&
                                member->name.GetStringLength() == members[i + 1]->name.GetStringLength() &&
                                std::memcmp(member->name.GetString(), members[i + 1]->name.GetString(),
                                            member->name.GetStringLength()) == 0;
        if (superseded) continue;
        if (out.back() != '{') out += ", ";
        write_string(out, member->name.GetString(), member->name.GetStringLength());
        out += ": ";
        write_value(out, member->value);
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

std::string jsonb_text(std::string_view json) {
  rapidjson::Document document;
  document.Parse(json.data(), json.size());
  if (document.HasParseError()) throw std::invalid_argument("jsonb_text: not JSON");
  std::string out;
  out.reserve(json.size() + json.size() / 4);
  write_value(out, document);
  return out;
}

}  // namespace ledger::projections
