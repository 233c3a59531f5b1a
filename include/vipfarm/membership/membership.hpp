// Failure detection and view agreement for one node, as a pure state machine: no sockets,
// no clock. The caller (the control thread, or the simulation) passes the time in, hands
// over authenticated, fresh heartbeats, and sends what heartbeat() returns to every peer.
//
// A peer is alive while it has been heard within dead_after intervals. A node proposes the
// view {itself if UP} ∪ {alive peers that are UP, share its config fingerprint and are not
// held down for flapping}; in majority mode a partition without a strict majority of the
// configured nodes proposes the empty view, and so does a node that hears more live peers
// running another farm config (fingerprint) than its own (a tie keeps both sides serving
// their own view: neither merges the other). A proposal is installed once every member of it
// advertises the same proposal (agreement), or after agreement_timeout of proposing it
// unchanged (the bounded fallback for asymmetric links). Each installed view gets an epoch
// that agreeing nodes compute alike. A starting node installs nothing until it has heard
// every configured peer or dead_after intervals have passed.
//
// Leases: a node whose ticks stop (its process stopped, its control thread hung) keeps the
// last ownership its workers were given, while the others declare it dead and take its
// buckets. So the workers only accept VIP traffic under a lease the caller renews after
// every tick while lease_ok(); it lasts `lease` (default dead_after intervals, when the
// others can declare the node dead at the earliest). A tick that comes more than `lease`
// after the previous one finds the lease lapsed: the node then waits for a view agreed
// after the stall (its peers' silence during the stall does not count against them).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "vipfarm/membership/wire.hpp"

namespace vipfarm::membership {

using Nanos = std::int64_t;  // a monotonic time, injected
inline constexpr Nanos kMillis = 1'000'000;

enum class SplitBrain : std::uint8_t { kServe, kMajority };

struct Settings {
  Nanos interval = 100 * kMillis;  // between heartbeats
  unsigned dead_after = 8;         // intervals without a heartbeat
  Nanos agreement_timeout = 0;     // 0: 3 intervals
  SplitBrain split_brain = SplitBrain::kServe;
  unsigned flap_limit = 4;  // deaths within flap_window put a peer on hold
  Nanos flap_window = 60'000 * kMillis;
  Nanos hold_down = 30'000 * kMillis;
  std::size_t history = 64;  // installed views kept
  Nanos lease = 0;           // 0: dead_after intervals
  friend bool operator==(const Settings&, const Settings&) = default;
};

struct InstalledView {
  std::uint64_t epoch = 0;
  std::uint64_t members = 0;  // bit id-1
  Nanos at = 0;
  bool agreed = false;  // false: installed by the fallback
  std::string cause;    // "node 2 lost", "node 4 joined", ...
};

struct PeerStatus {
  bool alive = false;
  NodeState state = NodeState::kStop;
  Nanos last_heard = -1;  // -1: never
  std::uint64_t incarnation = 0;
  bool fingerprint_ok = true;
  bool held_down = false;
  std::vector<std::uint8_t> releasing;  // buckets it still releases (wire.hpp's release map)
  Fingerprint fingerprint{};            // its farm config's
  std::array<std::uint8_t, 6> mac{};    // its uplink MAC, from its heartbeats
  std::vector<std::uint16_t> weights;
};

class Membership {
 public:
  Membership(const Settings& settings, std::uint8_t self, std::uint64_t configured,
             std::uint64_t cluster, std::uint64_t incarnation, const Fingerprint& fingerprint,
             std::vector<std::uint16_t> weights);

  // This node's own state (from its checkers and the operator). Only UP nodes own buckets.
  void set_state(NodeState state) noexcept { state_ = state; }
  NodeState state() const noexcept { return state_; }
  // This node's weight in each group, advertised in its heartbeats (0: a group-bound
  // checker failed, the group's buckets leave the node).
  void set_weights(std::vector<std::uint16_t> weights) { weights_ = std::move(weights); }
  const std::vector<std::uint16_t>& weights() const noexcept { return weights_; }
  // The buckets in which this node still serves flows though it gave them up (flow handoff,
  // wire.hpp's release map; empty: none), advertised in heartbeats so each new owner knows
  // when it owns a bucket whole.
  void set_releasing(std::vector<std::uint8_t> map) { releasing_ = std::move(map); }
  // This node's uplink MAC, advertised in its heartbeats.
  void set_mac(const std::array<std::uint8_t, 6>& mac) noexcept { mac_ = mac; }
  // A reload changed the farm config (its rules): every peer is compared with the new one
  // at once, from the fingerprint of its last heartbeat.
  void set_fingerprint(const Fingerprint& fingerprint) noexcept {
    fingerprint_ = fingerprint;
    for (Peer& p : peers_) {
      if (p.last_heard >= 0) p.fingerprint_ok = p.fingerprint == fingerprint_;
    }
  }

