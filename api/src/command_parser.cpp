#include "command_parser.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "ledger/core/money.hpp"
#include "ledger/core/utf8.hpp"
#include "ledger/domain/types.hpp"

namespace ledger::api {
namespace {

using rapidjson::Value;

constexpr std::size_t text_length_max = 256;  // owner, reference: bytes
constexpr std::size_t batch_size_max = 100;
constexpr std::size_t echo_length_max = 64;  // bytes of client text quoted in a detail

// Parse flags: strict RFC 8259 (no comments, no trailing commas, no NaN), validated UTF-8,
// and an iterative parser so deep nesting cannot exhaust the stack.
constexpr unsigned parse_flags = rapidjson::kParseValidateEncodingFlag |
                                 rapidjson::kParseIterativeFlag;

// Thrown inside this file only; parse_command turns it into its result.
struct Failure {
  Problem problem;
};

[[noreturn]] void fail(std::string code, std::string title, std::string detail) {
  throw Failure{Problem{400, std::move(code), std::move(title), std::move(detail)}};
}

// Client text as it may appear in a detail: printable ASCII kept, anything else as \xNN,
// quoted, cut after echo_length_max bytes.
std::string quote(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out = "\"";
  const std::size_t shown = text.size() < echo_length_max ? text.size() : echo_length_max;
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    }
  }
  out += '"';
  if (shown < text.size()) out += "...";
  return out;
}

std::string_view view(const Value& string) {
  return {string.GetString(), string.GetStringLength()};
}

std::string type_name(const Value& value) {
  if (value.IsNull()) return "null";
  if (value.IsBool()) return "boolean";
  if (value.IsString()) return "string";
  if (value.IsArray()) return "array";
  if (value.IsObject()) return "object";
  if (value.IsInt64()) return "integer " + std::to_string(value.GetInt64());
  if (value.IsUint64()) return "integer " + std::to_string(value.GetUint64());
  return "a non-integer or out-of-range number";
}

bool is_json_whitespace(std::string_view text) {
  for (const char c : text) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return false;
  }
  return true;
}

// --- Whole-document checks --------------------------------------------------------------

// Walks the document without recursion: every object's keys must be distinct, and every
// string (key or value) valid UTF-8 (a lone \uDC00 escape decodes to a surrogate).
// `batch`: details of problems inside commands[i] start with "commands[i]: ".
void check_document(const Value& root, bool batch) {
  struct Node {
    const Value* value;
    std::size_t parent;     // index in nodes, npos for the root
    std::string_view key;   // member name, when the parent is an object
    std::size_t index = 0;  // element index, when the parent is an array
  };
  constexpr std::size_t none = static_cast<std::size_t>(-1);
  std::vector<Node> nodes;
  std::vector<std::size_t> pending;
  nodes.push_back(Node{&root, none, {}, 0});
  pending.push_back(0);

  // "commands[1]: " and "reference[0].x" style locations, built only on failure.
  const auto locate = [&](std::size_t at, std::string& prefix, std::string& path) {
    std::vector<std::size_t> chain;
    for (std::size_t n = at; n != 0 && n != none; n = nodes[n].parent) chain.push_back(n);
    std::vector<std::string> segments;  // from the root down
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      const Node& node = nodes[*it];
      if (nodes[node.parent].value->IsArray()) {
        segments.push_back("[" + std::to_string(node.index) + "]");
      } else {
        segments.push_back(std::string(node.key));
      }
    }
    std::size_t first = 0;
    if (batch && segments.size() >= 2 && segments[0] == "commands" && segments[1][0] == '[') {
      prefix = "commands" + segments[1] + ": ";
      first = 2;
    }
    for (std::size_t i = first; i < segments.size(); ++i) {
      if (!path.empty() && segments[i][0] != '[') path += '.';
      path += segments[i][0] == '[' ? segments[i] : quote(segments[i]);
    }
  };

  while (!pending.empty()) {
    const std::size_t at = pending.back();
    pending.pop_back();
    const Value& value = *nodes[at].value;
    if (value.IsString()) {
      if (invalid_utf8_offset(view(value)) != std::string_view::npos) {
        std::string prefix;
        std::string path;
        locate(at, prefix, path);
        fail("invalid_utf8", "Invalid UTF-8",
             prefix + "a string" + (path.empty() ? "" : " at " + path) +
                 " is not valid Unicode (lone surrogate escape)");
      }
    } else if (value.IsObject()) {
      std::unordered_set<std::string_view> seen;
      seen.reserve(value.MemberCount());
      for (auto m = value.MemberBegin(); m != value.MemberEnd(); ++m) {
        const std::string_view key = view(m->name);
        if (invalid_utf8_offset(key) != std::string_view::npos) {
          std::string prefix;
          std::string path;
          locate(at, prefix, path);
          fail("invalid_utf8", "Invalid UTF-8",
               prefix + "a key" + (path.empty() ? "" : " in " + path) +
                   " is not valid Unicode (lone surrogate escape)");
        }
        if (!seen.insert(key).second) {
          std::string prefix;
          std::string path;
          locate(at, prefix, path);
          fail("duplicate_key", "Duplicate key",
               prefix + "duplicate key " + quote(key) + (path.empty() ? "" : " in " + path));
        }
        nodes.push_back(Node{&m->value, at, key, 0});
        pending.push_back(nodes.size() - 1);
      }
    } else if (value.IsArray()) {
      for (rapidjson::SizeType i = 0; i < value.Size(); ++i) {
        nodes.push_back(Node{&value[i], at, {}, i});
        pending.push_back(nodes.size() - 1);
      }
    }
  }
}

