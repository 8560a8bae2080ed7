#include "batch_decider.hpp"

#include <algorithm>
#include <map>
#include <string_view>
#include <unordered_set>

#include "idempotency_store.hpp"
#include "ledger/core/utf8.hpp"
#include "stream_loader.hpp"

namespace ledger::engine {

namespace {

// Metadata copied from a request into every event of its command must be text PostgreSQL
// stores (jsonb): valid UTF-8 without control characters, and short. The HTTP front checks its
// headers first; this check keeps one bad command from failing the batch it is in whatever
// the caller.
constexpr std::size_t metadata_field_bytes_max = 256;

bool is_storable_text(std::string_view text) {
  if (text.size() > metadata_field_bytes_max) return false;
  if (invalid_utf8_offset(text) != std::string_view::npos) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte == 0x7f) return false;  // C0 controls and DEL
    // C1 controls, U+0080 to U+009F: 0xC2 followed by 0x80 to 0x9F.
    if (byte == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      return false;
    }
  }
  return true;
}

// The first context field that cannot be stored, by name; empty when all can.
std::string unstorable_context_field(const CommandContext& context) {
  const std::pair<const char*, const std::string*> fields[] = {
      {"actor", &context.actor},
      {"command_id", &context.command_id},
      {"correlation_id", &context.correlation_id},
      {"causation_id", &context.causation_id},
      {"request_id", &context.request_id},
      {"client_address", &context.client_address},
      {"idempotency_key", &context.idempotency_key}};
  for (const auto& [name, value] : fields) {
    if (!is_storable_text(*value)) return name;
  }
  return {};
}

void answer_key_reused(Slot& slot, const Pending& pending) {
  slot.kind = Slot::Kind::answered;
  slot.outcome = domain::CommandOutcome{};
  slot.outcome.code = RejectionCode::idempotency_key_reused;
  slot.outcome.detail = "idempotency key '" + pending.command.context.idempotency_key +
                        "' was used for a different request";
  slot.outcome.command_id = pending.command.context.command_id;
}

// Invariant 11: an event is appended only if it decodes back to the very bytes encoded, so
// every reader (folds, projectors, replay) can read it. Cheap next to the COPY.
void ensure_decodes_back(const RecordedEvent& row) {
  const auto decoded = domain::decode_event(row.type, row.payload);
  if (!decoded || domain::encode_event(*decoded) != row.payload) {
    throw UnstorableCommand("a " + row.type + " event of stream " + row.stream_id +
                            " does not decode back to what was encoded; the command is refused");
  }
}

}  // namespace

void BatchDecider::assign_ids(std::vector<Pending>& batch) {
  generated_streams_.clear();
  const auto generate = [this] {
    std::string id = generate_id_();
    if (own_ids_) {
      generated_streams_.insert(domain::account_stream(id));
      generated_streams_.insert(domain::transfer_stream(id));
    }
    return id;
  };
  for (auto& pending : batch) {
    domain::assign_ids(pending.command.body, generate);
    if (pending.command.context.command_id.empty()) {
      pending.command.context.command_id = uuids_.next();
    }
  }
}

