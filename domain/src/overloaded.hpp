#pragma once
// The visitor idiom for std::visit: one lambda per alternative (private to the engine).

namespace ledger::domain {

template <typename... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
// Spelled out for compilers without aggregate deduction (clang-tidy's clang 14).
template <typename... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace ledger::domain
