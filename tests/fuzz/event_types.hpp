#pragma once
// The stored event type names (events.hpp event_type), in variant order, plus one unknown name.
#include <string_view>

namespace ledger::fuzz {

constexpr std::string_view event_types[] = {
    "account_opened",   "account_frozen",  "account_unfrozen",
    "account_closed",   "account_entry",   "transfer_posted",
    "transfer_pending", "pending_transfer_posted", "pending_transfer_ended",
    "loan_originated",  "loan_disbursed",  "loan_repaid",
    "loan_day_closed",  "loan_written_off", "no_such_event"};

}  // namespace ledger::fuzz