Decided BatchDecider::decide(const StoreReader& store, std::vector<Pending>& batch, bool fresh,
                             WorkingSet& working, const MissingStreamsLoader& load_missing) {
  Decided decided;
  decided.slots.resize(batch.size());
  auto& slots = decided.slots;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const std::string field = unstorable_context_field(batch[i].command.context);
    if (field.empty()) continue;
    slots[i].kind = Slot::Kind::answered;
    slots[i].outcome.code = RejectionCode::invalid_command;
    slots[i].outcome.detail = "the request's " + field +
                              " is not storable text (UTF-8 without control characters, at most " +
                              std::to_string(metadata_field_bytes_max) + " bytes)";
    slots[i].outcome.command_id = batch[i].command.context.command_id;
  }
  resolve_idempotency(store, batch, slots);

  load_working(store, load_missing, batch, slots, fresh, working);

  // Then decide in order.
  const std::int64_t now_us = clock_us_();
  const DecisionContext context{now_us};
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Slot& slot = slots[i];
    if (slot.kind != Slot::Kind::decide) continue;
    slot.first_event = working.new_events().size();
    domain::Decision decision = domain::decide(batch[i].command.body, working, context);
    slot.end_event = working.new_events().size();
    slot.outcome.code = decision.code;
    slot.outcome.detail = std::move(decision.detail);
    slot.outcome.failed_member = decision.failed_member;
    slot.outcome.resource_ids = std::move(decision.resource_ids);
    slot.outcome.replayed = decision.replayed;  // a domain id that already had its effect
    slot.outcome.command_id = batch[i].command.context.command_id;
  }

  // A refusal, or an acceptance with nothing to do (a day close of a loan the cache holds as
  // not yet disbursed), writes nothing, so no version check would notice a stale state behind
  // it (another engine's write since this engine cached the stream): remember what was read.
  const bool wrote_nothing = std::any_of(slots.begin(), slots.end(), [](const Slot& slot) {
    return slot.kind == Slot::Kind::decide && (!slot.outcome.accepted() || slot.first_event == slot.end_event);
  });
  if (wrote_nothing) {
    std::unordered_set<std::string_view> written;
    for (const auto& event : working.new_events()) written.insert(event.stream_id);
    for (const auto& [stream_id, state] : working.streams()) {
      if (!written.contains(stream_id)) decided.unwritten_reads.push_back({stream_id, state.version.value()});
    }
  }

  make_rows(batch, working, now_us, decided);
  return decided;
}

// Loads every stream the batch's commands to decide name (the store in one query) into
// `working`: generated ids as empty streams, then the cache (unless `fresh`), then the store.
void BatchDecider::load_working(const StoreReader& store, const MissingStreamsLoader& load_missing,
                                const std::vector<Pending>& batch, const std::vector<Slot>& slots,
                                bool fresh, WorkingSet& working) {
  std::vector<std::string> wanted;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (slots[i].kind == Slot::Kind::decide) domain::collect_streams(batch[i].command.body, wanted);
  }
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  std::vector<std::string> missing;
  for (const auto& id : wanted) {
    if (generated_streams_.contains(id)) {
      working.put(id, empty_stream_state(id));
      continue;
    }
    const StreamState* cached = fresh ? nullptr : cache_.find(id);
    if (cached != nullptr) {
      working.put(id, *cached);
    } else {
      missing.push_back(id);
    }
  }
  if (!missing.empty()) {
    auto loaded = load_missing ? load_missing(missing)
                               : load_streams(store(), missing, snapshots_, snapshot_writer_);
    for (auto& [id, state] : loaded) working.put(id, std::move(state));
  }
}

// Turns the decided events into rows (and the holds among them into expiries).
void BatchDecider::make_rows(const std::vector<Pending>& batch, const WorkingSet& working,
                             std::int64_t now_us, Decided& decided) {
  const auto& slots = decided.slots;
  const auto& new_events = working.new_events();
  decided.rows.resize(new_events.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Slot& slot = slots[i];
    if (slot.kind != Slot::Kind::decide) continue;
    const CommandContext& ctx = batch[i].command.context;
    const EventMetadata metadata{ctx.actor,      ctx.command_id, ctx.correlation_id,
                                 ctx.causation_id, ctx.request_id, ctx.client_address};
    if (!ctx.idempotency_key.empty()) decided.keyed = true;
    for (std::size_t e = slot.first_event; e < slot.end_event; ++e) {
      RecordedEvent& row = decided.rows[e];
      row.stream_id = new_events[e].stream_id;
      row.version = new_events[e].version;
      row.event_id = uuids_.next();
      row.type = std::string(domain::event_type(new_events[e].event));
      row.schema_version = domain::event_schema_version;
      row.payload = domain::encode_event(new_events[e].event);
      ensure_decodes_back(row);
      row.metadata = metadata;
      row.recorded_at_us = now_us;
      if (const auto* pending = std::get_if<domain::events::TransferPending>(&new_events[e].event)) {
        if (pending->expires_at_us != 0) {
          decided.expiries.push_back({pending->transfer_id, pending->expires_at_us, i});
        }
      }
    }
  }
}

