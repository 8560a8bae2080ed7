// The bench's HTTP load generator against servers on loopback that answer in the ways a real
// one may fail to: what it counts, and that a server that stops answering cannot hang it.
#include "http_load.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// Accepts on 127.0.0.1 and reads requests; answers each with `status` (no body), or, with
// status 0, never answers. Bodies are not read: the generator's GETs have none, and a test
// that sends transfers uses a status that closes nothing.
class LoopbackServer {
 public:
  explicit LoopbackServer(int status) : status_(status) {
    acceptor_.open(tcp::v4());
    acceptor_.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~LoopbackServer() {
    stopping_ = true;
    // A blocking accept() is not woken by closing its socket: one last connection wakes it.
    boost::system::error_code ignored;
    tcp::socket waker(io_);
    waker.connect(
        tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_)),
        ignored);
    thread_.join();
    acceptor_.close(ignored);
    for (auto& reader : readers_) reader.join();
  }
  LoopbackServer(const LoopbackServer&) = delete;
  LoopbackServer& operator=(const LoopbackServer&) = delete;

  int port() const { return port_; }
  int requests() const { return requests_; }

 private:
  void accept_loop() {
    while (!stopping_) {
      auto socket = std::make_shared<tcp::socket>(io_);
      boost::system::error_code error;
      acceptor_.accept(*socket, error);
      if (error || stopping_) return;
      readers_.emplace_back([this, socket] { serve(*socket); });
    }
  }
  void serve(tcp::socket& socket) {
    net::streambuf buffer;
    boost::system::error_code error;
    while (!stopping_) {
      net::read_until(socket, buffer, "\r\n\r\n", error);
      if (error) return;
      buffer.consume(buffer.size());
      ++requests_;
      if (status_ == 0) continue;  // read on, answer nothing
      const std::string answer =
          "HTTP/1.1 " + std::to_string(status_) + " X\r\nContent-Length: 0\r\n\r\n";
      net::write(socket, net::buffer(answer), error);
      if (error) return;
    }
  }

  int status_;
  net::io_context io_;
  tcp::acceptor acceptor_{io_};
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
  std::vector<std::thread> readers_;
};

ledger::bench::LoadSettings queries_to(const LoopbackServer& server) {
  ledger::bench::LoadSettings settings;
  settings.port = server.port();
  settings.connections = 2;
  settings.seconds = 0.5;
  settings.rate_per_second = 40;
  settings.accounts = 10;
  settings.token = "t";
  settings.request = ledger::bench::LoadRequest::account;
  settings.answer_wait_seconds = 1;
  return settings;
}

}  // namespace

TEST_CASE("a server that stops answering ends the run after the answer wait, its requests errors") {
  LoopbackServer silent(0);
  const auto started = std::chrono::steady_clock::now();
  const auto result = ledger::bench::run_http_load(queries_to(silent));
  const auto took = std::chrono::steady_clock::now() - started;
  // Before the bound, io.run() waited for answers that never came: the bench hung for good.
  CHECK(took < std::chrono::seconds(5));
  CHECK(silent.requests() == 2);  // one request per connection, each waiting for its answer
  CHECK(result.ok == 0);
  CHECK(result.unanswered == 2);
  CHECK(result.errors == 2);
  CHECK(result.latencies_us.empty());
}

TEST_CASE("queries count 200 as answered and anything else as an error") {
  LoopbackServer answering(200);
  const auto answered = ledger::bench::run_http_load(queries_to(answering));
  CHECK(answered.ok >= 10);  // 40/s for 0.5 s
  CHECK(answered.errors == 0);
  CHECK(answered.unanswered == 0);
  CHECK(answered.latencies_us.size() == static_cast<std::size_t>(answered.ok));

  LoopbackServer missing(404);
  const auto refused = ledger::bench::run_http_load(queries_to(missing));
  CHECK(refused.ok == 0);
  CHECK(refused.errors >= 10);
  CHECK(refused.unanswered == 0);
  // Transfers count 201 only: a 200 (an idempotent replay) is not a new transfer.
  auto transfers = queries_to(answering);
  transfers.request = ledger::bench::LoadRequest::transfer;
  const auto replayed = ledger::bench::run_http_load(transfers);
  CHECK(replayed.ok == 0);
  CHECK(replayed.errors >= 10);
}
