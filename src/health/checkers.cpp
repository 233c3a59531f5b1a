// The health checkers' I/O on the control thread: TCP connects, ICMP echo over raw sockets,
// sysfs link state and /bin/sh commands watched through a pidfd, each under a deadline.
#include "vipfarm/health/checkers.hpp"

#include <fcntl.h>
#include <linux/icmp.h>
#include <netinet/icmp6.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/ip/icmp.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <span>
#include <system_error>
#include <utility>

namespace vipfarm::health {

RiseFall::RiseFall(unsigned rise, unsigned fall, bool healthy) noexcept
    : rise_(std::max(rise, 1U)), fall_(std::max(fall, 1U)), healthy_(healthy) {}

bool RiseFall::record(bool success) noexcept {
  if (success == healthy_) {
    streak_ = 0;
    return false;
  }
  if (++streak_ < (healthy_ ? fall_ : rise_)) return false;
  healthy_ = success;
  streak_ = 0;
  return true;
}

namespace {

namespace asio = boost::asio;
using asio::ip::icmp;
using asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr std::uint8_t kEchoRequest4 = 8, kEchoReply4 = 0;
constexpr std::uint8_t kEchoRequest6 = 128, kEchoReply6 = 129;

std::string errno_text(int err) { return std::system_category().message(err); }

asio::ip::address to_asio(const IpAddr& address) {
  if (address.is_v4()) return asio::ip::address_v4(address.v4_value());
  asio::ip::address_v6::bytes_type bytes{};
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<unsigned char>(address.hi >> (56 - 8 * i));
    bytes[8 + i] = static_cast<unsigned char>(address.lo >> (56 - 8 * i));
  }
  return asio::ip::address_v6(bytes);
}

// Raw ICMP sockets see every ICMP packet of the host, so each pinger needs its own echo
// identifier: distinct within the process, and likely so against other processes.
std::uint16_t next_echo_identifier() {
  static std::atomic<std::uint16_t> next{static_cast<std::uint16_t>(::getpid() * 131)};
  return next.fetch_add(1, std::memory_order_relaxed);  // only uniqueness matters
}

std::uint16_t load16(std::span<const std::uint8_t> bytes, std::size_t at) {
  return static_cast<std::uint16_t>(bytes[at] << 8 | bytes[at + 1]);
}

void store16(std::span<std::uint8_t> bytes, std::size_t at, std::uint16_t value) {
  bytes[at] = static_cast<std::uint8_t>(value >> 8);
  bytes[at + 1] = static_cast<std::uint8_t>(value);
}

// An echo request whose payload is recognisable in a capture.
std::array<std::uint8_t, 16> echo_request(bool v4, std::uint16_t identifier,
                                          std::uint16_t sequence) {
  std::array<std::uint8_t, 16> packet = {v4 ? kEchoRequest4 : kEchoRequest6};
  store16(packet, 4, identifier);
  store16(packet, 6, sequence);
  std::memcpy(&packet[8], "vipfarm", 8);
  // The kernel fills in the ICMPv6 checksum (it covers a pseudo-header); ICMPv4's is ours.
  if (v4) {
    std::uint32_t sum = 0;
    for (std::size_t i = 0; i < packet.size(); i += 2) sum += load16(packet, i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    store16(packet, 2, static_cast<std::uint16_t>(~sum));
  }
  return packet;
}

// A raw ICMPv4 socket delivers the IP header too; an ICMPv6 one only the ICMP message.
bool is_our_reply(std::span<const std::uint8_t> bytes, bool v4, std::uint16_t identifier,
                  std::uint16_t sequence) {
  std::size_t at = 0;
  if (v4) {
    if (bytes.empty()) return false;
    at = (bytes[0] & 0x0fU) * 4U;
  }
  return bytes.size() >= at + 8 && bytes[at] == (v4 ? kEchoReply4 : kEchoReply6) &&
         bytes[at + 1] == 0 && load16(bytes, at + 4) == identifier &&
         load16(bytes, at + 6) == sequence;
}

// Only echo replies need to wake us up; a failed filter costs wakeups, not correctness.
void filter_echo_replies(icmp::socket& socket, bool v4) {
  const int fd = socket.native_handle();
  if (v4) {
    icmp_filter filter{~(1U << kEchoReply4)};  // a set bit drops that type
    ::setsockopt(fd, SOL_RAW, ICMP_FILTER, &filter, sizeof(filter));
  } else {
    icmp6_filter filter{};
    ICMP6_FILTER_SETBLOCKALL(&filter);
    ICMP6_FILTER_SETPASS(kEchoReply6, &filter);
    ::setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof(filter));
  }
}

std::optional<std::string> read_word(const std::string& path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word)) return std::nullopt;
  return word;
}

