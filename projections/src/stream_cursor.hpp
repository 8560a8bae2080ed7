// Paging through one stream by position, along the event store's (stream_id, version) index.
#pragma once

#include <cstdint>
#include <string>

namespace pqxx {
class transaction_base;
}

namespace ledger::projections {

// The last version of `stream_id` recorded at or before `position` (0 when none): a page of the
// stream after that position starts above it, and a walk that must not pass that position
// stops there. Within a stream versions grow with positions (both follow the commit order;
// `ledger replay verify` checks it, nothing enforces it at query time: on a store that fails
// verify a stream can page wrongly), so paging by position through a stream is paging by
// version through the store's (stream_id, version) index.
std::int64_t stream_version_at(pqxx::transaction_base& work, const std::string& stream_id,
                               std::int64_t position);

}  // namespace ledger::projections
