#include "ledger/projections/projector.hpp"

#include <librdkafka/rdkafka.h>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <unordered_map>

#include "ledger/core/assert.hpp"
#include "ledger/core/worker.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/db/retry.hpp"
#include "ledger/domain/envelope.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/projections/projection.hpp"

namespace ledger::projections {

namespace {

using Clock = std::chrono::steady_clock;
using domain::RecordedEvent;

// Where the batch's messages came from: the next offset to consume, per partition.
using PartitionOffsets = std::map<std::int32_t, std::int64_t>;

// A position the projector cannot apply is retried after this pause, doubled on each failure
// up to the maximum: a fixed version deployed later applies it, and a stall costs little.
constexpr auto stalled_retry_backoff_initial = std::chrono::milliseconds(500);
constexpr auto stalled_retry_backoff_max = std::chrono::milliseconds(30'000);
// The pause after a failure the database or Kafka caused (the next attempt may succeed).
constexpr auto transient_retry_pause = std::chrono::milliseconds(500);
// A stall's reason as shown by /health (unauthenticated): the first line of the error, cut.
constexpr std::size_t stalled_reason_bytes_max = 300;

// Errors after which the same batch may succeed as it is: the database went away, a conflict,
// or a commit whose outcome is unknown (the watermark is read again). Anything else, retried
// as it is, fails again: the projector looks for the position that causes it.
bool transient(const std::exception& error) {
  return db::is_transient(error) || dynamic_cast<const pqxx::in_doubt_error*>(&error) != nullptr ||
         dynamic_cast<const db::DatabaseUnavailable*>(&error) != nullptr;
}

std::string stalled_reason(const std::exception& error) {
  std::string reason = error.what();
  if (const auto line_end = reason.find('\n'); line_end != std::string::npos) reason.resize(line_end);
  if (reason.size() > stalled_reason_bytes_max) {
    std::size_t cut = stalled_reason_bytes_max;
    while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;  // UTF-8 boundary
    reason.resize(cut);
  }
  return reason;
}

}  // namespace

std::string_view to_string(ProjectionKind kind) {
  switch (kind) {
    case ProjectionKind::balance: return "balance";
    case ProjectionKind::audit: return "audit";
    case ProjectionKind::loan: return "loan";
  }
  return "unknown";
}

std::optional<ProjectionKind> projection_from_string(std::string_view name) {
  for (const auto kind : all_projections()) {
    if (to_string(kind) == name) return kind;
  }
  return std::nullopt;
}

const std::vector<ProjectionKind>& all_projections() {
  static const std::vector<ProjectionKind> kinds = {ProjectionKind::balance, ProjectionKind::audit,
                                                    ProjectionKind::loan};
  return kinds;
}

struct Projector::Impl {
  Impl(ProjectionKind k, ProjectorSettings s, db::ConnectionPool& p)
      : kind(k), name(to_string(k)), settings(std::move(s)), pool(p), store(p),
        projection(make_projection(k)) {}

  ProjectionKind kind;
  std::string name;
  ProjectorSettings settings;
  db::ConnectionPool& pool;
  engine::EventStore store;
  std::unique_ptr<Projection> projection;
  rd_kafka_t* consumer = nullptr;

  // The hash of the event at `chain_position` (the watermark this projector last committed):
  // the next event must chain from it.
  std::int64_t chain_position = -1;
  std::string chain_hash_at;
  // The positions the last apply() tried, when it failed.
  struct Attempt {
    std::int64_t from = 0;
    std::int64_t through = 0;
  };
  std::optional<Attempt> failed_attempt;
  // After a batch of several positions failed (not transiently), apply one position at a time
  // up to here, to find the position that fails.
  std::int64_t single_step_through = 0;
  struct Stall {
    std::int64_t position = 0;
    std::string reason;
    bool recorded = false;  // written to read.projections
  };
  std::optional<Stall> stall;
  std::chrono::milliseconds stall_backoff = stalled_retry_backoff_initial;
  // The store's incarnation, read at start and again when a message names another one (a
  // bump while running); messages of any other are skipped. Empty until read.
  std::string incarnation;
  // Skipped messages in a row, logged once when the run starts and once when it ends, and
  // the incarnation last skipped (another one is checked against the store again).
  std::int64_t other_incarnation_run = 0;
  std::string skipped_incarnation;

