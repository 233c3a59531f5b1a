// The validated configuration of one node and its farm, and how to load it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vipfarm/assignment/assignment.hpp"
#include "vipfarm/common/net.hpp"
#include "vipfarm/common/types.hpp"
#include "vipfarm/membership/membership.hpp"

namespace vipfarm::config {

enum class Proto : std::uint8_t { kAny, kTcp, kUdp, kIcmp };
// What a rule hashes (docs/classifier.md §5). The on_dst_ keys mirror on_addr / on_port on
// the destination; the symmetric keys give both directions of a connection one bucket
// (gateway VIPs, docs/gateway.md).
enum class KeyKind : std::uint8_t {
  kOnAddr,
  kOnPort,
  kOnIpid,
  kFiveTuple,
  kClientNet,
  kOnDstAddr,
  kOnDstPort,
  kSymmetric,
  kSymmetricPort,
};
enum class Unmatched : std::uint8_t { kDrop, kPass };
enum class IcmpEcho : std::uint8_t { kOne, kNone };

struct PortRange {
  std::uint16_t first;
  std::uint16_t last;
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

struct Rule {
  std::optional<std::size_t> vip;  // index into Config::vips; nullopt: every VIP ("*")
  Proto proto = Proto::kAny;
  std::vector<PortRange> ports;  // empty: every port ("*")
  KeyKind key = KeyKind::kOnAddr;
  std::uint8_t prefix = 24;   // client_net, IPv4
  std::uint8_t prefix6 = 64;  // client_net, IPv6
  // Gateway VIPs: the destinations the rule takes (empty: every destination, "*").
  std::vector<Prefix> dst;
};

struct Member {
  NodeId node;
  std::uint32_t weight = 1;
  std::int32_t priority = 0;
};

struct Group {
  std::string name;
  assignment::Mode mode = assignment::Mode::kBalance;
  std::vector<Member> members;
  std::vector<Rule> rules;
};

// How clients reach the farm's nodes (docs/directed.md): flood, the virtual MAC the switch
// floods to every node; directed, each client to one node's own MAC, which forwards what
// it does not own to the owner.
enum class L2Mode : std::uint8_t { kFlood, kDirected };

struct Vip {
  IpAddr address;
  MacAddr mac;  // flood: the virtual MAC answered in ARP/ND
  L2Mode l2_mode = L2Mode::kFlood;
  // A gateway (docs/gateway.md): every frame sent to `mac` is farm traffic, whatever its
  // destination address; a service VIP takes the frames sent to `address`.
  bool gateway = false;
  std::size_t port = 0;  // index into Dataplane::ports: the uplink it lives on
  friend bool operator==(const Vip&, const Vip&) = default;
};

struct ClusterNode {
  NodeId id;
  std::string name;
  IpAddr address;
  // Its uplink MAC when known ahead (directed VIPs forward to it; heartbeats tell the rest).
  std::optional<MacAddr> mac;
  friend bool operator==(const ClusterNode&, const ClusterNode&) = default;
};

enum class Poll : std::uint8_t { kBusy, kAdaptive };

// One uplink and its TAP ([[dataplane.port]], or the short form `[dataplane] uplink` with
// [exception] name): a two-armed gateway has an inside and an outside port.
struct Port {
  std::string name;       // "uplink" in the short form
  std::string uplink;     // a DPDK vdev (net_af_xdp0,iface=eth1) or a PCI address
  std::string exception;  // its TAP interface
  // This node's own addresses on the port's network (the first port also gets
  // cluster.node[].address with [exception] prefix / prefix6).
  std::vector<Prefix> addresses;
};
inline constexpr std::size_t kMaxPorts = 8;

struct Dataplane {
  bool present = false;     // vipfarmd refuses to run without [dataplane]
  std::vector<Port> ports;  // at least one when present
  std::vector<std::string> eal_args;
  std::uint32_t workers = 1;
  Poll poll = Poll::kBusy;
  std::uint32_t burst = 32;
  std::uint32_t garp_interval_s = 60;
  std::uint32_t garp_duration_s = 1200;
};

struct Exception {
  std::string name = "vipfarm0";  // the short form's TAP (ports[0].exception)
  std::uint8_t prefix = 24;
  std::uint8_t prefix6 = 64;
  std::uint32_t ring_size = 4096;
};

struct Api {
  std::string socket = "/run/vipfarm/vipfarmd.sock";
};

// A Linux interface name the kernel takes: 1-15 bytes, no / : or whitespace.
bool valid_ifname(std::string_view name);

inline constexpr std::uint16_t kMetricsPort = 9469;
struct Metrics {
  // address:port; empty: no endpoint. The loader's default is this node's own address
  // (cluster.node[].address) with kMetricsPort.
  std::string listen;
};

// An extra heartbeat network ([[membership.lan]]): a peer is alive if heard on any network.
struct HeartbeatLan {
  std::string name;
  std::vector<std::pair<NodeId, IpAddr>> addresses;  // every node's address on it
  const IpAddr* find(NodeId id) const noexcept;
  friend bool operator==(const HeartbeatLan&, const HeartbeatLan&) = default;
};

struct ClusterKey {
  std::uint8_t id;
  std::string file;  // the key's bytes (at least 32); not group/world readable
  friend bool operator==(const ClusterKey&, const ClusterKey&) = default;
};

using membership::SplitBrain;

// [membership]: heartbeats, failure detection and view agreement (docs/membership.md).
// Without the table the daemon runs a static view of every configured node.
struct Membership {
  bool present = false;
  std::uint16_t port = 9470;  // UDP, on every heartbeat address
  std::uint32_t interval_ms = 100;
  std::uint32_t dead_after = 8;            // intervals
  std::uint32_t agreement_timeout_ms = 0;  // 0: 3 intervals
  SplitBrain split_brain = SplitBrain::kServe;
  std::optional<IpAddr> witness;   // majority: breaks ties for even farm sizes (ping)
  std::uint16_t witness_port = 0;  // 0: ping the witness; else `vipfarmd --witness` (UDP)
  std::uint32_t flap_limit = 4;
  std::uint32_t flap_window_s = 60;
  std::uint32_t hold_down_s = 30;
  std::uint32_t lease_ms = 0;  // 0: dead_after intervals
  std::vector<ClusterKey> keys;
  std::uint8_t send_key = 0;  // the key id heartbeats are signed with
  std::vector<HeartbeatLan> lans;
};

// [flows]: flow tracking and handoff (docs/handoff.md). With handoff, planned changes
// (a node joins, stops or drains, a weight or rule changes) keep live connections: the old
// owner of a moved bucket keeps the flows it tracks, the new owner takes new ones.
struct Flows {
  bool handoff = true;
  std::uint32_t capacity = 262144;  // tracked flows per worker
  std::uint32_t window_s = 600;     // longest a handoff keeps flows on their old owner
  std::uint32_t syn_timeout_ms = 5000;
  std::uint32_t established_timeout_s = 3600;
  std::uint32_t closing_timeout_ms = 10000;
  std::uint32_t udp_timeout_s = 30;
};

enum class CheckerKind : std::uint8_t { kTcp, kPing, kInterface, kCustom };

// A custom checker's PATH unless its env sets one.
inline constexpr std::string_view kCheckerPath = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

// [[checker]]: a health check of this node's application or links. A failing checker bound
// to a group takes only that group's buckets from the node; an unbound one takes the node
// out of the view (state WAIT).
struct Checker {
  std::string name;
  CheckerKind kind = CheckerKind::kTcp;
  std::string target;  // tcp: address:port ([v6]:port); ping: address; interface: name;
                       // custom: a command run by /bin/sh -c (exit 0 = healthy)
  std::uint32_t interval_ms = 500;
  std::uint32_t timeout_ms = 400;
  std::uint32_t rise = 2;            // consecutive successes to become healthy
  std::uint32_t fall = 2;            // consecutive failures to become failed
  std::optional<std::size_t> group;  // index into Config::groups; nullopt: the whole node
  // custom only. The user the command runs as (its uid, primary gid and groups, never any
  // capability); empty: "nobody", or uid and gid 65534 where there is no such user. Checked
  // to exist when the file is loaded.
  std::string user{};
  // custom only: "NAME=value" entries, the command's whole environment besides a fixed
  // PATH (kCheckerPath) that one of them may replace.
  std::vector<std::string> env{};
  friend bool operator==(const Checker&, const Checker&) = default;
};

struct Config {
  std::string source;  // the file it came from, for messages
  NodeId node_id = kNoNode;
  std::string node_name;
  std::string cluster_name;
  std::uint32_t buckets = kDefaultBuckets;
  std::uint64_t seed = 0;
  Unmatched unmatched = Unmatched::kDrop;
  IcmpEcho icmp_echo = IcmpEcho::kOne;
  std::vector<ClusterNode> nodes;
  std::vector<Vip> vips;
  std::vector<Group> groups;
  Dataplane dataplane;
  Exception exception;
  Api api;
  Metrics metrics;
  Membership membership;
  Flows flows;
  std::vector<Checker> checkers;

