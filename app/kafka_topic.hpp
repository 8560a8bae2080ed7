#pragma once
// The events topic as the settings describe it, shared by `ledger kafka ensure-topic` and the
// check `serve` makes before its relay publishes (kafka_command.cpp).

#include <chrono>

#include "settings.hpp"

namespace ledger::app {

// Checks the events topic (and the JSON view's with --publish-json) against the settings.
// Throws when serve must not publish into it (missing, another partition count, compacted,
// unsatisfiable min.insync.replicas), naming `ledger kafka ensure-topic`; logs a warning for a
// difference serve can live with, and for a cluster that did not answer within `timeout` (the
// relay keeps trying, as it does when Kafka goes away later). `create_missing`: a missing
// topic is created first, as ensure-topic does.
void check_events_topic_at_start(const Settings& settings, bool create_missing,
                                 std::chrono::milliseconds timeout);

}  // namespace ledger::app