// Empty when the link is operationally up. tun/tap and lo report "unknown": their carrier
// decides. Reading sysfs is an in-memory operation, fine on the loop.
std::string interface_problem(const std::string& name) {
  if (name.empty() || name.size() > 15 || name.find('/') != std::string::npos || name == "." ||
      name == "..") {
    return "interface \"" + name + "\": invalid name";
  }
  const std::string dir = "/sys/class/net/" + name + "/";
  const auto state = read_word(dir + "operstate");
  if (!state) return "interface " + name + ": no such interface";
  if (*state == "up") return {};
  if (*state == "unknown") {
    if (read_word(dir + "carrier") == "1") return {};
    return "interface " + name + ": no carrier";
  }
  return "interface " + name + ": " + *state;
}

std::string exit_text(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

// Starts `/bin/sh -c command` with stdin and stdout on /dev/null, stderr inherited, no other
// descriptor of ours, default signal handling, and its own process group so that a kill
// reaches what the shell started. Returns the pid, or minus the error number.
pid_t spawn_shell(const std::string& command) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);  // glibc skips SIGKILL/SIGSTOP and its own
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  std::string arg0 = "sh", arg1 = "-c", arg2 = command;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -rc;
}

// The group first, for what the shell started, then the pid itself in case the command
// moved the shell to another group.
void kill_child(pid_t pid) {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
}

}  // namespace

struct Checkers::Impl : std::enable_shared_from_this<Impl> {
  // One checker's schedule and the I/O of its check in flight. Touched only on the io thread.
  struct Probe {
    Probe(asio::io_context& io, config::Checker checker, std::size_t i, bool healthy)
        : config(std::move(checker)),
          index(i),
          state(config.rise, config.fall, healthy),
          next(io),
          deadline(io) {}

    const config::Checker config;
    const std::size_t index;  // into Impl::statuses
    RiseFall state;
    asio::steady_timer next;      // the next check's start
    asio::steady_timer deadline;  // the check in flight's timeout
    Clock::time_point started;
    std::uint64_t attempt = 0;  // tells a stale deadline from the current one
    bool running = false;
    bool timed_out = false;
    std::optional<tcp::socket> tcp_socket;
    std::optional<icmp::socket> icmp_socket;
    std::uint16_t echo_identifier = next_echo_identifier();
    std::uint16_t echo_sequence = 0;
    icmp::endpoint sender;
    std::array<std::uint8_t, 2048> reply{};
    pid_t child = -1;                                          // not yet reaped
    std::optional<asio::posix::stream_descriptor> child_exit;  // the child's pidfd
  };

  Impl(asio::io_context& io_context, std::vector<config::Checker> checkers,
       std::function<void()> changed, const std::vector<Status>* previous)
      : io(io_context), on_change(std::move(changed)) {
    for (auto& checker : checkers) {
      Status s{checker.name, checker.kind, checker.target, checker.group, previous != nullptr, 0, 0,
               {},           0.0};
      if (previous != nullptr) {
        const auto same = std::find_if(previous->begin(), previous->end(),
                                       [&](const Status& p) { return p.name == checker.name; });
        if (same != previous->end()) {
          s.healthy = same->healthy;
          s.checks = same->checks;
          s.failures = same->failures;
          s.last_error = same->last_error;
          s.last_duration_s = same->last_duration_s;
        }
      }
      probes.push_back(std::make_unique<Probe>(io, std::move(checker), probes.size(), s.healthy));
      statuses.push_back(std::move(s));
    }
  }

  // A command killed by stop() whose exit the loop never saw is reaped here, after SIGKILL.
  ~Impl() {
    for (const auto& p : probes) {
      if (p->child > 0) ::waitpid(p->child, nullptr, 0);
    }
  }

  void schedule(Probe& p, Clock::time_point at) {
    p.next.expires_at(at);
    p.next.async_wait([self = shared_from_this(), &p](const error_code& ec) {
      if (!ec && !self->stopped) self->run(p);
    });
  }