// --- One object's fields ------------------------------------------------------------------

// The members of one JSON object with the fields its command defines. Details start with
// `prefix` ("commands[i]: " inside a batch).
class Fields {
 public:
  Fields(const Value& object, std::string prefix, std::initializer_list<std::string_view> allowed)
      : object_(object), prefix_(std::move(prefix)) {
    for (auto m = object.MemberBegin(); m != object.MemberEnd(); ++m) {
      const std::string_view key = view(m->name);
      bool known = false;
      for (const std::string_view name : allowed) known = known || name == key;
      if (known) continue;
      std::string detail = prefix_ + "unknown field " + quote(key);
      if (allowed.size() == 0) {
        detail += " (this command takes no fields)";
      } else {
        detail += " (expected";
        const char* separator = " ";
        for (const std::string_view name : allowed) {
          detail += separator;
          detail += name;
          separator = ", ";
        }
        detail += ")";
      }
      fail("unknown_field", "Unknown field", std::move(detail));
    }
  }

  [[nodiscard]] const Value* optional(std::string_view name) const {
    for (auto m = object_.MemberBegin(); m != object_.MemberEnd(); ++m) {
      if (view(m->name) == name) return &m->value;
    }
    return nullptr;
  }

  [[nodiscard]] const Value& required(std::string_view name) const {
    const Value* value = optional(name);
    if (value == nullptr) {
      fail("missing_field", "Missing field",
           prefix_ + "missing required field \"" + std::string(name) + "\"");
    }
    return *value;
  }

  // --- typed accessors: absent optional fields yield std::nullopt ---

  [[nodiscard]] Amount amount(std::string_view name, bool positive) const {
    return to_amount(name, required(name), positive);
  }
  [[nodiscard]] std::optional<Amount> optional_amount(std::string_view name, bool positive) const {
    const Value* value = optional(name);
    if (value == nullptr) return std::nullopt;
    return to_amount(name, *value, positive);
  }

  [[nodiscard]] Currency currency(std::string_view name) const {
    const Value& value = required(name);
    if (!value.IsString()) {
      fail("invalid_currency", "Invalid currency",
           field(name) + " must be a string of three capital letters (ISO 4217), got " +
               type_name(value));
    }
    const auto parsed = Currency::parse(view(value));
    if (!parsed) {
      fail("invalid_currency", "Invalid currency",
           field(name) + " must be three capital letters (ISO 4217), got " +
               quote(view(value)));
    }
    return *parsed;
  }

