#pragma once
// Close of business over every loan (issue 6): one CloseLoanBusinessDay command per loan ever
// disbursed, many in flight so the engine's group commit batches them. Idempotent per loan and
// date (a loan closed through the date, or no longer active, writes nothing), so a run killed
// half way is finished by running it again.

#include <cstdint>
#include <functional>
#include <string>

#include "ledger/domain/loan_schedule.hpp"

namespace ledger::engine {

class Engine;
class EventStore;

struct CloseOfBusinessResult {
  std::int64_t loans = 0;       // loans visited
  std::int64_t closed = 0;      // loans whose day close wrote an event
  std::int64_t failed = 0;      // rejected or failed commands (see first_failure)
  std::string first_failure;
};

struct CloseOfBusinessSettings {
  // Commands submitted and not yet answered: enough for the next batch to be decided while
  // one commits (a batch holds up to 2,000 commands).
  std::size_t in_flight_max = 8'000;
  std::size_t page_loans = 10'000;    // loans listed from the store at a time
};

// `progress(loans visited)` after each page.
CloseOfBusinessResult close_of_business(Engine& engine, const EventStore& store, domain::Date date,
                                        const CloseOfBusinessSettings& settings = {},
                                        const std::function<void(std::int64_t)>& progress = {});

}  // namespace ledger::engine
