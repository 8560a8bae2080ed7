// `ledger kafka ensure-topic`, serve's check of the events topic at start, and the consumer
// group prefix, as an operator meets them: the `ledger` binary against librdkafka's mock
// cluster (tests/relay/mock_cluster.hpp says which requests it answers; CreateTopics and
// DescribeConfigs are not among them, and it names no controller to send them to).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "../relay/mock_cluster.hpp"
#include "ledger/core/process.hpp"
#include "ledger/relay/topic_admin.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string secret = "kafka-e2e-secret-of-at-least-32-bytes!";

struct Run {
  process::ExitStatus status;
  std::string output;
};

// `ledger <arguments>` to completion, with no embedded stack to fall back on.
Run run_ledger(const std::vector<std::string>& arguments, std::vector<std::string> environment = {}) {
  std::vector<std::string> argv = {test::ledger_binary(), "--home", "/tmp/ledger-kafka-e2e-none"};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  process::SpawnOptions options;
  options.extra_environment = std::move(environment);
  Run run;
  run.status = process::run(argv, run.output, options);
  return run;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

fs::path scratch(const std::string& name) {
  const fs::path directory = "/tmp/ledger-kafka-e2e-" + name + "-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory);
  return directory;
}

// A long-running `ledger` process with its output in <directory>/output.log.
struct Child {
  pid_t pid = 0;
  fs::path log;
};

Child spawn_ledger(const fs::path& directory, const std::vector<std::string>& arguments) {
  std::vector<std::string> argv = {test::ledger_binary(), "--home", directory.string()};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  process::SpawnOptions options;
  options.output_file = (directory / "output.log").string();
  options.extra_environment = {"LEDGER_JWT_SECRET=" + secret};
  return {process::spawn(argv, options), options.output_file};
}

// `ledger serve` with its relay on: how it ended within `wait`, or nothing if it still runs
// (then it is stopped).
std::optional<process::ExitStatus> serve_outcome(const fs::path& directory, const std::string& database_url,
                                                 const std::string& brokers, std::vector<std::string> extra,
                                                 std::chrono::seconds wait) {
  std::vector<std::string> arguments = {"--database-url", database_url, "--kafka-brokers", brokers, "serve",
                                        "--http-port", "0", "--port-file", (directory / "port").string()};
  arguments.insert(arguments.end(), extra.begin(), extra.end());
  const auto child = spawn_ledger(directory, arguments);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto status = process::wait_for(child.pid, 100ms)) return status;
    if (fs::exists(directory / "port")) break;  // serving
  }
  process::stop(child.pid, SIGTERM, 15s);
  return std::nullopt;
}

}  // namespace

TEST_CASE("ensure-topic on a topic that matches exits 0 and says so, however often it runs") {
  test::MockCluster cluster(1);
  cluster.create_topic("ledger.events", 4, 1);
  for (int run = 0; run < 2; ++run) {
    const auto result = run_ledger({"--kafka-brokers", cluster.bootstrap(), "--topic-replication-factor", "1",
                                "--topic-min-insync-replicas", "1", "kafka", "ensure-topic"});
    CHECK_MESSAGE(result.status.success(), result.output);
    CHECK_MESSAGE(contains(result.output, "topic ledger.events exists and matches: 4 partitions, replication factor 1"),
                  result.output);
    // The mock cannot describe configs: said, not passed over.
    CHECK_MESSAGE(contains(result.output, "ledger: warning: topic ledger.events: retention.ms: not checked"),
                  result.output);
  }
}

TEST_CASE("ensure-topic reads the topic settings from the environment and the config file too") {
  test::MockCluster cluster(1);
  cluster.create_topic("acme.events", 6, 1);
  const auto directory = scratch("config");
  std::ofstream(directory / "ledger.toml") << "topic-prefix = \"acme\"\ntopic-partitions = 6\n"
                                              "topic-replication-factor = 1\ntopic-min-insync-replicas = 1\n";
  const auto from_file =
      run_ledger({"--config", (directory / "ledger.toml").string(), "--kafka-brokers", cluster.bootstrap(), "kafka",
              "ensure-topic"});
  CHECK_MESSAGE(from_file.status.success(), from_file.output);
  CHECK_MESSAGE(contains(from_file.output, "topic acme.events exists and matches: 6 partitions"), from_file.output);
  const auto from_environment =
      run_ledger({"kafka", "ensure-topic"},
             {"LEDGER_KAFKA_BROKERS=" + cluster.bootstrap(), "LEDGER_TOPIC_PREFIX=acme", "LEDGER_TOPIC_PARTITIONS=6",
              "LEDGER_TOPIC_REPLICATION_FACTOR=1", "LEDGER_TOPIC_MIN_INSYNC_REPLICAS=1"});
  CHECK_MESSAGE(from_environment.status.success(), from_environment.output);
  CHECK_MESSAGE(contains(from_environment.output, "topic acme.events exists and matches: 6 partitions"),
                from_environment.output);
  fs::remove_all(directory);
}

