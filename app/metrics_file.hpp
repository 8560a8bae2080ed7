#pragma once
// Prometheus text files written by the periodic jobs (`ledger replay verify`, `ledger migrate
// status`) for node_exporter's textfile collector or a Pushgateway: how a job that ends is seen
// by the alerts (ops/prometheus/alerts.yml).

#include <cstdint>
#include <string>

namespace ledger::app {

// One gauge in the text format: HELP, TYPE and the sample.
[[nodiscard]] std::string metrics_gauge(const std::string& name, const std::string& help, std::int64_t value);

// Replaces `path` with `text` through a temporary file and a rename, so a collector never reads
// half a file. Mode 0644: the collector runs as another user, and the file holds no secret.
void write_metrics_file(const std::string& path, const std::string& text);

}  // namespace ledger::app
