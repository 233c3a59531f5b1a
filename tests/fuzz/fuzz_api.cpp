// libFuzzer target: arbitrary bytes as what one client writes to the admin API socket, served
// by a real ApiServer (session, line framing, Impl::handle's JSON parse and depth limit) on
// a private socket in this process. Every request line gets exactly one reply, a JSON
// object with a boolean "ok" that says what an independent parse of the line expects, and
// nothing escapes the io_context. The daemon's handler needs DPDK; an echo stands in.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "vipfarm/api/api_server.hpp"

namespace {

using vipfarm::api::ApiLimits;
using vipfarm::api::ApiServer;
using Json = nlohmann::json;

// Small bounds, so the fuzzer reaches "request too large" and the depth limit with short
// inputs; the code paths are the daemon's, only the numbers differ.
constexpr std::size_t kMaxRequest = 512;
constexpr std::size_t kMaxDepth = 8;
// One input is a few local round trips: taking seconds means the server is stuck.
constexpr auto kPatience = std::chrono::seconds(5);

// The request handler: echoes what it got, or throws when asked to, so the exception
// paths of handle() are reached too.
Json echo(const Json& request) {
  const auto cmd = request.find("cmd");
  if (cmd != request.end() && *cmd == "throw") throw std::runtime_error("thrown on request");
  if (cmd != request.end() && *cmd == "throw_int") throw 7;
  return Json{{"ok", true}, {"echo", request}};
}

struct Server {
  boost::asio::io_context io;
  std::string dir;
  std::string path;
  std::unique_ptr<ApiServer> api;
};

Server& server() {
  // Never destroyed: a crash must not race a destructor, and the socket goes at exit.
  static Server* const s = [] {
    auto* out = new Server;
    char dir[] = "/tmp/vipfarm-fuzz-api.XXXXXX";
    if (::mkdtemp(dir) == nullptr) std::abort();
    out->dir = dir;
    out->path = out->dir + "/api.sock";
    ApiLimits limits;
    limits.max_request_bytes = kMaxRequest;
    limits.max_depth = kMaxDepth;
    out->api = std::make_unique<ApiServer>(out->io, out->path, echo, limits);
    if (const std::string error = out->api->start(); !error.empty()) {
      std::fprintf(stderr, "%s\n", error.c_str());
      std::abort();
    }
    std::atexit([] {
      ::unlink(server().path.c_str());
      ::rmdir(server().dir.c_str());
    });
    return out;
  }();
  return *s;
}

// Runs the server until it has answered and closed the connection; returns what the
// client read.
std::string exchange(Server& s, std::string_view bytes) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) std::abort();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  s.path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  // The whole input fits the socket buffer (max_len is a few KiB), so a blocking send
  // cannot wait on the server, which only runs below.
  for (std::size_t sent = 0; sent < bytes.size();) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0) std::abort();
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  if (::fcntl(fd, F_SETFL, O_NONBLOCK) != 0) std::abort();

  std::string received;
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  try {
    for (;;) {
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        received.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      // A reset comes when the server hung up on unread bytes (a request too large).
      if (n == 0 || errno == ECONNRESET) break;
      if (errno != EAGAIN && errno != EWOULDBLOCK) std::abort();
      if (std::chrono::steady_clock::now() > deadline) {
        std::fprintf(stderr, "the server neither answered nor closed within %lld s\n",
                     static_cast<long long>(kPatience.count()));
        std::abort();
      }
      s.io.run_one_for(std::chrono::milliseconds(10));
    }
    // What the close queued (the cancelled idle timer) runs now, so no session outlives
    // its input.
    while (s.io.poll() > 0) {
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exception escaped the admin API server: %s\n", e.what());
    std::abort();
  }
  ::close(fd);
  return received;
}

// Containers nested, counting the outermost: the server refuses more than kMaxDepth.
std::size_t nesting(const Json& j) {
  if (!j.is_structured()) return 0;
  std::size_t deepest = 0;
  for (const Json& child : j) deepest = std::max(deepest, nesting(child));
  return deepest + 1;
}

// The reply that handle() must give to one request line (without its newline).
void check_reply(std::string_view line, const Json& reply) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const bool ok = reply.at("ok").get<bool>();
  const Json parsed = Json::parse(line, nullptr, false);
  if (parsed.is_discarded()) {
    // Not JSON to an independent parse: refused as such, whatever the handler does.
    if (ok) __builtin_trap();
    if (!reply.at("error").get<std::string>().starts_with("invalid JSON: ")) __builtin_trap();
    return;
  }
  std::string expected_error;
  if (nesting(parsed) > kMaxDepth) {
    expected_error = "invalid JSON: nested deeper than " + std::to_string(kMaxDepth) + " levels";
  } else if (!parsed.is_object()) {
    expected_error = std::string("invalid JSON: expected an object, got ") + parsed.type_name();
  } else if (parsed.contains("cmd") && parsed["cmd"] == "throw") {
    expected_error = "thrown on request";
  } else if (parsed.contains("cmd") && parsed["cmd"] == "throw_int") {
    expected_error = "the request handler failed";
  }
  if (expected_error.empty()) {
    // The handler saw exactly the request, and its reply survived the line encoding.
    if (!ok || reply.at("echo") != parsed) __builtin_trap();
  } else if (ok || reply.at("error") != expected_error) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Larger inputs could fill the socket buffer before the server runs (see exchange()).
  if (size > 65536) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string received = exchange(server(), input);

  // The requests: every newline-terminated line, and an unterminated last one unless it
  // is empty (the client half-closed after it).
  std::vector<std::string_view> lines;
  for (std::size_t start = 0; start < input.size();) {
    const std::size_t nl = input.find('\n', start);
    if (nl == std::string_view::npos) {
      lines.push_back(input.substr(start));
      break;
    }
    lines.push_back(input.substr(start, nl - start));
    start = nl + 1;
  }

  // The replies: one JSON object per line, each with a boolean "ok".
  if (!received.empty() && received.back() != '\n') __builtin_trap();
  std::vector<Json> replies;
  for (std::size_t start = 0; start < received.size();) {
    const std::size_t nl = received.find('\n', start);
    const Json reply = Json::parse(received.substr(start, nl - start), nullptr, false);
    if (reply.is_discarded() || !reply.is_object()) __builtin_trap();
    const auto ok = reply.find("ok");
    if (ok == reply.end() || !ok->is_boolean()) __builtin_trap();
    if (!*ok) {
      const auto error = reply.find("error");
      if (error == reply.end() || !error->is_string() || error->empty()) __builtin_trap();
    }
    replies.push_back(reply);
    start = nl + 1;
  }

  // One reply per request, in order, until a line longer than the limit: that one is
  // answered "request too large" and the connection ends.
  std::size_t next = 0;
  for (const std::string_view line : lines) {
    if (next >= replies.size()) __builtin_trap();
    const Json& reply = replies[next++];
    if (line.size() > kMaxRequest) {
      if (reply != Json{{"ok", false}, {"error", "request too large"}}) __builtin_trap();
      break;
    }
    check_reply(line, reply);
  }
  if (next != replies.size()) __builtin_trap();
  return 0;
}
