// The admin API's ownership and data plane commands.
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

Control::Control(ownership::Ledger& ledger, const dataplane::Dataplane& dataplane)
    : ledger_(ledger), dataplane_(dataplane) {}

Control::Identity Control::identity() const {
  const config::Config config = ledger_.farm();
  return {config.cluster_name, to_int(config.node_id), config.node_name};
}

std::vector<unsigned> Control::node_ids() const {
  std::vector<unsigned> out;
  for (const config::ClusterNode& n : ledger_.farm().nodes) out.push_back(to_int(n.id));
  return out;
}

nlohmann::json Control::status() const {
  const dataplane::Totals totals = dataplane_.totals();
  const config::Config config = ledger_.farm();
  nlohmann::json groups = nlohmann::json::array();
  for (const ownership::GroupShare& s : ledger_.shares()) {
    groups.push_back({{"name", s.name}, {"owned", s.owned}, {"buckets", s.buckets}});
  }
  return {{"ok", true},
          {"node", to_int(config.node_id)},
          {"name", config.node_name},
          {"cluster", config.cluster_name},
          {"fingerprint", config::fingerprint(config)},
          {"view", view_ids(ledger_.view())},
          {"generation", ledger_.generation()},
          {"applied_generation", totals.min_generation},
          {"groups", groups},
          {"uptime_s",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count()}};
}

nlohmann::json Control::buckets() const {
  const config::Config config = ledger_.farm();
  nlohmann::json groups = nlohmann::json::array();
  const std::vector<std::vector<NodeId>> owners = ledger_.owners();
  for (std::size_t g = 0; g < owners.size(); ++g) {
    std::vector<unsigned> ids;
    for (const NodeId id : owners[g]) ids.push_back(to_int(id));
    groups.push_back({{"name", config.groups[g].name}, {"owners", ids}});
  }
  return {{"ok", true}, {"generation", ledger_.generation()}, {"groups", groups}};
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
  const config::Config config = ledger_.farm();
  if (const std::string err =
          packet::route_through_gateway(config, request.value("via", ""), query.spec);
      !err.empty()) {
    return error("owner: " + err);
  }
  const packet::Result r = packet::Classifier(config).classify(packet::build_frame(query.spec));
  nlohmann::json out = {{"ok", true}, {"verdict", std::string(packet::to_string(r.verdict))}};
  if (r.verdict == packet::Verdict::kFarm) {
    out["group"] = config.groups[r.group].name;
    out["bucket"] = r.bucket;
    out["owner"] = to_int(ledger_.owner(r.group, r.bucket).value_or(kNoNode));
  }
  return out;
}

nlohmann::json Control::view(const nlohmann::json& request) {
  const auto set = request.find("set");
  if (set == request.end() || !set->is_array()) return error("view needs \"set\": [node ids]");
  const config::Config config = ledger_.farm();
  config::ViewMask view = 0;
  for (const auto& id : *set) {
    if (!id.is_number_unsigned() || id.get<unsigned>() > kMaxNodes ||
        config.find_node(NodeId{static_cast<std::uint8_t>(id.get<unsigned>())}) == nullptr) {
      return error("view: " + id.dump() + " is not a configured node id");
    }
    view |= config::view_bit(NodeId{static_cast<std::uint8_t>(id.get<unsigned>())});
  }
  const std::uint32_t moved = ledger_.set_static_view(view, std::chrono::steady_clock::now());
  ledger_.commit();
  return {{"ok", true},
          {"generation", ledger_.generation()},
          {"moved", moved},
          {"view", view_ids(view)}};
}

}  // namespace vipfarm::control
