// Failure detection and view agreement for one node, as a pure state machine: no sockets,
// no clock. The caller (the control thread, or the simulation) passes the time in, hands
// over authenticated, fresh heartbeats, and sends what heartbeat() returns to every peer.
// docs/membership.md states the contract and the rules; in short:
//
// - Liveness is mutual. Heartbeats carry the heard list (every peer heard, the sequence of
//   its newest heartbeat, and whether the sender counts it mutual, supports its lease, holds
//   it down). A peer is *mutual* when it was heard within dead_after intervals and its newest
//   heartbeat acknowledges one of ours sent within that time. A one-way link or a deaf node
//   is so excluded by both sides alike.
// - A node proposes the largest set of mutually connected candidates (itself if UP, mutual
//   peers that are UP, share its fingerprint and are held down by nobody), pruned to a
//   clique with the rows its peers send. It steps aside (proposes the empty view) when a
//   peer holds it down or when a peer it hears proposes a view without it that beats its own
//   (more members; equal sizes: the lower ids): a node that hears its peers but is not heard
//   stays out instead of forming a view of its own beside theirs.
// - A proposal without this node is installed at once (giving up is always safe). A proposal
//   with it needs agreement: every member proposes the same, and every live peer outside it
//   concedes (serves nothing, or proposes a view without us that ours beats). No timeout
//   ever installs a view a live member has not agreed to.
// - Settled views: a node takes the buckets it gains only once its installed view is *clear*
//   at every member (and in majority mode at a majority): every node that could still serve
//   them has installed it, serves nothing, or has gone without this node's lease support for
//   a whole lease. Installs and clears are announced at once.
// - Leases: a node serves only until `lease` after the send time of the newest of its
//   heartbeats that a member of its view (and in majority mode a majority of the nodes)
//   acknowledged in a heartbeat that supports it; gains wait for clearance, which no peer
//   gives within a lease of its last support to the loser. A peer stops
//   supporting a node whose acknowledgements are older than ack_window; dead_after is
//   ack_window + lease, so the lease ends before any peer can exclude the node and its
//   buckets move: a crashed, stalled, mute or deaf node stops serving first. A node alone in
//   its view (serve mode) needs no acknowledgement.
// - A starting or resumed node (its ticks were more than a lease apart) installs no view
//   with itself until every configured peer is mutual or dead_after has passed, and serves
//   nothing meanwhile.
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
inline constexpr Nanos kNever = INT64_MIN / 2;
inline constexpr Nanos kForever = INT64_MAX / 2;

enum class SplitBrain : std::uint8_t { kServe, kMajority };

struct Settings {
  Nanos interval = 100 * kMillis;  // between heartbeats
  unsigned dead_after = 8;         // intervals without a heartbeat
  Nanos agreement_timeout = 0;     // 0: 3 intervals; how long a proposal waits before the
                                   // daemon reports it as not agreed (it is never forced)
  SplitBrain split_brain = SplitBrain::kServe;
  unsigned flap_limit = 4;  // deaths within flap_window put a peer on hold
  Nanos flap_window = 60'000 * kMillis;
  Nanos hold_down = 30'000 * kMillis;
  std::size_t history = 64;  // installed views kept
  Nanos lease = 0;           // 0 or more than dead_after - ack_window: that
  Nanos ack_window = 0;      // 0: 3 intervals (at most half of dead_after)
  friend bool operator==(const Settings&, const Settings&) = default;
};

struct InstalledView {
  std::uint64_t epoch = 0;
  std::uint64_t members = 0;  // bit id-1
  Nanos at = 0;
  bool agreed = false;  // false: given up alone (this node is not a member)
  std::string cause;    // "node 2 lost", "node 4 joined", ...
};

struct PeerStatus {
  bool alive = false;   // heard within dead_after
  bool mutual = false;  // alive, and it hears this node
  NodeState state = NodeState::kStop;
  Nanos last_heard = -1;  // -1: never
  std::uint64_t incarnation = 0;
  bool fingerprint_ok = true;
  bool held_down = false;               // by this node or by a mutual peer
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
  void set_weights(std::vector<std::uint16_t> weights) {
    if (weights != weights_) weights_seq_ = sequence_ + 1;  // the next heartbeat carries them
    weights_ = std::move(weights);
  }
  // Whether every live member of the installed view has heard every member's current
  // weights (its heard list names a heartbeat of that member at or after the one that
  // first carried them): a node applies a weight change when it hears it, so from then on
  // the buckets a change moves are given up everywhere and may be taken.
  bool weights_acknowledged() const noexcept;
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
  // This node's own path to its peers is broken (`reason`: the data plane's exception path
  // stalled, its TAP gone): the peers' silence meanwhile is its own, so none is declared
  // dead; once it has lasted a lease (before any peer can exclude this node) it proposes the
  // empty view and so serves nothing. When the reason clears (empty), it resumes as from a
  // stall: a node that stepped aside installs no view with itself until every configured
  // peer is mutual again or dead_after has passed.
  void set_path_down(const std::string& reason, Nanos now);
  const std::string& path_down() const noexcept { return path_down_; }
  // majority mode: whether the witness answers; a partition of exactly half the configured
  // nodes serves only while it does.
  void set_witness(bool reachable) noexcept { witness_ = reachable; }

