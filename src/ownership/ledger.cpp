// View → assignment → flow handoff → snapshot (ledger.hpp).
#include "vipfarm/ownership/ledger.hpp"

#include <algorithm>

#include "vipfarm/assignment/assignment.hpp"
#include "vipfarm/membership/wire.hpp"
#include "vipfarm/packet/build.hpp"
#include "vipfarm/packet/reply.hpp"

namespace vipfarm::ownership {

Ledger::Ledger(const config::Config& config, SnapshotSink& sink, const MacAddr& own_mac)
    : sink_(sink),
      directed_(
          std::any_of(config.vips.begin(), config.vips.end(),
                      [](const config::Vip& v) { return v.l2_mode == config::L2Mode::kDirected; })),
      config_(config) {
  for (const config::ClusterNode& n : config_.nodes) {
    if (n.mac) node_macs_[to_int(n.id)] = mac48(*n.mac);
  }
  node_macs_[to_int(config_.node_id)] = mac48(own_mac);
}

std::vector<Bucket> Ledger::buckets_of(const packet::Ownership& set) const {
  std::vector<Bucket> out;
  for (std::size_t g = 0; g < config_.groups.size() && !set.empty(); ++g) {
    for (BucketId b = 0; b < config_.buckets; ++b) {
      const auto group = static_cast<std::uint16_t>(g);
      if (set.owns(group, b)) out.emplace_back(group, b);
    }
  }
  return out;
}

std::vector<std::vector<NodeId>> Ledger::assign(config::ViewMask members,
                                                const NodeWeights& weights) const {
  std::vector<std::vector<NodeId>> out;
  for (std::size_t g = 0; g < config_.groups.size(); ++g) {
    assignment::Input input = config::assignment_input(config_, g, members);
    for (assignment::Member& m : input.members) {
      const unsigned id = to_int(m.node);
      if (id < weights.size() && weights[id].size() == config_.groups.size()) {
        m.weight = weights[id][g];
      }
    }
    out.push_back(assignment::assign(input));
  }
  return out;
}

// The heart of it: which buckets this node owns in `view`, and, with flow handoff, which of
// them it only takes for new connections and which it gave up but still serves flows in.
std::uint32_t Ledger::apply_locked(config::ViewMask view, const NodeWeights& weights,
                                   config::ViewMask settled, config::ViewMask alive,
                                   const NodeWeights* held_weights, Clock::time_point now) {
  std::vector<std::vector<NodeId>> owners = assign(view, weights);
  const std::vector<std::vector<NodeId>> held =
      settled != view ? assign(settled, weights) : std::vector<std::vector<NodeId>>{};
  const std::vector<std::vector<NodeId>> held_w =
      held_weights != nullptr ? assign(view, *held_weights) : std::vector<std::vector<NodeId>>{};
  const config::ViewMask self = config::view_bit(config_.node_id);
  // Where each bucket was before: this node's previous assignment, or, for a node joining
  // (not in its previous view), the farm's without it: who served the buckets it gains.
  const std::vector<std::vector<NodeId>> before =
      (view_ & self) != 0 || (view & self) == 0 ? owners_ : assign(view & ~self, weights);
  const bool handoff = config_.flows.handoff;
  if (handoff && taking_.empty()) {
    taking_ = packet::Ownership(config_.groups.size(), config_.buckets);
    releasing_ = packet::Ownership(config_.groups.size(), config_.buckets);
  }
  ownership_ = packet::Ownership(config_.groups.size(), config_.buckets);
  std::uint32_t moved = 0;
  bool planned = false;
  for (std::size_t g = 0; g < owners.size(); ++g) {
    const auto group = static_cast<std::uint16_t>(g);
    for (BucketId b = 0; b < owners[g].size(); ++b) {
      const bool mine_now = owners[g][b] == config_.node_id;
      const bool mine = mine_now && (held.empty() || held[g][b] == config_.node_id) &&
                        (held_w.empty() || held_w[g][b] == config_.node_id);
      ownership_.set(group, b, mine);
      if (!owners_.empty() && owners_[g][b] != owners[g][b]) ++moved;
      if (!handoff || before.empty()) continue;
      const NodeId was = before[g][b];
      if (mine_now) {
        releasing_.set(group, b, false);
        // Gained from a live node (a planned change), or from no owner this node knows of
        // while other nodes are alive (it had no view: another may have served the bucket):
        // new connections only, until the others say they released their flows. From a
        // dead node: at once.
        const bool from_dead = was != kNoNode && (alive & config::view_bit(was)) == 0;
        if (was != config_.node_id && !from_dead && (alive & ~self) != 0) {
          taking_.set(group, b, true);
          planned = true;
        }
      } else {
        taking_.set(group, b, false);
        if (was == config_.node_id) {
          releasing_.set(group, b, true);
          planned = true;
        }
      }
    }
  }
  if (planned) handoff_deadline_ = now + std::chrono::seconds(config_.flows.window_s);
  view_ = view;
  owners_ = std::move(owners);
  dirty_ = true;
  return moved;
}

Change Ledger::install(const ViewInput& in, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  Change c{true, apply_locked(in.members, in.weights, in.settled, in.alive, nullptr, now), false};
  applied_weights_ = in.weights;
  applied_settled_ = in.settled;
  return c;
}

Change Ledger::follow(const ViewInput& in, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  const bool reweighted = in.weights != applied_weights_;
  const bool hold_over = holding_weights_ && !reweighted && in.weights_acknowledged;
  if (!reweighted && in.settled == applied_settled_ && !hold_over && !reassign_) return {};
  reassign_ = false;
  // The buckets gained by a weight change wait until every member's heartbeat shows it has
  // heard the change (it gave them up), not for a time that loss can outlast; their owners'
  // connections go on through handoff.
  if (reweighted && !applied_weights_.empty()) {
    held_weights_ = applied_weights_;
    holding_weights_ = true;
  } else if (hold_over) {
    holding_weights_ = false;
  }
  const std::uint32_t moved = apply_locked(in.members, in.weights, in.settled, in.alive,
                                           holding_weights_ ? &held_weights_ : nullptr, now);
  applied_weights_ = in.weights;
  applied_settled_ = in.settled;
  return {true, moved, reweighted};
}

std::uint32_t Ledger::set_static_view(config::ViewMask view, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  return apply_locked(view, {}, view, 0, nullptr, now);
}

void Ledger::set_farm(const config::Config& next) {
  std::lock_guard lock(mutex_);
  // A reload applies only when every key that changed is reloadable (reload_refusal): `next`
  // is the running config with its reloadable keys changed. The workers classify with the new
  // rules from the next commit; the assignment follows at the next view change, follow() or
  // set_static_view().
  config_ = next;
  dirty_ = true;
}

void Ledger::reassign() {
  std::lock_guard lock(mutex_);
  reassign_ = true;
}

void Ledger::set_node_mac(NodeId node, const MacAddr& mac) {
  std::lock_guard lock(mutex_);
  const std::uint64_t v = mac48(mac);
  if (to_int(node) > kMaxNodes || node_macs_[to_int(node)] == v) return;
  node_macs_[to_int(node)] = v;
  dirty_ = true;  // directed forwarding, and the data plane's heartbeat ring, use them
}

HandoffProgress Ledger::progress_handoff(const std::vector<PeerHandoff>& peers,
                                         Clock::time_point now) {
  std::lock_guard lock(mutex_);
  HandoffProgress p;
  if (taking_.empty()) return p;
  p.expired = now >= handoff_deadline_;
  const std::vector<Bucket> releasing = buckets_of(releasing_);
  std::vector<Bucket> held;
  const std::vector<std::uint64_t> flows = sink_.flows_in(releasing);
  for (std::size_t i = 0; i < releasing.size(); ++i) {
    if (flows[i] == 0 || p.expired) {
      releasing_.set(releasing[i].first, releasing[i].second, false);
      ++p.released;
      p.cut += flows[i];
      dirty_ = true;
    } else {
      held.push_back(releasing[i]);
    }
  }
  p.held = held.size();
  p.release_map = membership::release_map(held, config_.groups.size(), config_.buckets);
  if (directed_) {
    // Directed VIPs forward a handoff's frames to the old owners too: who releases what.
    std::vector<std::uint64_t> releasers;
    for (const PeerHandoff& peer : peers) {
      if (peer.id == config_.node_id || !peer.alive || peer.releasing.empty()) continue;
      if (releasers.empty()) releasers.assign(config_.groups.size() * config_.buckets, 0);
      for (std::size_t g = 0; g < config_.groups.size(); ++g) {
        for (BucketId b = 0; b < config_.buckets; ++b) {
          if (membership::releases(peer.releasing, g, b, config_.buckets)) {
            releasers[g * config_.buckets + b] |= config::view_bit(peer.id);
          }
        }
      }
    }
    if (releasers != releasers_) {
      releasers_ = std::move(releasers);
      dirty_ = true;
    }
  }
  for (const auto& [group, bucket] : buckets_of(taking_)) {
    // While a weight change's gains wait, the peers may not have heard of it yet: nothing
    // is taken whole before the hold ends.
    bool free = !holding_weights_;
    for (const PeerHandoff& peer : peers) {
      if (!free || peer.id == config_.node_id || !peer.alive) continue;
      free = peer.has_view && !membership::releases(peer.releasing, group, bucket, config_.buckets);
    }
    if (free || p.expired) {
      taking_.set(group, bucket, false);
      ++p.whole;
      dirty_ = true;
    } else {
      ++p.waiting;
    }
  }
  return p;
}

std::uint64_t Ledger::release_all() {
  std::lock_guard lock(mutex_);
  if (releasing_.empty()) return 0;
  const std::vector<Bucket> releasing = buckets_of(releasing_);
  std::uint64_t cut = 0;
  for (const std::uint64_t n : sink_.flows_in(releasing)) cut += n;
  for (const auto& [group, bucket] : releasing) releasing_.set(group, bucket, false);
  if (!releasing.empty()) dirty_ = true;
  return cut;
}

void Ledger::set_lease(std::optional<std::chrono::nanoseconds> remaining) noexcept {
  if (remaining) {
    sink_.renew_lease(*remaining);
  } else {
    sink_.revoke_lease();
  }
}

bool Ledger::commit() {
  std::lock_guard lock(mutex_);
  if (!dirty_) return false;
  dirty_ = false;
  auto snapshot = std::make_unique<Snapshot>(Snapshot{
      .classifier = packet::Classifier(config_),
      .ownership = ownership_,
      .generation = ++generation_,
      .unmatched = config_.unmatched,
      .taking = taking_,
      .releasing = releasing_,
      .track = config_.flows.handoff,
      .releasing_any = false,
      .timeouts = flow_timeouts(config_.flows),
      .owners = {},
      .node_macs = node_macs_,
      .known_macs = {},
      .releasers = releasers_,
  });
  snapshot->releasing_any = !buckets_of(releasing_).empty();
  for (const std::uint64_t m : node_macs_) {
    if (m != 0) snapshot->known_macs.push_back(m);
  }
  if (directed_) {
    published_ = snapshot->classifier;
    published_ownership_ = ownership_;
    snapshot->owners.assign(config_.groups.size() * config_.buckets, kNoNode);
    for (std::size_t g = 0; g < owners_.size(); ++g) {
      std::copy(owners_[g].begin(), owners_[g].end(),
                snapshot->owners.begin() + static_cast<std::ptrdiff_t>(g * config_.buckets));
    }
  }
  sink_.publish(std::move(snapshot));
  announce_requested.store(true, std::memory_order_release);
  return true;
}

config::ViewMask Ledger::view() const {
  std::lock_guard lock(mutex_);
  return view_;
}

std::uint64_t Ledger::generation() const {
  std::lock_guard lock(mutex_);
  return generation_;
}

std::vector<GroupShare> Ledger::shares() const {
  std::lock_guard lock(mutex_);
  std::vector<GroupShare> out;
  for (std::size_t g = 0; g < owners_.size(); ++g) {
    const auto owned = static_cast<std::uint32_t>(
        std::count(owners_[g].begin(), owners_[g].end(), config_.node_id));
    out.push_back({config_.groups[g].name, owned, config_.buckets});
  }
  return out;
}

std::vector<std::uint32_t> Ledger::owned_by(NodeId node) const {
  std::lock_guard lock(mutex_);
  std::vector<std::uint32_t> out;
  for (const auto& owners : owners_) {
    out.push_back(static_cast<std::uint32_t>(std::count(owners.begin(), owners.end(), node)));
  }
  return out;
}

std::vector<std::vector<NodeId>> Ledger::owners() const {
  std::lock_guard lock(mutex_);
  return owners_;
}

std::optional<NodeId> Ledger::owner(std::uint16_t group, BucketId bucket) const {
  std::lock_guard lock(mutex_);
  if (group >= owners_.size() || bucket >= owners_[group].size()) return std::nullopt;
  return owners_[group][bucket];
}

Ledger::Handoff Ledger::handoff() const {
  std::lock_guard lock(mutex_);
  return {buckets_of(taking_), buckets_of(releasing_), handoff_deadline_};
}

std::optional<MacAddr> Ledger::node_mac(NodeId node) const {
  std::lock_guard lock(mutex_);
  if (to_int(node) > kMaxNodes || node_macs_[to_int(node)] == 0) return std::nullopt;
  return mac_from48(node_macs_[to_int(node)]);
}

bool Ledger::answers_requester(std::uint16_t vip, const IpAddr& requester) const {
  std::lock_guard lock(mutex_);
  if (!published_ || vip >= config_.vips.size() ||
      config_.vips[vip].address.is_v4() != requester.is_v4()) {
    return false;
  }
  // The request this requester would send: classified as the workers would.
  std::array<std::byte, 86> frame{};
  const IpAddr& address = config_.vips[vip].address;
  if (address.is_v4()) {
    const MacAddr broadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    packet::build_arp(frame, 1, broadcast, MacAddr{}, requester.v4_value(), MacAddr{},
                      address.v4_value());
  } else {
    packet::build_ns(frame, MacAddr{}, requester, address);
  }
  const packet::Result r = published_->classify(frame);
  return r.directed && r.vip == vip && published_ownership_.owns(r.group, r.bucket);
}

config::Config Ledger::farm() const {
  std::lock_guard lock(mutex_);
  return config_;
}

}  // namespace vipfarm::ownership