// Answers commands whose idempotency key was seen before (in the store or earlier in the batch).
void BatchDecider::resolve_idempotency(const StoreReader& store, std::vector<Pending>& batch,
                                       std::vector<Slot>& slots) {
  // The keys of the batch, each once, looked up in the store together. A stored record
  // decides every command with its key; without one, the first command with the key does,
  // and the later ones follow it (same request) or are refused (another request).
  std::map<IdempotencyKey, std::vector<std::size_t>> with_key;  // in batch order
  std::vector<IdempotencyKey> keys;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& ctx = batch[i].command.context;
    if (ctx.idempotency_key.empty() || slots[i].kind != Slot::Kind::decide) continue;
    slots[i].request_hash = request_hash(ctx.request_fingerprint);
    auto& commands = with_key[{ctx.actor, ctx.idempotency_key}];
    if (commands.empty()) keys.emplace_back(ctx.actor, ctx.idempotency_key);
    commands.push_back(i);
  }
  if (with_key.empty()) return;
  for (auto& stored : find_idempotency_keys(store(), keys)) {
    auto found = with_key.find(stored.key);
    if (found == with_key.end()) continue;
    for (const std::size_t i : found->second) {
      if (stored.request_hash != slots[i].request_hash) {
        answer_key_reused(slots[i], batch[i]);
        continue;
      }
      slots[i].kind = Slot::Kind::answered;
      slots[i].outcome = stored.outcome;
      slots[i].outcome.replayed = true;
    }
    with_key.erase(found);
  }
  for (const auto& [key, commands] : with_key) {
    const std::size_t first = commands.front();
    for (std::size_t k = 1; k < commands.size(); ++k) {
      const std::size_t i = commands[k];
      if (slots[i].request_hash == slots[first].request_hash) {
        slots[i].kind = Slot::Kind::follows;
        slots[i].follows = first;
      } else {
        answer_key_reused(slots[i], batch[i]);
      }
    }
  }
}

void BatchDecider::fill_positions(std::vector<Slot>& slots, const std::vector<RecordedEvent>& rows,
                                GlobalPosition first) {
  for (Slot& slot : slots) {
    if (slot.kind != Slot::Kind::decide || slot.first_event == slot.end_event) continue;
    slot.outcome.position = GlobalPosition(first.value() + static_cast<std::int64_t>(slot.end_event) - 1);
    slot.outcome.versions.clear();
    for (std::size_t e = slot.first_event; e < slot.end_event; ++e) {
      auto existing = std::find_if(slot.outcome.versions.begin(), slot.outcome.versions.end(),
                                   [&](const auto& pair) { return pair.first == rows[e].stream_id; });
      if (existing != slot.outcome.versions.end()) {
        existing->second = rows[e].version;
      } else {
        slot.outcome.versions.emplace_back(rows[e].stream_id, rows[e].version);
      }
    }
  }
}

std::vector<IdempotencyRecord> BatchDecider::records(const std::vector<Pending>& batch,
                                                     const std::vector<Slot>& slots) {
  std::vector<IdempotencyRecord> records;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& ctx = batch[i].command.context;
    const Slot& slot = slots[i];
    if (slot.kind != Slot::Kind::decide || ctx.idempotency_key.empty()) continue;
    records.push_back(idempotency_record(ctx, slot.request_hash, slot.outcome));
  }
  return records;
}

}  // namespace ledger::engine
