// The admin API's Unix-socket server (socket file lifecycle, per-connection sessions) and
// the metrics endpoint's HTTP server, with the bounds that keep misbehaving clients from
// hurting the thread that serves them or locking out the clients that behave.
#include "vipfarm/api/api_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <filesystem>
#include <optional>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

namespace vipfarm::api {
namespace {

using boost::asio::ip::tcp;
using boost::asio::local::stream_protocol;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
namespace http = boost::beast::http;

// After accept() fails (EMFILE and the like) the connection stays queued: wait a little
// instead of spinning on the same failure.
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

std::string errno_text(int err) { return std::system_category().message(err); }

Json error_reply(std::string message) { return Json{{"ok", false}, {"error", std::move(message)}}; }

std::string to_line(const Json& body) {
  // Replace invalid UTF-8 rather than throw: a handler may echo bytes a client sent.
  std::string line = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  line += '\n';
  return line;
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; clients want the rest.
std::string without_exception_id(std::string_view what) {
  if (!what.empty() && what.front() == '[') {
    if (const auto end = what.find("] "); end != std::string_view::npos) {
      what.remove_prefix(end + 2);
    }
  }
  return std::string(what);
}

struct TooDeep {};

// When a new connection finds `limit` sessions open, the open session whose current phase
// (waiting for a request, or for its client to take a reply) began longest ago is closed:
// whoever holds a connection without using it goes first, a client that has just connected
// and talks goes last. Returns whether one was closed.
template <typename Session>
bool make_room(const std::unordered_set<Session*>& sessions, std::size_t limit) {
  std::size_t open = 0;
  Session* oldest = nullptr;
  for (Session* s : sessions) {
    if (s->closed()) continue;
    ++open;
    if (oldest == nullptr || s->phase_start() < oldest->phase_start()) oldest = s;
  }
  if (open < limit || oldest == nullptr) return false;
  // close() only queues completions: no session leaves the set here.
  oldest->close();
  return true;
}

// Creates the missing directories of `dir`, each 0750 whatever the umask.
std::string make_directories(const std::filesystem::path& dir) {
  std::filesystem::path built;
  for (const auto& part : dir) {
    built /= part;
    if (::mkdir(built.c_str(), 0750) == 0) {
      if (::chmod(built.c_str(), 0750) != 0) {
        return "cannot chmod " + built.string() + ": " + errno_text(errno);
      }
    } else if (errno != EEXIST) {
      return "cannot create " + built.string() + ": " + errno_text(errno);
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    return "cannot stat " + dir.string() + ": " + errno_text(errno);
  if (!S_ISDIR(st.st_mode)) return dir.string() + " is not a directory";
  return {};
}

// A socket file nobody listens on is left by a daemon that died; one somebody listens
// on belongs to a running daemon and must not be stolen.
bool someone_listens(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  // EAGAIN: the listener's backlog is full, so it is very much alive.
  const bool live = rc == 0 || errno == EAGAIN;
  ::close(fd);
  return live;
}

std::string remove_stale_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? std::string() : "cannot stat it: " + errno_text(errno);
  }
  if (!S_ISSOCK(st.st_mode)) return "exists and is not a socket; refusing to replace it";
  if (someone_listens(path)) {
    return "another process is listening on it (is vipfarmd already running?)";
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return "cannot remove the stale socket: " + errno_text(errno);
  }
  return {};
}

}  // namespace

struct ApiServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(boost::asio::io_context& io, std::string socket_path, Handler request_handler,
       ApiLimits request_limits)
      : path(std::move(socket_path)),
        handler(std::move(request_handler)),
        limits(request_limits),
        acceptor(io),
        retry(io) {}

  class Session;

  void accept();
  Json handle(std::string_view line) const;
  void release_socket();
  void stop();

