#pragma once
// librdkafka's mock cluster (the real Kafka protocol on loopback, in this process) for the
// topic provisioning tests: topics are made by the test, and the cluster's own debug log (what
// the broker side did: groups joined, requests refused) can be searched.
//
// What the mock of librdkafka 2.0.2 answers: Produce, Fetch, ListOffsets, OffsetFetch,
// OffsetCommit, ApiVersion, Metadata, FindCoordinator, InitProducerId, the group protocol
// (JoinGroup, Heartbeat, LeaveGroup, SyncGroup) and the transaction requests. Not CreateTopics,
// DescribeConfigs, ListGroups or DescribeGroups (src/rdkafka_mock_handlers.c). Its metadata
// names controller 0, which is none of its brokers (they are 1..N), so librdkafka would wait
// out the whole timeout before sending a controller request to it.

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace ledger::test {

class MockCluster {
 public:
  explicit MockCluster(int brokers) {
    char error[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "debug", "mock", error, sizeof error);
    rd_kafka_conf_set_opaque(conf, this);
    rd_kafka_conf_set_log_cb(conf, &MockCluster::on_log);
    handle_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (handle_ == nullptr) throw std::runtime_error(error);
    cluster_ = rd_kafka_mock_cluster_new(handle_, brokers);
    if (cluster_ == nullptr) throw std::runtime_error("cannot create a mock Kafka cluster");
  }
  ~MockCluster() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(handle_);
  }
  MockCluster(const MockCluster&) = delete;
  MockCluster& operator=(const MockCluster&) = delete;

  [[nodiscard]] std::string bootstrap() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
  void create_topic(const std::string& name, int partitions, int replication_factor) {
    if (rd_kafka_mock_topic_create(cluster_, name.c_str(), partitions, replication_factor) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error("cannot create mock topic " + name);
    }
  }
  // The cluster's debug log lines so far that contain `text`.
  [[nodiscard]] std::vector<std::string> log_lines_with(const std::string& text) const {
    const std::lock_guard lock(mutex_);
    std::vector<std::string> found;
    for (const auto& line : log_) {
      if (line.find(text) != std::string::npos) found.push_back(line);
    }
    return found;
  }

 private:
  static void on_log(const rd_kafka_t* handle, int, const char*, const char* message) {
    auto* self = static_cast<MockCluster*>(rd_kafka_opaque(handle));
    const std::lock_guard lock(self->mutex_);
    self->log_.emplace_back(message);
  }

  mutable std::mutex mutex_;
  std::vector<std::string> log_;
  rd_kafka_t* handle_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

}  // namespace ledger::test