  SharedStatus<ProjectorStatus> state;
  StoppableThread worker;  // last: it stops before the members it uses go

  ~Impl() {
    if (consumer != nullptr) {
      rd_kafka_consumer_close(consumer);
      rd_kafka_destroy(consumer);
    }
  }

  template <typename F>
  void update_status(F&& change) {
    state.update(std::forward<F>(change));
  }

  void pause(std::chrono::milliseconds duration) { worker.pause(duration); }

  // On assignment the consumer starts from the offsets stored with the read model, so what
  // Kafka's own group offsets say never matters.
  static void on_rebalance(rd_kafka_t* handle, rd_kafka_resp_err_t error,
                           rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (error != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      rd_kafka_assign(handle, nullptr);
      return;
    }
    try {
      auto lease = self->pool.acquire();
      pqxx::read_transaction work(*lease);
      const auto rows = work.exec_params(
          "SELECT partition, next_offset FROM read.kafka_offsets WHERE projection = $1 AND topic = $2",
          self->name, self->settings.topic);
      std::map<std::int32_t, std::int64_t> stored;
      for (const auto& row : rows) stored[row[0].as<std::int32_t>()] = row[1].as<std::int64_t>();
      for (int i = 0; i < partitions->cnt; ++i) {
        auto& partition = partitions->elems[i];
        const auto found = stored.find(partition.partition);
        partition.offset = found == stored.end() ? RD_KAFKA_OFFSET_BEGINNING : found->second;
      }
    } catch (const std::exception& failure) {
      // Without the stored offsets, start from the beginning: the watermark skips repeats.
      spdlog::warn("projector {}: reading stored offsets failed ({}); reading from the start",
                   self->name, failure.what());
      for (int i = 0; i < partitions->cnt; ++i) partitions->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_assign(handle, partitions);
  }

  void create_consumer() {
    char error[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](const std::string& key, const std::string& value) {
      if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error("Kafka consumer setting " + key + ": " + error);
      }
    };
    set("bootstrap.servers", settings.brokers);
    set("group.id", settings.group_prefix + name);
    set("enable.auto.commit", "false");
    set("enable.auto.offset.store", "false");
    set("auto.offset.reset", "earliest");
    set("log_level", "3");
    // Read models should trail the log by milliseconds: do not let a fetch idle long on the
    // broker (the development broker answers a fetch only when this runs out).
    set("fetch.wait.max.ms", std::to_string(settings.fetch_wait_max.count()));
    // Prefetch per partition (librdkafka's defaults hold 100,000 messages each): bounds memory.
    set("queued.max.messages.kbytes", "16384");
    set("queued.min.messages", "20000");
    // A projector killed without leaving its group holds its partitions until the session
    // times out; a restarted one waits that long for them. Kafka's default is 45 s.
    set("session.timeout.ms", "10000");
    set("heartbeat.interval.ms", "2000");
    for (const auto& [key, value] : settings.kafka_properties) set(key, value);
    rd_kafka_conf_set_rebalance_cb(conf, &Impl::on_rebalance);
    rd_kafka_conf_set_opaque(conf, this);
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
    if (consumer == nullptr) throw std::runtime_error(std::string("Kafka consumer: ") + error);
    rd_kafka_poll_set_consumer(consumer);
    rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, settings.topic.c_str(), RD_KAFKA_PARTITION_UA);
    const auto subscribed = rd_kafka_subscribe(consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (subscribed != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error(std::string("Kafka subscribe: ") + rd_kafka_err2str(subscribed));
    }
  }

