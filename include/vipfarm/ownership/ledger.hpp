// Ownership: the one place that turns a view into the buckets this node serves. It takes the
// membership's view and weights, the peers' handoff state, the lease, reloads and the admin
// view; derives the assignment and the flow handoff (docs/handoff.md); and publishes at most
// one snapshot per commit() to a SnapshotSink (the data plane, or a test's fake). No DPDK,
// no sockets, no clock of its own: time is a parameter.
//
// Thread safety: the mutators run on the control thread; the readers (admin API, metrics
// exporter, the main lcore's announcements) may run on any thread. A mutex guards the state;
// the sink never blocks, so it is never held for long.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "vipfarm/config/config.hpp"
#include "vipfarm/ownership/snapshot.hpp"

namespace vipfarm::ownership {

// Per node id (0..64), the node's weight in each group as it advertises it; an empty entry
// means the configured weights.
using NodeWeights = std::vector<std::vector<std::uint16_t>>;

// The membership's installed view, as ownership needs it.
struct ViewInput {
  config::ViewMask members = 0;  // the view's members
  NodeWeights weights;           // advertised weights, by node id
  // Membership's settled view (membership.hpp): the workers take only the buckets this node
  // owns both in `members` and in it. Equal to `members` when nothing is unsettled.
  config::ViewMask settled = 0;
  config::ViewMask alive = 0;  // the nodes alive now, this one included
  // Every member's heartbeat shows it heard this node's weights (the gains of a weight
  // change wait for it).
  bool weights_acknowledged = true;
};

// A peer as the flow handoff sees it, from its heartbeats.
struct PeerHandoff {
  NodeId id{};
  bool alive = false;
  bool has_view = false;                // it installed this node's view, or a later one
  std::vector<std::uint8_t> releasing;  // its release map (membership/wire.hpp)
};

// What one call changed.
struct Change {
  bool applied = false;     // the assignment was derived again
  std::uint32_t moved = 0;  // buckets that changed owner, in any group
  bool reweighted = false;  // the advertised weights changed
};

// One step of the flow handoff (progress_handoff()).
struct HandoffProgress {
  std::vector<std::uint8_t> release_map;  // the buckets this node still releases: its heartbeats'
  std::size_t released = 0;               // given-up buckets released now ...
  std::uint64_t cut = 0;                  // ... with this many flows cut (the window passed)
  std::size_t held = 0;                   // given-up buckets still serving flows
  std::size_t whole = 0;                  // taken buckets served as usual from now on
  std::size_t waiting = 0;                // taken buckets still waiting for their old owners
  bool expired = false;                   // the handoff window passed
};

struct GroupShare {
  std::string name;
  std::uint32_t owned;  // buckets this node owns
  std::uint32_t buckets;
};

class Ledger {
 public:
  using Clock = std::chrono::steady_clock;

  // `own_mac`: this node's uplink MAC (directed VIPs forward with the nodes' MACs).
  Ledger(const config::Config& config, SnapshotSink& sink, const MacAddr& own_mac);
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // A view the membership installed: the assignment is derived again.
  Change install(const ViewInput& view, Clock::time_point now);
  // The same installed view, each tick: derived again only when the weights, the settled
  // view or the farm config (a reload) changed, or a weight change's gains may now be taken.
  // The buckets a node gains by a weight change wait until every member has heard the change
  // (weights are not agreed like views: each node applies a change when it hears it).
  Change follow(const ViewInput& view, Clock::time_point now);
  // A view as is: without [membership] (every configured node, or the admin's `view set`).
  // No node is known alive then: the buckets gained are served whole at once, and those
  // given up are released by progress_handoff() as their flows end.
  std::uint32_t set_static_view(config::ViewMask view, Clock::time_point now);

  // Hot reload: `next` becomes the running config (vipfarmd refuses a file that changes a
  // restart-only key, config::reload_refusal). What it changes reaches the workers at the next
  // commit (rules, unmatched, icmp_echo, flow timeouts and window); the assignment (groups'
  // modes, members, weights) follows at the next view change, follow() or set_static_view().
  void set_farm(const config::Config& next);
  // Derive the assignment again at the next follow() (a reload on a node alone: with live
  // peers, the farm fingerprint's change makes a new view instead, docs/handoff.md).
  void reassign();