  const ClusterNode* find_node(NodeId id) const noexcept;
};

// One validation problem, located in the file.
struct Error {
  std::string file;
  std::uint32_t line = 0;
  std::uint32_t column = 0;
  std::string key;  // dotted path, e.g. group[1].rule[0].ports
  std::string message;

  // "file:line:col: key: message"
  std::string to_string() const;
};

struct LoadResult {
  std::optional<Config> config;  // set exactly when errors is empty
  std::vector<Error> errors;
};

LoadResult parse(std::string_view text, std::string_view source_name);
LoadResult load_file(const std::string& path);

// The default virtual MAC of a VIP: 5A:FE:<IPv4 in hex> (SafeKit's convention); for IPv6
// 5A:F6 followed by 32 bits of a hash of the address: stable and locally administered.
MacAddr default_vip_mac(const IpAddr& address);

// A view: the set of eligible nodes, bit (id - 1) set for each.
using ViewMask = std::uint64_t;
constexpr ViewMask view_bit(NodeId id) noexcept { return ViewMask{1} << (to_int(id) - 1); }
ViewMask all_nodes(const Config& config) noexcept;

// The assignment input of group `group` when exactly the nodes of `view` are eligible.
assignment::Input assignment_input(const Config& config, std::size_t group, ViewMask view);

// SHA-256 (hex) over exactly what every node of the farm must agree on: cluster name and
// nodes, buckets, seed, policies, VIPs, groups (members and priorities, not weights, which
// travel in heartbeats) and rules.
std::string fingerprint(const Config& config);

// A rule as text, its VIP by address: "vip=198.51.100.50 proto=tcp ports=80,443 key=on_addr",
// client_net with /prefix/prefix6, gateway rules with dst=. Rules of two configs take the
// same traffic the same way exactly when their texts are equal.
std::string describe_rule(const Config& config, const Rule& rule);

// The schema keys whose values differ between `a` and `b`, in schema order: what a reload
// would change. Each key's Compare (schema.cpp) says how it is found. A table array counts as
// one key when its entries are added, removed, reordered or changed (cluster.node, vip, group,
// membership.key, membership.lan, checker); within the same groups, group[].mode,
// group[].member (who, with which priority), group[].member[].weight and group[].rule are
// told apart.
std::vector<std::string> changed_keys(const Config& a, const Config& b);
// Why the running daemon (`running`) cannot take `next` by hot reload, empty when it can:
// a key the schema marks Reload::kRestart changed (named), or a heartbeat timer change that the
// peers still on the current timers could not follow (each side's interval must stay within half
// the other side's failure-detection time, interval x dead_after; docs/membership.md).
std::string reload_refusal(const Config& running, const Config& next);

// A short human-readable description: nodes, VIPs, groups and rules.
std::string summary(const Config& config);

// What a valid config may still get wrong at run time, one line each with its key (printed
// by check-config and at start): today a net_af_packet uplink where fragments can come.
std::vector<std::string> warnings(const Config& config);
std::string_view to_string(Proto proto);
std::string_view to_string(KeyKind key);
std::string_view to_string(CheckerKind kind);
std::string format_ports(const std::vector<PortRange>& ports);

}  // namespace vipfarm::config
