// `ledger replay publish`: the relay's publishing, once more over a range of positions.
#include "ledger/relay/relay.hpp"
#include "ledger/replay/replay.hpp"

namespace ledger::replay {

PublishResult publish(db::ConnectionPool& pool, const PublishSettings& settings, const PositionRange& range,
                      const Progress& progress) {
  const engine::EventStore store(pool);
  const std::int64_t to = range.to.value() > 0 ? range.to.value() : store.head().position.value();
  const std::int64_t from = std::max<std::int64_t>(range.from.value(), 1);
  PublishResult result;
  if (from > to) return result;
  relay::RelaySettings relay_settings;
  relay_settings.brokers = settings.brokers;
  relay_settings.topic = settings.topic;
  relay_settings.json_topic = settings.json_topic;
  relay_settings.kafka_properties = settings.kafka_properties;
  result.events_published = relay::publish_range(relay_settings, pool, GlobalPosition(from), GlobalPosition(to),
                                                  [&](std::int64_t done) {
                                                    if (progress) progress(done, to - from + 1);
                                                  });
  result.last_position = GlobalPosition(to);
  return result;
}

}  // namespace ledger::replay
