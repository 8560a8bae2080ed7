// The strict JSON reader and the command parser, every route. Input: byte 0 picks the route,
// byte 1 the path id (valid and invalid ones), the rest is the request body.
// Properties: a refusal is a 400 with a documented code, a title and a UTF-8 detail; whatever is
// accepted respects API.md's bounds (ids, positive int64 amounts, ISO currencies, business
// dates, text lengths, batch size and member types) and carries the path id unchanged.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "command_bounds.hpp"
#include "command_parser.hpp"
#include "fuzz_support.hpp"

namespace {

using ledger::api::CommandRoute;
namespace domain = ledger::domain;
using ledger::fuzz::require;
using ledger::fuzz::batch_member_type;
using ledger::fuzz::batch_size_max;
using ledger::fuzz::check;
using ledger::fuzz::valid_utf8;

constexpr int route_count = 15;  // CommandRoute::open_account .. write_off_loan
constexpr std::string_view path_ids[] = {
    "alice", "h-1", "L1", "", "bad id", "a~b", "system.cash.EUR",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  // 65 bytes
};
constexpr std::string_view problem_codes[] = {
    "malformed_json", "invalid_utf8",  "duplicate_key",   "unknown_field", "missing_field",
    "invalid_field",  "invalid_id",    "invalid_amount",  "invalid_currency", "invalid_date"};
// The path id an accepted single command of `route` must carry, or nullptr.
const std::string* path_field(const domain::SingleCommand& command) {
  return std::visit(
      [](const auto& c) -> const std::string* {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, domain::Deposit> || std::is_same_v<T, domain::Withdrawal>) {
          return &c.account_id;
        } else if constexpr (std::is_same_v<T, domain::OpenAccount> ||
                             std::is_same_v<T, domain::Transfer> ||
                             std::is_same_v<T, domain::PlaceHold> ||
                             std::is_same_v<T, domain::OriginateLoan>) {
          return nullptr;
        } else {
          return &c.id;
        }
      },
      command);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const auto route = static_cast<CommandRoute>(data[0] % route_count);
  const std::string_view path_id = path_ids[data[1] % std::size(path_ids)];
  const std::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);

  auto result = ledger::api::parse_command(route, path_id, body, "2026-11-30");
  if (const auto* problem = std::get_if<ledger::api::Problem>(&result)) {
    require(problem->status == 400, "a refusal that is not 400", problem->code);
    bool documented = false;
    for (const auto code : problem_codes) documented = documented || code == problem->code;
    require(documented, "an undocumented problem code", problem->code);
    require(!problem->title.empty() && !problem->detail.empty(), "a problem without title/detail");
    require(valid_utf8(problem->detail), "a problem detail that is not UTF-8", problem->detail);
    return 0;
  }
  const auto& body_command = std::get<domain::CommandBody>(result);
  if (const auto* linked = std::get_if<domain::LinkedCommands>(&body_command)) {
    require(route == CommandRoute::batch, "linked commands from a single-command route");
    require(!linked->commands.empty() && linked->commands.size() <= batch_size_max,
            "accepted a batch of 0 or more than 100 commands");
    for (const auto& member : linked->commands) {
      require(batch_member_type(member), "a batch member of a type the batch does not take",
              domain::command_name(member));
      check(member);
    }
    return 0;
  }
  require(route != CommandRoute::batch, "a single command from the batch route");
  const auto& command = std::get<domain::SingleCommand>(body_command);
  check(command);
  if (const std::string* id = path_field(command)) {
    require(*id == path_id, "the command does not carry the path id", *id);
  }
  return 0;
}
