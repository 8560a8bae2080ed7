#pragma once
// The input layout of round_trip_fuzz, shared with fuzz_seeds (which writes its seed corpus):
// byte 0 the route (CommandRoute, as command_parser_fuzz), byte 1 the path id, bytes 2-3 the
// body's length (little endian), the body, then the state bytes (see round_trip_fuzz.cpp).

#include <cstddef>
#include <string_view>

#include "command_parser.hpp"

namespace ledger::fuzz::round_trip {

inline constexpr std::size_t header_bytes = 4;
inline constexpr int route_count = 15;  // CommandRoute::open_account .. write_off_loan
inline constexpr std::string_view path_ids[] = {"alice", "h-1", "L1", "bob", "system.cash.EUR", "bad id"};

inline bool is_loan_route(api::CommandRoute route) {
  return route == api::CommandRoute::disburse_loan || route == api::CommandRoute::repay_loan ||
         route == api::CommandRoute::write_off_loan;
}

}  // namespace ledger::fuzz::round_trip
