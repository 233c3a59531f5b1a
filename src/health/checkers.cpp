// The health checkers' I/O on the control thread: TCP connects, ICMP echo over raw sockets,
// sysfs link state and /bin/sh commands (each as its user, in its own PID namespace) watched
// through a pidfd, each under a deadline.
#include "vipfarm/health/checkers.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/icmp.h>
#include <netinet/icmp6.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/ip/icmp.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

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

// Who a custom command runs as. Looked up when the checkers are made (start-up, reload), on
// the control thread: the child cannot, it may not call NSS between clone() and execve().
struct Identity {
  static constexpr uid_t kOverflowId = 65534;  // the kernel's "nobody"
  uid_t uid = kOverflowId;
  gid_t gid = kOverflowId;
  std::vector<gid_t> groups{kOverflowId};
  std::string error;  // the lookup failed: every check fails with it
};

// `configured` empty: "nobody", or the overflow ids where there is no such user, so that a
// command never runs as root unless the config says so.
Identity lookup_identity(const std::string& configured) {
  const std::string name = configured.empty() ? "nobody" : configured;
  Identity id;
  std::vector<char> buffer(1024);
  passwd entry{};
  passwd* found = nullptr;
  int rc = 0;
  while ((rc = ::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found)) ==
             ERANGE &&
         buffer.size() < (1U << 20)) {
    buffer.resize(buffer.size() * 2);
  }
  if (found == nullptr) {
    const bool missing = rc == 0 || rc == ENOENT || rc == ESRCH;
    if (missing && configured.empty()) return id;
    id.error = "user \"" + name + "\": " + (missing ? "no such user" : errno_text(rc));
    return id;
  }
  id.uid = found->pw_uid;
  id.gid = found->pw_gid;
  // initgroups(3)'s list: the groups naming the user, and its primary group.
  int count = 16;
  for (int tries = 0; tries < 8; ++tries) {
    id.groups.resize(static_cast<std::size_t>(count));
    const int asked = count;
    if (::getgrouplist(name.c_str(), id.gid, id.groups.data(), &count) >= 0) {
      id.groups.resize(static_cast<std::size_t>(count));
      return id;
    }
    if (count <= asked) count = asked * 2;
  }
  id.error = "user \"" + name + "\": cannot list its groups";
  return id;
}

// The command's environment: the configured entries, and PATH unless one of them is.
std::vector<std::string> command_environment(const std::vector<std::string>& configured) {
  std::vector<std::string> env;
  if (std::none_of(configured.begin(), configured.end(),
                   [](const std::string& e) { return e.starts_with("PATH="); })) {
    env.emplace_back(config::kCheckerPath);
  }
  env.insert(env.end(), configured.begin(), configured.end());
  return env;
}

bool has_effective_capability(int capability) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
  if (::syscall(SYS_capget, &header, data.data()) != 0) return false;
  return (data[static_cast<std::size_t>(capability / 32)].effective &
          (1U << static_cast<unsigned>(capability % 32))) != 0;
}

// Everything the child needs, prepared before clone(): between clone() and execve() it runs
// on our memory (CLONE_VM) while this thread waits (CLONE_VFORK), so it may only make system
// calls: no allocation, no locks, no NSS, and glibc's set*id() would try to signal threads
// that are not in the child. It reports a failure here, then exits.
struct SpawnPlan {
  char* const* argv;
  char* const* envp;
  const Identity* identity;
  const char* failed_step = nullptr;
  int error = 0;
};

[[noreturn]] void child_fail(SpawnPlan& plan, const char* step) {
  plan.failed_step = step;
  plan.error = errno;
  ::_exit(127);
}

