#pragma once
// What must hold of a batch's rows before they are appended (private to the engine). Each
// check is pure and returns a problem (empty when the rows are fine): the appender asserts on
// it (LEDGER_ASSERT, on in release builds: a failure is a bug in deciding, never user input),
// and the unit tests feed it bad batches.

#include <cstdint>
#include <string>
#include <vector>

#include "ledger/domain/recorded_event.hpp"

namespace ledger::engine {

// Double entry: the account entries of each transfer and phase debit as much as they credit.
// A transfer moves one currency (deciding refuses anything else), so this holds per currency
// too, and more strictly: two transfers cannot hide each other's imbalance. An entry whose
// transfer has only one side in the batch is a problem as well.
[[nodiscard]] std::string check_batch_balanced(const std::vector<domain::RecordedEvent>& rows);

// Within the batch each stream's versions follow one another by one (the first one's
// predecessor is the stored version, which PostgreSQL checks: migration 0006).
[[nodiscard]] std::string check_streams_continue(const std::vector<domain::RecordedEvent>& rows);

// The rows' positions are dense and consecutive from the head the batch found.
[[nodiscard]] std::string check_positions_dense(const std::vector<domain::RecordedEvent>& rows,
                                                std::int64_t head_before);

}  // namespace ledger::engine
