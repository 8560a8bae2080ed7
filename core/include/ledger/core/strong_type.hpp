#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace ledger {

// A value of type T that does not convert into other StrongTypes over the same T, so an
// account id can never be passed where a stream version is expected.
template <typename T, typename Tag>
class StrongType {
 public:
  using value_type = T;

  constexpr StrongType() = default;
  constexpr explicit StrongType(T value) : value_(std::move(value)) {}

  [[nodiscard]] constexpr const T& value() const noexcept { return value_; }

  constexpr auto operator<=>(const StrongType&) const = default;

 private:
  T value_{};
};

struct GlobalPositionTag {};
struct StreamVersionTag {};
struct KafkaOffsetTag {};

// Position of an event in the global, dense, commit-ordered log (1, 2, 3 ...; 0 means none).
using GlobalPosition = StrongType<std::int64_t, GlobalPositionTag>;
// Version of a stream: the number of events in it (0 means the stream does not exist yet).
using StreamVersion = StrongType<std::int64_t, StreamVersionTag>;
using KafkaOffset = StrongType<std::int64_t, KafkaOffsetTag>;

}  // namespace ledger

template <typename T, typename Tag>
struct std::hash<ledger::StrongType<T, Tag>> {
  std::size_t operator()(const ledger::StrongType<T, Tag>& v) const noexcept {
    return std::hash<T>{}(v.value());
  }
};