  [[nodiscard]] std::string id(std::string_view name) const { return to_id(name, required(name)); }
  [[nodiscard]] std::string optional_id(std::string_view name) const {
    const Value* value = optional(name);
    return value == nullptr ? std::string() : to_id(name, *value);
  }

  [[nodiscard]] std::string optional_text(std::string_view name) const {
    const Value* value = optional(name);
    if (value == nullptr) return {};
    if (!value->IsString()) {
      fail("invalid_field", "Invalid field",
           field(name) + " must be a string, got " + type_name(*value));
    }
    const std::string_view text = view(*value);
    if (text.size() > text_length_max) {
      fail("invalid_field", "Invalid field",
           field(name) + " must be at most " + std::to_string(text_length_max) +
               " bytes, got " + std::to_string(text.size()));
    }
    for (std::size_t i = 0; i < text.size(); ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      const bool c1 = c == 0xC2 && i + 1 < text.size() &&
                      static_cast<unsigned char>(text[i + 1]) <= 0x9F;  // U+0080..U+009F
      if (c < 0x20 || c == 0x7F || c1) {
        fail("invalid_field", "Invalid field",
             field(name) + " must not contain control characters (byte offset " +
                 std::to_string(i) + ")");
      }
    }
    return std::string(text);
  }

  [[nodiscard]] std::optional<domain::AccountKind> optional_kind(std::string_view name) const {
    const Value* value = optional(name);
    if (value == nullptr) return std::nullopt;
    if (value->IsString() && view(*value) == "customer") return domain::AccountKind::customer;
    if (value->IsString() && view(*value) == "system") return domain::AccountKind::system;
    fail("invalid_field", "Invalid field",
         field(name) + " must be the string \"customer\" or \"system\", got " +
             (value->IsString() ? quote(view(*value)) : type_name(*value)));
  }

  [[nodiscard]] std::optional<std::uint32_t> optional_uint32(std::string_view name) const {
    const Value* value = optional(name);
    if (value == nullptr) return std::nullopt;
    if (!value->IsUint()) {
      fail("invalid_field", "Invalid field",
           field(name) + " must be an integer from 0 to 4294967295, got " + type_name(*value));
    }
    return value->GetUint();
  }

  // An integer from 0 to `max` (the engine checks the business limits and names them).
  [[nodiscard]] std::optional<std::int32_t> optional_int32(std::string_view name, std::int32_t max) const {
    const Value* value = optional(name);
    if (value == nullptr) return std::nullopt;
    if (!value->IsInt() || value->GetInt() < 0 || value->GetInt() > max) {
      fail("invalid_field", "Invalid field",
           field(name) + " must be an integer from 0 to " + std::to_string(max) + ", got " + type_name(*value));
    }
    return value->GetInt();
  }
  [[nodiscard]] std::int32_t int32(std::string_view name, std::int32_t max) const {
    (void)required(name);
    return *optional_int32(name, max);
  }
  // A calendar date, "YYYY-MM-DD", within the business date range (engine/loan_schedule.hpp).
  [[nodiscard]] std::optional<std::string> optional_date(std::string_view name) const {
    const Value* value = optional(name);
    if (value == nullptr) return std::nullopt;
    if (!value->IsString() || !domain::parse_date(view(*value))) {
      fail("invalid_date", "Invalid date",
           field(name) + " must be a date \"YYYY-MM-DD\", got " +
               (value->IsString() ? quote(view(*value)) : type_name(*value)));
    }
    if (!domain::parse_business_date(view(*value))) {
      fail("invalid_date", "Invalid date",
           field(name) + " must be a date from " + domain::business_date_range() + ", got " +
               quote(view(*value)));
    }
    return std::string(view(*value));
  }
  [[nodiscard]] std::string date(std::string_view name) const {
    (void)required(name);
    return *optional_date(name);
  }
  [[nodiscard]] domain::ScheduleType schedule_type(std::string_view name) const {
    const Value& value = required(name);
    if (value.IsString()) {
      if (const auto type = domain::schedule_type_from(view(value))) return *type;
    }
    fail("invalid_field", "Invalid field",
         field(name) + " must be \"annuity\" or \"equal_principal\", got " +
             (value.IsString() ? quote(view(value)) : type_name(value)));
  }

