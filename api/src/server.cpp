#include "ledger/api/server.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <functional>
#include <optional>
#include <random>
#include <thread>

#include "http_reading.hpp"
#include "router.hpp"

namespace ledger::api {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

std::string generate_request_id() {
  thread_local std::mt19937_64 random(std::random_device{}());
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(random()));
  return text;
}

struct SharedState {
  const ServerSettings& settings;
  Router& router;
  std::atomic<std::size_t> connections{0};
  // Requests read but not yet answered: shutdown waits for these, not for idle connections.
  std::atomic<std::size_t> in_flight{0};
  std::atomic<bool> stopping{false};
};

// One connection. Lives on its own strand; requests are read one at a time and answered in
// order, which is what HTTP/1.1 pipelining requires.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, SharedState& shared)
      : stream_(std::move(socket)),
        timer_(stream_.get_executor()),
        buffer_(shared.settings.header_bytes_max + read_buffer_slack_bytes),
        shared_(shared) {
    beast::error_code error;
    const auto endpoint = stream_.socket().remote_endpoint(error);
    if (!error) client_address_ = endpoint.address().to_string();
  }
  ~Session() { --shared_.connections; }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(true); });
  }

 private:
  void read_header(bool first) {
    if (shared_.stopping) return close();
    stream_.expires_never();  // reads are timed by timer_; the stream's expiry guards writes
    parser_.emplace();
    prepare_parser(*parser_, shared_.settings, chunk_extensions_);
    arm_timer(first || buffer_.size() > 0 ? shared_.settings.header_timeout
                                          : shared_.settings.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code error, std::size_t) {
                              self->on_header(error);
                            });
  }

  // Our own timer rather than the stream's expiry: the stream closes the socket on expiry,
  // and a stalled client deserves a 408 before the connection goes.
  void arm_timer(std::chrono::milliseconds timeout) {
    timed_out_ = false;
    timer_.expires_after(timeout);
    timer_.async_wait([self = shared_from_this()](beast::error_code error) {
      if (error) return;  // cancelled: the read finished in time
      self->timed_out_ = true;
      beast::error_code ignored;
      self->stream_.socket().cancel(ignored);
    });
  }

  void on_header(beast::error_code error) {
    timer_.cancel();
    if (timed_out_) error = beast::error::timeout;
    const ReadVerdict verdict = classify_read_error(error, ReadPhase::header, shared_.settings, buffer_.max_size(),
                                                    parser_->got_some() || buffer_.size() > 0);
    if (verdict.close) return close();
    if (verdict.refusal) return reject(*verdict.refusal);
    arm_timer(shared_.settings.body_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code error, std::size_t) {
                       self->on_body(error);
                     });
  }

  void on_body(beast::error_code error) {
    timer_.cancel();
    if (timed_out_) error = beast::error::timeout;
    const ReadVerdict verdict =
        classify_read_error(error, ReadPhase::body, shared_.settings, buffer_.max_size(), true);
    if (verdict.close) return close();
    if (verdict.refusal) return reject(*verdict.refusal);
    Request request = parser_->release();
    keep_alive_ = request.keep_alive();
    ++shared_.in_flight;
    answering_ = true;
    shared_.router.handle(std::move(request), client_address_,
                          [self = shared_from_this()](Response response) {
                            net::post(self->stream_.get_executor(),
                                      [self, response = std::move(response)]() mutable {
                                        self->write(std::move(response));
                                      });
                          });
  }

  void reject(const ReadRefusal& refusal) {
    keep_alive_ = false;
    Response response = shared_.router.problem_response(refusal.status, refusal.code, refusal.title,
                                                        refusal.detail, generate_request_id(), 11);
    shared_.router.metrics().observe_request("rejected_before_routing", "-", refusal.status, 0);
    write(std::move(response));
  }

  void write(Response response) {
    if (answering_) {
      answering_ = false;
      --shared_.in_flight;
    }
    const bool keep_alive = keep_alive_ && !shared_.stopping;
    response.keep_alive(keep_alive);
    auto shared_response = std::make_shared<Response>(std::move(response));
    stream_.expires_after(shared_.settings.body_timeout);
    http::async_write(stream_, *shared_response,
                      [self = shared_from_this(), shared_response, keep_alive](beast::error_code error,
                                                                               std::size_t) {
                        if (error || !keep_alive) return self->close();
                        self->read_header(false);
                      });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  net::steady_timer timer_;
  bool timed_out_ = false;
  beast::flat_buffer buffer_;  // bounded: see read_buffer_slack_bytes
  std::optional<http::request_parser<http::string_body>> parser_;
  ChunkExtensionLimit chunk_extensions_;  // the parser keeps a reference to its callback
  SharedState& shared_;
  std::string client_address_;
  bool keep_alive_ = true;
  bool answering_ = false;
};

}  // namespace

