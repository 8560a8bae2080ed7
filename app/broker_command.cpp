// `ledger broker`: a development Kafka broker. librdkafka's mock cluster speaks the real Kafka
// protocol on loopback, so other processes (and kcat) use it like a real broker.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.hpp"

namespace ledger::app {

CommandAction register_broker_command(CLI::App& root, Settings& settings) {
  auto* broker = root.add_subcommand("broker", "Run a development Kafka broker (mock cluster)");
  auto address_file = std::make_shared<std::string>();
  auto brokers = std::make_shared<int>(1);
  auto partitions = std::make_shared<int>(0);
  broker->add_option("--address-file", *address_file, "Write the bootstrap address here")
      ->envname("LEDGER_BROKER_ADDRESS_FILE");
  broker->add_option("--brokers", *brokers, "Number of mock brokers")
      ->envname("LEDGER_BROKER_COUNT")
      ->check(CLI::Range(1, 9))
      ->capture_default_str();
  // Unset, the events topic gets --topic-partitions, the count serve then expects.
  auto* partitions_option = broker->add_option("--partitions", *partitions, "Partitions of the events topic (default: --topic-partitions)")
      ->envname("LEDGER_BROKER_PARTITIONS")
      ->check(CLI::Range(1, 256));

  return [=, &settings]() -> int {
    configure_logging(settings, "broker");
    if (partitions_option->count() == 0) *partitions = settings.topic_partitions;
    // Block the stop signals before librdkafka starts threads, then wait for them below.
    const sigset_t stop_signals = block_stop_signals();

    char error[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", error, sizeof error);
    rd_kafka_t* handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (handle == nullptr) throw std::runtime_error(std::string("rd_kafka_new: ") + error);
    rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(handle, *brokers);
    if (cluster == nullptr) throw std::runtime_error("cannot create the mock Kafka cluster");
    const std::string topic = settings.topic_prefix + ".events";
    // The events topic, and the JSON view `--publish-json` fills (docs/consumers.md).
    for (const std::string& name : {topic, topic + ".json"}) {
      if (rd_kafka_mock_topic_create(cluster, name.c_str(), *partitions, 1) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        throw std::runtime_error("cannot create topic " + name);
      }
    }
    const std::string bootstrap = rd_kafka_mock_cluster_bootstraps(cluster);
    if (!address_file->empty()) {
      const std::string temporary = *address_file + ".tmp";
      std::ofstream(temporary) << bootstrap << "\n";
      std::filesystem::rename(temporary, *address_file);
    }
    spdlog::info("development Kafka broker on {} (topic {}, {} partitions)", bootstrap, topic,
                 *partitions);
    std::cout << "LEDGER_KAFKA_BROKERS=" << bootstrap << std::endl;

    int received = 0;
    sigwait(&stop_signals, &received);
    spdlog::info("stopping the broker (signal {})", received);
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(handle);
    if (!address_file->empty()) std::filesystem::remove(*address_file);
    return 0;
  };
}

}  // namespace ledger::app