TEST_CASE("ensure-topic on a topic with another partition count exits 1 naming each difference and alters nothing") {
  test::MockCluster cluster(1);
  cluster.create_topic("ledger.events", 2, 1);
  const auto result = run_ledger({"--kafka-brokers", cluster.bootstrap(), "kafka", "ensure-topic"});
  CHECK(result.status.exited);
  CHECK_MESSAGE(result.status.code == 1, result.output);
  CHECK_MESSAGE(contains(result.output, "topic ledger.events exists and differs from the configuration"), result.output);
  CHECK_MESSAGE(contains(result.output, "  partitions: 2 on the broker, 4 configured"), result.output);
  CHECK_MESSAGE(contains(result.output, "  replication factor: 1 on the broker, 3 configured"), result.output);
  relay::AdminSettings admin;
  admin.brokers = cluster.bootstrap();
  CHECK(relay::describe_topic(admin, "ledger.events").partitions == 2);
}

TEST_CASE("ensure-topic on a missing topic the mock cannot create (no controller) fails at once, clearly, creating nothing") {
  test::MockCluster cluster(1);
  const auto result = run_ledger({"--kafka-brokers", cluster.bootstrap(), "--topic-replication-factor", "1",
                              "--topic-min-insync-replicas", "1", "kafka", "ensure-topic"});
  CHECK(result.status.exited);
  CHECK_MESSAGE(result.status.code == 1, result.output);
  CHECK_MESSAGE(contains(result.output, "ledger: error: cannot create topic ledger.events: "), result.output);
  relay::AdminSettings admin;
  admin.brokers = cluster.bootstrap();
  CHECK_FALSE(relay::describe_topic(admin, "ledger.events").exists);
}

TEST_CASE("bad topic settings are refused naming the setting, before Kafka is asked") {
  // Nothing listens on port 1: a command that got as far as Kafka would say so instead.
  const std::vector<std::string> kafka = {"--kafka-brokers", "127.0.0.1:1"};
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--topic-partitions", "0"}, "--topic-partitions"},
      {{"--topic-partitions", "many"}, "--topic-partitions"},
      {{"--topic-replication-factor", "-1"}, "--topic-replication-factor"},
      {{"--topic-min-insync-replicas", "0"}, "--topic-min-insync-replicas"},
      {{"--topic-replication-factor", "2", "--topic-min-insync-replicas", "3"}, "--topic-min-insync-replicas"},
      {{"--topic-retention-ms", "0"}, "--topic-retention-ms"},
      {{"--topic-retention-ms", "-2"}, "--topic-retention-ms"},
      {{"--topic-prefix", "bad/name"}, "--topic-prefix"},
      {{"--topic-prefix", "bad name"}, "--topic-prefix"},
  };
  for (const auto& [flags, named] : cases) {
    std::vector<std::string> arguments = kafka;
    arguments.insert(arguments.end(), flags.begin(), flags.end());
    arguments.insert(arguments.end(), {"kafka", "ensure-topic"});
    const auto result = run_ledger(arguments);
    CHECK(result.status.exited);
    CHECK_MESSAGE(result.status.code == 2, result.output);
    CHECK_MESSAGE(contains(result.output, "ledger: error: " + named), result.output);
    CHECK_MESSAGE(!contains(result.output, "Kafka"), result.output);
  }
  const auto from_environment = run_ledger({"kafka", "ensure-topic"}, {"LEDGER_KAFKA_BROKERS=127.0.0.1:1",
                                                                   "LEDGER_TOPIC_PARTITIONS=0"});
  CHECK(from_environment.status.code == 2);
  CHECK_MESSAGE(contains(from_environment.output, "--topic-partitions"), from_environment.output);
}