  const std::string path;
  const Handler handler;
  const ApiLimits limits;
  stream_protocol::acceptor acceptor;
  boost::asio::steady_timer retry;
  // Sessions register themselves so stop() can close them; each holds a shared_ptr to
  // this Impl, so the set outlives every session in it.
  std::unordered_set<Session*> sessions;
  bool started = false;
  // Set once the ApiServer is destroyed: completions already queued must not call the
  // handler, whose captures may be gone.
  bool stopped = false;
  // The inode we bound, so the destructor never unlinks a successor's socket.
  bool bound = false;
  dev_t bound_dev = 0;
  ino_t bound_ino = 0;
};

class ApiServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(stream_protocol::socket socket, std::shared_ptr<Impl> server)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), server_(std::move(server)) {
    server_->sessions.insert(this);
  }
  ~Session() { server_->sessions.erase(this); }

  void start() { read_request(); }

  void close() {
    if (closed_) return;
    closed_ = true;
    error_code ignored;
    socket_.shutdown(stream_protocol::socket::shutdown_both, ignored);
    socket_.close(ignored);
    timer_.cancel();
  }

  bool closed() const { return closed_; }
  Clock::time_point phase_start() const { return phase_start_; }

 private:
  // Each phase (waiting for a request, writing its reply) gets the whole idle timeout.
  void arm_deadline() {
    phase_start_ = Clock::now();
    timer_.expires_after(server_->limits.idle_timeout);
    timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      // A wait that completed just before a re-arm still arrives without an error.
      if (!ec && self->timer_.expiry() <= std::chrono::steady_clock::now()) self->close();
    });
  }

  void read_request() {
    arm_deadline();
    // The newline counts against the buffer: a line of exactly max_request_bytes fits.
    boost::asio::async_read_until(
        socket_, boost::asio::dynamic_buffer(in_, server_->limits.max_request_bytes + 1), '\n',
        [self = shared_from_this()](const error_code& ec, std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(const error_code& ec, std::size_t n) {
    if (closed_ || server_->stopped) return;
    if (!ec) {
      std::string line = in_.substr(0, n - 1);
      in_.erase(0, n);
      answer(line, true);
    } else if (ec == boost::asio::error::not_found) {
      reply(error_reply("request too large"), false);
    } else if (ec == boost::asio::error::eof && !in_.empty()) {
      // A last request without its newline before a half-close still gets its answer.
      std::string line = std::move(in_);
      in_.clear();
      answer(line, false);
    } else {
      close();
    }
  }

  void answer(std::string_view line, bool keep_open) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    Json body = server_->handle(line);
    // The handler may have destroyed the server, and with it closed this session.
    if (closed_) return;
    reply(body, keep_open);
  }

  void reply(const Json& body, bool keep_open) {
    out_ = to_line(body);
    arm_deadline();
    boost::asio::async_write(
        socket_, boost::asio::buffer(out_),
        [self = shared_from_this(), keep_open](const error_code& ec, std::size_t) {
          if (self->closed_) return;
          if (ec || !keep_open) {
            self->close();
          } else {
            self->read_request();
          }
        });
  }

  stream_protocol::socket socket_;
  boost::asio::steady_timer timer_;
  std::shared_ptr<Impl> server_;
  std::string in_;
  std::string out_;
  Clock::time_point phase_start_;
  bool closed_ = false;
};

void ApiServer::Impl::accept() {
  acceptor.async_accept(
      [self = shared_from_this()](const error_code& ec, stream_protocol::socket socket) {
        if (self->stopped) return;
        if (ec) {
          self->retry.expires_after(kAcceptRetry);
          self->retry.async_wait([self](const error_code& wait_ec) {
            if (!wait_ec && !self->stopped) self->accept();
          });
          return;
        }
        make_room(self->sessions, self->limits.max_connections);
        std::make_shared<Session>(std::move(socket), self)->start();
        self->accept();
      });
}

Json ApiServer::Impl::handle(std::string_view line) const {
  Json request;
  try {
    const auto max_depth = limits.max_depth;
    // The parser itself does not recurse, but a handler that echoes or walks the
    // request might: refuse absurd nesting before anyone sees it.
    request = Json::parse(line, [max_depth](int depth, Json::parse_event_t event, Json&) {
      if ((event == Json::parse_event_t::object_start ||
           event == Json::parse_event_t::array_start) &&
          static_cast<std::size_t>(depth) >= max_depth) {
        throw TooDeep{};
      }
      return true;
    });
  } catch (const Json::exception& e) {
    // parse_error, and out_of_range for a number beyond a double ("1e400"): any of the
    // parser's exceptions is the client's bad request, never the server's end.
    return error_reply("invalid JSON: " + without_exception_id(e.what()));
  } catch (const TooDeep&) {
    return error_reply("invalid JSON: nested deeper than " + std::to_string(limits.max_depth) +
                       " levels");
  }
  if (!request.is_object()) {
    return error_reply(std::string("invalid JSON: expected an object, got ") + request.type_name());
  }
  try {
    return handler(request);
  } catch (const std::exception& e) {
    return error_reply(e.what());
  } catch (...) {
    return error_reply("the request handler failed");
  }
}

void ApiServer::Impl::release_socket() {
  error_code ignored;
  acceptor.close(ignored);
  if (bound) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == bound_dev &&
        st.st_ino == bound_ino) {
      ::unlink(path.c_str());
    }
    bound = false;
  }
}

