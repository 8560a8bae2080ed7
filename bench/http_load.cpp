#include "http_load.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <thread>

namespace ledger::bench {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct Shared {
  const LoadSettings& settings;
  Clock::time_point start;
  Clock::time_point end;
  LoadResult result;
  int next_pair = 0;  // each_account_once: the next pair to send (one io thread)
  std::int64_t in_flight = 0;  // requests sent and neither answered nor failed
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(net::io_context& io, Shared& shared, int index)
      : socket_(io),
        timer_(io),
        shared_(shared),
        random_(static_cast<unsigned>(index) * 7919u + 1 + shared.settings.seed * 104'729u) {
    if (shared.settings.rate_per_second > 0) {
      interval_ = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
          shared.settings.connections / shared.settings.rate_per_second));
      // Spread the connections' schedules across one interval.
      next_ = shared.start + interval_ * index / shared.settings.connections;
    }
  }

  void start() {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"),
                                  static_cast<unsigned short>(shared_.settings.port)));
    socket_.set_option(tcp::no_delay(true));
    schedule();
  }

 private:
  void schedule() {
    if (Clock::now() >= shared_.end || pairs_done()) return;
    if (interval_.count() == 0) {
      intended_ = Clock::now();
      return send();
    }
    intended_ = next_;
    next_ += interval_;
    timer_.expires_at(intended_);
    timer_.async_wait([self = shared_from_this()](beast::error_code) { self->send(); });
  }

  bool pairs_done() const {
    return shared_.settings.each_account_once && 2 * shared_.next_pair >= shared_.settings.accounts;
  }

  void send() {
    const int accounts = shared_.settings.accounts;
    if (shared_.settings.request != LoadRequest::transfer) {
      const std::string account = "a" + std::to_string(random_() % accounts);
      const std::string target = shared_.settings.request == LoadRequest::account
                                     ? "/v1/accounts/" + account
                                     : "/v1/accounts/" + account + "/entries?limit=20";
      request_ = "GET " + target + " HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " +
                 shared_.settings.token + "\r\n\r\n";
      return write_request();
    }
    int from = static_cast<int>(random_() % accounts);
    int to = static_cast<int>(random_() % accounts);
    if (shared_.settings.each_account_once) {
      // Checked again here: at a fixed rate several connections are scheduled at once.
      if (pairs_done()) return;
      from = 2 * shared_.next_pair++;
      to = (from + 1) % accounts;
    }
    if (to == from) to = (to + 1) % accounts;
    body_ = "{\"from\":\"a" + std::to_string(from) + "\",\"to\":\"a" + std::to_string(to) +
            "\",\"amount\":" + std::to_string(1 + random_() % 100) + ",\"currency\":\"EUR\"}";
    request_ = "POST /v1/transfers HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " +
               shared_.settings.token + "\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(body_.size()) + "\r\n\r\n" + body_;
    write_request();
  }

  void write_request() {
    ++shared_.in_flight;
    net::async_write(socket_, net::buffer(request_),
                     [self = shared_from_this()](beast::error_code error, std::size_t) {
                       if (error) return self->fail();
                       self->receive();
                     });
  }

  void receive() {
    parser_.emplace();
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code error, std::size_t) {
                       if (error) return self->fail();
                       const auto now = Clock::now();
                       --self->shared_.in_flight;
                       auto& result = self->shared_.result;
                       const int status = self->parser_->get().result_int();
                       const int answered =
                           self->shared_.settings.request == LoadRequest::transfer ? 201 : 200;
                       if (status == answered) {
                         ++result.ok;
                       } else {
                         ++result.errors;
                       }
                       result.latencies_us.push_back(static_cast<std::uint32_t>(
                           std::chrono::duration_cast<std::chrono::microseconds>(now - self->intended_).count()));
                       const auto second = static_cast<std::size_t>(
                           std::chrono::duration<double>(now - self->shared_.start).count());
                       if (result.completions_per_second.size() <= second) {
                         result.completions_per_second.resize(second + 1, 0);
                       }
                       ++result.completions_per_second[second];
                       self->schedule();
                     });
  }

  void fail() {  // the request in flight failed; the connection is not reopened
    --shared_.in_flight;
    ++shared_.result.errors;
    beast::error_code ignored;
    socket_.close(ignored);
  }

  tcp::socket socket_;
  net::steady_timer timer_;
  Shared& shared_;
  std::mt19937 random_;
  Clock::duration interval_{0};
  Clock::time_point next_;
  Clock::time_point intended_;
  std::string body_;
  std::string request_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

}  // namespace

LoadResult run_http_load(const LoadSettings& settings) {
  // One thread: the generator must leave the server the rest of the machine.
  net::io_context io(1);
  Shared shared{settings, Clock::now(), {}, {}};
  shared.end = shared.start + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(settings.seconds));
  shared.result.latencies_us.reserve(1 << 20);
  for (int i = 0; i < settings.connections; ++i) {
    std::make_shared<Connection>(io, shared, i)->start();
  }
  io.run_for(std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(settings.seconds + settings.answer_wait_seconds)));
  // What the server left unanswered; its connections close with the io_context.
  shared.result.unanswered = shared.in_flight;
  shared.result.errors += shared.in_flight;
  shared.result.seconds = std::chrono::duration<double>(Clock::now() - shared.start).count();
  return std::move(shared.result);
}

}  // namespace ledger::bench
