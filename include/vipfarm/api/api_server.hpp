// The daemon's two listening endpoints' transports: the admin API (newline-delimited JSON
// over a Unix stream socket) and /metrics (HTTP/1.1 over TCP). Both bound what a client can
// make them hold, and when full close the connection that has waited longest for its client
// (1,000 idle connections must not lock out the one operator or scraper that talks).
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace vipfarm::api {

// Bounds on what one client can make the server hold; the defaults are the daemon's.
struct ApiLimits {
  std::size_t max_request_bytes = 64 * 1024;  // one line, without its newline
  std::size_t max_depth = 64;                 // JSON nesting in a request
  // A new connection beyond this closes the connection idle longest (waiting for its
  // request, or for its client to take a reply).
  std::size_t max_connections = 256;
  // Each phase (receiving one request, writing its reply) must end within this, however
  // steadily a client trickles bytes.
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(30);
};

// Not thread-safe: construct, start() and destroy it on the io_context's thread, or
// while that io_context is not running. The io_context must outlive it.
class ApiServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  ApiServer(boost::asio::io_context& io, std::string path, Handler handler, ApiLimits limits = {});
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;
  // Stops accepting, closes every connection and unlinks the socket if it is still ours.
  ~ApiServer();

  // Binds and starts accepting; returns an error text, or empty on success.
  std::string start();

 private:
  struct Impl;
  // Shared with the pending Asio operations, which may complete after this object is gone.
  std::shared_ptr<Impl> impl_;
};

// Bounds on what HTTP clients can make the server hold; the defaults are the daemon's.
struct HttpLimits {
  std::size_t max_header_bytes = 8 * 1024;  // request line and header fields
  // A new connection beyond this closes the connection idle longest, as ApiLimits.
  std::size_t max_connections = 64;
  // To receive one request (from the connection or the previous reply on) and to write one
  // reply. Scrapers send their request at once: a slowloris is cut off after this.
  std::chrono::milliseconds request_timeout = std::chrono::seconds(10);
};

// What the HTTP server turned away, by reason. Read on the io_context's thread.
struct HttpStats {
  std::uint64_t malformed = 0;   // 400: not HTTP/1.x, or a request with a body
  std::uint64_t too_large = 0;   // 431: request line and headers beyond max_header_bytes
  std::uint64_t not_found = 0;   // 404: another path
  std::uint64_t bad_method = 0;  // 405: not GET
  std::uint64_t timed_out = 0;   // a request or reply not done within request_timeout
  std::uint64_t evicted = 0;     // closed for a newer connection when full
};

// HTTP/1.1 for one resource: GET `path` (any query) is answered 200 with `render()`, with
// keep-alive; anything else gets its 4xx. Same threading rules as ApiServer.
class HttpServer {
 public:
  struct Resource {
    std::string path;
    std::string content_type;
    std::function<std::string()> render;
  };

  HttpServer(boost::asio::io_context& io, Resource resource, HttpLimits limits = {});
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  // Stops accepting and closes every connection.
  ~HttpServer();

  // Binds address:port (an IPv4 or IPv6 literal; port 0: any) and starts accepting;
  // returns an error text, or empty on success.
  std::string start(const std::string& address, std::uint16_t port);
  std::uint16_t port() const;
  HttpStats stats() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace vipfarm::api