void ApiServer::Impl::stop() {
  stopped = true;
  release_socket();
  retry.cancel();
  // close() only queues completions, so no session leaves the set while we walk a copy.
  const std::vector<Session*> open(sessions.begin(), sessions.end());
  for (Session* session : open) session->close();
}

ApiServer::ApiServer(boost::asio::io_context& io, std::string path, Handler handler,
                     ApiLimits limits)
    : impl_(std::make_shared<Impl>(io, std::move(path), std::move(handler), limits)) {}

ApiServer::~ApiServer() { impl_->stop(); }

std::string ApiServer::start() {
  Impl& s = *impl_;
  const std::string where = "api socket " + s.path + ": ";
  if (s.started) return where + "already started";
  if (s.path.empty()) return "api socket: the path is empty";
  if (s.path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return where + "longer than " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes";
  }
  if (const auto parent = std::filesystem::path(s.path).parent_path(); !parent.empty()) {
    if (auto error = make_directories(parent); !error.empty()) return where + error;
  }
  if (auto error = remove_stale_socket(s.path); !error.empty()) return where + error;

  auto fail = [&](const char* step, const std::string& why) {
    s.release_socket();
    return where + step + ": " + why;
  };
  error_code ec;
  s.acceptor.open(stream_protocol(), ec);
  if (ec) return fail("socket", ec.message());
  s.acceptor.bind(stream_protocol::endpoint(s.path), ec);
  if (ec) return fail("bind", ec.message());
  struct stat st {};
  if (::lstat(s.path.c_str(), &st) != 0) return fail("stat", errno_text(errno));
  s.bound = true;
  s.bound_dev = st.st_dev;
  s.bound_ino = st.st_ino;
  // Before listen(): nobody can connect while the mode is still the umask's.
  if (::chmod(s.path.c_str(), 0660) != 0) return fail("chmod", errno_text(errno));
  s.acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen", ec.message());
  s.started = true;
  s.accept();
  return {};
}

// --- the HTTP server -------------------------------------------------------------------

struct HttpServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(boost::asio::io_context& io, Resource served, HttpLimits request_limits)
      : resource(std::move(served)), limits(request_limits), acceptor(io), retry(io) {}

  class Session;

  void accept();
  void stop();

  const Resource resource;
  const HttpLimits limits;
  tcp::acceptor acceptor;
  boost::asio::steady_timer retry;
  // As ApiServer::Impl's: stop() closes them, each keeps this Impl alive.
  std::unordered_set<Session*> sessions;
  HttpStats stats;
  bool started = false;
  bool stopped = false;
};

class HttpServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<Impl> server)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        server_(std::move(server)),
        buffer_(server_->limits.max_header_bytes) {
    server_->sessions.insert(this);
  }
  ~Session() { server_->sessions.erase(this); }

  void start() { read_request(); }

  void close() {
    if (closed_) return;
    closed_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    timer_.cancel();
  }

  bool closed() const { return closed_; }
  Clock::time_point phase_start() const { return phase_start_; }

 private:
  using Response = http::response<http::string_body>;

  // Each phase (receiving a request, writing its reply) must end within request_timeout,
  // however steadily the client trickles: the deadline is not moved by bytes arriving.
  void arm_deadline() {
    phase_start_ = Clock::now();
    timer_.expires_after(server_->limits.request_timeout);
    timer_.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec && !self->closed_ && self->timer_.expiry() <= Clock::now()) {
        ++self->server_->stats.timed_out;
        self->close();
      }
    });
  }

  void read_request() {
    arm_deadline();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_->limits.max_header_bytes));
    http::async_read(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](const error_code& ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(const error_code& ec) {
    if (closed_ || server_->stopped) return;
    HttpStats& stats = server_->stats;
    if (!ec) {
      answer(parser_->get());
    } else if (ec == http::error::end_of_stream) {
      close();  // the client is done: it closed between requests
    } else if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      ++stats.too_large;
      respond(http::status::request_header_fields_too_large, "request header too large\n", false);
    } else if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
      // Not HTTP, a request with a body, or one cut short by a half-close.
      ++stats.malformed;
      respond(http::status::bad_request, "bad request\n", false);
    } else {
      close();  // reset or another socket error
    }
  }

  void answer(const http::request<http::empty_body>& request) {
    const bool keep_open = request.keep_alive();
    const std::string_view target(request.target().data(), request.target().size());
    HttpStats& stats = server_->stats;
    if (target.substr(0, target.find('?')) != server_->resource.path) {
      ++stats.not_found;
      respond(http::status::not_found, "not found\n", keep_open, request.version());
    } else if (request.method() != http::verb::get) {
      ++stats.bad_method;
      respond(http::status::method_not_allowed, "only GET\n", keep_open, request.version());
    } else {
      std::string body;
      try {
        body = server_->resource.render();
      } catch (const std::exception& e) {
        respond(http::status::internal_server_error, std::string(e.what()) + "\n", false);
        return;
      }
      respond(http::status::ok, std::move(body), keep_open, request.version(),
              server_->resource.content_type);
    }
  }

  void respond(http::status status, std::string body, bool keep_open, unsigned version = 11,
               const std::string& content_type = "text/plain; charset=utf-8") {
    response_.emplace(status, version);
    response_->set(http::field::content_type, content_type);
    if (status == http::status::method_not_allowed) response_->set(http::field::allow, "GET");
    response_->keep_alive(keep_open);
    response_->body() = std::move(body);
    response_->prepare_payload();
    arm_deadline();
    http::async_write(socket_, *response_,
                      [self = shared_from_this(), keep_open](const error_code& ec, std::size_t) {
                        if (self->closed_) return;
                        if (ec || !keep_open) {
                          self->close();
                        } else {
                          self->read_request();
                        }
                      });
  }

  tcp::socket socket_;
  boost::asio::steady_timer timer_;
  std::shared_ptr<Impl> server_;
  // At most max_header_bytes: what a pipelining client sent ahead waits in its socket.
  boost::beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  std::optional<Response> response_;
  Clock::time_point phase_start_;
  bool closed_ = false;
};

void HttpServer::Impl::accept() {
  acceptor.async_accept([self = shared_from_this()](const error_code& ec, tcp::socket socket) {
    if (self->stopped) return;
    if (ec) {
      self->retry.expires_after(kAcceptRetry);
      self->retry.async_wait([self](const error_code& wait_ec) {
        if (!wait_ec && !self->stopped) self->accept();
      });
      return;
    }
    if (make_room(self->sessions, self->limits.max_connections)) ++self->stats.evicted;
    std::make_shared<Session>(std::move(socket), self)->start();
    self->accept();
  });
}

void HttpServer::Impl::stop() {
  stopped = true;
  error_code ignored;
  acceptor.close(ignored);
  retry.cancel();
  const std::vector<Session*> open(sessions.begin(), sessions.end());
  for (Session* session : open) session->close();
}

HttpServer::HttpServer(boost::asio::io_context& io, Resource resource, HttpLimits limits)
    : impl_(std::make_shared<Impl>(io, std::move(resource), limits)) {}

HttpServer::~HttpServer() { impl_->stop(); }

std::string HttpServer::start(const std::string& address, std::uint16_t port) {
  Impl& s = *impl_;
  if (s.started) return "already started";
  error_code ec;
  const auto ip = boost::asio::ip::make_address(address, ec);
  if (ec) return "not an IP address: \"" + address + "\"";
  const tcp::endpoint at(ip, port);
  auto fail = [&](const char* step) {
    error_code ignored;
    s.acceptor.close(ignored);
    return std::string(step) + ": " + ec.message();
  };
  s.acceptor.open(at.protocol(), ec);
  if (ec) return fail("socket");
  // A restart must not wait for the last run's connections in TIME_WAIT.
  s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (ec) return fail("SO_REUSEADDR");
  s.acceptor.bind(at, ec);
  if (ec) return fail("bind");
  s.acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  s.started = true;
  s.accept();
  return {};
}

std::uint16_t HttpServer::port() const {
  error_code ec;
  const tcp::endpoint at = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : at.port();
}

HttpStats HttpServer::stats() const { return impl_->stats; }

}  // namespace vipfarm::api