TEST_CASE("serve refuses a topic with another partition count or a missing one, naming ensure-topic") {
  test::TestDatabase database;
  test::MockCluster cluster(1);
  cluster.create_topic("ledger.events", 2, 1);
  {
    const auto directory = scratch("serve-partitions");
    const auto status = serve_outcome(directory, database.app_url(), cluster.bootstrap(), {}, 60s);
    const std::string log = read_file(directory / "output.log");
    REQUIRE_MESSAGE(status.has_value(), "serve started on a topic with 2 partitions of 4:\n" << log);
    CHECK(status->exited);
    CHECK(status->code == 1);
    CHECK_MESSAGE(contains(log, "Kafka topic ledger.events cannot be published to: partitions: 2 on the broker, 4 configured"),
                  log);
    CHECK_MESSAGE(contains(log, "`ledger kafka ensure-topic`"), log);
    fs::remove_all(directory);
  }
  {
    const auto directory = scratch("serve-missing");
    const auto status =
        serve_outcome(directory, database.app_url(), cluster.bootstrap(), {"--topic-prefix", "other"}, 60s);
    const std::string log = read_file(directory / "output.log");
    REQUIRE_MESSAGE(status.has_value(), "serve started without its topic:\n" << log);
    CHECK(status->code == 1);
    CHECK_MESSAGE(contains(log, "Kafka topic other.events does not exist: create it with `ledger kafka ensure-topic`"),
                  log);
    fs::remove_all(directory);
  }
  {
    // --create-topic asks for it; the mock cannot create topics, and that stops serve too.
    const auto directory = scratch("serve-create");
    const auto status = serve_outcome(directory, database.app_url(), cluster.bootstrap(),
                                      {"--topic-prefix", "other", "--create-topic"}, 60s);
    const std::string log = read_file(directory / "output.log");
    REQUIRE_MESSAGE(status.has_value(), "serve started without its topic:\n" << log);
    CHECK(status->code == 1);
    CHECK_MESSAGE(contains(log, "cannot create topic other.events"), log);
    fs::remove_all(directory);
  }
  relay::AdminSettings admin;
  admin.brokers = cluster.bootstrap();
  CHECK_FALSE(relay::describe_topic(admin, "other.events").exists);
}

TEST_CASE("serve starts on a topic it can live with (one replica where three are configured) and warns") {
  test::TestDatabase database;
  test::MockCluster cluster(1);
  cluster.create_topic("ledger.events", 4, 1);
  const auto directory = scratch("serve-warn");
  const auto status = serve_outcome(directory, database.app_url(), cluster.bootstrap(), {}, 60s);
  const std::string log = read_file(directory / "output.log");
  CHECK_MESSAGE(!status.has_value(), "serve did not start:\n" << log);
  CHECK_MESSAGE(contains(log, "Kafka topic ledger.events: replication factor: 1 on the broker, 3 configured"), log);
  fs::remove_all(directory);
}

TEST_CASE("the consumer group prefix reaches the broker: the mock cluster's coordinator names <prefix><read model>") {
  test::TestDatabase database;
  test::MockCluster cluster(1);
  cluster.create_topic("ledger.events", 4, 1);
  const auto directory = scratch("groups");
  const auto child = spawn_ledger(directory, {"--database-url", database.app_url(), "--kafka-brokers",
                                              cluster.bootstrap(), "--consumer-group-prefix", "acme-prod-", "project",
                                              "balance"});
  // The coordinator's own log (the broker side of JoinGroup), not the client's configuration.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (cluster.log_lines_with("group acme-prod-balance ").empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  const auto joined = cluster.log_lines_with("group acme-prod-balance ");
  process::stop(child.pid, SIGTERM, 15s);
  REQUIRE_MESSAGE(!joined.empty(), "the broker never saw group acme-prod-balance:\n" << read_file(child.log));
  MESSAGE("broker side: " << joined.front());
  CHECK(cluster.log_lines_with("group ledger-projection-").empty());  // the default prefix never reached it
  fs::remove_all(directory);
}

TEST_CASE("the development broker makes the events topic with --topic-partitions, so serve's check agrees with it") {
  const auto directory = scratch("broker");
  const auto child = spawn_ledger(directory, {"--topic-partitions", "6", "--topic-prefix", "devtest", "broker",
                                              "--address-file", (directory / "address").string()});
  std::string bootstrap;
  for (int attempt = 0; attempt < 300 && bootstrap.empty(); ++attempt) {
    std::ifstream(directory / "address") >> bootstrap;
    if (bootstrap.empty()) std::this_thread::sleep_for(50ms);
  }
  REQUIRE_MESSAGE(!bootstrap.empty(), read_file(child.log));
  relay::AdminSettings admin;
  admin.brokers = bootstrap;
  const auto described = relay::describe_topic(admin, "devtest.events");
  CHECK(described.exists);
  CHECK(described.partitions == 6);
  const auto checked = run_ledger({"--kafka-brokers", bootstrap, "--topic-prefix", "devtest", "--topic-partitions", "6",
                                   "--topic-replication-factor", "1", "--topic-min-insync-replicas", "1", "kafka",
                                   "ensure-topic"});
  CHECK_MESSAGE(checked.status.success(), checked.output);
  process::stop(child.pid, SIGTERM, 15s);
  fs::remove_all(directory);
}