  [[nodiscard]] std::optional<std::int64_t> optional_positive_int64(std::string_view name) const {
    const Value* value = optional(name);
    if (value == nullptr) return std::nullopt;
    if (!value->IsInt64() || value->GetInt64() <= 0) {
      fail("invalid_field", "Invalid field",
           field(name) + " must be a positive integer (int64), got " + type_name(*value));
    }
    return value->GetInt64();
  }

 private:
  [[nodiscard]] std::string field(std::string_view name) const {
    return prefix_ + "field \"" + std::string(name) + "\"";
  }

  [[nodiscard]] Amount to_amount(std::string_view name, const Value& value, bool positive) const {
    if (!value.IsInt64()) {
      fail("invalid_amount", "Invalid amount",
           field(name) + " must be a JSON integer of minor units within int64, got " +
               type_name(value));
    }
    const std::int64_t units = value.GetInt64();
    if (positive && units <= 0) {
      fail("invalid_amount", "Invalid amount",
           field(name) + " must be greater than 0, got " + std::to_string(units));
    }
    if (!positive && units < 0) {
      fail("invalid_amount", "Invalid amount",
           field(name) + " must not be negative, got " + std::to_string(units));
    }
    return Amount{units};
  }

  [[nodiscard]] std::string to_id(std::string_view name, const Value& value) const {
    if (!value.IsString()) {
      fail("invalid_id", "Invalid id",
           field(name) + " must be a string id (1 to 64 of A-Za-z0-9._:-), got " +
               type_name(value));
    }
    if (!domain::is_valid_id(view(value))) {
      fail("invalid_id", "Invalid id",
           field(name) + " must be 1 to 64 of A-Za-z0-9._:-, got " + quote(view(value)) +
               " (" + std::to_string(value.GetStringLength()) + " bytes)");
    }
    return std::string(view(value));
  }

  const Value& object_;
  std::string prefix_;
};

// --- Commands -----------------------------------------------------------------------------

// `extra` names a field the batch form adds ("type"); `id_field` is where the batch form
// carries the id that single commands take from the path.

domain::OpenAccount open_account(const Value& object, const std::string& prefix, bool batch) {
  const Fields fields = batch ? Fields(object, prefix,
                                       {"type", "id", "currency", "owner", "kind",
                                        "overdraft_limit", "ledger_code"})
                              : Fields(object, prefix,
                                       {"id", "currency", "owner", "kind", "overdraft_limit",
                                        "ledger_code"});
  domain::OpenAccount command;
  command.id = fields.optional_id("id");
  command.currency = fields.currency("currency");
  command.owner = fields.optional_text("owner");
  command.kind = fields.optional_kind("kind").value_or(domain::AccountKind::customer);
  command.overdraft_limit = fields.optional_amount("overdraft_limit", false).value_or(Amount{0});
  command.ledger_code = fields.optional_uint32("ledger_code").value_or(0);
  return command;
}

// Deposit and Withdrawal share their fields.
template <typename Command>
Command account_movement(const Value& object, const std::string& prefix,
                         std::optional<std::string_view> path_id) {
  const Fields fields = path_id ? Fields(object, prefix, {"amount", "reference", "transfer_id"})
                                : Fields(object, prefix,
                                         {"type", "account_id", "amount", "reference",
                                          "transfer_id"});
  Command command;
  command.account_id = path_id ? std::string(*path_id) : fields.id("account_id");
  command.amount = fields.amount("amount", true);
  command.reference = fields.optional_text("reference");
  command.transfer_id = fields.optional_id("transfer_id");
  return command;
}