  // The ownership lease (header comment, "Leases"): the workers may accept VIP traffic
  // until this time (kNever: not at all), as of the last tick or heartbeat received.
  Nanos lease_until() const noexcept { return lease_until_; }
  bool lease_ok(Nanos now) const noexcept { return now < lease_until_; }
  Nanos lease() const noexcept { return settings_.lease; }
  // Each member's newest supporting acknowledgement, for the log when the lease lapses:
  // "node 2: 612 ms ago, heard 12 ms ago, acked 612 ms ago; node 3: no support".
  std::string lease_detail(Nanos now) const;

  // True when the proposal, the installed view or its clearance changed since the last
  // heartbeat, or a peer's lease renewal waits for one (membership.cpp, answer()): send
  // one now rather than at the next interval.
  bool wants_heartbeat(Nanos now) const noexcept;

  const InstalledView& view() const noexcept { return history_.back(); }
  // The last installed view that was clear at every member (header comment). A node serves
  // the buckets it owns in both view() and settled(): it gives up a bucket at once, and
  // takes a bucket it gains only once nobody else can still be serving it.
  std::uint64_t settled() const noexcept { return settled_; }
  // Whether the installed view is clear here (advertised in heartbeats).
  bool clear() const noexcept { return clear_; }
  const std::deque<InstalledView>& history() const noexcept { return history_; }
  std::uint64_t proposal() const noexcept { return proposal_; }
  // Why this node proposes the empty view although UP ("" when it does not).
  const std::string& aside() const noexcept { return aside_; }
  const PeerStatus& peer(std::uint8_t id) const noexcept { return peers_[id]; }
  // The epoch of the view a peer last said it installed.
  std::uint64_t peer_epoch(std::uint8_t id) const noexcept { return peers_[id].epoch; }
  std::uint8_t self() const noexcept { return self_; }
  std::uint64_t incarnation() const noexcept { return incarnation_; }
  std::uint64_t configured() const noexcept { return configured_; }
  // The first sequence number of an incarnation (wire.hpp).
  static std::uint64_t first_sequence(std::uint64_t incarnation) noexcept;

 private:
  struct Peer : PeerStatus {
    std::uint64_t sequence = 0;  // the newest heard
    std::uint64_t proposed = 0;
    std::uint64_t installed = 0;
    std::uint64_t epoch = 0;
    bool clear = false;
    std::uint64_t mutual_row = 0;               // whom it counts mutual
    std::uint64_t holds = 0;                    // whom it holds down
    bool hears_me = false;                      // its newest heartbeat lists this node
    std::uint64_t weights_seq = 0;              // its first heartbeat with its current weights
    std::array<std::uint64_t, 65> heard_seq{};  // the sequences its heard list names
    bool holds_me = false;
    Nanos acked_at = kNever;        // send time of our newest heartbeat it acknowledged
    Nanos lease_ack = kNever;       // the same, from a heartbeat supporting our lease
    Nanos supported_sent = kNever;  // when we last sent it a heartbeat supporting its lease
    bool supported_last = false;    // whether our last heartbeat did
    std::deque<Nanos> deaths;
    Nanos held_until = 0;
  };
  struct Sent {
    std::uint64_t sequence;
    Nanos at;
  };

  void answer(const Peer& p, bool supports_me, Nanos now) noexcept;
  void update_peers(Nanos now);
  std::uint64_t propose(Nanos now);
  std::uint64_t prune(std::uint64_t candidates) const noexcept;
  bool concedes(unsigned id, std::uint64_t proposal) const noexcept;
  bool decide(Nanos now);
  bool is_clear(Nanos now) const noexcept;
  void settle(Nanos now);
  void compute_lease(Nanos now);
  bool larger_config_elsewhere() const noexcept;
  unsigned quorum() const noexcept;
  void install(std::uint64_t members, bool agreed, Nanos now);
  // Within dead_after of a start or a stall's end, while some configured peer is not
  // mutual: no view with this node is installed.
  bool guarded(Nanos now) const noexcept;
  Nanos dead_after() const noexcept { return settings_.interval * settings_.dead_after; }

  Settings settings_;
  std::uint8_t self_;
  std::uint64_t configured_;
  std::uint64_t cluster_;
  std::uint64_t incarnation_;
  Fingerprint fingerprint_;
  std::vector<std::uint16_t> weights_;
  std::uint64_t weights_seq_ = 0;  // our first heartbeat with the current weights
  NodeState state_ = NodeState::kWait;
  std::uint64_t sequence_;
  std::deque<Sent> sent_;     // our heartbeats of the last dead_after, to date acknowledgements
  std::vector<Peer> peers_;   // by id, 0..64
  std::uint64_t mutual_ = 0;  // whom this node counts mutual
  std::uint64_t proposal_ = 0;
  Nanos proposed_since_ = 0;
  bool changed_ = false;
  bool answer_ = false;  // a peer's lease renewal waits for a heartbeat (answer())
  Nanos last_sent_ = kNever;
  bool witness_ = false;
  std::vector<std::uint8_t> releasing_;
  std::array<std::uint8_t, 6> mac_{};
  std::uint64_t settled_ = 0;
  bool clear_ = false;
  Nanos lease_until_ = kNever;
  Nanos last_tick_ = -1;
  Nanos guard_since_ = 0;  // start, or the end of a stall
  std::string aside_;
  std::string path_down_;
  Nanos path_down_since_ = 0;
  std::deque<InstalledView> history_;
};

}  // namespace vipfarm::membership
