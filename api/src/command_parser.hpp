#pragma once
// Strict parsing of command request bodies into engine commands (private to the API).

#include <string_view>
#include <variant>

#include "ledger/api/problem.hpp"
#include "ledger/domain/commands.hpp"

namespace ledger::api {

enum class CommandRoute {
  open_account,  // POST /v1/accounts
  deposit,       // POST /v1/accounts/{id}/deposits
  withdrawal,    // POST /v1/accounts/{id}/withdrawals
  transfer,      // POST /v1/transfers
  hold,          // POST /v1/holds
  post_hold,     // POST /v1/holds/{id}/post
  void_hold,     // POST /v1/holds/{id}/void
  freeze,        // POST /v1/accounts/{id}/freeze
  unfreeze,      // POST /v1/accounts/{id}/unfreeze
  close,         // POST /v1/accounts/{id}/close
  batch,         // POST /v1/batch
  originate_loan,  // POST /v1/loans
  disburse_loan,   // POST /v1/loans/{id}/disburse
  repay_loan,      // POST /v1/loans/{id}/repayments
  write_off_loan,  // POST /v1/loans/{id}/write-off
};

// Parses the JSON body of `route` (with `path_id`, the route's {id}, empty when it has none)
// into the engine command. Strict: RFC 8259 JSON, valid UTF-8, no duplicate keys, no unknown
// fields, required fields present, exact types. An empty body is accepted (as {}) only for
// routes whose fields are all optional (post_hold, void_hold, freeze, unfreeze, close,
// disburse_loan, write_off_loan). `today` ("YYYY-MM-DD") is the origination date of a loan
// whose body names none.
// Any problem is a 400 Problem whose code names the class and whose detail names the field.
[[nodiscard]] std::variant<domain::CommandBody, Problem> parse_command(CommandRoute route,
                                                                       std::string_view path_id,
                                                                       std::string_view body,
                                                                       std::string_view today = {});

}  // namespace ledger::api