// PID 1 of a new PID namespace: when it exits, or is killed, the kernel kills every other
// process of the namespace and waits for them before it reports the exit, so nothing the
// command started (setsid and double forks included) outlives the check.
int child_main(void* arg) {
  auto& plan = *static_cast<SpawnPlan*>(arg);
  const Identity& id = *plan.identity;
  if (::setsid() < 0) child_fail(plan, "setsid");  // away from any terminal of the daemon
  const int null = ::open("/dev/null", O_RDWR);
  if (null < 0) child_fail(plan, "open /dev/null");
  if ((null != 0 && ::dup2(null, 0) < 0) || (null != 1 && ::dup2(null, 1) < 0)) {
    child_fail(plan, "dup2");
  }
  // stderr stays the daemon's (the journal); nothing else of ours goes along.
  if (::close_range(3, ~0U, 0) != 0) child_fail(plan, "close_range");
  if (::chdir("/") != 0) child_fail(plan, "chdir /");
  if (::syscall(SYS_setgroups, id.groups.size(), id.groups.data()) != 0) {
    child_fail(plan, "setgroups");
  }
  if (::syscall(SYS_setresgid, id.gid, id.gid, id.gid) != 0) child_fail(plan, "setresgid");
  if (::syscall(SYS_setresuid, id.uid, id.uid, id.uid) != 0) child_fail(plan, "setresuid");
  // No capability of any kind, root included: with no new privileges, execve() grants none
  // back (not even to uid 0, whose new set is cut to the empty one it had).
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> no_capabilities{};
  if (::syscall(SYS_capset, &header, no_capabilities.data()) != 0) child_fail(plan, "capset");
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    child_fail(plan, "PR_CAP_AMBIENT_CLEAR_ALL");
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(plan, "PR_SET_NO_NEW_PRIVS");
  // After the credentials, which clear it: the command dies with the spawner thread.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) child_fail(plan, "PR_SET_PDEATHSIG");
  // Default signal handling; our handlers' table is the child's own copy (no CLONE_SIGHAND).
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &default_action, nullptr);
  }
  sigset_t no_signals;
  sigemptyset(&no_signals);
  ::sigprocmask(SIG_SETMASK, &no_signals, nullptr);
  ::execve("/bin/sh", plan.argv, plan.envp);
  child_fail(plan, "execve");
}

struct Spawned {
  pid_t pid = -1;
  int pidfd = -1;     // from CLONE_PIDFD: no window for the pid to be reused
  std::string error;  // set when there is no child
};

// Starts `/bin/sh -c command` as `id` with `env` only, stdin and stdout on /dev/null, stderr
// ours, no other descriptor, default signal handling, as PID 1 of a new PID namespace
// (CLONE_NEWPID: CAP_SYS_ADMIN). This thread waits for the child's execve(), as in
// posix_spawn(), which cannot make a namespace.
Spawned spawn_shell(const std::string& command, const Identity& id,
                    const std::vector<std::string>& env) {
  std::string arg0 = "sh", arg1 = "-c", arg2 = command;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  std::vector<std::string> env_copy = env;
  std::vector<char*> envp;
  for (std::string& e : env_copy) envp.push_back(e.data());
  envp.push_back(nullptr);
  SpawnPlan plan{argv, envp.data(), &id};

  constexpr std::size_t kStackSize = 64 * 1024;
  void* stack = ::mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return {-1, -1, "mmap: " + errno_text(errno)};
  // No handler of ours may run in the child, on its stack and our memory.
  sigset_t all, saved;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pidfd = -1;
  const pid_t pid =
      ::clone(child_main, static_cast<char*>(stack) + kStackSize,
              CLONE_VM | CLONE_VFORK | CLONE_NEWPID | CLONE_PIDFD | SIGCHLD, &plan, &pidfd);
  const int err = errno;
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  ::munmap(stack, kStackSize);
  if (pid < 0) return {-1, -1, "clone(CLONE_NEWPID): " + errno_text(err)};
  if (plan.failed_step != nullptr) {
    ::waitpid(pid, nullptr, 0);  // it has exited already (CLONE_VFORK)
    ::close(pidfd);
    return {-1, -1, std::string(plan.failed_step) + ": " + errno_text(plan.error)};
  }
  return {pid, pidfd, {}};
}

// SIGKILL to the namespace's PID 1: the kernel kills the rest of the namespace with it.
void kill_child(pid_t pid) { ::kill(pid, SIGKILL); }

// Runs spawn_shell() on a thread of its own, one command at a time: clone(CLONE_VFORK)
// holds the calling thread until the child's execve(), and the io thread (the control
// thread) sends the heartbeats. On a loaded host that wait took up to 470 ms in the
// failover lab (the child scheduled late), long enough for the peers to stop acknowledging
// this node within its lease, which then stopped serving (issue 16).
class Spawner {
 public:
  // Names one started command until the io thread claims it.
  using Ticket = std::uint64_t;
  using Done = std::function<void(Ticket)>;