  // The position a message's `position` header names, without decoding its value.
  static std::optional<std::int64_t> header_position(const rd_kafka_message_t* message) {
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(message, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) return std::nullopt;
    const void* value = nullptr;
    std::size_t size = 0;
    if (rd_kafka_header_get_last(headers, "position", &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return std::nullopt;
    }
    std::int64_t position = 0;
    const char* text = static_cast<const char*>(value);
    const auto [end, error] = std::from_chars(text, text + size, position);
    if (error != std::errc() || end != text + size) return std::nullopt;
    return position;
  }

  struct Collected {
    std::size_t messages = 0;     // seen, decoded or not
    std::int64_t duplicates = 0;  // skipped at or below the watermark
    std::int64_t other_incarnation = 0;  // skipped: published under another incarnation
  };

  // The store's current incarnation, read again (at start, and when a message names another).
  void read_incarnation() {
    auto lease = pool.acquire();
    pqxx::read_transaction work(*lease);
    const auto current = work.exec("SELECT id::text FROM store_incarnation")[0][0].as<std::string>();
    if (current != incarnation) {
      if (!incarnation.empty()) {
        spdlog::warn("projector {}: the event store's incarnation changed from {} to {}; messages of {} are "
                     "skipped from now on",
                     name, incarnation, current, incarnation);
      }
      incarnation = current;
      update_status([&](ProjectorStatus& s) { s.incarnation = current; });
    }
  }

  // Whether a message published under an incarnation belongs to the store's current one. A
  // message of another one comes from a timeline a point-in-time restore left behind (or the
  // store was given a new incarnation meanwhile: read once more when one appears).
  bool of_current_incarnation(const domain::DecodedEnvelope& decoded) {
    const auto& id = decoded.incarnation->id;
    if (id == incarnation) return true;
    if (id != skipped_incarnation) {
      read_incarnation();
      if (id == incarnation) return true;
      skipped_incarnation = id;
    }
    if (other_incarnation_run == 0) {
      spdlog::warn("projector {}: skipping messages of incarnation {} (the event store's is {}): published "
                   "before a restore, their positions may name other events now; the event store fills what "
                   "they leave out",
                   name, id, incarnation);
    }
    ++other_incarnation_run;
    return false;
  }

  void end_other_incarnation_run() {
    if (other_incarnation_run == 0) return;
    spdlog::info("projector {}: skipped {} message(s) of another incarnation", name, other_incarnation_run);
    other_incarnation_run = 0;
  }

  // Collects up to batch_events_max messages, waiting at most batch_wait after the first
  // (first_wait_ms 0: only what is already fetched). Messages whose position header is at or
  // below `skip_through` are not decoded: catching up from the store, Kafka's copies are only
  // counted and dropped.
  Collected collect(std::vector<RecordedEvent>& events, PartitionOffsets& offsets, int first_wait_ms,
                    std::int64_t skip_through, std::int64_t watermark) {
    Collected collected;
    const auto started = Clock::now();
    int wait_ms = first_wait_ms;
    while (collected.messages < settings.batch_events_max && !worker.stopping()) {
      rd_kafka_message_t* message = rd_kafka_consumer_poll(consumer, wait_ms);
      if (message == nullptr) {
        if (collected.messages > 0 || first_wait_ms == 0 || Clock::now() - started >= settings.batch_wait) break;
        continue;
      }
      if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++collected.messages;
        offsets[message->partition] = message->offset + 1;
        const auto position = header_position(message);
        if (position && *position <= skip_through) {
          if (*position <= watermark) ++collected.duplicates;
        } else if (auto decoded = domain::decode_envelope_with_incarnation(
                       {static_cast<const char*>(message->payload), message->len})) {
          if (decoded->incarnation && !of_current_incarnation(*decoded)) {
            ++collected.other_incarnation;
          } else {
            end_other_incarnation_run();
            events.push_back(std::move(decoded->event));
          }
        } else {
          // Not ours or damaged: its position, if any, is filled from the event store.
          spdlog::warn("projector {}: undecodable message at partition {} offset {}", name,
                       message->partition, message->offset);
        }
      } else if (message->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        update_status([&](ProjectorStatus& s) { s.last_error = rd_kafka_message_errstr(message); });
      }
      rd_kafka_message_destroy(message);
      if (collected.messages > 0 && Clock::now() - started >= settings.batch_wait) break;
      wait_ms = collected.messages == 0 ? first_wait_ms : 1;
    }
    return collected;
  }

