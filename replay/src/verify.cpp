// `ledger replay verify`: dense positions, dense stream versions, the hash chain, payloads that
// decode, and double entry, in one pass over the log.
#include <algorithm>
#include <future>
#include <memory>
#include <thread>
#include <unordered_map>

#include "ledger/domain/events.hpp"
#include "ledger/domain/types.hpp"
#include "ledger/replay/replay.hpp"
#include "log_reader.hpp"

namespace ledger::replay {

namespace {

// What the legs of one transfer have moved so far; both sums return to zero once every leg
// is in (a transfer's legs are appended in one commit).
struct OpenTransfer {
  std::int64_t posted = 0;
  std::int64_t pending = 0;
  std::int64_t first_position = 0;
};

// Event i's hash check needs only the STORED hash of event i-1, not the outcome of i-1's check,
// so the chain is checked in pieces at once: each batch on its range reader's thread as it
// arrives (LogReader), in slices on `threads` threads, each slice's first event against the
// stored hash of the event before it in the batch; a batch's first event against the last
// stored hash of the batch before it, on the verifying thread, which has both. The pieces join
// at their edges. An event after a gap is compared with the wrong predecessor, but the ordered
// check reports the gap first.
//
// The position of the first event of `batch` after its first whose hash does not follow its
// predecessor's stored hash; 0 when every one does.
std::int64_t first_bad_hash_inside(const std::vector<domain::RecordedEvent>& batch, std::size_t threads) {
  const std::size_t size = batch.size();
  const std::size_t checked = size > 0 ? size - 1 : 0;  // events 1 .. size-1
  const std::size_t slices = std::min(std::max<std::size_t>(threads, 1), std::max<std::size_t>(checked, 1));
  auto first_bad = [&batch, size](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      if (!domain::chains_from(batch[i - 1].hash, batch[i])) return i;
    }
    return size;
  };
  auto slice_begin = [&](std::size_t slice) { return 1 + checked * slice / slices; };
  std::vector<std::future<std::size_t>> others;
  for (std::size_t slice = 1; slice < slices; ++slice) {
    others.push_back(std::async(std::launch::async, first_bad, slice_begin(slice), slice_begin(slice + 1)));
  }
  std::size_t bad = first_bad(slice_begin(0), slice_begin(1));
  for (auto& other : others) bad = std::min(bad, other.get());
  return bad < size ? batch[bad].position.value() : 0;
}

// What verify keeps of a stream: its last version and, for an account, the fold of it.
struct StreamState {
  std::int64_t version = 0;
  std::unique_ptr<domain::AccountState> account;
};

class Verifier {
 public:
  Verifier(const VerifyOptions& options, std::int64_t from, std::int64_t to)
      : options_(options), expected_(from), to_(to) {
    result_.double_entry_checked = from == 1;
    next_checkpoint_ = from + options.checkpoint_every - 1;
  }

  // False once a check failed. `hash_ok`: the event's hash follows the stored hash before it
  // (ChainChecker).
  bool check(const domain::RecordedEvent& event, bool hash_ok) {
    const std::int64_t position = event.position.value();
    if (position != expected_) {
      return fail(expected_, "position " + std::to_string(expected_) + " is missing (the log goes on at " +
                                 std::to_string(position) + ")");
    }
    if (!hash_ok) {
      return fail(position, "the hash does not match the chain: this event (or its stored hash) was altered");
    }

    auto [found, first_seen] = streams_.try_emplace(event.stream_id);
    StreamState& stream = found->second;
    // A range that starts after position 1 takes each stream's first version as it finds it.
    const bool knows_previous = !first_seen || result_.double_entry_checked;
    if (knows_previous && event.version.value() != stream.version + 1) {
      return fail(position, "stream " + event.stream_id +
                                (event.version.value() > stream.version + 1 ? " has a version gap"
                                                                            : " is out of order") +
                                ": version " +
                                std::to_string(event.version.value()) + " follows version " + std::to_string(stream.version));
    }
    stream.version = event.version.value();

    const auto decoded = domain::decode_event(event.type, event.payload);
    if (!decoded) return fail(position, "the " + event.type + " payload does not decode");
    if (result_.double_entry_checked && domain::is_stream_of(event.stream_id, domain::StreamKind::account)) {
      if (!stream.account) stream.account = std::make_unique<domain::AccountState>();
      if (!fold_account(event, *decoded, *stream.account)) return false;
    }
    ++expected_;
    ++result_.events_checked;
    if (open_transfers_.empty() && position >= next_checkpoint_) {
      checkpoint(position);
      next_checkpoint_ = position + options_.checkpoint_every;
    }
    return true;
  }

  VerifyResult finish() {
    if (result_.ok && expected_ <= to_) {
      fail(expected_, "position " + std::to_string(expected_) + " is missing (the log ends before " +
                          std::to_string(to_) + ")");
    }
    if (result_.ok && !open_transfers_.empty()) {
      const auto first = std::min_element(open_transfers_.begin(), open_transfers_.end(), [](const auto& a, const auto& b) {
        return a.second.first_position < b.second.first_position;
      });
      fail(first->second.first_position, "double entry: transfer " + first->first + " has legs that do not balance");
    }
    if (result_.ok && (result_.checkpoints.empty() || result_.checkpoints.back().position.value() != to_)) {
      checkpoint(to_);
    }
    result_.streams = static_cast<std::int64_t>(streams_.size());
    return std::move(result_);
  }