struct Server::Impl {
  Impl(ServerSettings s, Services services)
      : settings(std::move(s)),
        io(settings.threads),
        blocking(2),
        router(settings, std::move(services), blocking),
        shared{settings, router},
        acceptor(net::make_strand(io)) {}

  ServerSettings settings;
  net::io_context io;
  net::thread_pool blocking;
  Router router;
  SharedState shared;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  int bound_port = 0;

  void accept() {
    acceptor.async_accept(net::make_strand(io), [this](beast::error_code error, tcp::socket socket) {
      if (error) {
        if (error == net::error::operation_aborted || !acceptor.is_open()) return;
        spdlog::warn("accept failed: {}", error.message());
      } else if (shared.connections >= settings.connections_max) {
        // Over the limit: a short 503, written synchronously, then close.
        const std::string body =
            R"({"type":"/problems/too_many_connections","title":"Service unavailable","status":503,)"
            R"("detail":"the server is at its connection limit","code":"too_many_connections","request_id":"-"})";
        const std::string response = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
                                     "Connection: close\r\nRetry-After: 1\r\nContent-Length: " +
                                     std::to_string(body.size()) + "\r\n\r\n" + body;
        beast::error_code ignored;
        net::write(socket, net::buffer(response), ignored);
        socket.shutdown(tcp::socket::shutdown_both, ignored);
        socket.close(ignored);
        router.metrics().observe_request("rejected_before_routing", "-", 503, 0);
      } else {
        ++shared.connections;
        std::make_shared<Session>(std::move(socket), shared)->start();
      }
      if (!shared.stopping) accept();
    });
  }
};

Server::Server(ServerSettings settings, Services services)
    : impl_(std::make_unique<Impl>(std::move(settings), std::move(services))) {}

Server::~Server() { shutdown(std::chrono::milliseconds(0)); }

void Server::start() {
  auto& impl = *impl_;
  beast::error_code error;
  const auto address = net::ip::make_address(impl.settings.host, error);
  if (error) throw std::runtime_error("invalid listen address " + impl.settings.host);
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(impl.settings.port));
  impl.acceptor.open(endpoint.protocol(), error);
  if (!error) impl.acceptor.set_option(net::socket_base::reuse_address(true), error);
  if (!error) impl.acceptor.bind(endpoint, error);
  if (!error) impl.acceptor.listen(net::socket_base::max_listen_connections, error);
  if (error) {
    throw std::runtime_error("cannot listen on " + impl.settings.host + ":" +
                             std::to_string(impl.settings.port) + ": " + error.message());
  }
  impl.bound_port = impl.acceptor.local_endpoint().port();
  impl.accept();
  for (int i = 0; i < impl.settings.threads; ++i) impl.threads.emplace_back([&impl] { impl.io.run(); });
}

int Server::port() const { return impl_->bound_port; }

std::size_t Server::active_connections() const { return impl_->shared.connections.load(); }

void Server::shutdown(std::chrono::milliseconds grace) {
  auto& impl = *impl_;
  if (impl.threads.empty()) return;
  impl.shared.stopping = true;
  net::post(impl.acceptor.get_executor(), [&impl] {
    beast::error_code ignored;
    impl.acceptor.close(ignored);
  });
  // In-flight requests finish (their sessions close after answering); idle connections are
  // cut when the I/O threads stop.
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (impl.shared.in_flight > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  impl.io.stop();
  for (auto& thread : impl.threads) thread.join();
  impl.threads.clear();
  impl.blocking.join();
}

}  // namespace ledger::api
