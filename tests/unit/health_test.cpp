// Health checkers: the rise/fall debouncing on its own, then real checks (TCP on loopback,
// /bin/sh commands as root, sysfs links, ICMP when root) on an io_context run by the test.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "vipfarm/health/checkers.hpp"

namespace vipfarm::health {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using config::CheckerKind;
using Clock = std::chrono::steady_clock;

constexpr auto kPatience = 3s;  // how long any single expected state may take

TEST(HealthRiseFall, StartsUnhealthy) {
  RiseFall state(2, 2);
  EXPECT_FALSE(state.healthy());
  EXPECT_FALSE(state.record(false));
  EXPECT_FALSE(state.healthy());
}

TEST(HealthRiseFall, RisesThenFalls) {
  RiseFall state(2, 3);
  EXPECT_FALSE(state.record(true));
  EXPECT_TRUE(state.record(true));
  EXPECT_TRUE(state.healthy());
  EXPECT_FALSE(state.record(true));
  EXPECT_FALSE(state.record(false));
  EXPECT_FALSE(state.record(false));
  EXPECT_TRUE(state.record(false));
  EXPECT_FALSE(state.healthy());
}

TEST(HealthRiseFall, InterleavingsResetTheCount) {
  RiseFall state(3, 3);
  for (const bool result : {true, true, false, true, true}) EXPECT_FALSE(state.record(result));
  EXPECT_FALSE(state.healthy());
  EXPECT_TRUE(state.record(true));
  for (const bool result : {false, false, true, false, false}) EXPECT_FALSE(state.record(result));
  EXPECT_TRUE(state.healthy());
  EXPECT_TRUE(state.record(false));
  EXPECT_FALSE(state.healthy());
}

TEST(HealthRiseFall, ZeroCountsAsOne) {
  RiseFall state(0, 0);
  EXPECT_TRUE(state.record(true));
  EXPECT_TRUE(state.record(false));
}

config::Checker checker(CheckerKind kind, std::string target, std::uint32_t rise = 1,
                        std::uint32_t fall = 1) {
  config::Checker c;
  c.name = std::string(config::to_string(kind)) + ":" + target;
  c.kind = kind;
  c.target = std::move(target);
  c.interval_ms = 30;
  c.timeout_ms = 400;
  c.rise = rise;
  c.fall = fall;
  return c;
}

// Runs the loop until `done` holds; false if it still does not after kPatience.
bool run_until(asio::io_context& io, const std::function<bool()>& done) {
  const auto deadline = Clock::now() + kPatience;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    io.restart();
    io.run_for(10ms);
  }
  return true;
}

// Checkers on a private io_context, counting on_change calls.
class HealthCheckers : public ::testing::Test {
 protected:
  Checkers& make(std::vector<config::Checker> list) {
    checkers_.emplace(io_, std::move(list), [this] {
      ++changes_;
      node_history_.push_back(checkers_->node_healthy());
    });
    checkers_->start();
    return *checkers_;
  }
  Checkers::Status first() const { return checkers_->status().at(0); }
  bool checked(std::uint64_t n) const { return first().checks >= n; }

  asio::io_context io_;  // declared first: outlives the checkers' handlers
  int changes_ = 0;
  std::vector<bool> node_history_;  // node_healthy() seen by each on_change
  std::optional<Checkers> checkers_;
};

// Gone for good: neither running nor a zombie waiting to be reaped.
bool gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// A string that only this test's commands carry in their command lines. A custom command is
// PID 1 of its own PID namespace ($$ is 1 there), so tests find its processes in /proc, by
// their host pids.
std::string marker(const std::string& name) {
  return "vipfarm-health-" + std::to_string(::getpid()) + "-" + name;
}

// The processes whose /proc/PID/cmdline holds `mark`, this one excepted (zombies have none).
std::vector<pid_t> marked(const std::string& mark) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    const std::string cmdline{std::istreambuf_iterator<char>(in), {}};
    const pid_t pid = std::stoi(name);
    if (pid != ::getpid() && cmdline.find(mark) != std::string::npos) out.push_back(pid);
  }
  return out;
}

// Kills, on every way out of a test, what its commands left behind (the code under test
// should have left nothing).
struct KillMarked {
  std::string mark;
  ~KillMarked() {
    for (const pid_t pid : marked(mark)) ::kill(pid, SIGKILL);
  }
};

