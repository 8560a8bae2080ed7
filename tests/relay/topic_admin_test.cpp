// Provisioning the events topic (relay/topic_admin.hpp) against librdkafka's mock cluster for
// what it answers (metadata), and the comparison rules on descriptions a real broker gives.
// CreateTopics and DescribeConfigs are not in the 2.0.2 mock, which names no controller either
// (mock_cluster.hpp): the cases below show that they fail at once and cleanly there, and change
// nothing.
#include <doctest/doctest.h>

#include <chrono>

#include "ledger/relay/topic_admin.hpp"
#include "mock_cluster.hpp"

using namespace ledger;
using namespace std::chrono_literals;

namespace {

relay::AdminSettings admin(const test::MockCluster& cluster) {
  relay::AdminSettings settings;
  settings.brokers = cluster.bootstrap();
  settings.timeout = 10s;
  return settings;
}

relay::TopicSpec spec(const std::string& name, int partitions, int replication_factor) {
  relay::TopicSpec spec;
  spec.name = name;
  spec.partitions = partitions;
  spec.replication_factor = replication_factor;
  spec.min_insync_replicas = 1;
  return spec;
}

// What a real broker describes for a topic ensure-topic created per `spec`.
relay::TopicDescription as_created(const relay::TopicSpec& spec) {
  relay::TopicDescription description;
  description.exists = true;
  description.partitions = spec.partitions;
  description.replication_factor = spec.replication_factor;
  description.configs = relay::topic_configs(spec);
  (*description.configs)["segment.bytes"] = "1073741824";  // brokers describe every config
  return description;
}

const relay::TopicMismatch* find(const relay::TopicCheck& check, const std::string& property) {
  for (const auto& mismatch : check.mismatches) {
    if (mismatch.property == property) return &mismatch;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("an existing topic is described from the cluster's metadata: partitions and replicas") {
  test::MockCluster cluster(3);
  cluster.create_topic("acme.events", 6, 3);
  const auto description = relay::describe_topic(admin(cluster), "acme.events");
  CHECK(description.exists);
  CHECK(description.partitions == 6);
  CHECK(description.replication_factor == 3);
  // The mock has no DescribeConfigs: the configs are reported as not read, with the reason.
  CHECK_FALSE(description.configs.has_value());
  CHECK_FALSE(description.configs_error.empty());
  CHECK(description.configs_error == "the cluster's metadata names no controller among its brokers");

  const auto check = relay::check_topic(admin(cluster), spec("acme.events", 6, 3));
  CHECK(check.matches());
  CHECK_FALSE(check.refused());
  CHECK(check.unchecked.size() == relay::topic_configs(spec("acme.events", 6, 3)).size());
}

TEST_CASE("asking about a missing topic does not create it (metadata with auto-creation off)") {
  test::MockCluster cluster(1);  // the mock auto-creates a topic a Metadata request allows it to
  const auto first = relay::describe_topic(admin(cluster), "acme.events");
  CHECK_FALSE(first.exists);
  const auto check = relay::check_topic(admin(cluster), spec("acme.events", 4, 1));
  CHECK(check.refused());
  REQUIRE(find(check, "topic") != nullptr);
  CHECK(find(check, "topic")->describe().find("ledger kafka ensure-topic") != std::string::npos);
  CHECK_FALSE(relay::describe_topic(admin(cluster), "acme.events").exists);
}

TEST_CASE("a topic with another partition count is a mismatch serve refuses") {
  test::MockCluster cluster(1);
  cluster.create_topic("acme.events", 2, 1);
  const auto check = relay::check_topic(admin(cluster), spec("acme.events", 4, 1));
  CHECK_FALSE(check.matches());
  CHECK(check.refused());
  const auto* partitions = find(check, "partitions");
  REQUIRE(partitions != nullptr);
  CHECK(partitions->severity == relay::MismatchSeverity::refuse);
  CHECK(partitions->describe().find("partitions: 2 on the broker, 4 configured") == 0);
}

TEST_CASE("fewer replicas than configured is a mismatch serve only warns about") {
  test::MockCluster cluster(1);
  cluster.create_topic("acme.events", 4, 1);
  const auto check = relay::check_topic(admin(cluster), spec("acme.events", 4, 3));
  CHECK_FALSE(check.matches());
  CHECK_FALSE(check.refused());
  const auto* replicas = find(check, "replication factor");
  REQUIRE(replicas != nullptr);
  CHECK(replicas->severity == relay::MismatchSeverity::warn);
  CHECK(replicas->describe().find("replication factor: 1 on the broker, 3 configured") == 0);
}

TEST_CASE("ensure_topic on an existing topic changes nothing, however often it runs") {
  test::MockCluster cluster(1);
  cluster.create_topic("acme.events", 2, 1);
  for (int run = 0; run < 2; ++run) {
    const auto result = relay::ensure_topic(admin(cluster), spec("acme.events", 4, 1));
    CHECK_FALSE(result.created);
    CHECK(find(result.check, "partitions") != nullptr);  // reported, not altered
    CHECK(relay::describe_topic(admin(cluster), "acme.events").partitions == 2);
  }
  const auto matching = relay::ensure_topic(admin(cluster), spec("acme.events", 2, 1));
  CHECK_FALSE(matching.created);
  CHECK(matching.check.matches());
}

TEST_CASE("ensure_topic on a missing topic cannot create it on the mock, says why at once, and creates nothing") {
  test::MockCluster cluster(1);
  const auto start = std::chrono::steady_clock::now();
  try {
    (void)relay::ensure_topic(admin(cluster), spec("acme.events", 4, 1));
    FAIL("the 2.0.2 mock cluster names no controller and has no CreateTopics, yet the topic was created");
  } catch (const relay::TopicAdminError& error) {
    const std::string message = error.what();
    MESSAGE("CreateTopics against the mock: " << message);
    CHECK(message.find("cannot create topic acme.events: the cluster's metadata names no controller") == 0);
  }
  CHECK(std::chrono::steady_clock::now() - start < 5s);  // not the 10 s timeout
  CHECK_FALSE(relay::describe_topic(admin(cluster), "acme.events").exists);
}

TEST_CASE("a cluster that does not answer is an admin error within the timeout") {
  relay::AdminSettings settings;
  settings.brokers = "127.0.0.1:1";  // nothing listens on port 1
  settings.timeout = 1s;
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS((void)relay::describe_topic(settings, "acme.events"), relay::TopicAdminError);
  CHECK(std::chrono::steady_clock::now() - start < 10s);
}

TEST_CASE("configs as a real broker describes them: each difference, and whether serve can live with it") {
  auto wanted = spec("acme.events", 4, 3);
  wanted.min_insync_replicas = 2;
  auto description = as_created(wanted);
  CHECK(relay::compare_topic(wanted, description).matches());
  CHECK(relay::compare_topic(wanted, description).unchecked.empty());

  SUBCASE("retention shorter than configured: a warning") {
    (*description.configs)["retention.ms"] = "604800000";
    const auto check = relay::compare_topic(wanted, description);
    REQUIRE(find(check, "retention.ms") != nullptr);
    CHECK(find(check, "retention.ms")->describe().find("retention.ms: 604800000 on the broker, -1 configured") == 0);
    CHECK_FALSE(check.refused());
  }
  SUBCASE("a size limit: a warning") {
    (*description.configs)["retention.bytes"] = "1073741824";
    const auto check = relay::compare_topic(wanted, description);
    CHECK(find(check, "retention.bytes") != nullptr);
    CHECK_FALSE(check.refused());
  }
  SUBCASE("min.insync.replicas lower than configured: a warning") {
    (*description.configs)["min.insync.replicas"] = "1";
    const auto check = relay::compare_topic(wanted, description);
    REQUIRE(find(check, "min.insync.replicas") != nullptr);
    CHECK(find(check, "min.insync.replicas")->describe().find("min.insync.replicas: 1 on the broker, 2 configured") == 0);
    CHECK_FALSE(check.refused());
  }
  SUBCASE("min.insync.replicas above the topic's replicas: refused, nothing could be acknowledged") {
    (*description.configs)["min.insync.replicas"] = "4";
    const auto check = relay::compare_topic(wanted, description);
    REQUIRE(find(check, "min.insync.replicas") != nullptr);
    CHECK(check.refused());
  }
  SUBCASE("a compacted topic: refused, it would keep only each stream's last event") {
    (*description.configs)["cleanup.policy"] = "compact,delete";
    CHECK(relay::compare_topic(wanted, description).refused());
  }
  SUBCASE("a config the broker did not describe is reported as not checked") {
    description.configs->erase("cleanup.policy");
    const auto check = relay::compare_topic(wanted, description);
    CHECK(check.matches());
    REQUIRE(check.unchecked.size() == 1);
    CHECK(check.unchecked[0].find("cleanup.policy: not checked") == 0);
  }
}

TEST_CASE("topic names follow Kafka's rules") {
  CHECK(relay::topic_name_problem("ledger.events").empty());
  CHECK(relay::topic_name_problem("acme_prod-1.events.json").empty());
  CHECK_FALSE(relay::topic_name_problem("").empty());
  CHECK_FALSE(relay::topic_name_problem("..").empty());
  CHECK(relay::topic_name_problem("bad/name.events").find("'/'") == 0);
  CHECK_FALSE(relay::topic_name_problem(std::string(250, 'a')).empty());
}
