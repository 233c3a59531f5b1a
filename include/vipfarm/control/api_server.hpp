// The admin API's transport: newline-delimited JSON over a Unix stream socket, served
// on the control thread's io_context. What the requests mean is the handler's business.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace vipfarm::control {

// Bounds on what one client can make the server hold; the defaults are the daemon's.
struct ApiLimits {
  std::size_t max_request_bytes = 64 * 1024;  // one line, without its newline
  std::size_t max_depth = 64;                 // JSON nesting in a request
  std::size_t max_connections = 256;
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

}  // namespace vipfarm::control