  void run(Probe& p) {
    p.running = true;
    p.timed_out = false;
    ++p.attempt;
    p.started = Clock::now();
    switch (p.config.kind) {
      case config::CheckerKind::kTcp:
        return check_tcp(p);
      case config::CheckerKind::kPing:
        return check_ping(p);
      case config::CheckerKind::kInterface: {
        std::string problem = interface_problem(p.config.target);
        const bool up = problem.empty();  // before the move below, whatever the order
        return finish(p, up, std::move(problem));
      }
      case config::CheckerKind::kCustom:
        return check_custom(p);
    }
  }

  // The deadline only interrupts the check's I/O; its completion handler then calls finish(),
  // so each check ends exactly once, and a command only after it has been reaped.
  void arm_deadline(Probe& p) {
    p.deadline.expires_after(std::chrono::milliseconds(p.config.timeout_ms));
    p.deadline.async_wait(
        [self = shared_from_this(), &p, attempt = p.attempt](const error_code& ec) {
          // A deadline that fired just before its check finished still arrives without error.
          if (ec || !p.running || p.attempt != attempt) return;
          p.timed_out = true;
          interrupt(p);
        });
  }

  static void interrupt(Probe& p) {
    error_code ignored;
    if (p.tcp_socket) p.tcp_socket->close(ignored);
    if (p.icmp_socket) p.icmp_socket->close(ignored);
    if (p.child > 0) kill_child(p.child);
  }

  std::string timeout_text(const Probe& p) const {
    return "timeout after " + std::to_string(p.config.timeout_ms) + " ms";
  }

  void check_tcp(Probe& p) {
    const auto endpoint = parse_endpoint(p.config.target);
    if (!endpoint) return finish(p, false, "invalid endpoint \"" + p.config.target + "\"");
    p.tcp_socket.emplace(io);
    arm_deadline(p);
    p.tcp_socket->async_connect(
        tcp::endpoint(to_asio(endpoint->address), endpoint->port),
        [self = shared_from_this(), &p](const error_code& ec) {
          if (!ec) return self->finish(p, true, {});
          self->finish(p, false,
                       p.timed_out ? self->timeout_text(p)
                                   : "connect " + p.config.target + ": " + ec.message());
        });
  }

  void check_ping(Probe& p) {
    const auto address = IpAddr::parse(p.config.target);
    if (!address) return finish(p, false, "invalid address \"" + p.config.target + "\"");
    const bool v4 = address->is_v4();
    error_code ec;
    p.icmp_socket.emplace(io);
    p.icmp_socket->open(v4 ? icmp::v4() : icmp::v6(), ec);
    if (ec) return finish(p, false, "raw ICMP socket: " + ec.message());
    filter_echo_replies(*p.icmp_socket, v4);
    p.icmp_socket->non_blocking(true, ec);
    const auto request = echo_request(v4, p.echo_identifier, ++p.echo_sequence);
    const icmp::endpoint to(to_asio(*address), 0);
    if (!ec) p.icmp_socket->send_to(asio::buffer(request), to, 0, ec);  // never blocks
    if (ec) return finish(p, false, "ping " + p.config.target + ": " + ec.message());
    arm_deadline(p);
    receive_echo(p, to.address(), v4);
  }

  void receive_echo(Probe& p, asio::ip::address from, bool v4) {
    p.icmp_socket->async_receive_from(
        asio::buffer(p.reply), p.sender,
        [self = shared_from_this(), &p, from, v4](const error_code& ec, std::size_t n) {
          if (ec) {
            return self->finish(p, false,
                                p.timed_out ? self->timeout_text(p)
                                            : "ping " + p.config.target + ": " + ec.message());
          }
          if (p.sender.address() == from &&
              is_our_reply(std::span(p.reply).first(n), v4, p.echo_identifier, p.echo_sequence)) {
            return self->finish(p, true, {});
          }
          self->receive_echo(p, from, v4);  // someone else's ICMP: keep listening
        });
  }

