#pragma once
// The input layout of http_front_fuzz, shared with fuzz_seeds (which writes its seed corpus).
//   byte 0: bit 0 set: small limits (headers 512 bytes, body 1024) so the fuzzer reaches the
//           431 and 413 paths with short inputs; clear: the server's defaults.
//           bits 1-2: bytes per read (the whole rest, 1, 7 or 61): requests split across reads.
//           bits 3-7: where the fake engine starts in its cycle of answers (accepted, replayed,
//           each rejection code, unavailable, outcome unknown, overloaded, shutting down).
//   the rest: the bytes a client sends on one connection (one request or several pipelined).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ledger::fuzz::http_front {

// The fuzzer's HS256 secret: the seeds carry tokens signed with it, one per role.
inline constexpr std::string_view jwt_secret = "http-front-fuzz-secret-not-for-any-server-0123456789";

inline constexpr std::uint8_t small_limits = 1;
inline constexpr std::size_t small_header_bytes_max = 512;
inline constexpr std::size_t small_body_bytes_max = 1'024;

inline std::size_t read_step(std::uint8_t flags, std::size_t rest) {
  constexpr std::size_t steps[] = {0, 1, 7, 61};
  const std::size_t step = steps[(flags >> 1) & 3];
  return step == 0 ? (rest == 0 ? 1 : rest) : step;
}

inline std::uint8_t engine_start(std::uint8_t flags) { return static_cast<std::uint8_t>(flags >> 3); }

}  // namespace ledger::fuzz::http_front
