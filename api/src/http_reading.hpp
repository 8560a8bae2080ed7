#pragma once
// How the server reads a request (private to the API): the parser's limits and what each read
// error is answered with. Shared by the server's sessions and the HTTP fuzzer
// (tests/fuzz/http_front_fuzz.cpp), so the fuzzer attacks the parser exactly as configured.

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "ledger/api/server.hpp"

namespace ledger::api {

// Chunk extensions (`1;name=value`) carry nothing this API reads; all of a message's together
// may be this long. Longer ones are refused (400) rather than buffered.
inline constexpr std::size_t chunk_extensions_bytes_max = 1'024;
// Room in a connection's read buffer beyond the header limit: one read's worth. The buffer
// holds only bytes not yet parsed (header bytes, a partial chunk line or trailer, the start of
// a pipelined request), so with the parser's own header and body limits this caps what one
// connection can make the server hold: a chunk line or trailer that does not fit is refused at
// once instead of growing the buffer for the whole body timeout.
inline constexpr std::size_t read_buffer_slack_bytes = 16 * 1024;

using RequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;
// Counts a message's chunk extensions; the parser keeps a reference to it, so it must outlive
// the parser. Reset `bytes` for each new message.
struct ChunkExtensionLimit {
  std::size_t bytes = 0;
  std::function<void(std::uint64_t, boost::beast::string_view, boost::beast::error_code&)> callback =
      [this](std::uint64_t, boost::beast::string_view extensions, boost::beast::error_code& error) {
        bytes += extensions.size();
        if (bytes > chunk_extensions_bytes_max) error = boost::beast::http::error::bad_chunk_extension;
      };
  ChunkExtensionLimit() = default;
  ChunkExtensionLimit(const ChunkExtensionLimit&) = delete;
  ChunkExtensionLimit& operator=(const ChunkExtensionLimit&) = delete;
};

// Sets a fresh parser up for the next request of a connection.
inline void prepare_parser(RequestParser& parser, const ServerSettings& settings, ChunkExtensionLimit& limit) {
  parser.header_limit(static_cast<std::uint32_t>(settings.header_bytes_max));
  parser.body_limit(settings.body_bytes_max);
  limit.bytes = 0;
  parser.on_chunk_header(limit.callback);
}

// What a failed read is answered with before the connection closes.
struct ReadRefusal {
  int status;
  std::string code;
  std::string title;
  std::string detail;
};
enum class ReadPhase { header, body };
struct ReadVerdict {
  bool close = false;                  // the client went away: close without answering
  std::optional<ReadRefusal> refusal;  // answer this, then close
  [[nodiscard]] bool ok() const { return !close && !refusal; }
};

// `error` from reading the header or the body (timeouts, which the session detects itself,
// arrive as beast::error::timeout). `buffer_bytes_max`: the connection's read buffer size.
inline ReadVerdict classify_read_error(boost::beast::error_code error, ReadPhase phase,
                                       const ServerSettings& settings, std::size_t buffer_bytes_max,
                                       bool got_some) {
  namespace http = boost::beast::http;
  namespace net = boost::asio;
  if (!error) return {};
  if (error == http::error::end_of_stream || error == net::error::eof) return {true, std::nullopt};
  if (phase == ReadPhase::header &&
      (error == net::error::connection_reset || error == net::error::operation_aborted)) {
    return {true, std::nullopt};
  }
  if (error == boost::beast::error::timeout) {
    if (phase == ReadPhase::header) {
      // An idle keep-alive connection just closes; a stalled request gets 408.
      if (!got_some) return {true, std::nullopt};
      return {false, ReadRefusal{408, "request_timeout", "Request timeout", "the request headers did not arrive in time"}};
    }
    return {false, ReadRefusal{408, "request_timeout", "Request timeout", "the request body did not arrive in time"}};
  }
  if (error == http::error::body_limit) {
    return {false, ReadRefusal{413, "body_too_large", "Payload too large",
                               "the body exceeds " + std::to_string(settings.body_bytes_max) + " bytes"}};
  }
  if (phase == ReadPhase::header && (error == http::error::header_limit || error == http::error::buffer_overflow)) {
    return {false, ReadRefusal{431, "headers_too_large", "Request header fields too large",
                               "headers exceed " + std::to_string(settings.header_bytes_max) + " bytes"}};
  }
  if (phase == ReadPhase::body && error == http::error::buffer_overflow) {
    return {false, ReadRefusal{400, "malformed_request", "Bad request",
                               "a chunk line or trailer exceeds " + std::to_string(buffer_bytes_max) + " bytes"}};
  }
  if (phase == ReadPhase::body && error == http::error::bad_chunk_extension) {
    return {false, ReadRefusal{400, "malformed_request", "Bad request",
                               "chunk extensions exceed " + std::to_string(chunk_extensions_bytes_max) +
                                   " bytes or are malformed"}};
  }
  return {false, ReadRefusal{400, "malformed_request", "Bad request", "malformed HTTP: " + error.message()}};
}

}  // namespace ledger::api
