#include "ledger/relay/topic_admin.hpp"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <memory>
#include <thread>

namespace ledger::relay {
namespace {

// Kafka's value for "no limit" of retention.ms and retention.bytes.
constexpr const char* unlimited = "-1";
// After CreateTopics, the metadata of a broker that is not the controller may lag behind.
constexpr std::chrono::milliseconds created_topic_poll_interval{200};

void log_to_spdlog(const rd_kafka_t*, int, const char* facility, const char* message) {
  spdlog::debug("Kafka admin: {}: {}", facility, message);
}

// One admin client (a producer handle that never produces) for the duration of one call.
class AdminClient {
 public:
  explicit AdminClient(const AdminSettings& settings) : brokers_(settings.brokers), timeout_(settings.timeout) {
    char error[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](const std::string& name, const std::string& value) {
      if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        throw TopicAdminError("Kafka admin setting " + name + ": " + error);
      }
    };
    set("bootstrap.servers", settings.brokers);
    // Asking about a missing topic must not create it with the broker's defaults.
    set("allow.auto.create.topics", "false");
    for (const auto& [name, value] : settings.kafka_properties) set(name, value);
    rd_kafka_conf_set_log_cb(conf, &log_to_spdlog);
    handle_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (handle_ == nullptr) {
      rd_kafka_conf_destroy(conf);  // rd_kafka_new takes it only on success
      throw TopicAdminError(std::string("Kafka admin client: ") + error);
    }
    queue_ = rd_kafka_queue_new(handle_);
  }
  ~AdminClient() {
    rd_kafka_queue_destroy(queue_);
    rd_kafka_destroy(handle_);
  }
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;

  [[nodiscard]] rd_kafka_t* handle() const { return handle_; }
  [[nodiscard]] rd_kafka_queue_t* queue() const { return queue_; }
  [[nodiscard]] std::chrono::milliseconds timeout() const { return timeout_; }
  [[nodiscard]] const std::string& brokers() const { return brokers_; }

  // Options bounding an admin request by the timeout (and, for CreateTopics, the wait for the
  // controller to finish creating).
  [[nodiscard]] std::unique_ptr<rd_kafka_AdminOptions_t, void (*)(rd_kafka_AdminOptions_t*)> options(
      rd_kafka_admin_op_t op) const {
    std::unique_ptr<rd_kafka_AdminOptions_t, void (*)(rd_kafka_AdminOptions_t*)> options(
        rd_kafka_AdminOptions_new(handle_, op), &rd_kafka_AdminOptions_destroy);
    char error[512];
    const int timeout_ms = static_cast<int>(timeout_.count());
    if (rd_kafka_AdminOptions_set_request_timeout(options.get(), timeout_ms, error, sizeof error) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw TopicAdminError(std::string("Kafka admin options: ") + error);
    }
    if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS &&
        rd_kafka_AdminOptions_set_operation_timeout(options.get(), timeout_ms, error, sizeof error) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw TopicAdminError(std::string("Kafka admin options: ") + error);
    }
    return options;
  }

