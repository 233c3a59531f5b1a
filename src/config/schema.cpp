// The schema table: one row per key, with how a reload applies it (vipfarmd's reload(),
// docs/handoff.md) and how a change of it is found (changed_keys()). Restart-only keys need
// a restart of the daemon, and reload refuses a file that changes one, naming it.
#include "vipfarm/config/schema.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <tuple>
#include <vector>

#include "vipfarm/config/config.hpp"

namespace vipfarm::config {

namespace {

using enum ValueType;
using enum Reload;

// One value, reached from the Config through `member...` (&Config::flows, &Flows::window_s):
// a left fold of .*, a.*m1.*m2.
template <auto... member>
bool field_differs(const Config& a, const Config& b) {
  return (a.*....*member) != (b.*....*member);
}

// The Compare of a row: field<member...> a value; differs_by(f) a comparison of its own;
// within(key) a field that `key`'s comparison covers; kByItsKeys a plain table.
template <auto... member>
constexpr Compare field{&field_differs<member...>, {}};
constexpr Compare differs_by(Differs differs) { return {differs, {}}; }
constexpr Compare within(std::string_view key) { return {nullptr, key}; }
constexpr Compare kByItsKeys{};

// Two lists differ when their lengths do, or any pair of entries is not `same`.
template <typename T, typename Same>
bool lists_differ(const std::vector<T>& x, const std::vector<T>& y, Same same) {
  return !std::equal(x.begin(), x.end(), y.begin(), y.end(), same);
}

bool node_differs(const Config& a, const Config& b) {
  return a.node_id != b.node_id || a.node_name != b.node_name;
}

// The list of groups and their names. The group[] keys below compare the groups of a list
// that stayed the same, one by one.
bool groups_differ(const Config& a, const Config& b) {
  return lists_differ(a.groups, b.groups,
                      [](const Group& x, const Group& y) { return x.name == y.name; });
}

template <typename GroupsDiffer>
bool some_group_differs(const Config& a, const Config& b, GroupsDiffer differ) {
  if (groups_differ(a, b)) return false;
  for (std::size_t g = 0; g < a.groups.size(); ++g) {
    if (differ(a.groups[g], b.groups[g])) return true;
  }
  return false;
}

bool modes_differ(const Config& a, const Config& b) {
  return some_group_differs(a, b, [](const Group& x, const Group& y) { return x.mode != y.mode; });
}

// A group's members in id order with their priorities, and their weights or 0.
std::vector<std::tuple<unsigned, std::int32_t, std::uint32_t>> roster(const Group& group,
                                                                      bool with_weights) {
  std::vector<std::tuple<unsigned, std::int32_t, std::uint32_t>> out;
  for (const Member& m : group.members) {
    out.emplace_back(to_int(m.node), m.priority, with_weights ? m.weight : 0);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Who is a member, with which priority.
bool members_differ(const Config& a, const Config& b) {
  return some_group_differs(
      a, b, [](const Group& x, const Group& y) { return roster(x, false) != roster(y, false); });
}

// The same members with other weights.
bool weights_differ(const Config& a, const Config& b) {
  return some_group_differs(a, b, [](const Group& x, const Group& y) {
    return roster(x, false) == roster(y, false) && roster(x, true) != roster(y, true);
  });
}

bool rules_differ(const Config& a, const Config& b) {
  return some_group_differs(a, b, [&a, &b](const Group& x, const Group& y) {
    return lists_differ(x.rules, y.rules, [&a, &b](const Rule& r, const Rule& s) {
      return describe_rule(a, r) == describe_rule(b, s);
    });
  });
}

bool uplinks_differ(const Config& a, const Config& b) {
  return lists_differ(a.dataplane.ports, b.dataplane.ports,
                      [](const Port& x, const Port& y) { return x.uplink == y.uplink; });
}

// The ports but their uplinks.
bool ports_differ(const Config& a, const Config& b) {
  return lists_differ(a.dataplane.ports, b.dataplane.ports, [](const Port& x, const Port& y) {
    return x.name == y.name && x.exception == y.exception && x.addresses == y.addresses;
  });
}

constexpr std::array kSchema = std::to_array<KeySpec>({
    {"node", kTable, "required", "", kRestart, differs_by(node_differs), "This node."},
    {"node.id", kInteger, "required", "1-64, listed in [[cluster.node]]", kRestart, within("node"),
     "This node's id."},
    {"node.name", kString, "the cluster.node entry's name", "", kRestart, within("node"),
     "This node's name."},
    {"cluster", kTable, "required", "", kRestart, kByItsKeys, "The farm every node must agree on."},
    {"cluster.name", kString, "required", "non-empty", kRestart, field<&Config::cluster_name>,
     "The farm's name."},
    {"cluster.buckets", kInteger, "256", "power of two, 2-65536", kRestart, field<&Config::buckets>,
     "Buckets per group: the granularity of load sharing."},
    {"cluster.seed", kInteger, "0", "0 - 2^63-1", kRestart, field<&Config::seed>,
     "Seed of the bucket hash (docs/classifier.md §5)."},
    {"cluster.unmatched", kString, "\"drop\"", "drop, pass", kFarm, field<&Config::unmatched>,
     "VIP traffic no rule matches: dropped, or passed to the host on every node."},
    {"cluster.icmp_echo", kString, "\"one\"", "one, none", kFarm, field<&Config::icmp_echo>,
     "Echo requests to a VIP that no rule matches: one node answers (keyed on the client "
     "address in the VIP's first group), or none."},
    {"cluster.node", kTableArray, "required", "1-64 entries", kRestart, field<&Config::nodes>,
     "Every node of the farm."},
    {"cluster.node[].id", kInteger, "required", "1-64, unique", kRestart, within("cluster.node"),
     "Node id."},
    {"cluster.node[].name", kString, "required", "non-empty, unique", kRestart,
     within("cluster.node"), "Node name."},
    {"cluster.node[].address", kString, "required", "IPv4 or IPv6, unique", kRestart,
     within("cluster.node"), "The node's own address (heartbeats, management)."},
    {"cluster.node[].mac", kString, "learned from heartbeats", "unicast MAC", kRestart,
     within("cluster.node"),
     "The node's uplink MAC, for directed VIPs before its first heartbeat (or without "
     "[membership])."},
    {"vip", kTableArray, "required", "1 or more entries", kRestart, field<&Config::vips>,
     "Virtual IP addresses."},
    {"vip[].address", kString, "required", "IPv4 or IPv6, unique", kRestart, within("vip"),
     "The virtual address clients use."},
    {"vip[].mac", kString, "5A:FE:<IPv4 in hex>; IPv6: 5A:F6:<hash of the address>",
     "unicast MAC, unique", kRestart, within("vip"),
     "Virtual MAC answered for the VIP; never used as a source address."},
    {"vip[].gateway", kBool, "false", "true, false", kRestart, within("vip"),
     "A gateway VIP (docs/gateway.md): the clients' router. Every frame sent to its virtual "
     "MAC is farm traffic whatever its destination; the kernel routes what this node "
     "accepts. Flood mode only."},
    {"vip[].port", kString, "the first port", "a dataplane.port name", kRestart, within("vip"),
     "The port the VIP lives on: where its ARP/ND is answered, its frames taken and its "
     "announcements sent."},
    {"vip[].l2_mode", kString, "\"flood\"", "flood, directed", kRestart, within("vip"),
     "flood: the switch floods the virtual MAC to every node; directed: each client is "
     "answered one node's own MAC and nodes forward what they do not own (docs/directed.md)."},
    {"group", kTableArray, "required", "1 or more entries", kRestart, differs_by(groups_differ),
     "Load-balancing groups: members, mode and rules."},
    {"group[].name", kString, "required", "non-empty, unique", kRestart, within("group"),
     "Group name."},
    {"group[].mode", kString, "\"balance\"", "balance, failover", kFarm, differs_by(modes_differ),
     "balance: buckets shared by weight; failover: the highest-priority member owns all."},
    {"group[].member", kTableArray, "every cluster node, weight 1", "", kFarm,
     differs_by(members_differ), "The group's members."},
    {"group[].member[].node", kInteger, "required", "a cluster.node id, unique in the group", kFarm,
     within("group[].member"), "Member node id."},
    {"group[].member[].weight", kInteger, "1", "0-1000", kFarm, differs_by(weights_differ),
     "Share of the buckets (SafeKit's power); 0 takes no traffic."},
    {"group[].member[].priority", kInteger, "0", "-1000000-1000000", kFarm,
     within("group[].member"), "failover mode: the highest eligible priority owns every bucket."},
    {"group[].rule", kTableArray, "required", "1 or more entries", kFarm, differs_by(rules_differ),
     "Which traffic the group takes and how it is keyed; first match wins."},
    {"group[].rule[].vip", kString, "\"*\"", "a [[vip]] address, or *", kFarm,
     within("group[].rule"), "The VIP the rule applies to."},
    {"group[].rule[].proto", kString, "\"any\"", "tcp, udp, icmp, any", kFarm,
     within("group[].rule"), "Transport protocol."},
    {"group[].rule[].ports", kPorts, "\"*\"", "*, a port, a range a-b, or a list of them", kFarm,
     within("group[].rule"),
     "Server (VIP-side) ports: \"80,443,8000-8099\" or [80, \"8000-8099\"]."},
    {"group[].rule[].dst", kAddressList, "the VIP itself; gateway VIPs: \"*\"",
     "*, or prefixes of the VIP's family", kFarm, within("group[].rule"),
     "Gateway VIPs: the destinations the rule takes: \"10.0.0.0/8, 192.0.2.0/24\" or a list."},
    {"group[].rule[].key", kString, "\"on_addr\"",
     "on_addr, on_port, on_ipid, five_tuple, client_net, on_dst_addr, on_dst_port, symmetric, "
     "symmetric_port",
     kFarm, within("group[].rule"),
     "What is hashed into a bucket (docs/classifier.md §5); on_dst_ and symmetric keys keep "
     "both directions of a gateway's connections on one node."},
    {"group[].rule[].prefix", kInteger, "24", "0-32", kFarm, within("group[].rule"),
     "client_net: IPv4 prefix length clients are grouped by."},
    {"group[].rule[].prefix6", kInteger, "64", "0-128", kFarm, within("group[].rule"),
     "client_net: IPv6 prefix length clients are grouped by."},
    {"dataplane", kTable, "required by vipfarmd", "", kRestart, kByItsKeys, "The DPDK data plane."},
    {"dataplane.uplink", kString, "required without [[dataplane.port]]",
     "a PCI address or a DPDK vdev (net_af_xdp0,iface=eth1)", kRestart, differs_by(uplinks_differ),
     "The port that receives the farm's traffic (promiscuous): the one-port form."},
    {"dataplane.port", kTableArray, "one port: dataplane.uplink and exception.name",
     "1-8 entries; not with dataplane.uplink", kRestart, differs_by(ports_differ),
     "Uplinks with a TAP each, e.g. a gateway's inside and outside (docs/gateway.md)."},
    {"dataplane.port[].name", kString, "required", "non-empty, unique", kRestart,
     within("dataplane.port"), "Port name (vip[].port, metrics)."},
    {"dataplane.port[].uplink", kString, "required", "a DPDK vdev or a PCI address, unique",
     kRestart, within("dataplane.uplink"), "The port's device (promiscuous)."},
    {"dataplane.port[].exception", kString, "\"vipfarm<index>\"",
     "a Linux interface name (1-15 characters), unique", kRestart, within("dataplane.port"),
     "The port's TAP interface: its VIPs and addresses live there."},
    {"dataplane.port[].address", kAddressList, "none (the first port: cluster.node address)",
     "address/prefix, e.g. \"192.0.2.11/24\"", kRestart, within("dataplane.port"),
     "This node's own addresses on the port's network (the kernel routes through them)."},
    {"dataplane.eal_args", kStringList, "[]", "", kRestart,
     field<&Config::dataplane, &Dataplane::eal_args>,
     "Extra EAL arguments, e.g. [\"--no-huge\", \"-m\", \"256\", \"--file-prefix=node1\"]."},
    {"dataplane.workers", kInteger, "1", "1-64", kRestart,
     field<&Config::dataplane, &Dataplane::workers>, "Worker lcores, one uplink RX queue each."},
    {"dataplane.poll", kString, "\"busy\"", "busy, adaptive", kRestart,
     field<&Config::dataplane, &Dataplane::poll>,
     "busy: spin; adaptive: back off to short sleeps when idle (labs, shared cores)."},
    {"dataplane.burst", kInteger, "32", "1-64", kRestart,
     field<&Config::dataplane, &Dataplane::burst>, "Packets per RX burst."},
    {"dataplane.garp_interval", kInteger, "60", "1-3600 seconds", kRestart,
     field<&Config::dataplane, &Dataplane::garp_interval_s>,
     "Gratuitous ARP / unsolicited NA period for every VIP."},
    {"dataplane.garp_duration", kInteger, "1200", "0-86400 seconds", kRestart,
     field<&Config::dataplane, &Dataplane::garp_duration_s>,
     "How long after start or an ownership change the periodic announcements go on."},
    {"exception", kTable, "defaults", "", kRestart, kByItsKeys,
     "The TAP interface into the kernel."},
    {"exception.name", kString, "\"vipfarm0\"", "a Linux interface name (1-15 characters)",
     kRestart, field<&Config::exception, &Exception::name>,
     "The TAP interface the application sees; it gets the node and VIP addresses (one-port "
     "form; with [[dataplane.port]], dataplane.port[].exception)."},
    {"exception.prefix", kInteger, "24", "0-32", kRestart,
     field<&Config::exception, &Exception::prefix>,
     "Prefix length of the node's own IPv4 address on the TAP."},
    {"exception.prefix6", kInteger, "64", "0-128", kRestart,
     field<&Config::exception, &Exception::prefix6>,
     "Prefix length of the node's own IPv6 address on the TAP."},
    {"exception.ring_size", kInteger, "4096", "power of two, 64-65536", kRestart,
     field<&Config::exception, &Exception::ring_size>,
     "Packets queued towards the kernel; beyond it they are dropped and counted."},
    {"api", kTable, "defaults", "", kRestart, kByItsKeys,
     "The admin API (vipfarmctl talks to it)."},
    {"api.socket", kString, "\"/run/vipfarm/vipfarmd.sock\"", "an absolute path", kRestart,
     field<&Config::api, &Api::socket>, "Unix socket of the admin API, mode 0660."},
    {"metrics", kTable, "defaults", "", kRestart, kByItsKeys, "The Prometheus endpoint."},
    {"metrics.listen", kString, "this node's address, port 9469",
     "address:port ([v6]:port), not a VIP; or \"\" to disable", kRestart,
     field<&Config::metrics, &Metrics::listen>,
     "Where /metrics is served. A wildcard (0.0.0.0, [::]) also answers on the VIPs: vipfarmd "
     "warns. Served by vipfarmd's own HTTP server (Boost.Beast) on a thread of its own: GET "
     "/metrics only, at most 64 connections (a new one closes the one idle longest), 8 KiB of "
     "request line and headers, 10 s per request and per reply."},
    {"membership", kTable, "absent: a static view of every configured node", "", kRestart,
     field<&Config::membership, &Membership::present>,
     "Heartbeats, failure detection and view agreement (docs/membership.md)."},
    {"membership.port", kInteger, "9470", "1-65535", kRestart,
     field<&Config::membership, &Membership::port>,
     "UDP port of heartbeats on every heartbeat address."},
    {"membership.interval_ms", kInteger, "100", "10-10000", kMembership,
     field<&Config::membership, &Membership::interval_ms>,
     "Heartbeat period (10 ms only on dedicated links)."},
    {"membership.dead_after", kInteger, "8", "2-100", kMembership,
     field<&Config::membership, &Membership::dead_after>,
     "Intervals without a heartbeat after which a peer is dead."},
    {"membership.agreement_timeout_ms", kInteger, "0 (3 intervals)", "0-60000", kMembership,
     field<&Config::membership, &Membership::agreement_timeout_ms>,
     "How long a proposed view may wait for agreement before the daemon logs which nodes "
     "disagree; nothing is installed without agreement (issue 15)."},
    {"membership.split_brain", kString, "\"serve\"", "serve, majority", kMembership,
     field<&Config::membership, &Membership::split_brain>,
     "serve: every partition serves all its buckets; majority: a partition without a strict "
     "majority of the configured nodes stops serving."},
    {"membership.witness", kString, "none", "IPv4 or IPv6 address", kMembership,
     field<&Config::membership, &Membership::witness>,
     "majority: a partition of exactly half the nodes serves if it reaches this address "
     "(ping, or vipfarmd --witness with witness_port)."},
    {"membership.witness_port", kInteger, "0 (ping)", "0-65535", kRestart,
     field<&Config::membership, &Membership::witness_port>,
     "majority: 0 pings the witness; else the UDP port of vipfarmd --witness there, which "
     "answers probes signed with the cluster keys (an echo reply can be forged)."},
    {"membership.flap_limit", kInteger, "4", "0-1000 (0: no damping)", kMembership,
     field<&Config::membership, &Membership::flap_limit>,
     "Deaths of a peer within flap_window that put it on hold."},
    {"membership.flap_window", kInteger, "60", "1-86400 seconds", kMembership,
     field<&Config::membership, &Membership::flap_window_s>,
     "Window over which a peer's deaths are counted."},
    {"membership.hold_down", kInteger, "30", "0-86400 seconds", kMembership,
     field<&Config::membership, &Membership::hold_down_s>,
     "How long a flapping peer is held out of the view."},
    {"membership.lease_ms", kInteger, "0 (dead_after - 3 intervals)", "0, or 2 intervals-600000",
     kMembership, field<&Config::membership, &Membership::lease_ms>,
     "Workers stop accepting VIP traffic this long after the newest of the node's "
     "heartbeats that a member of its view acknowledged (a crashed, stalled, mute or deaf "
     "node stops first); capped at dead_after - ack window (3 intervals, at most half of "
     "dead_after), so it ends before any peer can exclude the node."},
    {"membership.key", kTableArray, "required", "1 or more entries", kKeys,
     field<&Config::membership, &Membership::keys>,
     "Cluster keys for HMAC-SHA256 of heartbeats; every listed key is accepted."},
    {"membership.key[].id", kInteger, "required", "1-255, unique", kKeys, within("membership.key"),
     "Key id carried in each heartbeat."},
    {"membership.key[].file", kString, "required",
     "an absolute path; at least 32 bytes; not group/world readable", kKeys,
     within("membership.key"), "File holding the key's bytes."},
    {"membership.send_key", kInteger, "the only key's id", "a membership.key id", kKeys,
     field<&Config::membership, &Membership::send_key>,
     "The key heartbeats are signed with (rotation: add the new key everywhere, switch, "
     "remove the old)."},
    {"membership.lan", kTableArray, "none", "", kRestart,
     field<&Config::membership, &Membership::lans>,
     "Extra heartbeat networks; a peer is alive if heard on any network."},
    {"membership.lan[].name", kString, "required", "non-empty, unique", kRestart,
     within("membership.lan"), "Network name (metrics, logs)."},
    {"membership.lan[].node", kTableArray, "required", "every node that has an address there",
     kRestart, within("membership.lan"), "Per-node addresses on this network."},
    {"membership.lan[].node[].id", kInteger, "required", "a cluster.node id", kRestart,
     within("membership.lan"), "Node id."},
    {"membership.lan[].node[].address", kString, "required", "IPv4 or IPv6", kRestart,
     within("membership.lan"),
     "The node's address on this network (must be configured on the host)."},
    {"flows", kTable, "defaults", "", kRestart, kByItsKeys,
     "Flow tracking and handoff: planned changes keep live connections (docs/handoff.md)."},
    {"flows.handoff", kBool, "true", "true, false", kRestart,
     field<&Config::flows, &Flows::handoff>,
     "false: a plain bucket filter (connections in moved buckets break on every change)."},
    {"flows.capacity", kInteger, "262144", "1024-16777216", kRestart,
     field<&Config::flows, &Flows::capacity>, "Flows tracked per worker (about 100 bytes each)."},
    {"flows.window", kInteger, "600", "1-86400 seconds", kFlows,
     field<&Config::flows, &Flows::window_s>,
     "Longest a handoff keeps flows on their old owner; it ends earlier when none is left."},
    {"flows.syn_timeout_ms", kInteger, "5000", "100-600000", kFlows,
     field<&Config::flows, &Flows::syn_timeout_ms>,
     "A connection that never completes its handshake is forgotten after this."},
    {"flows.established_timeout", kInteger, "3600", "10-604800 seconds", kFlows,
     field<&Config::flows, &Flows::established_timeout_s>,
     "An idle established TCP connection is forgotten after this."},
    {"flows.closing_timeout_ms", kInteger, "10000", "100-600000", kFlows,
     field<&Config::flows, &Flows::closing_timeout_ms>,
     "A connection that saw FIN or RST is forgotten after this."},
    {"flows.udp_timeout", kInteger, "30", "1-86400 seconds", kFlows,
     field<&Config::flows, &Flows::udp_timeout_s>, "An idle UDP flow is forgotten after this."},
    {"checker", kTableArray, "none", "", kCheckers, field<&Config::checkers>,
     "Health checks; a failing checker takes the node (or its group's buckets) out."},
    {"checker[].name", kString, "required", "non-empty, unique", kCheckers, within("checker"),
     "Checker name (metrics, CLI)."},
    {"checker[].kind", kString, "required", "tcp, ping, interface, custom", kCheckers,
     within("checker"),
     "tcp: connect to target; ping: ICMP echo to target; interface: target's link is up; "
     "custom: target is a shell command, exit 0 is healthy. The command runs as user, with env "
     "and no other environment, stdin and stdout on /dev/null, in /, as PID 1 of its own PID "
     "namespace: at the timeout, and whenever it exits, every process it started dies."},
    {"checker[].target", kString, "required",
     "tcp: address:port; ping: address; interface: name; custom: command", kCheckers,
     within("checker"), "What is checked."},
    {"checker[].interval_ms", kInteger, "500", "10-3600000", kCheckers, within("checker"),
     "Time between checks."},
    {"checker[].timeout_ms", kInteger, "400", "1-3600000", kCheckers, within("checker"),
     "A check that takes longer fails."},
    {"checker[].rise", kInteger, "2", "1-100", kCheckers, within("checker"),
     "Consecutive successes before a failed checker is healthy again."},
    {"checker[].fall", kInteger, "2", "1-100", kCheckers, within("checker"),
     "Consecutive failures before a healthy checker fails."},
    {"checker[].group", kString, "none (the whole node)", "a [[group]] name", kCheckers,
     within("checker"), "Bind the checker to one group: only that group's buckets leave the node."},
    {"checker[].user", kString, "\"nobody\" (uid and gid 65534 where there is none)",
     "custom only: a user of this system", kCheckers, within("checker"),
     "The user a custom command runs as: its uid, primary group and groups, with no "
     "capabilities and no new privileges (setuid files do not raise them), root included; "
     "\"root\" must be written out."},
    {"checker[].env", kStringList, "[]",
     "custom only: \"NAME=value\" strings, NAME [A-Za-z_][A-Za-z0-9_]* and unique", kCheckers,
     within("checker"),
     "A custom command's environment, nothing inherited: these and "
     "PATH=/usr/sbin:/usr/bin:/sbin:/bin unless one of them sets PATH."},
});

std::string_view type_name(ValueType type) {
  switch (type) {
    case kTable:
      return "table";
    case kTableArray:
      return "array of tables";
    case kInteger:
      return "integer";
    case kString:
      return "string";
    case kStringList:
      return "array of strings";
    case kPorts:
      return "string, integer or array";
    case kBool:
      return "boolean";
    case kAddressList:
      return "string or array of strings";
  }
  return "";
}

}  // namespace

std::span<const KeySpec> schema() noexcept { return kSchema; }

const KeySpec* find_key(std::string_view path) noexcept {
  for (const KeySpec& spec : kSchema) {
    if (spec.path == path) return &spec;
  }
  return nullptr;
}

std::string reference_markdown() {
  std::string out =
      "| key | type | default | range | reload | meaning |\n"
      "| --- | --- | --- | --- | --- | --- |\n";
  for (const KeySpec& spec : kSchema) {
    out += "| `";
    out += spec.path;
    out += "` | ";
    out += type_name(spec.type);
    out += " | ";
    out += spec.default_value;
    out += " | ";
    out += spec.range;
    out += " | ";
    out += spec.reload == kRestart ? "restart" : "reload";
    out += " | ";
    out += spec.help;
    out += " |\n";
  }
  return out;
}

}  // namespace vipfarm::config
