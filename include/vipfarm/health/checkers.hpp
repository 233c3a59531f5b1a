// This node's health checkers (SafeKit's tcp, ping, interface and custom): each one runs
// periodically on the control thread's io_context, and rise/fall debounces its results.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vipfarm/config/config.hpp"

namespace vipfarm::health {

// Debounces check results: healthy after `rise` consecutive successes, failed again after
// `fall` consecutive failures. It starts failed, so a node stays WAIT until its checkers
// have risen (a reload starts new checkers healthy: see Checkers). A rise or fall of 0
// counts as 1.
class RiseFall {
 public:
  RiseFall(unsigned rise, unsigned fall, bool healthy = false) noexcept;

  // Returns true when healthy() changed.
  bool record(bool success) noexcept;
  bool healthy() const noexcept { return healthy_; }

 private:
  unsigned rise_;
  unsigned fall_;
  unsigned streak_ = 0;  // consecutive results that contradict the current state
  bool healthy_ = false;
};

// Runs every checker on `io`, one check of each at a time, without blocking the loop or
// starting threads. Construct, start(), stop() and destroy it on the io_context's thread or
// while that io_context is not running; status(), node_healthy() and group_healthy() may be
// called from any thread. The io_context must outlive it.
// A custom checker's command runs as its user (config::Checker::user, looked up here), with
// its env only, as PID 1 of its own PID namespace. That takes CAP_SYS_ADMIN, CAP_SETUID,
// CAP_SETGID, and CAP_KILL for a user other than the daemon's; without them each check
// fails, naming the step that was refused.
class Checkers {
 public:
  struct Status {
    std::string name;
    config::CheckerKind kind;
    std::string target;
    std::optional<std::size_t> group;
    bool healthy;
    std::uint64_t checks;
    std::uint64_t failures;
    std::string last_error;  // of the latest check; empty when it succeeded
    double last_duration_s;
  };

  // `on_change` runs on the io thread whenever a checker becomes healthy or failed.
  // `previous` (a reload replacing a running set): a checker whose name is there keeps its
  // health and counters; any other starts healthy, so adding a checker to a serving node
  // takes it out only once the new check has failed `fall` times. Without `previous`
  // (start-up) every checker starts failed and must rise.
  Checkers(boost::asio::io_context& io, std::vector<config::Checker> checkers,
           std::function<void()> on_change, const std::vector<Status>* previous = nullptr);
  Checkers(const Checkers&) = delete;
  Checkers& operator=(const Checkers&) = delete;
  ~Checkers();

  // Runs the first check of each checker at once, then one every interval_ms.
  void start();
  // Cancels the timers, closes the sockets and kills running commands (SIGKILL, which takes
  // every process of their namespace with them); they are reaped when the loop next runs, or
  // at the latest when the last handler is destroyed.
  // No status changes and no on_change calls after it.
  void stop();

  std::vector<Status> status() const;
  // Every checker bound to no group is healthy (true when there are none).
  bool node_healthy() const;
  // Every checker bound to `group` is healthy (true when there are none).
  bool group_healthy(std::size_t group) const;

 private:
  struct Impl;
  // Shared with the pending Asio operations, which may complete after this object is gone.
  std::shared_ptr<Impl> impl_;
};

}  // namespace vipfarm::health