  // The result event of the request just sent; the caller owns it.
  [[nodiscard]] rd_kafka_event_t* wait_for_result(const char* what) const {
    // librdkafka answers within its request timeout; the margin covers its own scheduling.
    rd_kafka_event_t* event = rd_kafka_queue_poll(queue_, static_cast<int>(timeout_.count()) + 5'000);
    if (event == nullptr) throw TopicAdminError(std::string(what) + ": no answer from Kafka in time");
    return event;
  }

 private:
  std::string brokers_;
  std::chrono::milliseconds timeout_;
  rd_kafka_t* handle_ = nullptr;
  rd_kafka_queue_t* queue_ = nullptr;
};

using EventPointer = std::unique_ptr<rd_kafka_event_t, void (*)(rd_kafka_event_t*)>;

// Partitions and replicas from the cluster's metadata (all topics, so nothing is auto-created).
// Returns whether the controller the metadata names is one of the cluster's brokers: librdkafka
// sends CreateTopics and DescribeConfigs to it, and without one it would wait out the whole
// timeout (librdkafka's mock cluster names none).
bool read_metadata(const AdminClient& client, const std::string& name, TopicDescription& description) {
  const rd_kafka_metadata_t* metadata = nullptr;
  const auto error =
      rd_kafka_metadata(client.handle(), 1, nullptr, &metadata, static_cast<int>(client.timeout().count()));
  if (error != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw TopicAdminError("no metadata from Kafka at " + client.brokers() + " within " +
                          std::to_string(client.timeout().count()) + " ms: " + rd_kafka_err2str(error));
  }
  std::unique_ptr<const rd_kafka_metadata_t, void (*)(const rd_kafka_metadata_t*)> owned(metadata,
                                                                                       &rd_kafka_metadata_destroy);
  // The metadata just read named the controller: no further wait.
  const std::int32_t controller = rd_kafka_controllerid(client.handle(), 0);
  bool controller_known = false;
  for (int b = 0; b < metadata->broker_cnt; ++b) controller_known |= metadata->brokers[b].id == controller;
  for (int t = 0; t < metadata->topic_cnt; ++t) {
    const auto& topic = metadata->topics[t];
    if (name != topic.topic) continue;
    if (topic.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return controller_known;
    if (topic.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw TopicAdminError("Kafka metadata of topic " + name + ": " + rd_kafka_err2str(topic.err));
    }
    description.exists = true;
    description.partitions = topic.partition_cnt;
    description.replication_factor = topic.partition_cnt == 0 ? 0 : topic.partitions[0].replica_cnt;
    for (int p = 0; p < topic.partition_cnt; ++p) {
      description.replication_factor = std::min(description.replication_factor, topic.partitions[p].replica_cnt);
    }
    return controller_known;
  }
  return controller_known;
}

constexpr const char* no_controller = "the cluster's metadata names no controller among its brokers";

// The topic's configs, or why they could not be read (a broker without DescribeConfigs, such
// as librdkafka's mock cluster, or a principal without the DescribeConfigs ACL).
void read_configs(const AdminClient& client, const std::string& name, TopicDescription& description) {
  rd_kafka_ConfigResource_t* resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name.c_str());
  const auto options = client.options(RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
  rd_kafka_DescribeConfigs(client.handle(), &resource, 1, options.get(), client.queue());
  rd_kafka_ConfigResource_destroy(resource);
  const EventPointer event(client.wait_for_result("Kafka DescribeConfigs"), &rd_kafka_event_destroy);
  if (rd_kafka_event_error(event.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    description.configs_error = rd_kafka_event_error_string(event.get());
    return;
  }
  const rd_kafka_DescribeConfigs_result_t* result = rd_kafka_event_DescribeConfigs_result(event.get());
  std::size_t count = 0;
  const rd_kafka_ConfigResource_t** resources = rd_kafka_DescribeConfigs_result_resources(result, &count);
  if (count != 1) {
    description.configs_error = "the broker described " + std::to_string(count) + " resources, not 1";
    return;
  }
  if (rd_kafka_ConfigResource_error(resources[0]) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    description.configs_error = rd_kafka_ConfigResource_error_string(resources[0]);
    return;
  }
  std::size_t entries = 0;
  const rd_kafka_ConfigEntry_t** configs = rd_kafka_ConfigResource_configs(resources[0], &entries);
  std::map<std::string, std::string> values;
  for (std::size_t i = 0; i < entries; ++i) {
    const char* value = rd_kafka_ConfigEntry_value(configs[i]);
    values[rd_kafka_ConfigEntry_name(configs[i])] = value == nullptr ? "" : value;
  }
  description.configs = std::move(values);
}

struct Described {
  TopicDescription description;
  bool controller_known = false;
};

Described describe(const AdminClient& client, const std::string& name) {
  Described described;
  described.controller_known = read_metadata(client, name, described.description);
  if (!described.description.exists) return described;
  if (described.controller_known) {
    read_configs(client, name, described.description);
  } else {
    described.description.configs_error = no_controller;
  }
  return described;
}

std::optional<std::int64_t> parse_integer(const std::string& text) {
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::string topic_name_problem(const std::string& name) {
  if (name.empty()) return "a topic name cannot be empty";
  if (name.size() > topic_name_bytes_max) {
    return "a topic name has at most " + std::to_string(topic_name_bytes_max) + " characters";
  }
  if (name == "." || name == "..") return "a topic name cannot be '.' or '..'";
  for (const char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return "'" + std::string(1, c) + "' in topic name '" + name + "': only letters, digits, '.', '_' and '-'";
    }
  }
  return {};
}

std::string TopicMismatch::describe() const {
  return property + ": " + actual + " on the broker, " + expected + " configured (" + consequence + ")";
}

bool TopicCheck::refused() const {
  return !description.exists || std::any_of(mismatches.begin(), mismatches.end(), [](const TopicMismatch& m) {
           return m.severity == MismatchSeverity::refuse;
         });
}

std::map<std::string, std::string> topic_configs(const TopicSpec& spec) {
  return {
      {"min.insync.replicas", std::to_string(spec.min_insync_replicas)},
      {"retention.ms", std::to_string(spec.retention_ms)},
      // Time is the only limit: a size limit would drop the oldest events as the ledger grows.
      {"retention.bytes", unlimited},
      // Compaction keeps only the latest message per key, and the key is the stream id: it
      // would delete every event of a stream but its last.
      {"cleanup.policy", "delete"},
  };
}

TopicCheck compare_topic(const TopicSpec& spec, const TopicDescription& description) {
  TopicCheck check;
  check.description = description;
  if (!description.exists) {
    check.mismatches.push_back({"topic", "present", "missing", MismatchSeverity::refuse,
                                "create it with `ledger kafka ensure-topic`"});
    return check;
  }
  if (description.partitions != spec.partitions) {
    check.mismatches.push_back(
        {"partitions", std::to_string(spec.partitions), std::to_string(description.partitions),
         MismatchSeverity::refuse,
         "a stream's partition follows from its key and the partition count, so the count of an existing topic "
         "cannot change under ledger; configure the topic's count or recreate the topic"});
  }
  if (description.replication_factor != spec.replication_factor) {
    check.mismatches.push_back(
        {"replication factor", std::to_string(spec.replication_factor), std::to_string(description.replication_factor),
         MismatchSeverity::warn,
         description.replication_factor < spec.replication_factor
             ? "fewer copies than configured: losing a broker can lose acknowledged events, which the relay then "
               "publishes again from the store"
             : "more copies than configured"});
  }
  if (!description.configs) {
    for (const auto& [name, value] : topic_configs(spec)) {
      check.unchecked.push_back(name + ": not checked (DescribeConfigs: " + description.configs_error + ")");
    }
    return check;
  }
  const auto& actual = *description.configs;
  for (const auto& [name, expected] : topic_configs(spec)) {
    const auto found = actual.find(name);
    if (found == actual.end()) {
      check.unchecked.push_back(name + ": not checked (the broker did not describe it)");
      continue;
    }
    const std::string& value = found->second;
    if (name == "cleanup.policy") {
      if (value != expected) {
        check.mismatches.push_back(
            {name, expected, value,
             value.find("compact") != std::string::npos ? MismatchSeverity::refuse : MismatchSeverity::warn,
             "compaction keeps only each stream's latest event: consumers reading the topic from the start would "
             "miss the rest of the audit trail"});
      }
      continue;
    }
    const auto number = parse_integer(value);
    const auto wanted = parse_integer(expected);
    if (number == wanted) continue;
    if (name == "min.insync.replicas") {
      // With acks=all, a write needs this many in-sync replicas: more than the topic has and no
      // event can ever be acknowledged.
      const bool unsatisfiable = number && *number > description.replication_factor;
      check.mismatches.push_back(
          {name, expected, value, unsatisfiable ? MismatchSeverity::refuse : MismatchSeverity::warn,
           unsatisfiable ? "more than the topic's replicas: no event can be acknowledged"
                         : "an acknowledged event is on fewer (or more) replicas than configured"});
    } else if (name == "retention.ms") {
      check.mismatches.push_back(
          {name, expected, value, MismatchSeverity::warn,
           "events older than the topic's retention are gone from Kafka; consumers down for longer must read them "
           "from the store"});
    } else {
      check.mismatches.push_back({name, expected, value, MismatchSeverity::warn,
                                  "the broker deletes the oldest events once the partition holds this many bytes"});
    }
  }
  return check;
}

TopicDescription describe_topic(const AdminSettings& settings, const std::string& name) {
  const AdminClient client(settings);
  return describe(client, name).description;
}

TopicCheck check_topic(const AdminSettings& settings, const TopicSpec& spec) {
  return compare_topic(spec, describe_topic(settings, spec.name));
}

EnsureResult ensure_topic(const AdminSettings& settings, const TopicSpec& spec) {
  const AdminClient client(settings);
  EnsureResult result;
  auto described = describe(client, spec.name);
  TopicDescription& description = described.description;
  if (!description.exists) {
    if (!described.controller_known) {
      throw TopicAdminError("cannot create topic " + spec.name + ": " + no_controller + " (CreateTopics goes to it)");
    }
    char error[512];
    std::unique_ptr<rd_kafka_NewTopic_t, void (*)(rd_kafka_NewTopic_t*)> topic(
        rd_kafka_NewTopic_new(spec.name.c_str(), spec.partitions, spec.replication_factor, error, sizeof error),
        &rd_kafka_NewTopic_destroy);
    if (!topic) throw TopicAdminError("topic " + spec.name + ": " + error);
    for (const auto& [name, value] : topic_configs(spec)) {
      if (rd_kafka_NewTopic_set_config(topic.get(), name.c_str(), value.c_str()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw TopicAdminError("topic " + spec.name + ": cannot set " + name + "=" + value);
      }
    }
    rd_kafka_NewTopic_t* topics[] = {topic.get()};
    const auto options = client.options(RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_CreateTopics(client.handle(), topics, 1, options.get(), client.queue());
    const EventPointer event(client.wait_for_result("Kafka CreateTopics"), &rd_kafka_event_destroy);
    if (rd_kafka_event_error(event.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw TopicAdminError("cannot create topic " + spec.name + ": " + rd_kafka_event_error_string(event.get()));
    }
    std::size_t count = 0;
    const rd_kafka_topic_result_t** results =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event.get()), &count);
    for (std::size_t i = 0; i < count; ++i) {
      const auto code = rd_kafka_topic_result_error(results[i]);
      // Another operator's ensure-topic won the race: what exists is checked like any topic.
      if (code == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) continue;
      if (code != RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* reason = rd_kafka_topic_result_error_string(results[i]);
        throw TopicAdminError("cannot create topic " + spec.name + ": " +
                              (reason != nullptr ? reason : rd_kafka_err2str(code)));
      }
      result.created = true;
    }
    // The broker answering metadata may learn of the new topic a moment after the controller.
    const auto deadline = std::chrono::steady_clock::now() + client.timeout();
    for (;;) {
      description = describe(client, spec.name).description;
      if (description.exists || std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(created_topic_poll_interval);
    }
  }
  result.check = compare_topic(spec, description);
  return result;
}

}  // namespace ledger::relay