domain::Transfer transfer(const Value& object, const std::string& prefix, bool batch) {
  const Fields fields =
      batch ? Fields(object, prefix, {"type", "id", "from", "to", "amount", "currency", "reference"})
            : Fields(object, prefix, {"id", "from", "to", "amount", "currency", "reference"});
  domain::Transfer command;
  command.id = fields.optional_id("id");
  command.from = fields.id("from");
  command.to = fields.id("to");
  command.amount = fields.amount("amount", true);
  command.currency = fields.currency("currency");
  command.reference = fields.optional_text("reference");
  return command;
}

domain::PlaceHold hold(const Value& object, const std::string& prefix, bool batch) {
  const Fields fields =
      batch ? Fields(object, prefix,
                     {"type", "id", "from", "to", "amount", "currency", "timeout_seconds",
                      "reference"})
            : Fields(object, prefix,
                     {"id", "from", "to", "amount", "currency", "timeout_seconds", "reference"});
  domain::PlaceHold command;
  command.id = fields.optional_id("id");
  command.from = fields.id("from");
  command.to = fields.id("to");
  command.amount = fields.amount("amount", true);
  command.currency = fields.currency("currency");
  command.timeout_seconds = fields.optional_positive_int64("timeout_seconds");
  command.reference = fields.optional_text("reference");
  return command;
}

domain::PostHold post_hold(const Value& object, const std::string& prefix,
                           std::optional<std::string_view> path_id) {
  const Fields fields = path_id ? Fields(object, prefix, {"amount"})
                                : Fields(object, prefix, {"type", "id", "amount"});
  domain::PostHold command;
  command.id = path_id ? std::string(*path_id) : fields.id("id");
  command.amount = fields.optional_amount("amount", true);
  return command;
}

domain::VoidHold void_hold(const Value& object, const std::string& prefix,
                           std::optional<std::string_view> path_id) {
  const Fields fields =
      path_id ? Fields(object, prefix, {}) : Fields(object, prefix, {"type", "id"});
  domain::VoidHold command;
  command.id = path_id ? std::string(*path_id) : fields.id("id");
  return command;
}

