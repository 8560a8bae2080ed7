// `ledger kafka ensure-topic`: creates the events topic with the configured partitions,
// replication factor, min.insync.replicas and retention, or checks an existing one and names
// every difference. It never alters an existing topic.
#include <spdlog/spdlog.h>

#include <iostream>

#include "commands.hpp"
#include "kafka_topic.hpp"
#include "ledger/relay/topic_admin.hpp"

namespace ledger::app {
namespace {

// The topics ledger publishes to: the events topic, and its JSON view with --publish-json.
std::vector<relay::TopicSpec> topic_specs(const Settings& settings) {
  if (settings.topic_min_insync_replicas > settings.topic_replication_factor) {
    throw SettingError("--topic-min-insync-replicas (LEDGER_TOPIC_MIN_INSYNC_REPLICAS)",
                       std::to_string(settings.topic_min_insync_replicas) + " is more than --topic-replication-factor " +
                           std::to_string(settings.topic_replication_factor) +
                           ": no event could ever be acknowledged (acks=all)");
  }
  relay::TopicSpec spec;
  spec.name = settings.topic_prefix + ".events";
  spec.partitions = settings.topic_partitions;
  spec.replication_factor = settings.topic_replication_factor;
  spec.min_insync_replicas = settings.topic_min_insync_replicas;
  spec.retention_ms = settings.topic_retention_ms;
  std::vector<relay::TopicSpec> specs{spec};
  if (settings.publish_json) {
    spec.name += ".json";
    specs.push_back(spec);
  }
  return specs;
}

relay::AdminSettings admin_settings(const Settings& settings, std::chrono::milliseconds timeout) {
  relay::AdminSettings admin;
  admin.brokers = resolve_kafka_brokers(settings);
  admin.kafka_properties = kafka_property_map(settings);
  admin.timeout = timeout;
  return admin;
}

std::string summary(const relay::TopicSpec& spec) {
  return std::to_string(spec.partitions) + " partitions, replication factor " +
         std::to_string(spec.replication_factor) + ", min.insync.replicas " + std::to_string(spec.min_insync_replicas) +
         ", retention.ms " + std::to_string(spec.retention_ms) + (spec.retention_ms == -1 ? " (forever)" : "");
}

}  // namespace

CommandAction register_kafka_command(CLI::App& root, Settings& settings) {
  auto* kafka = root.add_subcommand("kafka", "Provision and check the Kafka topics");
  kafka->require_subcommand(1);
  kafka->fallthrough();
  auto* ensure = kafka->add_subcommand(
      "ensure-topic",
      "Create the events topic per --topic-partitions, --topic-replication-factor, --topic-min-insync-replicas "
      "and --topic-retention-ms, or check an existing one (exit 1 naming each difference; never altered)");
  auto timeout_ms = std::make_shared<int>(30'000);
  ensure->add_option("--timeout-ms", *timeout_ms, "Bound on each request to Kafka")
      ->envname("LEDGER_KAFKA_ADMIN_TIMEOUT_MS")
      ->check(CLI::Range(100, 600'000))
      ->capture_default_str();

  return [=, &settings]() -> int {
    configure_logging(settings, "kafka");
    const auto specs = topic_specs(settings);
    const auto admin = admin_settings(settings, std::chrono::milliseconds(*timeout_ms));
    int exit_code = 0;
    for (const auto& spec : specs) {
      const auto result = relay::ensure_topic(admin, spec);
      const auto& check = result.check;
      for (const auto& unchecked : check.unchecked) {
        std::cerr << "ledger: warning: topic " << spec.name << ": " << unchecked << "\n";
      }
      if (!check.description.exists) {
        std::cerr << "ledger: error: topic " << spec.name << " was created but the cluster does not list it yet\n";
        exit_code = 1;
      } else if (!check.mismatches.empty()) {
        std::cerr << "ledger: error: topic " << spec.name
                  << " exists and differs from the configuration (ledger never alters an existing topic):\n";
        for (const auto& mismatch : check.mismatches) std::cerr << "  " << mismatch.describe() << "\n";
        exit_code = 1;
      } else if (result.created) {
        std::cout << "created topic " << spec.name << ": " << summary(spec) << "\n";
      } else {
        std::cout << "topic " << spec.name << " exists and matches: " << summary(spec)
                  << (check.unchecked.empty() ? "" : " (configs not checked: see the warnings)") << "\n";
      }
    }
    return exit_code;
  };
}

void check_events_topic_at_start(const Settings& settings, bool create_missing, std::chrono::milliseconds timeout) {
  const auto specs = topic_specs(settings);
  const auto admin = admin_settings(settings, timeout);
  for (const auto& spec : specs) {
    relay::TopicCheck check;
    try {
      check = relay::check_topic(admin, spec);
    } catch (const relay::TopicAdminError& error) {
      // Kafka down delays the read side and never stops the command side (DESIGN.md,
      // invariant 9): the relay publishes once Kafka answers. The check waits for the next start.
      spdlog::warn("could not check Kafka topic {}: {}; the relay publishes once Kafka answers", spec.name,
                   error.what());
      continue;
    }
    if (!check.description.exists && create_missing) {
      // Kafka answered: a topic it then fails to create stops serve like a missing one.
      const auto result = relay::ensure_topic(admin, spec);
      if (result.created) spdlog::info("created Kafka topic {}: {}", spec.name, summary(spec));
      check = result.check;
    }
    if (!check.description.exists) {
      throw std::runtime_error("Kafka topic " + spec.name +
                               " does not exist: create it with `ledger kafka ensure-topic` (or start serve with "
                               "--create-topic)");
    }
    std::string refused;
    for (const auto& mismatch : check.mismatches) {
      if (mismatch.severity == relay::MismatchSeverity::refuse) {
        refused += (refused.empty() ? "" : "; ") + mismatch.describe();
      } else {
        spdlog::warn("Kafka topic {}: {}", spec.name, mismatch.describe());
      }
    }
    for (const auto& unchecked : check.unchecked) spdlog::info("Kafka topic {}: {}", spec.name, unchecked);
    if (!refused.empty()) {
      throw std::runtime_error("Kafka topic " + spec.name + " cannot be published to: " + refused +
                               ". `ledger kafka ensure-topic` lists every difference");
    }
  }
}

}  // namespace ledger::app