// Commands run as an unprivileged user by default, in a PID namespace: root only.
#define REQUIRE_ROOT() \
  if (::geteuid() != 0) GTEST_SKIP() << "custom checkers need root (a PID namespace, setuid)"

// A private directory that any user may write (a custom command runs as "nobody"); removed
// with everything in it.
class OpenDir {
 public:
  OpenDir() {
    std::string name = ::testing::TempDir() + "vipfarm-health-XXXXXX";
    if (::mkdtemp(name.data()) != nullptr) {
      path_ = name;
      std::filesystem::permissions(path_, std::filesystem::perms::all);
    }
  }
  OpenDir(const OpenDir&) = delete;
  OpenDir& operator=(const OpenDir&) = delete;
  ~OpenDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  bool ok() const { return !path_.empty(); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST_F(HealthCheckers, TcpFollowsTheListener) {
  asio::ip::tcp::acceptor listener(io_, {asio::ip::address_v4::loopback(), 0});
  const std::string target = "127.0.0.1:" + std::to_string(listener.local_endpoint().port());
  auto& checkers = make({checker(CheckerKind::kTcp, target, 2, 2)});
  ASSERT_TRUE(run_until(io_, [&] { return checkers.node_healthy(); }));
  EXPECT_EQ(changes_, 1);
  EXPECT_EQ(first().last_error, "");
  EXPECT_EQ(first().failures, 0U);

  listener.close();
  ASSERT_TRUE(run_until(io_, [&] { return !checkers.node_healthy(); }));
  EXPECT_EQ(changes_, 2);
  EXPECT_EQ(first().failures, 2U);
  EXPECT_EQ(first().last_error, "connect " + target + ": Connection refused");
}

TEST_F(HealthCheckers, TcpToAClosedPortFails) {
  // A port the kernel just handed out and nobody listens on.
  std::uint16_t port = 0;
  {
    asio::ip::tcp::acceptor probe(io_, {asio::ip::address_v4::loopback(), 0});
    port = probe.local_endpoint().port();
  }
  const std::string target = "127.0.0.1:" + std::to_string(port);
  auto& checkers = make({checker(CheckerKind::kTcp, target)});
  ASSERT_TRUE(run_until(io_, [&] { return checked(2); }));
  EXPECT_FALSE(checkers.node_healthy());
  EXPECT_EQ(first().failures, first().checks);
  EXPECT_EQ(first().last_error, "connect " + target + ": Connection refused");
  EXPECT_EQ(changes_, 0);
}

TEST_F(HealthCheckers, CustomTrueIsHealthy) {
  REQUIRE_ROOT();
  auto& checkers = make({checker(CheckerKind::kCustom, "true")});
  ASSERT_TRUE(run_until(io_, [&] { return checkers.node_healthy(); })) << first().last_error;
  EXPECT_EQ(first().last_error, "");
  EXPECT_GT(first().last_duration_s, 0.0);
}

TEST_F(HealthCheckers, CustomExitStatusFails) {
  REQUIRE_ROOT();
  auto& checkers = make({checker(CheckerKind::kCustom, "exit 3")});
  ASSERT_TRUE(run_until(io_, [&] { return checked(2); }));
  EXPECT_FALSE(checkers.node_healthy());
  EXPECT_EQ(first().last_error, "exit status 3");
}

TEST_F(HealthCheckers, CustomTimeoutKillsAndReaps) {
  REQUIRE_ROOT();
  const KillMarked leftovers{marker("timeout")};
  auto c = checker(CheckerKind::kCustom, "sleep 5; : " + leftovers.mark);
  c.timeout_ms = 100;
  c.interval_ms = 10'000;  // one check only
  make({c});
  ASSERT_TRUE(run_until(io_, [&] { return checked(1); }));
  EXPECT_EQ(first().last_error, "timeout after 100 ms");
  EXPECT_LT(first().last_duration_s, 1.0);
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);  // no child of ours left, not even a zombie
  EXPECT_EQ(errno, ECHILD);
  EXPECT_EQ(marked(leftovers.mark), std::vector<pid_t>{});
}

// A command that puts a grandchild in a session of its own (out of reach of a process-group
// kill) and outlives its timeout: the timeout result comes only once none of it is left.
// Every process carries the marker: the shells in their -c text, the sleeps through a link
// named after it.
TEST_F(HealthCheckers, CustomTimeoutKillsEveryDescendant) {
  REQUIRE_ROOT();
  const OpenDir dir;
  ASSERT_TRUE(dir.ok());
  const KillMarked leftovers{marker("setsid")};
  const std::string sleep = dir / (leftovers.mark + "-sleep");
  std::filesystem::create_symlink("/bin/sleep", sleep);
  const std::string ready = dir / "ready";
  auto c = checker(CheckerKind::kCustom,
                   "setsid sh -c 'touch " + ready + "; " + sleep + " 30; :' & " + sleep + " 30; :");
  c.timeout_ms = 1000;
  c.interval_ms = 100'000;  // one check only
  make({c});
  ASSERT_TRUE(run_until(io_, [&] { return checked(1); }));
  EXPECT_EQ(first().last_error, "timeout after 1000 ms");
  ASSERT_TRUE(std::filesystem::exists(ready)) << "the command never got to start its grandchild";
  // The kernel reports a PID 1's exit only once the rest of its namespace is gone.
  EXPECT_EQ(marked(leftovers.mark), std::vector<pid_t>{}) << "still running";
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

// A command that exits at once, leaving a daemon behind: the daemon dies with it.
TEST_F(HealthCheckers, CustomCommandLeavesNothingBehind) {
  REQUIRE_ROOT();
  const OpenDir dir;
  ASSERT_TRUE(dir.ok());
  const KillMarked leftovers{marker("daemon")};
  const std::string sleep = dir / (leftovers.mark + "-sleep");
  std::filesystem::create_symlink("/bin/sleep", sleep);
  auto c = checker(CheckerKind::kCustom, "setsid " + sleep + " 30 & exit 0");
  c.interval_ms = 100'000;
  auto& checkers = make({c});
  ASSERT_TRUE(run_until(io_, [&] { return checked(1); }));
  EXPECT_TRUE(checkers.node_healthy()) << first().last_error;
  EXPECT_EQ(marked(leftovers.mark), std::vector<pid_t>{});
}

// user = "nobody" (and the default): its ids and groups, no capability of any kind, no new
// privileges. "root" must be asked for, and has no capability either.
TEST_F(HealthCheckers, CustomRunsAsItsUserWithoutCapabilities) {
  REQUIRE_ROOT();
  const passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user \"nobody\" here";
  const OpenDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string report =
      "id -u; id -g; id -G; grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs):' "
      "/proc/self/status";
  auto as_nobody = checker(CheckerKind::kCustom, "(" + report + ") > " + (dir / "nobody"));
  as_nobody.user = "nobody";
  auto by_default = checker(CheckerKind::kCustom, "(" + report + ") > " + (dir / "default"));
  auto as_root =
      checker(CheckerKind::kCustom, "(id -u; grep ^CapEff: /proc/self/status) > " + (dir / "root"));
  as_root.user = "root";
  for (auto* c : {&as_nobody, &by_default, &as_root}) c->interval_ms = 100'000;
  auto& checkers = make({as_nobody, by_default, as_root});
  ASSERT_TRUE(run_until(io_, [&] {
    const auto s = checkers.status();
    return s[0].checks >= 1 && s[1].checks >= 1 && s[2].checks >= 1;
  }));
  for (const auto& s : checkers.status()) EXPECT_EQ(s.last_error, "") << s.name;
  const std::string ids = std::to_string(nobody->pw_uid) + "\n" + std::to_string(nobody->pw_gid);
  const std::string expected = ids + "\n" + std::to_string(nobody->pw_gid) +
                               "\n"
                               "CapInh:\t0000000000000000\n"
                               "CapPrm:\t0000000000000000\n"
                               "CapEff:\t0000000000000000\n"
                               "CapAmb:\t0000000000000000\n"
                               "NoNewPrivs:\t1\n";
  EXPECT_EQ(nobody->pw_uid, 65534U);
  EXPECT_EQ(slurp(dir / "nobody"), expected);
  EXPECT_EQ(slurp(dir / "default"), expected);
  EXPECT_EQ(slurp(dir / "root"), "0\nCapEff:\t0000000000000000\n");
}

// Nothing of the daemon's environment or descriptors: PATH and env exactly, stdin on
// /dev/null. /proc/self/environ read by the shell itself holds what it was started with.
TEST_F(HealthCheckers, CustomCommandGetsOnlyWhatIsDeclared) {
  REQUIRE_ROOT();
  const OpenDir dir;
  ASSERT_TRUE(dir.ok());
  ASSERT_EQ(::setenv("VIPFARM_HEALTH_LEAK", "1", 1), 0);
  const int leaked = ::open("/dev/null", O_RDONLY);  // not close-on-exec
  ASSERT_GE(leaked, 3);
  const std::string fds = "[ ! -e /proc/self/fd/" + std::to_string(leaked) +
                          " ] && [ \"$(readlink /proc/self/fd/0)\" = /dev/null ] && ";
  auto declared = checker(CheckerKind::kCustom, fds + "cat </proc/self/environ >" + (dir / "env"));
  declared.env = {"FOO=bar baz", "EMPTY=", "_x1=a=b"};
  auto own_path = checker(CheckerKind::kCustom, "cat </proc/self/environ >" + (dir / "path"));
  own_path.env = {"PATH=/bin"};
  for (auto* c : {&declared, &own_path}) c->interval_ms = 100'000;
  auto& checkers = make({declared, own_path});
  const bool done = run_until(io_, [&] {
    const auto s = checkers.status();
    return s[0].checks >= 1 && s[1].checks >= 1;
  });
  ::close(leaked);
  ::unsetenv("VIPFARM_HEALTH_LEAK");
  ASSERT_TRUE(done);
  for (const auto& s : checkers.status()) EXPECT_EQ(s.last_error, "") << s.name;
  using namespace std::string_literals;
  EXPECT_EQ(slurp(dir / "env"),
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin\0FOO=bar baz\0EMPTY=\0_x1=a=b\0"s);
  EXPECT_EQ(slurp(dir / "path"), "PATH=/bin\0"s);
}

TEST_F(HealthCheckers, StopAndDestroyReapRunningCommands) {
  REQUIRE_ROOT();
  const KillMarked stopped{marker("stop")};
  make({checker(CheckerKind::kCustom, "sleep 5; : " + stopped.mark)});
  ASSERT_TRUE(run_until(io_, [&] { return !marked(stopped.mark).empty(); }));
  const std::vector<pid_t> pids = marked(stopped.mark);
  checkers_->stop();
  for (const pid_t pid : pids) ASSERT_TRUE(run_until(io_, [&] { return gone(pid); }));
  EXPECT_EQ(first().checks, 0U);  // a stopped check records nothing
  EXPECT_EQ(changes_, 0);

  // Destroyed mid-check with the loop never run again: the last handler's end reaps it.
  const KillMarked destroyed{marker("destroy")};
  std::optional<asio::io_context> io(std::in_place);
  std::optional<Checkers> checkers(
      std::in_place, *io,
      std::vector{checker(CheckerKind::kCustom, "sleep 5; : " + destroyed.mark)}, nullptr);
  checkers->start();
  ASSERT_TRUE(run_until(*io, [&] { return !marked(destroyed.mark).empty(); }));
  const std::vector<pid_t> second = marked(destroyed.mark);
  checkers.reset();
  io.reset();
  for (const pid_t pid : second) EXPECT_TRUE(gone(pid));
}

TEST_F(HealthCheckers, InterfaceLoopbackIsUp) {
  auto& checkers = make({checker(CheckerKind::kInterface, "lo")});
  ASSERT_TRUE(run_until(io_, [&] { return checkers.node_healthy(); }));
}

TEST_F(HealthCheckers, InterfaceMissingFails) {
  auto& checkers = make({checker(CheckerKind::kInterface, "nosuchif0")});
  ASSERT_TRUE(run_until(io_, [&] { return checked(1); }));
  EXPECT_FALSE(checkers.node_healthy());
  EXPECT_EQ(first().last_error, "interface nosuchif0: no such interface");
}

TEST_F(HealthCheckers, PingLoopback) {
  if (::geteuid() != 0) GTEST_SKIP() << "raw ICMP sockets need root";
  const int fd = ::socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (fd < 0) GTEST_SKIP() << "no raw ICMP socket here (CAP_NET_RAW?)";
  ::close(fd);
  auto& checkers = make({checker(CheckerKind::kPing, "127.0.0.1", 2, 2)});
  ASSERT_TRUE(run_until(io_, [&] { return checkers.node_healthy(); })) << first().last_error;
  EXPECT_EQ(first().failures, 0U);
}

TEST_F(HealthCheckers, GroupBoundFailureSparesTheNode) {
  REQUIRE_ROOT();
  auto failing = checker(CheckerKind::kCustom, "exit 1");
  failing.group = 0;
  auto passing = checker(CheckerKind::kCustom, "true");
  passing.group = 1;
  auto& checkers = make({checker(CheckerKind::kInterface, "lo"), failing, passing});
  ASSERT_TRUE(run_until(io_, [&] {
    return checkers.node_healthy() && checkers.group_healthy(1) && checkers.status()[1].checks >= 2;
  }));
  EXPECT_FALSE(checkers.group_healthy(0));
  EXPECT_TRUE(checkers.group_healthy(7));  // nothing bound to it
  EXPECT_EQ(changes_, 2);                  // the node's and group 1's rises
}

TEST_F(HealthCheckers, NoCheckersMeansHealthy) {
  auto& checkers = make({});
  EXPECT_TRUE(checkers.node_healthy());
  EXPECT_TRUE(checkers.status().empty());
}

TEST_F(HealthCheckers, OnChangeFiresExactlyOnFlips) {
  REQUIRE_ROOT();
  const OpenDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string flag = dir / "flag";
  std::ofstream(flag).put('1');
  auto& checkers = make({checker(CheckerKind::kCustom, "test -e '" + flag + "'", 2, 2)});
  ASSERT_TRUE(run_until(io_, [&] { return checkers.node_healthy(); }));
  const auto risen_at = first().checks;
  EXPECT_EQ(risen_at, 2U);
  ASSERT_TRUE(run_until(io_, [&] { return checked(risen_at + 3); }));
  EXPECT_EQ(changes_, 1);

  std::filesystem::remove(flag);
  ASSERT_TRUE(run_until(io_, [&] { return !checkers.node_healthy(); }));
  const auto fallen_at = first().checks;
  ASSERT_TRUE(run_until(io_, [&] { return checked(fallen_at + 3); }));
  EXPECT_EQ(changes_, 2);
  EXPECT_EQ(node_history_, (std::vector<bool>{true, false}));
}

// A reload replaces the running set: a checker kept by name keeps its health and counters,
// a new one starts healthy and falls only after `fall` failures (never taking a serving
// node out before its check has really failed).
TEST_F(HealthCheckers, AReloadKeepsCheckersByNameAndStartsNewOnesHealthy) {
  REQUIRE_ROOT();
  auto kept = checker(CheckerKind::kCustom, "true", 2, 2);
  kept.name = "kept";
  auto& running = make({kept});
  ASSERT_TRUE(run_until(io_, [&] { return running.node_healthy() && checked(3); }));
  const std::vector<Checkers::Status> previous = running.status();
  running.stop();

  auto failing = checker(CheckerKind::kCustom, "exit 1", 2, 3);
  failing.name = "new";
  kept.interval_ms = 40;  // changed, same name: still the same checker
  int changes = 0;
  bool first_change_to = true;
  Checkers reloaded(
      io_, {kept, failing},
      [&] {
        if (changes++ == 0) first_change_to = false;
      },
      &previous);
  const auto at_start = reloaded.status();
  EXPECT_TRUE(at_start[0].healthy);
  EXPECT_EQ(at_start[0].checks, previous[0].checks);
  EXPECT_TRUE(at_start[1].healthy);
  EXPECT_EQ(at_start[1].checks, 0U);
  EXPECT_TRUE(reloaded.node_healthy());
  reloaded.start();
  ASSERT_TRUE(run_until(io_, [&] { return !reloaded.node_healthy(); }));
  EXPECT_EQ(reloaded.status()[1].failures, 3U);  // fell at its third failure, not before
  EXPECT_EQ(changes, 1);
  EXPECT_FALSE(first_change_to);
  EXPECT_TRUE(reloaded.status()[0].healthy);
  EXPECT_GT(reloaded.status()[0].checks, previous[0].checks);
  reloaded.stop();
}

}  // namespace
}  // namespace vipfarm::health