  [[nodiscard]] std::int64_t expected() const { return expected_; }

 private:
  bool fold_account(const domain::RecordedEvent& event, const domain::DomainEvent& decoded,
                    domain::AccountState& account) {
    const std::int64_t position = event.position.value();
    const bool opening = std::holds_alternative<domain::events::AccountOpened>(decoded);
    if (account.exists == opening) {
      return fail(position, opening ? "account " + event.stream_id + " is opened twice"
                                    : event.type + " on " + event.stream_id + " before it was opened");
    }
    const std::int64_t posted_before = net_posted(account), pending_before = net_pending(account);
    domain::apply(account, decoded);
    CurrencyTotals& totals = totals_[std::string(account.currency.code())];
    if (opening) ++totals.accounts;
    const auto* entry = std::get_if<domain::events::AccountEntry>(&decoded);
    if (entry == nullptr) return true;
    const std::int64_t posted = net_posted(account) - posted_before;
    const std::int64_t pending = net_pending(account) - pending_before;
    totals.posted += posted;
    totals.pending += pending;
    auto [open, inserted] = open_transfers_.try_emplace(entry->transfer_id);
    if (inserted) open->second.first_position = position;
    open->second.posted += posted;
    open->second.pending += pending;
    if (open->second.posted == 0 && open->second.pending == 0) {
      open_transfers_.erase(open);
      // Every transfer is whole here, so every currency must sum to zero.
      if (open_transfers_.empty()) {
        for (const auto& [currency, sums] : totals_) {
          if (sums.posted != 0 || sums.pending != 0) {
            return fail(position, "double entry: " + currency + " balances sum to " + std::to_string(sums.posted) +
                                      " posted and " + std::to_string(sums.pending) + " pending, not zero");
          }
        }
      }
    }
    return true;
  }

  // Balances fit in int64 (the engine's checked arithmetic refuses more), so these do too.
  static std::int64_t net_posted(const domain::AccountState& a) {
    return a.credits_posted.minor_units() - a.debits_posted.minor_units();
  }
  static std::int64_t net_pending(const domain::AccountState& a) {
    return a.credits_pending.minor_units() - a.debits_pending.minor_units();
  }

  void checkpoint(std::int64_t position) {
    result_.checkpoints.push_back({GlobalPosition(position), {totals_.begin(), totals_.end()}});
  }

  bool fail(std::int64_t position, std::string problem) {
    result_.ok = false;
    result_.first_bad_position = GlobalPosition(position);
    result_.problem = std::move(problem);
    return false;
  }

  const VerifyOptions& options_;
  std::int64_t expected_;
  std::int64_t to_;
  std::int64_t next_checkpoint_ = 0;
  VerifyResult result_;
  // One lookup per event: most of a verify's time outside hashing was finding streams (issue 18).
  std::unordered_map<std::string, StreamState> streams_;
  std::unordered_map<std::string, OpenTransfer> open_transfers_;
  std::map<std::string, CurrencyTotals> totals_;
};

}  // namespace

VerifyResult verify(db::ConnectionPool& pool, const VerifyOptions& options, const Progress& progress) {
  const engine::EventStore store(pool);
  const std::int64_t from = std::max<std::int64_t>(options.range.from.value(), 1);
  const std::int64_t to = options.range.to.value() > 0 ? options.range.to.value() : store.head().position.value();
  std::string previous_hash = domain::genesis_hash();
  if (from > 1) {
    const auto before = store.read_all(GlobalPosition(from - 1), 1);
    if (before.empty() || before.front().position.value() != from - 1) {
      VerifyResult missing;
      missing.ok = false;
      missing.first_bad_position = GlobalPosition(from - 1);
      missing.problem = "position " + std::to_string(from - 1) + " (the start of the chain to check) is missing";
      return missing;
    }
    previous_hash = before.front().hash;
  }
  Verifier verifier(options, from, to);
  const std::size_t hash_threads =
      options.hash_threads > 0 ? options.hash_threads : std::max(1U, std::thread::hardware_concurrency());
  LogReader reader(
      pool, from, to, options.batch_events,
      [hash_threads](const std::vector<domain::RecordedEvent>& batch) { return first_bad_hash_inside(batch, hash_threads); },
      options.read_lanes);
  for (const auto* batch = &reader.next(); !batch->empty(); batch = &reader.next()) {
    std::int64_t bad_hash = reader.mark();
    // The edge between this batch and the one before.
    const auto& first = batch->front();
    if (!domain::chains_from(previous_hash, first)) bad_hash = first.position.value();
    previous_hash = batch->back().hash;
    for (const auto& event : *batch) {
      if (!verifier.check(event, event.position.value() != bad_hash)) return verifier.finish();
    }
    if (progress) progress(verifier.expected() - from, to - from + 1);
  }
  return verifier.finish();
}

}  // namespace ledger::replay
