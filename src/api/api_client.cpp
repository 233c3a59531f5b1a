// The admin API's blocking client: one connection, one request line, one reply line,
// every step bounded by the caller's deadline.
#include "vipfarm/api/api_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <system_error>

namespace vipfarm::api {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

// Bucket maps are the largest replies; this is far above them and still bounds memory.
constexpr std::size_t kMaxReplyBytes = 64 * 1024 * 1024;

std::string errno_text(int err) { return std::system_category().message(err); }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::chrono::milliseconds left_until(Clock::time_point deadline) {
  return std::max(std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()),
                  std::chrono::milliseconds(0));
}

enum class Ready { yes, timed_out, failed };

Ready wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = left_until(deadline);
    if (left.count() == 0) return Ready::timed_out;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), INT_MAX)));
    if (n > 0) return Ready::yes;  // POLLHUP and POLLERR too: the next call says what
    if (n < 0 && errno != EINTR) return Ready::failed;
  }
}

std::string connect_hint(int err) {
  switch (err) {
    case ENOENT:
    case ECONNREFUSED:
      return " (is vipfarmd running?)";
    case EACCES:
    case EPERM:
      return " (run as root or as a member of the socket's group)";
    default:
      return {};
  }
}

}  // namespace

ApiReply api_call(const std::string& path, const Json& request, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  ApiReply reply;
  auto fail = [&](std::string why) {
    reply.error = std::move(why);
    return reply;
  };
  const std::string timed_out =
      "timed out after " + std::to_string(timeout.count()) + " ms talking to " + path;

  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return fail("cannot connect to " + path + ": not a usable socket path");
  }
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);

  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return fail("cannot create a socket: " + errno_text(errno));

  // A Unix stream connect only blocks while the listener's backlog is full, and then
  // for at most SO_SNDTIMEO (zero would mean forever).
  for (;;) {
    const auto left = left_until(deadline);
    if (left.count() == 0) return fail(timed_out);
    const timeval tv{static_cast<time_t>(left.count() / 1000),
                     static_cast<suseconds_t>(left.count() % 1000 * 1000)};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) break;
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EINPROGRESS) return fail(timed_out);
    return fail("cannot connect to " + path + ": " + errno_text(err) + connect_hint(err));
  }
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0) {
    return fail("cannot set up the socket to " + path + ": " + errno_text(errno));
  }

  const std::string line = request.dump(-1, ' ', false, Json::error_handler_t::replace) + '\n';
  // If the daemon hangs up mid-request (it refuses oversize ones), its reply may still be
  // waiting to be read and says more than EPIPE: keep the error for when there is none.
  std::string send_error;
  for (std::size_t sent = 0; sent < line.size();) {
    const ssize_t n = ::send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
    } else if (errno == EAGAIN) {
      const Ready ready = wait_for(fd.get(), POLLOUT, deadline);
      if (ready == Ready::timed_out) return fail(timed_out);
      if (ready == Ready::failed) return fail("poll: " + errno_text(errno));
    } else if (errno != EINTR) {
      send_error = "cannot send to " + path + ": " + errno_text(errno);
      break;
    }
  }

  std::string in;
  std::size_t newline = std::string::npos;
  char buf[64 * 1024];
  while (newline == std::string::npos) {
    const ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n > 0) {
      const std::size_t scanned = in.size();
      in.append(buf, static_cast<std::size_t>(n));
      newline = in.find('\n', scanned);
      if (newline == std::string::npos && in.size() > kMaxReplyBytes) {
        return fail("the reply from " + path + " is larger than " + std::to_string(kMaxReplyBytes) +
                    " bytes");
      }
    } else if (n == 0) {
      if (!send_error.empty()) return fail(send_error);
      return fail(in.empty() ? path + " closed the connection without replying"
                             : path + " closed the connection in the middle of its reply");
    } else if (errno == EAGAIN) {
      const Ready ready = wait_for(fd.get(), POLLIN, deadline);
      if (ready == Ready::timed_out) return fail(timed_out);
      if (ready == Ready::failed) return fail("poll: " + errno_text(errno));
    } else if (errno != EINTR) {
      if (!send_error.empty()) return fail(send_error);
      return fail("cannot read from " + path + ": " + errno_text(errno));
    }
  }

  try {
    reply.body = Json::parse(std::string_view(in).substr(0, newline));
  } catch (const Json::parse_error& e) {
    return fail("invalid reply from " + path + ": " + e.what());
  }
  reply.transport_ok = true;
  return reply;
}

}  // namespace vipfarm::api
