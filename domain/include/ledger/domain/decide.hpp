#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "ledger/domain/commands.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/domain/state.hpp"

namespace ledger::domain {

// The state of one stream as the engine knows it: the fold, and the hash of its last event
// (what a snapshot is checked against).
struct StreamState {
  std::variant<std::monostate, AccountState, TransferState, LoanState> aggregate;
  StreamVersion version{0};
  std::string last_hash;  // 32 bytes; empty for a new stream
};

// An event decided for a stream, with the version it will get (previous version + 1).
struct NewEvent {
  std::string stream_id;
  StreamVersion version;
  DomainEvent event;
};

// The streams one batch of commands works on. Commands are decided in order against it: each
// accepted command's events are folded in at once, so later commands of the batch see them
// and never conflict with them. Undo records make a rejected command (or a rejected linked
// list) leave no trace. Owned by the engine's writer thread; not thread-safe.
class WorkingSet {
 public:
  // Loads a stream this set does not hold yet (the engine reads the cache or the store).
  using Loader = std::function<StreamState(const std::string& stream_id)>;
  explicit WorkingSet(Loader loader);

  void put(const std::string& stream_id, StreamState state);
  [[nodiscard]] bool contains(const std::string& stream_id) const;
  [[nodiscard]] const StreamState& stream(const std::string& stream_id);
  [[nodiscard]] const AccountState& account(const std::string& account_id);
  [[nodiscard]] const TransferState& transfer(const std::string& transfer_id);
  [[nodiscard]] const LoanState& loan(const std::string& loan_id);

  // Folds `event` into the stream and records it as new.
  void append(const std::string& stream_id, DomainEvent event);

  // Undo support: everything appended after mark() is dropped by rollback_to(mark).
  struct Mark {
    std::size_t events;
    std::size_t undo;
  };
  [[nodiscard]] Mark mark() const { return {new_events_.size(), undo_.size()}; }
  void rollback_to(Mark mark);

  [[nodiscard]] const std::vector<NewEvent>& new_events() const { return new_events_; }
  [[nodiscard]] std::unordered_map<std::string, StreamState>& streams() { return streams_; }

 private:
  StreamState& load(const std::string& stream_id);

  Loader loader_;
  std::unordered_map<std::string, StreamState> streams_;
  std::vector<NewEvent> new_events_;
  std::vector<std::pair<std::string, StreamState>> undo_;
};

struct DecisionContext {
  std::int64_t now_us = 0;  // the engine's injected clock
};

struct Decision {
  RejectionCode code = RejectionCode::none;
  std::string detail;
  std::optional<std::size_t> failed_member;
  std::vector<std::string> resource_ids;
  // Accepted without effect: the client id names an effect that an identical request already
  // produced (a retried repayment, transfer or hold), so the answer is that first outcome.
  bool replayed = false;
  [[nodiscard]] bool accepted() const { return code == RejectionCode::none; }
};

// Validates `command` against `working_set` and, when accepted, appends its events to it.
// A rejected command leaves the working set as it was.
[[nodiscard]] Decision decide(const CommandBody& command, WorkingSet& working_set,
                              const DecisionContext& context);

// Fills empty client ids (account, transfer) with generated ones before deciding.
void assign_ids(CommandBody& command, const std::function<std::string()>& generate_id);

// Streams a command will read, known before loading (system accounts are found on demand).
void collect_streams(const CommandBody& command, std::vector<std::string>& stream_ids);

}  // namespace ledger::domain
