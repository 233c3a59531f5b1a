// The control side of the daemon: the current view and its snapshot, and the admin API's
// commands (status, buckets, owner, view, counters). Runs on the control thread; the
// metrics exporter reads it from its own threads, hence the mutex (never on the packet path).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "vipfarm/config/config.hpp"
#include "vipfarm/dataplane/dataplane.hpp"

namespace vipfarm::control {

struct GroupShare {
  std::string name;
  std::uint32_t owned;  // buckets this node owns
  std::uint32_t buckets;
};

class Control {
 public:
  Control(const config::Config& config, dataplane::Dataplane& dataplane);

  // Per node id (0..64), the node's weight in each group as it advertises it; an empty
  // entry means the configured weights.
  using NodeWeights = std::vector<std::vector<std::uint16_t>>;

  // Computes the assignment for `view`, publishes it to the workers (RCU) and returns how
  // many buckets changed owner in any group. With `settled` (membership's settled view,
  // membership.hpp), the workers take only the buckets this node owns in both views.
  // With flow handoff ([flows] handoff, docs/handoff.md) a bucket gained from a node in
  // `alive` is taken for new connections only, and a bucket given up keeps serving the
  // flows this node tracks there, until end_handoff(). With `held_weights` (a weight
  // change not yet heard by every node), buckets gained by the new weights wait too.
  std::uint32_t set_view(config::ViewMask view, const NodeWeights& weights = {},
                         std::optional<config::ViewMask> settled = std::nullopt,
                         config::ViewMask alive = 0, const NodeWeights* held_weights = nullptr);

  using Bucket = std::pair<std::uint16_t, BucketId>;  // (group, bucket)
  struct Handoff {
    std::vector<Bucket> taking;                      // gained: new connections only, until settled
    std::vector<Bucket> releasing;                   // given up: the flows this node tracks stay
    std::chrono::steady_clock::time_point deadline;  // the window's end
  };
  Handoff handoff() const;
  // Ends the handoff of some buckets: `released` (given up, their flows gone or the window
  // passed) stop being served; `whole` (gained, their previous owner released them or died,
  // or the window passed) are served as usual from now on.
  void settle_handoff(const std::vector<Bucket>& released, const std::vector<Bucket>& whole);

  // Hot reload (vipfarmd's reload()): takes `next`'s reloadable farm keys (cluster.unmatched,
  // cluster.icmp_echo, each group's mode, members, weights and rules; the groups themselves
  // are the same) and its [flows] window and timeouts. The workers classify with them from
  // the next burst; the assignment follows at the next set_view().
  void set_farm(const config::Config& next);

  // A node's uplink MAC (heard in its heartbeats): directed VIPs forward to it. No-op when
  // unchanged.
  void set_node_mac(NodeId node, const MacAddr& mac);
  // The MAC directed VIPs forward to for `node` (its heartbeats', else the configured one);
  // nullopt when neither is known.
  std::optional<MacAddr> node_mac(NodeId node) const;
  // Directed VIPs during a handoff: per bucket (group * buckets + bucket), the peers that
  // still release it (bit id-1), from their heartbeats; empty when none does. Frames go to
  // them too (docs/directed.md). No-op without a directed VIP or when unchanged.
  void set_releasers(std::vector<std::uint64_t> releasers);
  bool directed() const noexcept { return directed_; }

  // Whether this node is the ARP owner of `requester` for directed VIP `vip` (the one that
  // answers its ARP / neighbour solicitations), under the published ownership.
  bool answers_requester(std::uint16_t vip, const IpAddr& requester) const;

  // One admin API request → its reply ({"ok": true, ...} or {"ok": false, "error": ...}).
  nlohmann::json handle(const nlohmann::json& request);

  config::ViewMask current_view() const;
  struct Identity {
    std::string cluster;
    unsigned node;
    std::string name;
  };
  Identity identity() const;
  // The configured nodes' ids.
  std::vector<unsigned> node_ids() const;
  std::vector<GroupShare> shares() const;
  // Buckets `node` owns in each group under the current assignment.
  std::vector<std::uint32_t> owned_by(NodeId node) const;
  std::uint64_t generation() const;

  // Set on every ownership change; the main lcore announces the VIPs and clears it.
  std::atomic<bool> announce_requested{false};

 private:
  nlohmann::json status() const;
  nlohmann::json buckets() const;
  nlohmann::json counters() const;
  nlohmann::json owner(const nlohmann::json& request) const;
  nlohmann::json view(const nlohmann::json& request);

  config::Config config_;  // reloadable keys change on reload (set_farm), under mutex_
  dataplane::Dataplane& dataplane_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  mutable std::mutex mutex_;
  std::vector<std::vector<NodeId>> assign(config::ViewMask members,
                                          const NodeWeights& weights) const;
  void publish_locked();

  config::ViewMask view_ = 0;
  std::uint64_t generation_ = 0;
  std::vector<std::vector<NodeId>> owners_;  // per group, per bucket
  packet::Ownership ownership_;              // what the workers accept
  packet::Ownership taking_, releasing_;     // flow handoff; empty() without it
  bool releasing_any_ = false;
  bool directed_ = false;  // some VIP is directed: the snapshot carries owners and MACs
  std::optional<packet::Classifier> classifier_;  // the published one (answers_requester)
  std::array<std::uint64_t, kMaxNodes + 1> node_macs_{};
  std::vector<std::uint64_t> releasers_;
  std::chrono::steady_clock::time_point handoff_deadline_{};
};

}  // namespace vipfarm::control
