#pragma once
// A small blocking HTTP/1.1 client over loopback for API tests (Boost.Beast).

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <map>
#include <string>

namespace ledger::test {

struct HttpResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
  [[nodiscard]] std::string header(const std::string& name) const {
    auto found = headers.find(name);
    return found == headers.end() ? std::string() : found->second;
  }
};

class HttpClient {
 public:
  explicit HttpClient(int port) : port_(port), socket_(io_) { connect(); }

  void connect() {
    boost::asio::ip::tcp::endpoint endpoint(boost::asio::ip::make_address("127.0.0.1"),
                                            static_cast<unsigned short>(port_));
    socket_.connect(endpoint);
  }

  HttpResponse request(const std::string& method, const std::string& target,
                       const std::string& body = {},
                       const std::map<std::string, std::string>& headers = {},
                       bool json = true) {
    namespace http = boost::beast::http;
    http::request<http::string_body> request{http::string_to_verb(method), target, 11};
    request.set(http::field::host, "127.0.0.1");
    if (!body.empty() && json) request.set(http::field::content_type, "application/json");
    for (const auto& [name, value] : headers) request.set(name, value);
    request.body() = body;
    request.prepare_payload();
    http::write(socket_, request);
    return read();
  }

  // Sends raw bytes (for malformed or pipelined requests).
  void send_raw(const std::string& bytes) { boost::asio::write(socket_, boost::asio::buffer(bytes)); }

  HttpResponse read() {
    namespace http = boost::beast::http;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(socket_, buffer_, parser);
    const auto& message = parser.get();
    HttpResponse response;
    response.status = message.result_int();
    response.body = message.body();
    for (const auto& field : message) {
      response.headers[std::string(field.name_string())] = std::string(field.value());
    }
    return response;
  }

  // True when the server closed the connection (a read returns end of stream).
  bool closed_by_server() {
    boost::beast::error_code error;
    char byte;
    socket_.read_some(boost::asio::buffer(&byte, 1), error);
    return error == boost::asio::error::eof || error == boost::asio::error::connection_reset;
  }

 private:
  int port_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
};

}  // namespace ledger::test
