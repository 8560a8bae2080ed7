#include "serve_metrics.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <exception>

namespace ledger::bench {

std::string http_get(int port, const std::string& target) {
  namespace http = boost::beast::http;
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, "127.0.0.1");
  http::write(socket, request);
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response);
  return response.body();
}

std::int64_t metric(const std::string& metrics, const std::string& name) {
  const auto at = metrics.find("\n" + name + " ");
  return at == std::string::npos ? 0 : std::stoll(metrics.substr(at + name.size() + 2));
}

double metric_sum(const std::string& metrics, const std::string& name) {
  return metric_value(metrics, name + "_sum");
}

double metric_value(const std::string& metrics, const std::string& name) {
  const std::string line = "\n" + name + " ";
  const auto at = metrics.find(line);
  return at == std::string::npos ? 0 : std::stod(metrics.substr(at + line.size()));
}

CommitSteps commit_steps(int port) {
  std::string text;
  try {
    text = http_get(port, "/metrics");
  } catch (const std::exception&) {
    return {};  // no serve answering: the run reports no rows for it
  }
  auto step = [&](const char* name) {
    return metric_value(
        text, std::string(R"(ledger_engine_append_step_seconds_total{step=")") + name + "\"}");
  };
  return {true,
          metric(text, "ledger_engine_head_lock_held_seconds_count"),
          metric(text, "ledger_engine_batches_total"),
          metric(text, R"(ledger_engine_commands_total{outcome="accepted"})") +
              metric(text, R"(ledger_engine_commands_total{outcome="rejected"})"),
          metric_sum(text, "ledger_engine_head_lock_held_seconds"),
          step("rows"),
          step("write"),
          step("commit")};
}

AccountCacheLookups account_cache_lookups(int port) {
  const std::string text = http_get(port, "/metrics");
  return {metric(text, R"(ledger_state_cache_kind_lookups_total{kind="account",result="hit"})"),
          metric(text, R"(ledger_state_cache_kind_lookups_total{kind="account",result="miss"})")};
}

double hit_rate_percent(const AccountCacheLookups& before, const AccountCacheLookups& after) {
  const auto hits = after.hits - before.hits;
  const auto lookups = hits + after.misses - before.misses;
  return lookups > 0 ? 100.0 * static_cast<double>(hits) / static_cast<double>(lookups) : 0.0;
}

}  // namespace ledger::bench