  // New timers and policies (a reload): they apply from the next tick — a peer's deadline
  // is its last heartbeat plus the new dead_after intervals.
  void set_settings(const Settings& settings);
  const Settings& settings() const noexcept { return settings_; }

  // The next heartbeat to send to every peer (the sequence number advances).
  Heartbeat heartbeat(Nanos now);
  // An authenticated, fresh heartbeat from a configured peer.
  void receive(const Heartbeat& hb, Nanos now);
  // Failure detection and view agreement; call at least once per interval. Returns true
  // when a new view was installed by this call.
  bool tick(Nanos now);
  // majority mode: whether the witness answers; a partition of exactly half the configured
  // nodes serves only while it does.
  void set_witness(bool reachable) noexcept { witness_ = reachable; }

  // The ownership lease (membership.hpp header comment, "Leases"). False from a stall of
  // the caller (ticks further apart than the lease: SIGSTOP, a hung control thread) until
  // a view installed after it, or every member of the installed view confirmed it by a
  // heartbeat heard more than one interval after it (not one queued during the stall). While false,
  // the workers must not accept VIP traffic.
  bool lease_ok() const noexcept { return !lapsed_; }
  Nanos lease() const noexcept { return settings_.lease; }

  // True when the proposal or the installed view changed since the last heartbeat: send
  // one now rather than at the next interval (agreement, and the confirmation that lets
  // gained buckets be served, then take one network delay, not one interval).
  bool wants_heartbeat() const noexcept { return proposal_changed_; }

  const InstalledView& view() const noexcept { return history_.back(); }
  // The last installed view every other live node has been heard to install too (or whose
  // confirmation timed out, after agreement_timeout). A node serves the buckets it owns in
  // both view() and settled(): it gives up a bucket at once, and takes a bucket it gains
  // only once the node that loses it has installed the view. Buckets never have two
  // serving owners while heartbeats flow; a gain waits one message delay.
  std::uint64_t settled() const noexcept { return settled_; }
  const std::deque<InstalledView>& history() const noexcept { return history_; }
  std::uint64_t proposal() const noexcept { return proposal_; }
  const PeerStatus& peer(std::uint8_t id) const noexcept { return peers_[id]; }
  // The epoch of the view a peer last said it installed.
  std::uint64_t peer_epoch(std::uint8_t id) const noexcept { return peers_[id].epoch; }
  std::uint8_t self() const noexcept { return self_; }
  std::uint64_t incarnation() const noexcept { return incarnation_; }
  std::uint64_t configured() const noexcept { return configured_; }

 private:
  struct Peer : PeerStatus {
    std::uint64_t proposed = 0;
    std::uint64_t installed = 0;
    std::uint64_t epoch = 0;
    std::deque<Nanos> deaths;
    Nanos held_until = 0;
  };

  std::uint64_t propose(Nanos now);
  bool decide(Nanos now);
  bool confirmed() const noexcept;
  bool installed_by_all() const noexcept;
  bool larger_config_elsewhere() const noexcept;
  void install(std::uint64_t members, bool agreed, Nanos now);

  Settings settings_;
  std::uint8_t self_;
  std::uint64_t configured_;
  std::uint64_t cluster_;
  std::uint64_t incarnation_;
  Fingerprint fingerprint_;
  std::vector<std::uint16_t> weights_;
  NodeState state_ = NodeState::kWait;
  std::uint64_t sequence_ = 0;
  std::vector<Peer> peers_;  // by id, 0..64
  std::uint64_t proposal_ = 0;
  Nanos proposed_since_ = 0;
  bool proposal_changed_ = false;
  bool witness_ = false;
  std::vector<std::uint8_t> releasing_;
  std::array<std::uint8_t, 6> mac_{};
  bool lapsed_ = false;
  std::uint64_t settled_ = 0;
  Nanos lapsed_at_ = 0;
  Nanos last_tick_ = -1;
  Nanos started_ = 0;
  std::deque<InstalledView> history_;
};

}  // namespace vipfarm::membership
