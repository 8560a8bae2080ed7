#pragma once
// Routes one HTTP request to its handler and produces the response (private to the API).

#include <boost/asio/thread_pool.hpp>
#include <boost/beast/http.hpp>

#include <functional>
#include <string>

#include "handlers/handlers.hpp"
#include "health_snapshot.hpp"
#include "ledger/api/server.hpp"
#include "ledger/engine/engine.hpp"
#include "metrics.hpp"
#include "rate_limiter.hpp"

namespace ledger::api {

// The one thing the command routes need of the write side: submit a command, be called back
// with its outcome (engine::Engine::submit's contract, exceptions included). The server wires
// the engine; the HTTP fuzzer (tests/fuzz/http_front_fuzz.cpp) a fake that needs no database.
class CommandSink {
 public:
  virtual ~CommandSink() = default;
  virtual void submit(domain::Command command, engine::Engine::Completion completion) = 0;
};

// Routing, authentication, rate limits and dispatch to the handlers (handlers/handlers.hpp).
// Stateless apart from metrics; called on I/O threads. Command handlers complete on the
// engine's writer thread and blocking reads run on `blocking`, so `respond` may be called from
// any thread (the session posts it back to its own strand).
class Router {
 public:
  // Commands go to `commands` when given, otherwise to services.engine; with neither, command
  // routes answer 503 `unavailable`.
  Router(const ServerSettings& settings, Services services, boost::asio::thread_pool& blocking,
         CommandSink* commands = nullptr);

  // `peer_address` is the TCP peer's; the client's is taken from X-Forwarded-For when the peer
  // is a trusted proxy (ServerSettings::trusted_proxies).
  void handle(Request request, const std::string& peer_address, Respond respond);

  // A problem response for errors found before routing (timeouts, limits, malformed HTTP).
  [[nodiscard]] Response problem_response(int status, const std::string& code,
                                          const std::string& title, const std::string& detail,
                                          const std::string& request_id, unsigned version) const;

  [[nodiscard]] Metrics& metrics() { return metrics_; }

 private:
  const ServerSettings& settings_;
  Services services_;
  boost::asio::thread_pool& blocking_;
  std::unique_ptr<CommandSink> engine_sink_;  // wraps services_.engine when no sink was given
  CommandSink* commands_ = nullptr;
  Metrics metrics_;
  RateLimiter rate_limiter_;
  HealthSnapshots health_;  // after services_ and blocking_, which it uses
};

}  // namespace ledger::api
