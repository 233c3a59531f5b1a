// The membership protocol in the daemon, on the control thread's io_context: heartbeats over
// UDP (one socket per heartbeat network, TTL 255 out and checked in), the failure detector
// and view agreement (membership::Membership), the node's checkers, the ownership lease, and
// the admin commands nodes, view, history, state, stop and start.
#pragma once

#include <array>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vipfarm/config/config.hpp"
#include "vipfarm/health/checkers.hpp"
#include "vipfarm/membership/membership.hpp"
#include "vipfarm/ownership/ledger.hpp"

namespace vipfarm::control {

// What the metrics exporter shows; a copy taken under the service's lock.
struct MembershipStats {
  membership::NodeState state = membership::NodeState::kWait;
  std::uint64_t epoch = 0;
  std::uint64_t members = 0;
  bool lease_ok = false;
  std::uint64_t sent = 0;
  std::uint64_t send_errors = 0;
  std::uint64_t received = 0;
  std::array<std::uint64_t, membership::kRejectCount> rejected{};
  std::uint64_t views_installed = 0;
  struct Peer {
    unsigned id;
    std::string name;
    bool alive;
    membership::NodeState state;
    double last_heard_age_s;  // < 0: never heard
    bool fingerprint_ok;
    bool held_down;
    std::uint64_t incarnation;
  };
  std::vector<Peer> peers;
  // A Prometheus histogram of durations in seconds.
  struct Histogram {
    std::vector<double> bounds;          // upper bounds, ascending
    std::vector<std::uint64_t> buckets;  // cumulative count per bound
    std::uint64_t count = 0;
    double sum_s = 0;
    explicit Histogram(std::vector<double> upper)
        : bounds(std::move(upper)), buckets(bounds.size()) {}
    void observe(double seconds) {
      ++count;
      sum_s += seconds;
      for (std::size_t b = 0; b < bounds.size(); ++b) buckets[b] += seconds <= bounds[b] ? 1 : 0;
    }
  };
  // From this node first proposing a view change to installing it.
  Histogram convergence{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0}};
  // Failover: from the last heartbeat of a peer that died (not one that stopped or drained)
  // to this node installing a view without it: detection and agreement together.
  Histogram failover{{0.25, 0.5, 0.75, 0.9, 1.0, 1.5, 2.0, 5.0, 10.0}};
  std::vector<health::Checkers::Status> checkers;
};

class MembershipService {
 public:
  // Feeds `ledger` with the views, weights, handoff state and lease it agrees with its
  // peers; `mac` is this node's uplink MAC, in its heartbeats.
  MembershipService(boost::asio::io_context& io, const config::Config& config,
                    ownership::Ledger& ledger, const MacAddr& mac);
  ~MembershipService();
  MembershipService(const MembershipService&) = delete;
  MembershipService& operator=(const MembershipService&) = delete;

  // Reads the keys, opens the sockets, starts checkers and the heartbeat timer. Call on the
  // io thread or before it runs, once the node's addresses exist. Returns an error text.
  std::string start();
  void stop();

  // The admin commands this service answers (api/commands.hpp declares them).
  nlohmann::json nodes() const;
  nlohmann::json view(const nlohmann::json& request) const;
  nlohmann::json history() const;
  nlohmann::json state() const;
  // stop, start and resume: the operator's STOP (or its end, also of a drain).
  nlohmann::json set_stopped(bool stopped);
  // Leave the view but keep serving this node's connections (flow handoff) until they end
  // or `request`'s timeout_s (default [flows] window); then STOP. NLB's drainstop.
  nlohmann::json drain(const nlohmann::json& request);
  // Re-reads the cluster keys of `membership` (key rotation without a restart); on any
  // error the running keys stay. Returns an error text, empty on success.
  std::string reload_keys(const config::Membership& membership);
  // Hot reload of everything reloadable that the service runs (call after reload_keys
  // succeeded): timers and policies (membership.interval_ms, dead_after, agreement_timeout_ms,
  // split_brain, flap_*, hold_down, lease_ms) from the next tick; the witness; the checkers
  // (kept by name with their health, new ones start healthy); this node's weights
  // (advertised at once; the buckets move through flow handoff, gains held until every member
  // has heard the change);
  // and the farm fingerprint (a rule, group or policy change: until the other nodes have
  // the same, the farm treats this node as running another config, docs/handoff.md).
  void apply(const config::Config& next);

  // The node's own path to its kernel is broken (`reason`; HostPath), or whole again ("").
  // The node steps aside meanwhile (Membership::set_path_down). On the io thread.
  void set_path_down(const std::string& reason);

  // Adds membership fields (state, epoch, lease) to the status reply.
  void annotate_status(nlohmann::json& status) const;

  MembershipStats stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace vipfarm::control
