#include "ledger/engine/close_of_business.hpp"

#include <deque>
#include <future>

#include "ledger/engine/engine.hpp"
#include "ledger/engine/event_store.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

CloseOfBusinessResult close_of_business(Engine& engine, const EventStore& store, Date date,
                                        const CloseOfBusinessSettings& settings,
                                        const std::function<void(std::int64_t)>& progress) {
  const std::string day = domain::to_string(date);
  CloseOfBusinessResult result;
  std::deque<std::future<domain::CommandOutcome>> in_flight;
  auto settle = [&](std::size_t keep) {
    while (in_flight.size() > keep) {
      const CommandOutcome outcome = in_flight.front().get();
      in_flight.pop_front();
      if (!outcome.accepted()) {
        if (result.failed++ == 0) result.first_failure = std::string(to_string(outcome.code)) + ": " + outcome.detail;
      } else if (outcome.position.value() > 0) {
        ++result.closed;  // an event was written; 0: nothing to do for that loan
      }
    }
  };
  // Every loan is disbursed exactly once, so its loan_disbursed event lists it exactly once.
  for (GlobalPosition after{0};;) {
    const auto page = store.loans_disbursed(after, settings.page_loans);
    if (page.empty()) break;
    for (const auto& [position, stream_id] : page) {
      const auto loan_id = domain::stream_entity_id(stream_id, StreamKind::loan);
      if (!loan_id) {  // only a store altered by hand holds one: report it, close the others
        if (result.failed++ == 0) result.first_failure = "a loan_disbursed event in stream " + stream_id;
        continue;
      }
      domain::Command command{domain::CommandBody{domain::SingleCommand{domain::CloseLoanBusinessDay{std::string(*loan_id), day}}}, {}};
      command.context.actor = "close-of-business";
      in_flight.push_back(engine.submit(std::move(command)));
      ++result.loans;
      settle(settings.in_flight_max);
    }
    after = page.back().first;
    if (progress) progress(result.loans);
  }
  settle(0);
  return result;
}

}  // namespace ledger::engine