  // A node's uplink MAC (heard in its heartbeats): directed VIPs forward to it.
  void set_node_mac(NodeId node, const MacAddr& mac);

  // Flow handoff, bucket by bucket: a bucket given up is released once the workers track no
  // flow in it (or the window passed); a bucket taken becomes whole once every live peer that
  // installed this view leaves it out of its release map (or the window passed). Nothing is
  // taken whole while a weight change's gains wait. Directed VIPs also learn who releases what.
  HandoffProgress progress_handoff(const std::vector<PeerHandoff>& peers, Clock::time_point now);
  // Ends every release at once (the end of a drain); returns the flows cut.
  std::uint64_t release_all();

  // The ownership lease: held for `remaining`, or lapsed (nullopt).
  void set_lease(std::optional<std::chrono::nanoseconds> remaining) noexcept;

  // Publishes one snapshot if anything changed since the last commit; returns whether.
  bool commit();

  // Readers.
  config::ViewMask view() const;
  std::uint64_t generation() const;  // of the last snapshot committed
  std::vector<GroupShare> shares() const;
  std::vector<std::uint32_t> owned_by(NodeId node) const;  // buckets per group
  std::vector<std::vector<NodeId>> owners() const;         // per group, per bucket
  std::optional<NodeId> owner(std::uint16_t group, BucketId bucket) const;
  struct Handoff {
    std::vector<Bucket> taking;     // gained: new connections only, until whole
    std::vector<Bucket> releasing;  // given up: the flows this node tracks stay
    Clock::time_point deadline;     // the window's end
  };
  Handoff handoff() const;
  // The MAC directed VIPs forward to for `node` (its heartbeats', else the configured one).
  std::optional<MacAddr> node_mac(NodeId node) const;
  // Whether this node answers `requester`'s ARP / neighbour solicitations for directed VIP
  // `vip` under the published ownership (docs/directed.md).
  bool answers_requester(std::uint16_t vip, const IpAddr& requester) const;
  // The running config: the start-up file plus what reloads applied. The one copy that
  // reload compares a new file with.
  config::Config farm() const;

  // Set on every publication; the main lcore announces the VIPs and clears it.
  std::atomic<bool> announce_requested{false};

 private:
  // The (group, bucket) pairs in `set` (taking_ or releasing_; none when it is empty).
  std::vector<Bucket> buckets_of(const packet::Ownership& set) const;
  std::vector<std::vector<NodeId>> assign(config::ViewMask members,
                                          const NodeWeights& weights) const;
  std::uint32_t apply_locked(config::ViewMask view, const NodeWeights& weights,
                             config::ViewMask settled, config::ViewMask alive,
                             const NodeWeights* held_weights, Clock::time_point now);

  SnapshotSink& sink_;
  const bool directed_;  // some VIP is directed: the snapshot carries owners and MACs
  mutable std::mutex mutex_;
  config::Config config_;  // the running config (set_farm)
  config::ViewMask view_ = 0;
  std::uint64_t generation_ = 0;
  bool dirty_ = false;                           // changed since the last commit()
  std::vector<std::vector<NodeId>> owners_;      // per group, per bucket
  packet::Ownership ownership_;                  // what the workers accept
  packet::Ownership taking_, releasing_;         // flow handoff; empty() without it
  std::optional<packet::Classifier> published_;  // the classifier last published (directed)
  packet::Ownership published_ownership_;
  std::array<std::uint64_t, kMaxNodes + 1> node_macs_{};
  std::vector<std::uint64_t> releasers_;
  Clock::time_point handoff_deadline_{};
  // follow()'s memory: what the assignment was last derived from.
  NodeWeights applied_weights_;
  config::ViewMask applied_settled_ = 0;
  NodeWeights held_weights_;      // before a weight change, while its gains wait
  bool holding_weights_ = false;  // a weight change's gains wait for its acknowledgement
  bool reassign_ = false;         // a reload changed the farm config: derive again
};

}  // namespace vipfarm::ownership
