// Health checkers: the rise/fall debouncing on its own, then real checks (TCP on loopback,
// /bin/sh commands, sysfs links, ICMP when root) on an io_context run by the test.
#include <gtest/gtest.h>
#include <netinet/in.h>
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
#include <optional>
#include <string>
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

  std::string temp_path(const std::string& name) const {
    return ::testing::TempDir() + "vipfarm-health-" + std::to_string(::getpid()) + "-" + name;
  }

  asio::io_context io_;  // declared first: outlives the checkers' handlers
  int changes_ = 0;
  std::vector<bool> node_history_;  // node_healthy() seen by each on_change
  std::optional<Checkers> checkers_;
};

// The pid a command wrote into `path`, or -1.
pid_t read_pid(const std::string& path) {
  std::ifstream in(path);
  pid_t pid = -1;
  in >> pid;
  return in ? pid : -1;
}

// Gone for good: neither running nor a zombie waiting to be reaped.
bool gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

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
  auto& checkers = make({checker(CheckerKind::kCustom, "true")});
  ASSERT_TRUE(run_until(io_, [&] { return checkers.node_healthy(); }));
  EXPECT_EQ(first().last_error, "");
  EXPECT_GT(first().last_duration_s, 0.0);
}

TEST_F(HealthCheckers, CustomExitStatusFails) {
  auto& checkers = make({checker(CheckerKind::kCustom, "exit 3")});
  ASSERT_TRUE(run_until(io_, [&] { return checked(2); }));
  EXPECT_FALSE(checkers.node_healthy());
  EXPECT_EQ(first().last_error, "exit status 3");
}

TEST_F(HealthCheckers, CustomTimeoutKillsAndReaps) {
  const std::string pid_file = temp_path("timeout.pid");
  auto c = checker(CheckerKind::kCustom, "echo $$ > '" + pid_file + "'; exec sleep 5");
  c.timeout_ms = 100;
  c.interval_ms = 10'000;  // one check only
  make({c});
  ASSERT_TRUE(run_until(io_, [&] { return checked(1); }));
  EXPECT_EQ(first().last_error, "timeout after 100 ms");
  EXPECT_LT(first().last_duration_s, 1.0);
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);  // no child of ours left, not even a zombie
  EXPECT_EQ(errno, ECHILD);
  const pid_t pid = read_pid(pid_file);
  if (pid > 0) {
    EXPECT_TRUE(gone(pid));
  }
  std::filesystem::remove(pid_file);
}

TEST_F(HealthCheckers, StopAndDestroyReapRunningCommands) {
  const std::string pid_file = temp_path("stop.pid");
  make({checker(CheckerKind::kCustom, "echo $$ > '" + pid_file + "'; exec sleep 5")});
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(pid_file) > 0; }));
  const pid_t pid = read_pid(pid_file);
  checkers_->stop();
  ASSERT_TRUE(run_until(io_, [&] { return gone(pid); }));
  EXPECT_EQ(first().checks, 0U);  // a stopped check records nothing
  EXPECT_EQ(changes_, 0);
  std::filesystem::remove(pid_file);

  // Destroyed mid-check with the loop never run again: the last handler's end reaps it.
  const std::string second_file = temp_path("destroy.pid");
  std::optional<asio::io_context> io(std::in_place);
  std::optional<Checkers> checkers(
      std::in_place, *io,
      std::vector{checker(CheckerKind::kCustom, "echo $$ > '" + second_file + "'; exec sleep 5")},
      nullptr);
  checkers->start();
  ASSERT_TRUE(run_until(*io, [&] { return read_pid(second_file) > 0; }));
  const pid_t second = read_pid(second_file);
  checkers.reset();
  io.reset();
  EXPECT_TRUE(gone(second));
  std::filesystem::remove(second_file);
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
  const std::string flag = temp_path("flag");
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