  Spawner() = default;
  Spawner(const Spawner&) = delete;
  Spawner& operator=(const Spawner&) = delete;
  // A command whose ticket was never claimed (the io thread stopped, or dropped the posted
  // handler unrun when its io_context was destroyed) is killed and reaped here: a result
  // in flight is never lost with its child.
  ~Spawner() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    for (auto& [ticket, child] : unclaimed_) reap(child);
  }

  // `done` runs on the spawner thread with the ticket that claim() exchanges for the result.
  void submit(std::string command, Identity id, std::vector<std::string> env, Done done) {
    {
      const std::lock_guard lock(mutex_);
      jobs_.push_back({std::move(command), std::move(id), std::move(env), std::move(done)});
      if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
    }
    wake_.notify_one();
  }

  // The result for `ticket`, once; the caller then owns the child and its pidfd.
  std::optional<Spawned> claim(Ticket ticket) {
    const std::lock_guard lock(mutex_);
    const auto it = unclaimed_.find(ticket);
    if (it == unclaimed_.end()) return std::nullopt;
    Spawned child = std::move(it->second);
    unclaimed_.erase(it);
    return child;
  }

  // Kills a started command (the whole namespace with it) and reaps it.
  static void reap(const Spawned& child) {
    if (child.pid <= 0) return;
    kill_child(child.pid);
    ::waitpid(child.pid, nullptr, 0);
    ::close(child.pidfd);
  }

 private:
  struct Job {
    std::string command;
    Identity id;
    std::vector<std::string> env;
    Done done;
  };

  void loop() {
    ::pthread_setname_np(::pthread_self(), "vf-spawner");
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;  // what is queued never started: nothing to kill
      Job job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      Spawned child = spawn_shell(job.command, job.id, job.env);
      lock.lock();
      const Ticket ticket = next_ticket_++;
      unclaimed_.emplace(ticket, std::move(child));
      if (stopping_) return;  // the destructor reaps it
      lock.unlock();
      job.done(ticket);
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  std::map<Ticket, Spawned> unclaimed_;
  Ticket next_ticket_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

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
    // custom: who runs the command, and its whole environment.
    const Identity identity =
        config.kind == config::CheckerKind::kCustom ? lookup_identity(config.user) : Identity{};
    const std::vector<std::string> environment = command_environment(config.env);
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
    const Identity& id = p.identity;
    if (!id.error.empty()) return finish(p, false, id.error);
    // kill(2) across users: the timeout could not end the command.
    if (id.uid != ::getuid() && id.uid != ::geteuid() && !has_effective_capability(CAP_KILL)) {
      return finish(p, false,
                    "user \"" + (p.config.user.empty() ? "nobody" : p.config.user) +
                        "\": killing its command at the timeout needs CAP_KILL");
    }
    // The command starts on the spawner thread; its result comes back here. A check that
    // was stopped meanwhile kills what it started; one whose handler never runs leaves it
    // to the spawner's destructor.
    spawner.submit(
        p.config.target, id, p.environment,
        [weak = weak_from_this(), &p, attempt = p.attempt, &io = io](Spawner::Ticket ticket) {
          asio::post(io, [weak, &p, attempt, ticket] {
            const std::shared_ptr<Impl> self = weak.lock();
            if (!self) return;  // the spawner reaped it
            const std::optional<Spawned> child = self->spawner.claim(ticket);
            if (!child) return;
            if (self->stopped || p.attempt != attempt) return Spawner::reap(*child);
            self->spawned(p, *child);
          });
        });
  }

  void spawned(Probe& p, const Spawned& child) {
    if (child.pid < 0) return finish(p, false, "spawn /bin/sh: " + child.error);
    p.child = child.pid;
    error_code ec;
    p.child_exit.emplace(io);
    p.child_exit->assign(child.pidfd, ec);
    if (ec) {
      ::close(child.pidfd);  // assign() did not take it
      return abandon_child(p, "pidfd: " + ec.message());
    }
    arm_deadline(p);
    wait_child(p);
  }

  // Without the pidfd we cannot wait without blocking; the command has barely started, so a
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
  Spawner spawner;  // destroyed (its thread joined) before the probes
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
