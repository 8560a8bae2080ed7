// History from the event store itself: a stream's events (auditor) and an account's balances
// as of a past moment. Both read on the blocking pool.
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <rapidjson/stringbuffer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>

#include "../json_text.hpp"
#include "handlers.hpp"
#include "ledger/api/json_views.hpp"
#include "ledger/core/logging.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/engine/balance_as_of.hpp"
#include "ledger/engine/event_store.hpp"

namespace ledger::api::handlers {

namespace http = boost::beast::http;

namespace {

constexpr std::int64_t stream_page_events_default = 100;
constexpr std::int64_t stream_page_events_max = 1'000;
// On a read replica, how long a history read waits for the replica to replay the primary's
// head (the default wait of the read-model queries), and how often it looks.
constexpr auto replica_wait_ms_max = std::chrono::milliseconds(2'000);
constexpr auto replica_poll_interval_ms = std::chrono::milliseconds(3);

// A stream id is a kind prefix and an id, client-chosen or derived by the engine (`~`
// separates a derived id's parts: `transfer-L1~r1~interest`).
bool is_valid_stream_id(std::string_view stream) {
  constexpr std::size_t stream_id_length_max = 256;
  if (stream.empty() || stream.size() > stream_id_length_max) return false;
  return std::all_of(stream.begin(), stream.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == ':' ||
           c == '-' || c == '~';
  });
}

void write_event(JsonWriter& w, const domain::RecordedEvent& event) {
  w.StartObject();
  write_member(w, "position", event.position.value());
  write_member(w, "stream_id", event.stream_id);
  write_member(w, "version", event.version.value());
  write_member(w, "type", event.type);
  write_member(w, "event_id", event.event_id);
  write_member(w, "recorded_at", rfc3339(event.recorded_at_us));
  w.Key("data");
  const auto decoded = domain::decode_event(event.type, event.payload);
  const std::string data = decoded ? domain::event_to_json(*decoded) : "null";
  w.RawValue(data.data(), data.size(), rapidjson::kObjectType);
  w.Key("metadata");
  const std::string metadata = domain::metadata_to_json(event.metadata);
  w.RawValue(metadata.data(), metadata.size(), rapidjson::kObjectType);
  w.EndObject();
}

// A page of events; next_from_version is null when the page was not full.
std::string stream_events_json(const std::vector<domain::RecordedEvent>& events, std::int64_t limit) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("events");
  w.StartArray();
  for (const auto& event : events) write_event(w, event);
  w.EndArray();
  w.Key("next_from_version");
  if (static_cast<std::int64_t>(events.size()) == limit) {
    w.Int64(events.back().version.value() + 1);
  } else {
    w.Null();
  }
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

// Where history reads: the replica's event store when one is configured, else the primary's.
const engine::EventStore& history_store(const Context& context) {
  const auto* replica = context.services.read_replica.event_store;
  return replica != nullptr ? *replica : *context.services.event_store;
}

void answer_unreadable(const Context& context, const Reply& reply) {
  const QueryAnswer problem = unavailable_answer(context.services.read_replica.event_store != nullptr);
  reply.problem(problem.status, problem.code, problem.title, problem.detail);
}

// Holds a history read on a streaming replica until the replica has replayed everything the
// primary had committed when the request came (its head, or `at_most` when lower), so the
// answer is the one the primary would give: the replica lags, and a client that has just
// written must see its write. Polls the replica's head on the blocking pool with a timer in
// between (no thread held while waiting), at most replica_wait_ms_max; then 504
// `read_model_behind`. Without a replica, `read` runs at once.
void after_replica_caught_up(const Context& context, std::optional<std::int64_t> at_most, const Reply& reply,
                             std::function<void()> read) {
  if (context.services.read_replica.event_store == nullptr) return read();
  std::int64_t target = 0;
  try {
    target = context.services.event_store->head().position.value();
  } catch (const std::exception& error) {
    logging::RequestIdScope scope(reply.request_id);
    spdlog::warn("reading the primary's head for a replica read failed: {}", error.what());
    reply.problem(503, "database_unavailable", "Service unavailable",
                  "the primary's head cannot be read now, so the read replica cannot be trusted to be current");
    return;
  }
  if (at_most) target = std::min(target, *at_most);
  struct Wait {
    Context context;
    std::int64_t target;
    std::chrono::steady_clock::time_point deadline;
    Reply reply;
    std::function<void()> read;
    boost::asio::steady_timer timer;
  };
  auto wait = std::make_shared<Wait>(Wait{context, target, std::chrono::steady_clock::now() + replica_wait_ms_max,
                                          reply, std::move(read),
                                          boost::asio::steady_timer(context.blocking.get_executor())});
  auto poll = std::make_shared<std::function<void()>>();
  *poll = [wait, weak_poll = std::weak_ptr<std::function<void()>>(poll)] {
    std::int64_t replayed = 0;
    try {
      replayed = wait->context.services.read_replica.event_store->head().position.value();
    } catch (const std::exception& error) {
      logging::RequestIdScope scope(wait->reply.request_id);
      spdlog::warn("reading the read replica's head failed: {}", error.what());
      answer_unreadable(wait->context, wait->reply);
      return;
    }
    if (replayed >= wait->target) return wait->read();
    if (std::chrono::steady_clock::now() >= wait->deadline) {
      wait->reply.problem(504, "read_model_behind", "Read model behind",
                          "the read replica has replayed to position " + std::to_string(replayed) +
                              ", below the primary's position " + std::to_string(wait->target) + ", after " +
                              std::to_string(replica_wait_ms_max.count()) + " ms");
      return;
    }
    auto again = weak_poll.lock();
    if (!again) return;
    wait->timer.expires_after(replica_poll_interval_ms);
    wait->timer.async_wait([again](const boost::system::error_code& error) {
      if (!error) (*again)();
    });
  };
  // The timer's handler holds `poll` alive between polls; the first poll runs here.
  (*poll)();
}

void read_stream_events(const Context& context, const std::string& stream_id, std::int64_t from_version,
                        std::int64_t limit, const Reply& reply) {
  std::vector<domain::RecordedEvent> events;
  try {
    events = history_store(context).read_stream(stream_id, StreamVersion(from_version),
                                                static_cast<std::size_t>(limit));
  } catch (const std::exception& error) {
    logging::RequestIdScope scope(reply.request_id);
    spdlog::warn("reading stream {} failed: {}", stream_id, error.what());
    answer_unreadable(context, reply);
    return;
  }
  if (events.empty() && from_version == 1) {
    reply.problem(404, "unknown_stream", "Not found", "no stream " + stream_id);
    return;
  }
  reply.json(http::status::ok, stream_events_json(events, limit));
}

void read_balance_as_of(const Context& context, const std::string& account_id, const BalanceMoment& moment,
                        const Reply& reply) {
  std::optional<engine::BalanceAsOf> found;
  try {
    found = engine::balance_as_of(history_store(context), account_id, moment.as_of_us,
                                  moment.at_position ? std::optional<GlobalPosition>(*moment.at_position)
                                                     : std::nullopt);
  } catch (const std::exception& error) {
    logging::RequestIdScope scope(reply.request_id);
    spdlog::warn("folding account {} failed: {}", account_id, error.what());
    answer_unreadable(context, reply);
    return;
  }
  if (!found || !found->state.exists) {
    const std::string when =
        moment.as_of_us ? rfc3339(*moment.as_of_us) : "position " + std::to_string(*moment.at_position);
    reply.problem(404, "unknown_account", "Not found",
                  "account " + account_id + (found ? " did not exist yet at " + when : " does not exist"));
    return;
  }
  reply.json(http::status::ok, balance_as_of_json(account_id, *found, moment));
}

}  // namespace

void answer_stream_events(const Context& context, const std::string& stream_id, const QueryParameters& parameters,
                          const Reply& reply) {
  std::int64_t from_version = 1;
  std::int64_t limit = stream_page_events_default;
  for (const auto& [name, value] : parameters) {
    const auto number = parse_integer(value);
    if (name == "from_version" && number && *number >= 1) {
      from_version = *number;
    } else if (name == "limit" && number && *number >= 1 && *number <= stream_page_events_max) {
      limit = *number;
    } else {
      reply.problem(400, "invalid_query", "Invalid query parameter",
                    "invalid " + name + " (from_version >= 1, limit 1 to 1000)");
      return;
    }
  }
  if (!is_valid_stream_id(stream_id)) {
    reply.problem(400, "invalid_id", "Invalid id", "invalid stream id");
    return;
  }
  if (context.services.event_store == nullptr) {
    reply.problem(503, "unavailable", "Service unavailable", "the event store is not configured");
    return;
  }
  boost::asio::post(context.blocking, [context, stream_id, from_version, limit, reply] {
    after_replica_caught_up(context, std::nullopt, reply, [context, stream_id, from_version, limit, reply] {
      read_stream_events(context, stream_id, from_version, limit, reply);
    });
  });
}

void answer_balance_as_of(const Context& context, const std::string& account_id, const QueryParameters& parameters,
                          const Reply& reply) {
  BalanceMoment moment;
  for (const auto& [name, value] : parameters) {
    if (name == "as_of" && (moment.as_of_us = parse_rfc3339(value))) continue;
    if (name == "at_position" && (moment.at_position = parse_integer(value)) && *moment.at_position >= 1) continue;
    reply.problem(400, "invalid_query", "Invalid query parameter",
                  "invalid " + name + " (as_of: an RFC 3339 time; at_position: a position >= 1)");
    return;
  }
  if (moment.as_of_us.has_value() == moment.at_position.has_value()) {
    reply.problem(400, "invalid_query", "Invalid query parameter", "give exactly one of as_of and at_position");
    return;
  }
  if (!is_valid_stream_id(account_id)) {
    reply.problem(400, "invalid_id", "Invalid id", "invalid account id");
    return;
  }
  if (context.services.event_store == nullptr) {
    reply.problem(503, "unavailable", "Service unavailable", "the event store is not configured");
    return;
  }
  boost::asio::post(context.blocking, [context, account_id, moment, reply] {
    after_replica_caught_up(context, moment.at_position, reply, [context, account_id, moment, reply] {
      read_balance_as_of(context, account_id, moment, reply);
    });
  });
}

}  // namespace ledger::api::handlers
