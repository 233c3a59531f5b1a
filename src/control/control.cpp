// View changes and the admin API's commands.
#include "vipfarm/control/control.hpp"

#include <algorithm>

#include "vipfarm/packet/build.hpp"
#include "vipfarm/packet/reply.hpp"

namespace vipfarm::control {

namespace {

nlohmann::json error(const std::string& message) { return {{"ok", false}, {"error", message}}; }

std::vector<unsigned> view_ids(config::ViewMask view) {
  std::vector<unsigned> ids;
  for (unsigned id = 1; id <= kMaxNodes; ++id) {
    if ((view >> (id - 1)) & 1) ids.push_back(id);
  }
  return ids;
}

}  // namespace

Control::Control(const config::Config& config, dataplane::Dataplane& dataplane)
    : config_(config), dataplane_(dataplane) {
  directed_ = std::any_of(config_.vips.begin(), config_.vips.end(), [](const config::Vip& v) {
    return v.l2_mode == config::L2Mode::kDirected;
  });
  for (const config::ClusterNode& n : config_.nodes) {
    if (n.mac) node_macs_[to_int(n.id)] = mac48(*n.mac);
  }
  node_macs_[to_int(config_.node_id)] = mac48(dataplane_.uplink_mac());
}

bool Control::answers_requester(std::uint16_t vip, const IpAddr& requester) const {
  std::lock_guard lock(mutex_);
  if (!classifier_ || vip >= config_.vips.size() ||
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
  const packet::Result r = classifier_->classify(frame);
  return r.directed && r.vip == vip && ownership_.owns(r.group, r.bucket);
}

void Control::set_releasers(std::vector<std::uint64_t> releasers) {
  std::lock_guard lock(mutex_);
  if (!directed_ || releasers == releasers_) return;
  releasers_ = std::move(releasers);
  publish_locked();
}

void Control::set_node_mac(NodeId node, const MacAddr& mac) {
  std::lock_guard lock(mutex_);
  const std::uint64_t v = mac48(mac);
  if (to_int(node) > kMaxNodes || node_macs_[to_int(node)] == v) return;
  node_macs_[to_int(node)] = v;
  publish_locked();  // directed forwarding, and the data plane's heartbeat ring, use them
}

std::optional<MacAddr> Control::node_mac(NodeId node) const {
  std::lock_guard lock(mutex_);
  if (to_int(node) > kMaxNodes || node_macs_[to_int(node)] == 0) return std::nullopt;
  return mac_from48(node_macs_[to_int(node)]);
}

std::vector<std::vector<NodeId>> Control::assign(config::ViewMask members,
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

std::uint32_t Control::set_view(config::ViewMask view, const NodeWeights& weights,
                                std::optional<config::ViewMask> settled, config::ViewMask alive,
                                const NodeWeights* held_weights) {
  std::vector<std::vector<NodeId>> owners = assign(view, weights);
  const std::vector<std::vector<NodeId>> held =
      settled && *settled != view ? assign(*settled, weights) : std::vector<std::vector<NodeId>>{};
  const std::vector<std::vector<NodeId>> held_w =
      held_weights != nullptr ? assign(view, *held_weights) : std::vector<std::vector<NodeId>>{};
  const config::ViewMask self = config::view_bit(config_.node_id);
  std::lock_guard lock(mutex_);
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
  if (planned) {
    handoff_deadline_ =
        std::chrono::steady_clock::now() + std::chrono::seconds(config_.flows.window_s);
  }
  view_ = view;
  owners_ = std::move(owners);
  publish_locked();
  return moved;
}

void Control::publish_locked() {
  releasing_any_ = false;
  for (std::size_t g = 0; g < config_.groups.size() && !releasing_.empty(); ++g) {
    for (BucketId b = 0; b < config_.buckets && !releasing_any_; ++b) {
      releasing_any_ = releasing_.owns(static_cast<std::uint16_t>(g), b);
    }
  }
  const std::uint64_t generation = ++generation_;
  auto snapshot = std::make_unique<dataplane::Snapshot>(
      dataplane::Snapshot{packet::Classifier(config_),
                          ownership_,
                          generation,
                          config_.unmatched,
                          taking_,
                          releasing_,
                          config_.flows.handoff,
                          releasing_any_,
                          dataplane::flow_timeouts(config_.flows),
                          {},
                          node_macs_,
                          {},
                          releasers_});
  for (const std::uint64_t m : node_macs_) {
    if (m != 0) snapshot->known_macs.push_back(m);
  }
  if (directed_) {
    classifier_ = snapshot->classifier;
    snapshot->owners.assign(config_.groups.size() * config_.buckets, kNoNode);
    for (std::size_t g = 0; g < owners_.size(); ++g) {
      std::copy(owners_[g].begin(), owners_[g].end(),
                snapshot->owners.begin() + static_cast<std::ptrdiff_t>(g * config_.buckets));
    }
  }
  dataplane_.publish(std::move(snapshot));
  announce_requested.store(true, std::memory_order_release);
}

Control::Handoff Control::handoff() const {
  std::lock_guard lock(mutex_);
  Handoff h;
  h.deadline = handoff_deadline_;
  for (std::size_t g = 0; g < config_.groups.size() && !taking_.empty(); ++g) {
    for (BucketId b = 0; b < config_.buckets; ++b) {
      const auto group = static_cast<std::uint16_t>(g);
      if (taking_.owns(group, b)) h.taking.emplace_back(group, b);
      if (releasing_.owns(group, b)) h.releasing.emplace_back(group, b);
    }
  }
  return h;
}

void Control::settle_handoff(const std::vector<Bucket>& released,
                             const std::vector<Bucket>& whole) {
  std::lock_guard lock(mutex_);
  if (taking_.empty() || (released.empty() && whole.empty())) return;
  for (const auto& [group, bucket] : released) releasing_.set(group, bucket, false);
  for (const auto& [group, bucket] : whole) taking_.set(group, bucket, false);
  publish_locked();
}

void Control::set_farm(const config::Config& next) {
  std::lock_guard lock(mutex_);
  config_.unmatched = next.unmatched;
  config_.icmp_echo = next.icmp_echo;
  for (std::size_t g = 0; g < config_.groups.size() && g < next.groups.size(); ++g) {
    config_.groups[g].mode = next.groups[g].mode;
    config_.groups[g].members = next.groups[g].members;
    config_.groups[g].rules = next.groups[g].rules;
  }
  config_.flows.window_s = next.flows.window_s;
  config_.flows.syn_timeout_ms = next.flows.syn_timeout_ms;
  config_.flows.established_timeout_s = next.flows.established_timeout_s;
  config_.flows.closing_timeout_ms = next.flows.closing_timeout_ms;
  config_.flows.udp_timeout_s = next.flows.udp_timeout_s;
  publish_locked();
}

Control::Identity Control::identity() const {
  std::lock_guard lock(mutex_);
  return {config_.cluster_name, to_int(config_.node_id), config_.node_name};
}

std::vector<unsigned> Control::node_ids() const {
  std::lock_guard lock(mutex_);
  std::vector<unsigned> out;
  for (const config::ClusterNode& n : config_.nodes) out.push_back(to_int(n.id));
  return out;
}

config::ViewMask Control::current_view() const {
  std::lock_guard lock(mutex_);
  return view_;
}

std::vector<GroupShare> Control::shares() const {
  std::lock_guard lock(mutex_);
  std::vector<GroupShare> out;
  for (std::size_t g = 0; g < owners_.size(); ++g) {
    const auto owned = static_cast<std::uint32_t>(
        std::count(owners_[g].begin(), owners_[g].end(), config_.node_id));
    out.push_back({config_.groups[g].name, owned, config_.buckets});
  }
  return out;
}

std::vector<std::uint32_t> Control::owned_by(NodeId node) const {
  std::lock_guard lock(mutex_);
  std::vector<std::uint32_t> out;
  for (const auto& owners : owners_) {
    out.push_back(static_cast<std::uint32_t>(std::count(owners.begin(), owners.end(), node)));
  }
  return out;
}

std::uint64_t Control::generation() const {
  std::lock_guard lock(mutex_);
  return generation_;
}

nlohmann::json Control::handle(const nlohmann::json& request) {
  const auto cmd = request.find("cmd");
  if (cmd == request.end() || !cmd->is_string()) return error("missing \"cmd\" (a string)");
  const std::string name = cmd->get<std::string>();
  if (name == "status") return status();
  if (name == "buckets") return buckets();
  if (name == "counters") return counters();
  if (name == "owner") return owner(request);
  if (name == "view") return view(request);
  return error("unknown command \"" + name +
               "\" (status, buckets, owner, view, counters, reload; with "
               "[membership]: nodes, history, state, stop, start)");
}

nlohmann::json Control::status() const {
  const dataplane::Totals totals = dataplane_.totals();
  nlohmann::json groups = nlohmann::json::array();
  for (const GroupShare& s : shares()) {
    groups.push_back({{"name", s.name}, {"owned", s.owned}, {"buckets", s.buckets}});
  }
  std::lock_guard lock(mutex_);
  return {{"ok", true},
          {"node", to_int(config_.node_id)},
          {"name", config_.node_name},
          {"cluster", config_.cluster_name},
          {"fingerprint", config::fingerprint(config_)},
          {"view", view_ids(view_)},
          {"generation", generation_},
          {"applied_generation", totals.min_generation},
          {"groups", groups},
          {"uptime_s",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count()}};
}

nlohmann::json Control::buckets() const {
  std::lock_guard lock(mutex_);
  nlohmann::json groups = nlohmann::json::array();
  for (std::size_t g = 0; g < owners_.size(); ++g) {
    std::vector<unsigned> owners;
    for (const NodeId id : owners_[g]) owners.push_back(to_int(id));
    groups.push_back({{"name", config_.groups[g].name}, {"owners", owners}});
  }
  return {{"ok", true}, {"generation", generation_}, {"groups", groups}};
}

nlohmann::json Control::counters() const {
  const dataplane::Totals totals = dataplane_.totals();
  const dataplane::LcoreCounters& s = totals.sum;
  nlohmann::json out = {{"ok", true}};
#define VIPFARM_JSON(field, key, metric, help) out[nlohmann::json::json_pointer(key)] = s.field;
  VIPFARM_LCORE_COUNTERS(VIPFARM_JSON)
#undef VIPFARM_JSON
#define VIPFARM_JSON_HANDOFF(field, key, metric, help) \
  out[nlohmann::json::json_pointer(key)] = s.handoff.field;
  VIPFARM_HANDOFF_COUNTERS(VIPFARM_JSON_HANDOFF)
#undef VIPFARM_JSON_HANDOFF
  for (std::size_t v = 0; v < s.verdicts.size(); ++v) {
    if (v == static_cast<std::size_t>(packet::Verdict::kFarm)) continue;  // never counted
    out["verdicts"][std::string(packet::to_string(static_cast<packet::Verdict>(v)))] =
        s.verdicts[v];
  }
  for (std::size_t r = 1; r < s.malformed.size(); ++r) {
    out["malformed"][std::string(packet::to_string(static_cast<packet::Malformed>(r)))] =
        s.malformed[r];
  }
  nlohmann::json& forwarded = out["directed"]["forwarded"] = nlohmann::json::object();
  for (std::size_t n = 1; n < s.forwarded.size(); ++n) {
    if (s.forwarded[n] != 0) forwarded[std::to_string(n)] = s.forwarded[n];
  }
  nlohmann::json& rx_missed = out["uplink_rx_missed"] = nlohmann::json::object();
  for (std::size_t p = 0; p < totals.port_rx_missed.size(); ++p) {
    rx_missed[dataplane_.port_name(p)] = totals.port_rx_missed[p];
  }
  return out;
}

nlohmann::json Control::owner(const nlohmann::json& request) const {
  packet::FlowQuery query = packet::parse_flow_query(
      request.value("proto", ""), request.value("client", ""), request.value("server", ""));
  if (!query.error.empty()) return error("owner: " + query.error);
  if (const std::string err =
          packet::route_through_gateway(config_, request.value("via", ""), query.spec);
      !err.empty()) {
    return error("owner: " + err);
  }
  const packet::Result r = packet::Classifier(config_).classify(packet::build_frame(query.spec));
  std::lock_guard lock(mutex_);
  nlohmann::json out = {{"ok", true}, {"verdict", std::string(packet::to_string(r.verdict))}};
  if (r.verdict == packet::Verdict::kFarm) {
    const unsigned node = to_int(owners_[r.group][r.bucket]);
    out["group"] = config_.groups[r.group].name;
    out["bucket"] = r.bucket;
    out["owner"] = node;
  }
  return out;
}

nlohmann::json Control::view(const nlohmann::json& request) {
  const auto set = request.find("set");
  if (set == request.end() || !set->is_array()) return error("view needs \"set\": [node ids]");
  config::ViewMask view = 0;
  for (const auto& id : *set) {
    if (!id.is_number_unsigned() ||
        config_.find_node(NodeId{static_cast<std::uint8_t>(id.get<unsigned>())}) == nullptr ||
        id.get<unsigned>() > kMaxNodes) {
      return error("view: " + id.dump() + " is not a configured node id");
    }
    view |= config::view_bit(NodeId{static_cast<std::uint8_t>(id.get<unsigned>())});
  }
  const std::uint32_t moved = set_view(view);
  return {{"ok", true}, {"generation", generation()}, {"moved", moved}, {"view", view_ids(view)}};
}

}  // namespace vipfarm::control