  // Applies what follows the watermark, in position order, filling any gap from the event
  // store; `up_to` > 0 also reads the store up to that position (healing without Kafka).
  // Returns the new watermark. The events are moved out, not copied; a batch that fails is
  // not retried from memory: its positions come back from Kafka or the store.
  std::int64_t apply(std::vector<RecordedEvent>& events, const PartitionOffsets& offsets,
                     std::int64_t up_to) {
    std::sort(events.begin(), events.end(),
              [](const RecordedEvent& a, const RecordedEvent& b) { return a.position < b.position; });
    auto lease = pool.acquire();
    try {
      pqxx::work work(*lease);
      // A read model is derived data: losing the last commits in a crash loses rows and
      // watermark together (one transaction), and they are applied again. No fsync wait.
      work.exec("SET LOCAL synchronous_commit = off");
      // The row lock also keeps two instances of one projection from interleaving.
      std::int64_t watermark = work.exec_params1(
          "SELECT watermark FROM read.projections WHERE name = $1 FOR UPDATE", name)[0].as<std::int64_t>();
      const std::int64_t start = watermark;
      failed_attempt = Attempt{start + 1, start + 1};
      std::string previous = hash_at(work, watermark);
      // The relay publishes committed events only: a message beyond the head is not one of them.
      const std::int64_t store_head =
          events.empty() ? 0 : work.exec("SELECT position FROM event_store_head")[0][0].as<std::int64_t>();
      // The hashes the store holds for the positions the messages name (one range read): a
      // message counts only if it carries its position's stored hash and its content hashes
      // to it from the previous one. A hash recomputed by a forger chains, but is not stored.
      std::unordered_map<std::int64_t, std::string> stored_hashes;
      if (!events.empty() && events.back().position.value() > watermark) {
        const std::int64_t first = std::max(watermark + 1, events.front().position.value());
        const std::int64_t last = std::min(store_head, events.back().position.value());
        if (first <= last) {
          for (const auto& row : work.exec_params(
                   "SELECT position, hash FROM events WHERE position BETWEEN $1 AND $2", first, last)) {
            stored_hashes.emplace(row[0].as<std::int64_t>(), pqxx::binarystring(row[1]).str());
          }
        }
      }
      std::vector<RecordedEvent> to_apply;
      std::int64_t duplicates = 0;
      std::int64_t from_store = 0;
      std::int64_t rejected = 0;
      auto fill_to = [&](std::int64_t last) {
        while (watermark < last) {
          failed_attempt->through = watermark + 1;
          auto missing = store.read_all(GlobalPosition(watermark + 1),
                                        static_cast<std::size_t>(std::min<std::int64_t>(last - watermark, 10'000)));
          if (missing.empty() || missing.front().position.value() != watermark + 1) {
            throw ProjectionError("position " + std::to_string(watermark + 1) +
                                  " is missing from the event store");
          }
          for (auto& event : missing) {
            if (event.position.value() != watermark + 1 || watermark >= last) break;
            // The store is the truth, but the hash held for the watermark may come from a
            // Kafka message: one forged with a hash recomputed to chain passes its own check
            // and is caught here, by the next position, which no longer chains.
            if (domain::chain_hash(previous, event) != event.hash) {
              throw ProjectionError("position " + std::to_string(event.position.value()) +
                                    " of the event store does not chain from the hash the projection holds for "
                                    "the position before it (a forged event applied, or an altered store: run "
                                    "ledger replay verify, then rebuild the projection)");
            }
            previous = event.hash;
            ++watermark;
            ++from_store;
            to_apply.push_back(std::move(event));
          }
        }
      };
      for (auto& event : events) {
        const std::int64_t position = event.position.value();
        if (position <= watermark) {
          ++duplicates;  // another instance, or a retry after a commit whose answer was lost
          continue;
        }
        if (position > store_head) {
          spdlog::warn("projector {}: a message names position {}, beyond the event store's head {}; ignored",
                       name, position, store_head);
          ++rejected;
          continue;
        }
        fill_to(position - 1);
        // Only the stored event is applied: anything else on the topic (forged, corrupted, from
        // another log) is logged and replaced by the store's.
        const auto stored_hash = stored_hashes.find(position);
        if (stored_hash == stored_hashes.end() || stored_hash->second != event.hash ||
            domain::chain_hash(previous, event) != event.hash) {
          spdlog::warn("projector {}: the message for position {} (stream {}) is not the stored event "
                       "(its hash differs or does not chain); reading that position from the event store",
                       name, position, event.stream_id);
          ++rejected;
          fill_to(position);
          continue;
        }
        previous = event.hash;
        to_apply.push_back(std::move(event));
        watermark = position;
      }
      if (up_to > watermark) fill_to(up_to);
      failed_attempt->through = std::max(watermark, start + 1);
      // Applied positions follow the watermark read under the row lock, one by one: a hole
      // would be a read model that never converges, a repeat an amount counted twice.
      for (std::size_t i = 0; i < to_apply.size(); ++i) {
        LEDGER_ASSERT(to_apply[i].position.value() == start + 1 + static_cast<std::int64_t>(i),
                      "projector: positions applied contiguously after the watermark");
      }
      projection->apply(work, to_apply);
      for (const auto& [partition, next_offset] : offsets) {
        work.exec_params(
            "INSERT INTO read.kafka_offsets (projection, topic, partition, next_offset) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition) "
            "DO UPDATE SET next_offset = excluded.next_offset",
            name, settings.topic, partition, next_offset);
      }
      if (watermark != start) {
        // A stall (of this instance or another) ends when the watermark passes it.
        work.exec_params(
            "UPDATE read.projections SET watermark = $2, applied = applied + $3, updated_at = now(), "
            "incarnation = coalesce(nullif($4, '')::uuid, incarnation), "
            "stalled_reason = CASE WHEN stalled_position <= $2 THEN NULL ELSE stalled_reason END, "
            "stalled_since = CASE WHEN stalled_position <= $2 THEN NULL ELSE stalled_since END, "
            "stalled_position = CASE WHEN stalled_position <= $2 THEN NULL ELSE stalled_position END "
            "WHERE name = $1",
            name, watermark, static_cast<std::int64_t>(to_apply.size()), incarnation);
      }
      work.commit();
      failed_attempt.reset();
      chain_position = watermark;
      chain_hash_at = previous;
      update_status([&](ProjectorStatus& s) {
        s.watermark = GlobalPosition(watermark);
        s.events_applied += static_cast<std::int64_t>(to_apply.size());
        s.events_from_store += from_store;
        s.duplicates_skipped += duplicates;
        s.messages_rejected += rejected;
        ++s.batches;
      });
      if (stall && watermark >= stall->position) {
        spdlog::info("projector {}: moved past position {}; no longer stalled", name, stall->position);
        stall.reset();
        stall_backoff = stalled_retry_backoff_initial;
        update_status([](ProjectorStatus& s) {
          s.stalled_position = GlobalPosition(0);
          s.stalled_reason.clear();
          s.stalled_retries = 0;
        });
      }
      return watermark;
    } catch (...) {
      lease.discard();
      throw;
    }
  }

  // The hash the event after `watermark` must chain from: kept from the last commit, else
  // read from the store (at start, or when another instance or a rebuild moved the watermark).
  std::string hash_at(pqxx::transaction_base& work, std::int64_t watermark) {
    if (watermark == chain_position) return chain_hash_at;
    if (watermark == 0) return domain::genesis_hash();
    const auto rows = work.exec_params("SELECT hash FROM events WHERE position = $1", watermark);
    if (rows.empty()) {
      throw ProjectionError("position " + std::to_string(watermark) +
                            ", the projection's watermark, is missing from the event store");
    }
    return pqxx::binarystring(rows[0][0]).str();
  }

  // The watermark, and a stall recorded earlier (by this process or one before it), so moving
  // past it is logged.
  std::int64_t stored_watermark() {
    auto lease = pool.acquire();
    pqxx::read_transaction work(*lease);
    const auto row = work.exec_params1(
        "SELECT watermark, stalled_position, coalesce(stalled_reason, '') FROM read.projections WHERE name = $1",
        name);
    const auto watermark = row[0].as<std::int64_t>();
    if (!stall && !row[1].is_null() && row[1].as<std::int64_t>() > watermark) {
      stall = Stall{row[1].as<std::int64_t>(), row[2].as<std::string>(), true};
      update_status([&](ProjectorStatus& s) {
        s.stalled_position = GlobalPosition(stall->position);
        s.stalled_reason = stall->reason;
      });
    }
    return watermark;
  }

  // Reports that `position` cannot be applied: one log line when the stall starts or moves,
  // the state in read.projections for /health of every process (written until it succeeds).
  void stalled_at(std::int64_t position, const std::string& reason) {
    if (!stall || stall->position != position) {
      spdlog::error("projector {}: stalled at position {}: {}; retrying with backoff (up to {} s) until it applies",
                    name, position, reason,
                    std::chrono::duration_cast<std::chrono::seconds>(stalled_retry_backoff_max).count());
      stall = Stall{position, reason, false};
      stall_backoff = stalled_retry_backoff_initial;
      update_status([&](ProjectorStatus& s) {
        s.stalled_position = GlobalPosition(position);
        s.stalled_retries = 0;
      });
    } else {
      if (stall->reason != reason) stall->recorded = false;
      stall->reason = reason;
      spdlog::debug("projector {}: still stalled at position {}: {}", name, position, reason);
      update_status([](ProjectorStatus& s) { ++s.stalled_retries; });
    }
    update_status([&](ProjectorStatus& s) { s.stalled_reason = reason; });
    if (stall->recorded) return;
    try {
      auto lease = pool.acquire();
      pqxx::work work(*lease);
      work.exec_params(
          "UPDATE read.projections SET stalled_since = CASE WHEN stalled_position IS DISTINCT FROM $2 "
          "THEN now() ELSE stalled_since END, stalled_position = $2, stalled_reason = $3 "
          "WHERE name = $1 AND watermark < $2",
          name, position, reason);
      work.commit();
      stall->recorded = true;
    } catch (const std::exception& failure) {
      spdlog::debug("projector {}: recording the stall failed: {}", name, failure.what());
    }
  }

  // After apply() failed: a failure the database or Kafka caused is retried as it is; any
  // other failure of several positions is narrowed down by applying them one at a time, and
  // the one position that fails alone stalls the projection.
  void handle_failure(const std::exception& error) {
    const auto attempt = failed_attempt;
    failed_attempt.reset();
    update_status([&](ProjectorStatus& s) { s.last_error = error.what(); });
    if (!attempt || transient(error)) {
      spdlog::warn("projector {}: {}; retrying", name, error.what());
      pause(transient_retry_pause);
      return;
    }
    if (attempt->through > attempt->from) {
      spdlog::info("projector {}: applying positions {} to {} failed ({}); applying them one at a time",
                   name, attempt->from, attempt->through, stalled_reason(error));
      single_step_through = std::max(single_step_through, attempt->through);
      return;
    }
    stalled_at(attempt->from, stalled_reason(error));
    pause(stall_backoff);
    stall_backoff = std::min(stall_backoff * 2, stalled_retry_backoff_max);
  }

  // Two ways in. Far behind the store's head (a backlog, a new or rebuilt projection, a
  // relay that was down) the projector reads the event store in large sequential batches
  // and drops what Kafka delivers meanwhile. Near the head it applies what Kafka delivers.
  // Messages of one partition can run ahead of another's: what arrives above a gap waits in
  // `ahead` for the gap to arrive too, and only a gap that stays is read from the store.
  void run() {
    update_status([](ProjectorStatus& s) { s.running = true; });
    std::vector<RecordedEvent> incoming;
    std::map<std::int64_t, RecordedEvent> ahead;
    std::vector<RecordedEvent> ready;  // contiguous from the watermark, to apply next
    PartitionOffsets offsets;
    std::int64_t heal_to = 0;
    std::int64_t head = 0;
    auto head_read = Clock::time_point{};
    auto last_progress = Clock::now();
    auto gap_since = Clock::time_point{};
    std::int64_t watermark = -1;
    const auto span_max = static_cast<std::int64_t>(settings.batch_events_max);
    while (!worker.stopping()) {
      try {
        if (consumer == nullptr) create_consumer();
        if (watermark < 0) watermark = stored_watermark();
        if (incarnation.empty()) read_incarnation();
        auto now = Clock::now();
        if (now - head_read >= settings.head_check_interval) {
          head = store.head().position.value();
          head_read = now;
        }
        // Looking for (or stuck at) a position that fails: one position at a time, from the store.
        const bool single_step = stall.has_value() || watermark < single_step_through;
        const bool far_behind = single_step || head - watermark > settings.catch_up_events_min;
        const bool ahead_ready = !ahead.empty() && ahead.begin()->first == watermark + 1;
        const auto collected =
            collect(incoming, offsets, far_behind || ahead_ready ? 0 : 100,
                    far_behind ? std::numeric_limits<std::int64_t>::max() : watermark, watermark);
        if (worker.stopping()) break;
        // While Kafka hands over full batches the missing positions are probably just behind
        // in another partition's queue: the reorder wait only runs once the consumer is idle.
        const bool consumer_busy = collected.messages >= settings.batch_events_max;
        std::int64_t duplicates = collected.duplicates;
        for (auto& event : incoming) {
          const std::int64_t position = event.position.value();
          if (position <= watermark) {
            ++duplicates;
          } else if (!far_behind && !ahead.try_emplace(position, std::move(event)).second) {
            ++duplicates;
          }
        }
        incoming.clear();
        if (duplicates > 0) update_status([&](ProjectorStatus& s) { s.duplicates_skipped += duplicates; });
        if (collected.other_incarnation > 0) {
          update_status([&](ProjectorStatus& s) { s.messages_other_incarnation += collected.other_incarnation; });
        }

        now = Clock::now();
        if (single_step) {
          ahead.clear();
          heal_to = watermark + 1;
        } else if (far_behind) {
          ahead.clear();  // all of it is in the store, read in order below
          heal_to = std::min(head, watermark + span_max);
        } else {
          std::int64_t next = watermark + 1;
          while (!ahead.empty() && ahead.begin()->first <= next && ready.size() < settings.batch_events_max) {
            if (ahead.begin()->first == next) {
              ready.push_back(std::move(ahead.begin()->second));
              ++next;
            }
            ahead.erase(ahead.begin());
          }
          const bool gap = !ahead.empty() && ahead.begin()->first > next;
          if (!gap) {
            gap_since = {};
          } else if (gap_since == Clock::time_point{} ||
                     (consumer_busy && ahead.size() <= settings.reorder_events_max)) {
            gap_since = now;
          } else if (now - gap_since >= settings.reorder_wait || ahead.size() > settings.reorder_events_max) {
            // The gap stays: apply what is held within one batch's span, reading the gaps
            // between from the store. What lies beyond the store's head was never published
            // by the relay (forged or from another log): it would hold a gap open forever.
            head = store.head().position.value();
            head_read = now;
            std::int64_t beyond_head = 0;
            while (!ahead.empty() && ahead.rbegin()->first > head) {
              ahead.erase(std::prev(ahead.end()));
              ++beyond_head;
            }
            if (beyond_head > 0) {
              spdlog::warn("projector {}: {} message(s) name positions beyond the event store's head {}; ignored",
                           name, beyond_head, head);
              update_status([&](ProjectorStatus& s) { s.messages_rejected += beyond_head; });
            }
            while (!ahead.empty() && ahead.begin()->first <= watermark + span_max) {
              ready.push_back(std::move(ahead.begin()->second));
              ahead.erase(ahead.begin());
            }
            if (ready.empty()) heal_to = std::min(head, watermark + span_max);
            gap_since = {};
          }
          if (ready.empty() && heal_to == 0 && ahead.empty() && now - last_progress >= settings.gap_wait) {
            // Kafka has been quiet: if the store is ahead, the missing events were lost on
            // the way (or the relay is down); read them from the store.
            head = store.head().position.value();
            head_read = now;
            if (head > watermark) heal_to = std::min(head, watermark + span_max);
            last_progress = now;
          }
        }
        if (ready.empty() && offsets.empty() && heal_to == 0) continue;
        const std::int64_t applied = apply(ready, offsets, heal_to);
        if (applied != watermark) last_progress = Clock::now();
        watermark = applied;
        ready.clear();
        offsets.clear();
        heal_to = 0;
      } catch (const std::exception& error) {
        // The failed batch was handed over: what it held comes back through the gap logic,
        // from Kafka or the store. Read the watermark again: the commit may have happened.
        ready.clear();
        offsets.clear();
        heal_to = 0;
        watermark = -1;
        handle_failure(error);
      }
    }
    update_status([](ProjectorStatus& s) { s.running = false; });
  }
};

Projector::Projector(ProjectionKind kind, ProjectorSettings settings, db::ConnectionPool& pool)
    : impl_(std::make_unique<Impl>(kind, std::move(settings), pool)) {}

Projector::~Projector() { stop(); }

void Projector::start() {
  impl_->worker.start([this] { impl_->run(); });
}

void Projector::stop() { impl_->worker.stop(); }

ProjectorStatus Projector::status() const { return impl_->state.get(); }

}  // namespace ledger::projections
