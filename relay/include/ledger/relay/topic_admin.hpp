#pragma once
// Provisioning and checking the events topic with librdkafka's Admin API: `ledger kafka
// ensure-topic` creates it, and `serve` checks it before its relay publishes. Nothing here
// ever alters an existing topic: a difference is reported, and an operator decides.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ledger::relay {

// What the events topic must look like (DESIGN.md, "Kafka contract").
struct TopicSpec {
  std::string name = "ledger.events";
  int partitions = 4;
  int replication_factor = 3;
  int min_insync_replicas = 2;
  // -1: events are kept forever (they are the audit trail; relay/README.md says why).
  std::int64_t retention_ms = -1;
};

// Kafka's own limits on topic names: letters, digits, '.', '_', '-'; at most 249 characters.
constexpr std::size_t topic_name_bytes_max = 249;
// Empty when `name` is a legal Kafka topic name; otherwise why not.
[[nodiscard]] std::string topic_name_problem(const std::string& name);

// How the admin client reaches the cluster.
struct AdminSettings {
  std::string brokers;
  // The same librdkafka properties (security) the producer and the consumers get.
  std::map<std::string, std::string> kafka_properties;
  // Bound on each admin request (metadata, DescribeConfigs, CreateTopics).
  std::chrono::milliseconds timeout{30'000};
};

// What a running `serve` makes of a difference. `ledger kafka ensure-topic` reports every
// difference as a mismatch whatever its severity.
enum class MismatchSeverity {
  // The relay must not publish into it (missing topic, other partition count, compaction).
  refuse,
  // Weaker than configured but correct (fewer replicas, shorter retention): a warning.
  warn,
};

struct TopicMismatch {
  std::string property;  // "topic", "partitions", "replication factor", or a topic config name
  std::string expected;
  std::string actual;
  MismatchSeverity severity = MismatchSeverity::refuse;
  std::string consequence;  // what the difference means, for the operator
  // "partitions: 2 on the broker, 4 configured (consequence)"
  [[nodiscard]] std::string describe() const;
};

// What the cluster says about one topic.
struct TopicDescription {
  bool exists = false;
  int partitions = 0;
  int replication_factor = 0;  // the fewest replicas any partition has
  // The topic's configs (DescribeConfigs); unset with `configs_error` when they could not be read.
  std::optional<std::map<std::string, std::string>> configs;
  std::string configs_error;
};

struct TopicCheck {
  TopicDescription description;
  std::vector<TopicMismatch> mismatches;
  // Expectations that could not be compared, each with the reason ("min.insync.replicas: not
  // checked (DescribeConfigs: ...)").
  std::vector<std::string> unchecked;

  [[nodiscard]] bool matches() const { return description.exists && mismatches.empty(); }
  [[nodiscard]] bool refused() const;
};

// The topic configs ledger sets on creation and expects afterwards.
[[nodiscard]] std::map<std::string, std::string> topic_configs(const TopicSpec& spec);

// Pure: every difference between `spec` and `description`, and what could not be compared.
[[nodiscard]] TopicCheck compare_topic(const TopicSpec& spec, const TopicDescription& description);

// The cluster could not be reached in time, or refused or failed an admin request.
class TopicAdminError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads the topic's partitions, replicas and configs. Never creates it (metadata is requested
// with auto-creation off). Throws TopicAdminError when the cluster does not answer.
[[nodiscard]] TopicDescription describe_topic(const AdminSettings& settings, const std::string& name);

// describe_topic, then compare_topic.
[[nodiscard]] TopicCheck check_topic(const AdminSettings& settings, const TopicSpec& spec);

struct EnsureResult {
  bool created = false;  // false: it existed already (it was not changed)
  TopicCheck check;      // after creation, what the cluster reports
};

// Creates the topic per `spec` when it does not exist (CreateTopics with its configs), then
// checks it. An existing topic is only checked, never altered. Throws TopicAdminError.
[[nodiscard]] EnsureResult ensure_topic(const AdminSettings& settings, const TopicSpec& spec);

}  // namespace ledger::relay