domain::OriginateLoan originate_loan(const Value& object, std::string_view today) {
  const Fields fields(object, "",
                      {"id", "account_id", "currency", "principal", "rate_bps", "installments", "schedule",
                       "origination_date", "first_due_date", "origination_fee", "late_fee", "grace_days"});
  domain::OriginateLoan command;
  command.id = fields.optional_id("id");
  command.borrower = fields.id("account_id");
  command.currency = fields.currency("currency");
  command.principal = fields.amount("principal", true);
  command.rate_bps = fields.int32("rate_bps", 1'000'000);
  command.installments = fields.int32("installments", 100'000);
  command.schedule = fields.schedule_type("schedule");
  command.origination_date = fields.optional_date("origination_date").value_or(std::string(today));
  command.first_due_date = fields.date("first_due_date");
  command.origination_fee = fields.optional_amount("origination_fee", false).value_or(Amount{0});
  command.late_fee = fields.optional_amount("late_fee", false).value_or(Amount{0});
  command.grace_days = fields.optional_int32("grace_days", 100'000).value_or(0);
  return command;
}

domain::SingleCommand batch_member(const Value& member, std::size_t index) {
  const std::string prefix = "commands[" + std::to_string(index) + "]: ";
  if (!member.IsObject()) {
    fail("invalid_field", "Invalid field", prefix + "must be an object, got " + type_name(member));
  }
  const auto type_member = member.FindMember("type");
  if (type_member == member.MemberEnd()) {
    fail("missing_field", "Missing field", prefix + "missing required field \"type\"");
  }
  const Value& type = type_member->value;
  if (!type.IsString()) {
    fail("invalid_field", "Invalid field",
         prefix + "field \"type\" must be a string, got " + type_name(type));
  }
  const std::string_view name = view(type);
  if (name == "open_account") return open_account(member, prefix, true);
  if (name == "deposit") return account_movement<domain::Deposit>(member, prefix, std::nullopt);
  if (name == "withdrawal") {
    return account_movement<domain::Withdrawal>(member, prefix, std::nullopt);
  }
  if (name == "transfer") return transfer(member, prefix, true);
  if (name == "hold") return hold(member, prefix, true);
  if (name == "post_hold") return post_hold(member, prefix, std::nullopt);
  if (name == "void_hold") return void_hold(member, prefix, std::nullopt);
  fail("invalid_field", "Invalid field",
       prefix + "field \"type\" must be one of open_account, deposit, withdrawal, transfer, "
                "hold, post_hold, void_hold, got " +
           quote(name));
}

domain::LinkedCommands batch(const Value& object) {
  const Fields fields(object, "", {"commands"});
  const Value& commands = fields.required("commands");
  if (!commands.IsArray()) {
    fail("invalid_field", "Invalid field",
         "field \"commands\" must be an array of command objects, got " + type_name(commands));
  }
  if (commands.Empty()) {
    fail("invalid_field", "Invalid field", "field \"commands\" must not be empty");
  }
  if (commands.Size() > batch_size_max) {
    fail("invalid_field", "Invalid field",
         "field \"commands\" must hold at most " + std::to_string(batch_size_max) +
             " commands, got " + std::to_string(commands.Size()));
  }
  domain::LinkedCommands linked;
  linked.commands.reserve(commands.Size());
  for (rapidjson::SizeType i = 0; i < commands.Size(); ++i) {
    linked.commands.push_back(batch_member(commands[i], i));
  }
  return linked;
}

bool has_path_id(CommandRoute route) {
  switch (route) {
    case CommandRoute::disburse_loan:
    case CommandRoute::repay_loan:
    case CommandRoute::write_off_loan:
    case CommandRoute::deposit:
    case CommandRoute::withdrawal:
    case CommandRoute::post_hold:
    case CommandRoute::void_hold:
    case CommandRoute::freeze:
    case CommandRoute::unfreeze:
    case CommandRoute::close:
      return true;
    case CommandRoute::open_account:
    case CommandRoute::transfer:
    case CommandRoute::hold:
    case CommandRoute::batch:
    case CommandRoute::originate_loan:
      return false;
  }
  return false;
}

bool all_fields_optional(CommandRoute route) {
  switch (route) {
    case CommandRoute::disburse_loan:
    case CommandRoute::write_off_loan:
    case CommandRoute::post_hold:
    case CommandRoute::void_hold:
    case CommandRoute::freeze:
    case CommandRoute::unfreeze:
    case CommandRoute::close:
      return true;
    case CommandRoute::open_account:
    case CommandRoute::deposit:
    case CommandRoute::withdrawal:
    case CommandRoute::transfer:
    case CommandRoute::hold:
    case CommandRoute::batch:
    case CommandRoute::originate_loan:
    case CommandRoute::repay_loan:
      return false;
  }
  return false;
}

// The body as a JSON object, strictly (an empty body is {} for routes whose fields are all
// optional); fails with the problem otherwise.
void parse_body(CommandRoute route, std::string_view body, rapidjson::Document& document) {
  if (is_json_whitespace(body)) {
    if (!all_fields_optional(route)) {
      fail("malformed_json", "Malformed JSON",
           "the request body is empty; this command needs a JSON object");
    }
    document.SetObject();
    return;
  }
  if (const std::size_t offset = invalid_utf8_offset(body); offset != std::string_view::npos) {
    fail("invalid_utf8", "Invalid UTF-8",
         "the request body is not valid UTF-8 (byte offset " + std::to_string(offset) + ")");
  }
  // A raw NUL is never valid JSON, but RapidJSON would take it for the end of the input.
  if (const std::size_t nul = body.find('\0'); nul != std::string_view::npos) {
    fail("malformed_json", "Malformed JSON",
         "invalid JSON at offset " + std::to_string(nul) + ": NUL byte");
  }
  // A bare MemoryStream: Document::Parse(str, length) would skip a byte order mark, which
  // RFC 8259 forbids senders to add.
  rapidjson::MemoryStream stream(body.data(), body.size());
  document.ParseStream<parse_flags, rapidjson::UTF8<>>(stream);
  if (document.HasParseError()) {
    const auto error = document.GetParseError();
    const std::string where = " at offset " + std::to_string(document.GetErrorOffset());
    if (error == rapidjson::kParseErrorStringInvalidEncoding ||
        error == rapidjson::kParseErrorStringUnicodeSurrogateInvalid) {
      fail("invalid_utf8", "Invalid UTF-8",
           std::string("invalid UTF-8") + where + ": " + rapidjson::GetParseError_En(error));
    }
    fail("malformed_json", "Malformed JSON",
         std::string("invalid JSON") + where + ": " + rapidjson::GetParseError_En(error));
  }
  if (!document.IsObject()) {
    fail("malformed_json", "Malformed JSON",
         "the request body must be a JSON object, got " + type_name(document));
  }
  check_document(document, route == CommandRoute::batch);
}

domain::CommandBody parse(CommandRoute route, std::string_view path_id, std::string_view body,
                          std::string_view today) {
  if (has_path_id(route) && !domain::is_valid_id(path_id)) {
    fail("invalid_id", "Invalid id",
         "the id in the path must be 1 to 64 of A-Za-z0-9._:-, got " + quote(path_id));
  }
  rapidjson::Document document;
  parse_body(route, body, document);

  const Value& object = document;
  const std::string none;
  switch (route) {
    case CommandRoute::open_account:
      return domain::SingleCommand{open_account(object, none, false)};
    case CommandRoute::deposit:
      return domain::SingleCommand{account_movement<domain::Deposit>(object, none, path_id)};
    case CommandRoute::withdrawal:
      return domain::SingleCommand{account_movement<domain::Withdrawal>(object, none, path_id)};
    case CommandRoute::transfer:
      return domain::SingleCommand{transfer(object, none, false)};
    case CommandRoute::hold:
      return domain::SingleCommand{hold(object, none, false)};
    case CommandRoute::post_hold:
      return domain::SingleCommand{post_hold(object, none, path_id)};
    case CommandRoute::void_hold:
      return domain::SingleCommand{void_hold(object, none, path_id)};
    case CommandRoute::freeze: {
      const Fields fields(object, none, {});
      return domain::SingleCommand{domain::FreezeAccount{std::string(path_id)}};
    }
    case CommandRoute::unfreeze: {
      const Fields fields(object, none, {});
      return domain::SingleCommand{domain::UnfreezeAccount{std::string(path_id)}};
    }
    case CommandRoute::close: {
      const Fields fields(object, none, {});
      return domain::SingleCommand{domain::CloseAccount{std::string(path_id)}};
    }
    case CommandRoute::batch:
      return batch(object);
    case CommandRoute::originate_loan:
      return domain::SingleCommand{originate_loan(object, today)};
    case CommandRoute::disburse_loan: {
      const Fields fields(object, none, {});
      return domain::SingleCommand{domain::DisburseLoan{std::string(path_id)}};
    }
    case CommandRoute::repay_loan: {
      const Fields fields(object, none, {"amount", "repayment_id"});
      return domain::SingleCommand{
          domain::RepayLoan{std::string(path_id), fields.amount("amount", true), fields.optional_id("repayment_id")}};
    }
    case CommandRoute::write_off_loan: {
      const Fields fields(object, none, {});
      return domain::SingleCommand{domain::WriteOffLoan{std::string(path_id)}};
    }
  }
  fail("invalid_field", "Invalid field", "unknown command route");
}

}  // namespace

std::variant<domain::CommandBody, Problem> parse_command(CommandRoute route,
                                                         std::string_view path_id,
                                                         std::string_view body,
                                                         std::string_view today) {
  try {
    return parse(route, path_id, body, today);
  } catch (Failure& failure) {
    return std::move(failure.problem);
  }
}

}  // namespace ledger::api