  void check_custom(Probe& p) {
    const pid_t pid = spawn_shell(p.config.target);
    if (pid < 0) return finish(p, false, "spawn /bin/sh: " + errno_text(-pid));
    p.child = pid;
    // glibc 2.36's <sys/pidfd.h> lacks extern "C": call the kernel directly.
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) return abandon_child(p, "pidfd_open: " + errno_text(errno));
    error_code ec;
    p.child_exit.emplace(io);
    p.child_exit->assign(pidfd, ec);
    if (ec) {
      ::close(pidfd);  // assign() did not take it
      return abandon_child(p, "pidfd: " + ec.message());
    }
    arm_deadline(p);
    wait_child(p);
  }

  // Without a pidfd we cannot wait without blocking; the command has barely started, so a
  // SIGKILL ends it at once and the blocking reap is short.
  void abandon_child(Probe& p, std::string error) {
    kill_child(p.child);
    ::waitpid(p.child, nullptr, 0);
    p.child = -1;
    p.child_exit.reset();
    finish(p, false, std::move(error));
  }

  // A pidfd turns readable once the child has exited; waitpid then reaps it at once.
  void wait_child(Probe& p) {
    p.child_exit->async_wait(
        asio::posix::stream_descriptor::wait_read,
        [self = shared_from_this(), &p](const error_code& ec) { self->on_child_exit(p, ec); });
  }

  void on_child_exit(Probe& p, const error_code& ec) {
    if (ec) return abandon_child(p, "pidfd: " + ec.message());
    int status = 0;
    const pid_t rc = ::waitpid(p.child, &status, WNOHANG);
    if (rc == 0) return wait_child(p);  // not expected from a readable pidfd, but harmless
    const int err = errno;
    p.child = -1;
    p.child_exit.reset();
    if (rc < 0) return finish(p, false, "waitpid: " + errno_text(err));
    if (p.timed_out) return finish(p, false, timeout_text(p));
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    finish(p, ok, ok ? std::string() : exit_text(status));
  }

  // Records the result of the check in flight and schedules the next one, interval_ms
  // after this one started, or at once if it took longer than that.
  void finish(Probe& p, bool success, std::string error) {
    p.running = false;
    p.deadline.cancel();
    error_code ignored;
    if (p.tcp_socket) p.tcp_socket->close(ignored);
    if (p.icmp_socket) p.icmp_socket->close(ignored);
    p.tcp_socket.reset();
    p.icmp_socket.reset();
    if (stopped) return;
    const bool changed = p.state.record(success);
    {
      const std::lock_guard lock(mutex);
      Status& s = statuses[p.index];
      s.healthy = p.state.healthy();
      ++s.checks;
      s.failures += success ? 0 : 1;
      s.last_error = std::move(error);
      s.last_duration_s = std::chrono::duration<double>(Clock::now() - p.started).count();
    }
    schedule(p, p.started + std::chrono::milliseconds(p.config.interval_ms));
    if (changed && on_change) on_change();
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    for (const auto& p : probes) {
      p->next.cancel();
      p->deadline.cancel();
      interrupt(*p);
    }
  }

  // True when every checker `bound` selects is healthy.
  template <typename Pred>
  bool all_healthy(Pred bound) const {
    const std::lock_guard lock(mutex);
    return std::all_of(statuses.begin(), statuses.end(),
                       [&](const Status& s) { return !bound(s) || s.healthy; });
  }

  asio::io_context& io;
  const std::function<void()> on_change;
  std::vector<std::unique_ptr<Probe>> probes;
  bool started = false;
  bool stopped = false;
  // Guards statuses, which other threads read; never held across I/O or on_change.
  mutable std::mutex mutex;
  std::vector<Status> statuses;
};

Checkers::Checkers(asio::io_context& io, std::vector<config::Checker> checkers,
                   std::function<void()> on_change, const std::vector<Status>* previous)
    : impl_(std::make_shared<Impl>(io, std::move(checkers), std::move(on_change), previous)) {}

Checkers::~Checkers() { impl_->stop(); }

void Checkers::start() {
  if (impl_->started || impl_->stopped) return;
  impl_->started = true;
  for (const auto& p : impl_->probes) impl_->schedule(*p, Clock::now());
}

void Checkers::stop() { impl_->stop(); }

std::vector<Checkers::Status> Checkers::status() const {
  const std::lock_guard lock(impl_->mutex);
  return impl_->statuses;
}

bool Checkers::node_healthy() const {
  return impl_->all_healthy([](const Status& s) { return !s.group; });
}

bool Checkers::group_healthy(std::size_t group) const {
  return impl_->all_healthy([group](const Status& s) { return s.group == group; });
}

}  // namespace vipfarm::health
