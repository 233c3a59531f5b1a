// Config loading: defaults, every class of error with its location, [membership] and
// [[checker]], fingerprint scope, the shipped examples, the README's reference staying
// generated from the schema, and parse_endpoint.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "fixtures/config_text.hpp"
#include "vipfarm/config/config.hpp"
#include "vipfarm/config/schema.hpp"

namespace vipfarm::config {
namespace {

constexpr const char* kMinimal = R"(
[node]
id = 1

[cluster]
name = "web"

[[cluster.node]]
id = 1
name = "a"
address = "192.0.2.1"

[[cluster.node]]
id = 2
name = "b"
address = "192.0.2.2"

[[vip]]
address = "198.51.100.50"

[[group]]
name = "g"

[[group.rule]]
proto = "tcp"
ports = 80
)";

using fixtures::error_lines;
using fixtures::has_error;
using fixtures::loaded;
using fixtures::replaced;

// Loads `text` with the first `from` replaced by `to` and returns its errors.
std::vector<std::string> errors_in(std::string text, std::string_view from, std::string_view to) {
  return error_lines(replaced(std::move(text), from, to));
}

std::vector<std::string> errors_with(std::string_view from, std::string_view to) {
  return errors_in(kMinimal, from, to);
}

TEST(Config, MinimalGetsDefaults) {
  const LoadResult r = parse(kMinimal, "t.toml");
  ASSERT_TRUE(r.errors.empty()) << r.errors.front().to_string();
  const Config& c = *r.config;
  EXPECT_EQ(c.buckets, 256u);
  EXPECT_EQ(c.seed, 0u);
  EXPECT_EQ(c.unmatched, Unmatched::kDrop);
  EXPECT_EQ(c.icmp_echo, IcmpEcho::kOne);
  EXPECT_EQ(c.node_name, "a");
  ASSERT_EQ(c.groups.size(), 1u);
  EXPECT_EQ(c.groups[0].mode, assignment::Mode::kBalance);
  ASSERT_EQ(c.groups[0].members.size(), 2u) << "no [[group.member]]: every node, weight 1";
  EXPECT_EQ(c.groups[0].members[1].weight, 1u);
  const Rule& rule = c.groups[0].rules[0];
  EXPECT_FALSE(rule.vip.has_value());
  EXPECT_EQ(rule.key, KeyKind::kOnAddr);
  ASSERT_EQ(rule.ports.size(), 1u);
  EXPECT_EQ(rule.ports[0], (PortRange{80, 80}));
  EXPECT_EQ(vipfarm::to_string(c.vips[0].mac), "5A:FE:C6:33:64:32");
  // /metrics on the node's own address by default, never on every address (the VIPs).
  EXPECT_EQ(c.metrics.listen, c.find_node(c.node_id)->address.to_string() + ":9469");
}

TEST(Config, FlowsDefaultsValuesAndErrors) {
  const LoadResult d = parse(kMinimal, "t.toml");
  ASSERT_TRUE(d.config.has_value());
  EXPECT_TRUE(d.config->flows.handoff);
  EXPECT_EQ(d.config->flows.capacity, 262144u);
  EXPECT_EQ(d.config->flows.window_s, 600u);
  const std::string text = std::string(kMinimal) +
                           "\n[flows]\nhandoff = false\ncapacity = 4096\nwindow = 30\n"
                           "syn_timeout_ms = 1000\nestablished_timeout = 60\n"
                           "closing_timeout_ms = 2000\nudp_timeout = 5\n";
  const LoadResult r = parse(text, "t.toml");
  ASSERT_TRUE(r.errors.empty()) << r.errors.front().to_string();
  const Flows& f = r.config->flows;
  EXPECT_FALSE(f.handoff);
  EXPECT_EQ(f.capacity, 4096u);
  EXPECT_EQ(f.window_s, 30u);
  EXPECT_EQ(f.syn_timeout_ms, 1000u);
  EXPECT_EQ(f.established_timeout_s, 60u);
  EXPECT_EQ(f.closing_timeout_ms, 2000u);
  EXPECT_EQ(f.udp_timeout_s, 5u);
  auto errors = [](std::string_view body) {
    const LoadResult bad =
        parse(std::string(kMinimal) + "\n[flows]\n" + std::string(body), "t.toml");
    std::vector<std::string> out;
    for (const Error& e : bad.errors) out.push_back(e.key + ": " + e.message);
    return out;
  };
  EXPECT_TRUE(has_error(errors("handoff = \"yes\"\n"), "flows.handoff: expected true or false"));
  EXPECT_TRUE(has_error(errors("capacity = 10\n"), "flows.capacity: out of range: 10"));
  EXPECT_TRUE(has_error(errors("window = 0\n"), "flows.window: out of range"));
  EXPECT_TRUE(has_error(errors("udp_timeot = 5\n"), "flows.udp_timeot: unknown key"));
}

TEST(Config, Ipv6VipGetsAStableLocalMac) {
  const LoadResult r =
      parse(std::string(kMinimal) + "\n[[vip]]\naddress = \"2001:db8::50\"\n", "t");
  ASSERT_TRUE(r.config);
  const MacAddr mac = r.config->vips[1].mac;
  EXPECT_EQ(mac[0], 0x5A);
  EXPECT_EQ(mac[0] & 1, 0) << "unicast";
  EXPECT_EQ(mac[0] & 2, 2) << "locally administered";
  EXPECT_EQ(mac, default_vip_mac(*IpAddr::parse("2001:db8::50")));
  EXPECT_NE(mac, default_vip_mac(*IpAddr::parse("2001:db8::51")));
}

TEST(Config, PortListsAndRanges) {
  const LoadResult r = parse(
      std::string(kMinimal) + "\n[[group.rule]]\nports = [443, \"8000-8099\", \"80, 81\"]\n", "t");
  ASSERT_TRUE(r.config) << r.errors.front().to_string();
  EXPECT_EQ(format_ports(r.config->groups[0].rules[1].ports), "80-81,443,8000-8099");
}

TEST(Config, ErrorsNameFileLineColumnKeyAndReason) {
  const auto errors = errors_with("ports = 80", "ports = 80\nkey = \"on_nothing\"");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "t.toml:27:7: group[0].rule[0].key: unknown value \"on_nothing\" (expected one of: "
            "on_addr, on_port, on_ipid, five_tuple, client_net, on_dst_addr, on_dst_port, "
            "symmetric, symmetric_port)");
}

TEST(Config, EachKindOfError) {
  EXPECT_TRUE(has_error(errors_with("id = 1\n\n[cluster]", "id = \"one\"\n\n[cluster]"),
                        "node.id: expected an integer"));
  EXPECT_TRUE(has_error(errors_with("name = \"web\"", "name = \"web\"\nbuckets = 300"),
                        "cluster.buckets: must be a power of two, got 300"));
  EXPECT_TRUE(has_error(errors_with("name = \"web\"", "name = \"web\"\nbuckets = 131072"),
                        "cluster.buckets: out of range"));
  EXPECT_TRUE(has_error(errors_with("name = \"web\"", "name = \"web\"\ncolour = 1"),
                        "t.toml:7:1: cluster.colour: unknown key"));
  EXPECT_TRUE(has_error(errors_with("[[group]]", "[monitoring]\nlisten = 2\n[[group]]"),
                        "monitoring: unknown key"));
  EXPECT_TRUE(has_error(errors_with("id = 2\nname = \"b\"", "id = 1\nname = \"b\""),
                        "cluster.node[1].id: duplicate node id 1"));
  EXPECT_TRUE(has_error(errors_with("address = \"192.0.2.2\"", "address = \"192.0.2.1\""),
                        "duplicate node address"));
  EXPECT_TRUE(has_error(errors_with("address = \"198.51.100.50\"", "address = \"198.51.100.500\""),
                        "vip[0].address: not an IPv4 or IPv6 address"));
  EXPECT_TRUE(has_error(errors_with("proto = \"tcp\"", "vip = \"198.51.100.99\"\nproto = \"tcp\""),
                        "group[0].rule[0].vip: \"198.51.100.99\" is not a configured [[vip]]"));
  EXPECT_TRUE(
      has_error(errors_with("name = \"g\"", "name = \"g\"\n[[group.member]]\nnode = 1\nweight = 0"),
                "group[0].member: no eligible member"));
  EXPECT_TRUE(has_error(errors_with("name = \"g\"", "name = \"g\"\n[[group.member]]\nnode = 9"),
                        "node 9 is not listed in [[cluster.node]]"));
  EXPECT_TRUE(
      has_error(errors_with("ports = 80", "ports = \"90-80\""), "bad port or range \"90-80\""));
  EXPECT_TRUE(has_error(errors_with("ports = 80", "ports = 70000"), "port out of range"));
  EXPECT_TRUE(has_error(errors_with("ports = 80", "ports = 80\nprefix = 16"),
                        "only meaningful with key = \"client_net\""));
  EXPECT_TRUE(has_error(errors_with("proto = \"tcp\"\nports = 80", "proto = \"icmp\"\nports = 80"),
                        "ICMP has no ports"));
  EXPECT_TRUE(
      has_error(errors_with("[node]\nid = 1", "[node]\nid = 5"), "node.id: node 5 is not listed"));
  EXPECT_TRUE(has_error(errors_with("[[vip]]\naddress = \"198.51.100.50\"\n", ""),
                        "vip: missing required key"));
  EXPECT_TRUE(has_error(error_lines("[node\n"), "t.toml:1:6: (syntax):"));
  EXPECT_TRUE(has_error(errors_with("[[group]]", "[dataplane]\nworkers = 2\n[[group]]"),
                        "dataplane.uplink: missing required key"));
  EXPECT_TRUE(has_error(errors_with("[[group]]", "[api]\nsocket = \"x.sock\"\n[[group]]"),
                        "api.socket: must be an absolute path"));
  EXPECT_TRUE(has_error(errors_with("[[group]]", "[metrics]\nlisten = \"9469\"\n[[group]]"),
                        "metrics.listen: expected address:port"));
  EXPECT_TRUE(
      has_error(errors_with("[[group]]", "[metrics]\nlisten = \"198.51.100.50:9469\"\n[[group]]"),
                "metrics.listen: 198.51.100.50 is a VIP"));
  EXPECT_TRUE(has_error(errors_with("[[group]]", "[exception]\nname = \"a/b\"\n[[group]]"),
                        "exception.name: \"a/b\" is not a valid interface name"));
  EXPECT_TRUE(
      has_error(errors_with("[[group]]", "[dataplane]\nuplink = \"x\"\neal_args = [1]\n[[group]]"),
                "dataplane.eal_args: expected a string"));
  // Keys TOML must quote are named quoted (the config fuzzer found an empty one unnamed).
  EXPECT_TRUE(has_error(error_lines("[['']]\n"), "t.toml:1:3: \"\": unknown key"));
  EXPECT_TRUE(has_error(errors_with("[[group]]", "[node.\"a b\"]\n[[group]]"),
                        "node.\"a b\": unknown key"));
}

TEST(Config, ReportsEveryErrorNotJustTheFirst) {
  std::string text = kMinimal;
  text.replace(text.find("name = \"web\""), 12, "name = \"web\"\nbuckets = 3\nseed = -1");
  text.replace(text.find("ports = 80"), 10, "ports = \"x\"\nkey = 5");
  const auto errors = error_lines(text);
  EXPECT_EQ(errors.size(), 4u);
  EXPECT_TRUE(has_error(errors, "cluster.buckets"));
  EXPECT_TRUE(has_error(errors, "cluster.seed"));
  EXPECT_TRUE(has_error(errors, "rule[0].ports"));
  EXPECT_TRUE(has_error(errors, "rule[0].key: expected a string"));
}

TEST(Config, FingerprintCoversWhatNodesMustShareAndNothingElse) {
  const std::string base = fingerprint(*parse(kMinimal, "t").config);
  auto fp = [](std::string text, std::string_view from, std::string_view to) {
    text.replace(text.find(from), from.size(), to);
    const LoadResult r = parse(text, "t");
    EXPECT_TRUE(r.config) << (r.errors.empty() ? "" : r.errors[0].to_string());
    return r.config ? fingerprint(*r.config) : "";
  };
  // This node's identity and the weights (which travel in heartbeats) are not shared state.
  EXPECT_EQ(fp(kMinimal, "[node]\nid = 1", "[node]\nid = 2"), base);
  EXPECT_EQ(fp(kMinimal, "name = \"g\"",
               "name = \"g\"\n[[group.member]]\nnode = 1\nweight = 3\n"
               "[[group.member]]\nnode = 2"),
            base);
  // Rules, buckets, seed, VIPs and policies are.
  EXPECT_NE(fp(kMinimal, "ports = 80", "ports = 81"), base);
  EXPECT_NE(fp(kMinimal, "ports = 80", "ports = 80\nkey = \"on_port\""), base);
  EXPECT_NE(fp(kMinimal, "name = \"web\"", "name = \"web\"\nbuckets = 512"), base);
  EXPECT_NE(fp(kMinimal, "name = \"web\"", "name = \"web\"\nseed = 1"), base);
  EXPECT_NE(fp(kMinimal, "198.51.100.50", "198.51.100.51"), base);
  EXPECT_NE(fp(kMinimal, "name = \"web\"", "name = \"web\"\nicmp_echo = \"none\""), base);
  EXPECT_EQ(base.size(), 64u);
}

// Every [membership] key set away from its default, on kMinimal's nodes (this node is 1).
constexpr const char* kMembership = R"(
[membership]
port = 9500
interval_ms = 50
dead_after = 6
agreement_timeout_ms = 300
split_brain = "majority"
witness = "192.0.2.254"
witness_port = 9471
flap_limit = 3
flap_window = 120
hold_down = 45
lease_ms = 250
send_key = 2

[[membership.key]]
id = 1
file = "/etc/vipfarm/cluster-1.key"

[[membership.key]]
id = 2
file = "/etc/vipfarm/cluster-2.key"

[[membership.lan]]
name = "backplane"

[[membership.lan.node]]
id = 1
address = "10.9.0.1"

[[membership.lan.node]]
id = 2
address = "fd00:9::2"
)";

std::vector<std::string> membership_errors(std::string_view from, std::string_view to) {
  return errors_in(std::string(kMinimal) + kMembership, from, to);
}

TEST(Config, MembershipReadsEveryKey) {
  const LoadResult r = parse(std::string(kMinimal) + kMembership, "t.toml");
  ASSERT_TRUE(r.errors.empty()) << r.errors.front().to_string();
  const Membership& m = r.config->membership;
  EXPECT_TRUE(m.present);
  EXPECT_EQ(m.port, 9500u);
  EXPECT_EQ(m.interval_ms, 50u);
  EXPECT_EQ(m.dead_after, 6u);
  EXPECT_EQ(m.agreement_timeout_ms, 300u);
  EXPECT_EQ(m.split_brain, SplitBrain::kMajority);
  EXPECT_EQ(m.witness, IpAddr::parse("192.0.2.254"));
  EXPECT_EQ(m.witness_port, 9471u);
  EXPECT_EQ(m.flap_limit, 3u);
  EXPECT_EQ(m.flap_window_s, 120u);
  EXPECT_EQ(m.hold_down_s, 45u);
  EXPECT_EQ(m.lease_ms, 250u);
  ASSERT_EQ(m.keys.size(), 2u);
  EXPECT_EQ(m.keys[0].id, 1u);
  EXPECT_EQ(m.keys[0].file, "/etc/vipfarm/cluster-1.key");
  EXPECT_EQ(m.keys[1].id, 2u);
  EXPECT_EQ(m.keys[1].file, "/etc/vipfarm/cluster-2.key");
  EXPECT_EQ(m.send_key, 2u);
  ASSERT_EQ(m.lans.size(), 1u);
  const HeartbeatLan& lan = m.lans[0];
  EXPECT_EQ(lan.name, "backplane");
  EXPECT_EQ(lan.addresses.size(), 2u);
  ASSERT_NE(lan.find(NodeId{1}), nullptr);
  EXPECT_EQ(*lan.find(NodeId{1}), IpAddr::parse("10.9.0.1"));
  ASSERT_NE(lan.find(NodeId{2}), nullptr);
  EXPECT_EQ(*lan.find(NodeId{2}), IpAddr::parse("fd00:9::2"));
  EXPECT_EQ(lan.find(NodeId{3}), nullptr);
}

TEST(Config, MembershipDefaultsNeedOnlyAKey) {
  const LoadResult r = parse(std::string(kMinimal) +
                                 "\n[membership]\n\n[[membership.key]]\nid = 7\n"
                                 "file = \"/etc/vipfarm/cluster.key\"\n",
                             "t.toml");
  ASSERT_TRUE(r.errors.empty()) << r.errors.front().to_string();
  const Membership& m = r.config->membership;
  EXPECT_TRUE(m.present);
  EXPECT_EQ(m.port, 9470u);
  EXPECT_EQ(m.interval_ms, 100u);
  EXPECT_EQ(m.dead_after, 8u);
  EXPECT_EQ(m.agreement_timeout_ms, 0u);
  EXPECT_EQ(m.split_brain, SplitBrain::kServe);
  EXPECT_FALSE(m.witness.has_value());
  EXPECT_EQ(m.witness_port, 0u) << "the witness is pinged unless a port is given";
  EXPECT_EQ(m.flap_limit, 4u);
  EXPECT_EQ(m.flap_window_s, 60u);
  EXPECT_EQ(m.hold_down_s, 30u);
  EXPECT_EQ(m.lease_ms, 0u);
  ASSERT_EQ(m.keys.size(), 1u);
  EXPECT_EQ(m.send_key, 7u) << "one key: heartbeats are signed with it";
  EXPECT_TRUE(m.lans.empty());
}

TEST(Config, NoMembershipTableMeansAStaticView) {
  const LoadResult r = parse(kMinimal, "t.toml");
  ASSERT_TRUE(r.config);
  EXPECT_FALSE(r.config->membership.present);
  EXPECT_TRUE(r.config->membership.keys.empty());
  EXPECT_TRUE(r.config->checkers.empty());
}

TEST(Config, WitnessPortIsCheckedWithFileAndLine) {
  const std::string text = std::string(kMinimal) + kMembership;
  // The line of witness_port in the file, for the file:line:col the errors carry.
  const std::size_t at = text.find("witness_port = 9471");
  ASSERT_NE(at, std::string::npos);
  const auto line =
      1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n');
  const std::string where = "t.toml:" + std::to_string(line) + ":";
  EXPECT_TRUE(
      has_error(membership_errors("witness_port = 9471", "witness_port = 70000"),
                where + "16: membership.witness_port: out of range: 70000 not in 0..65535"));
  EXPECT_TRUE(has_error(membership_errors("witness_port = 9471", "witness_port = -1"),
                        "membership.witness_port: out of range: -1 not in 0..65535"));
  EXPECT_TRUE(has_error(membership_errors("witness_port = 9471", "witness_port = \"udp\""),
                        "membership.witness_port:"));
  // Without a witness address the port means nothing: refused, naming the key's line.
  const std::vector<std::string> alone = membership_errors("witness = \"192.0.2.254\"\n", "");
  EXPECT_TRUE(has_error(alone, "membership.witness_port: only used with membership.witness"));
  EXPECT_TRUE(has_error(alone, "t.toml:" + std::to_string(line - 1) + ":"))
      << "the witness line is gone, so witness_port is one line higher";
  // 0 is the ICMP witness, as before the key existed.
  const LoadResult ping =
      parse(replaced(text, "witness_port = 9471", "witness_port = 0"), "t.toml");
  ASSERT_TRUE(ping.config);
  EXPECT_EQ(ping.config->membership.witness_port, 0u);
  const LoadResult none =
      parse(replaced(text, "witness = \"192.0.2.254\"\nwitness_port = 9471\n", ""), "t.toml");
  ASSERT_TRUE(none.config) << none.errors.front().to_string();
}

TEST(Config, EachMembershipError) {
  EXPECT_TRUE(has_error(membership_errors("interval_ms = 50", "interval_ms = 5"),
                        "membership.interval_ms: out of range: 5 not in 10..10000"));
  EXPECT_TRUE(has_error(membership_errors("dead_after = 6", "dead_after = 1"),
                        "membership.dead_after: out of range: 1 not in 2..100"));
  EXPECT_TRUE(has_error(
      membership_errors("split_brain = \"majority\"", "split_brain = \"quorum\""),
      "membership.split_brain: unknown value \"quorum\" (expected one of: serve, majority)"));
  EXPECT_TRUE(has_error(membership_errors("witness = \"192.0.2.254\"", "witness = \"gateway\""),
                        "membership.witness: not an IPv4 or IPv6 address: \"gateway\""));
  EXPECT_TRUE(has_error(membership_errors("split_brain = \"majority\"", "split_brain = \"serve\""),
                        "membership.witness: only used with split_brain = \"majority\""));
  EXPECT_TRUE(has_error(membership_errors("lease_ms = 250", "lease_ms = 99"),
                        "membership.lease_ms: must be at least two intervals (100 ms) or 0"));
  EXPECT_TRUE(has_error(
      membership_errors("send_key = 2\n\n[[membership.key]]\nid = 1\n"
                        "file = \"/etc/vipfarm/cluster-1.key\"\n\n[[membership.key]]\nid = 2\n"
                        "file = \"/etc/vipfarm/cluster-2.key\"\n",
                        ""),
      "membership.key: missing required key"));
  EXPECT_TRUE(has_error(membership_errors("id = 2\nfile", "id = 1\nfile"),
                        "membership.key[1].id: duplicate key id 1"));
  EXPECT_TRUE(has_error(membership_errors("\"/etc/vipfarm/cluster-1.key\"", "\"cluster-1.key\""),
                        "membership.key[0].file: must be an absolute path"));
  EXPECT_TRUE(
      has_error(membership_errors("send_key = 2\n", ""),
                "membership.send_key: required when more than one [[membership.key]] is listed"));
  EXPECT_TRUE(has_error(membership_errors("send_key = 2", "send_key = 3"),
                        "membership.send_key: key 3 is not a [[membership.key]] id"));
  EXPECT_TRUE(has_error(membership_errors("id = 2\naddress = \"fd00", "id = 9\naddress = \"fd00"),
                        "membership.lan[0].node[1].id: node 9 is not listed in [[cluster.node]]"));
  EXPECT_TRUE(has_error(membership_errors("id = 2\naddress = \"fd00", "id = 1\naddress = \"fd00"),
                        "membership.lan[0].node[1].id: node 1 listed twice"));
  EXPECT_TRUE(
      has_error(membership_errors("[[membership.lan.node]]\nid = 1\naddress = \"10.9.0.1\"\n", ""),
                "membership.lan[0].node: this node (1) has no address"));
}

TEST(Config, UnknownKeysInMembershipAndCheckersAreNamed) {
  EXPECT_TRUE(has_error(membership_errors("interval_ms = 50", "intervall = 50"),
                        "membership.intervall: unknown key"));
  EXPECT_TRUE(has_error(membership_errors("id = 2\nfile", "id = 2\npath = \"/k\"\nfile"),
                        "membership.key[1].path: unknown key"));
  EXPECT_TRUE(
      has_error(membership_errors("name = \"backplane\"", "name = \"backplane\"\nmtu = 9000"),
                "membership.lan[0].mtu: unknown key"));
  EXPECT_TRUE(
      has_error(membership_errors("address = \"10.9.0.1\"", "address = \"10.9.0.1\"\nmac = \"\""),
                "membership.lan[0].node[0].mac: unknown key"));
  EXPECT_TRUE(has_error(
      error_lines(std::string(kMinimal) + "\n[[checker]]\nname = \"web\"\nkind = \"tcp\"\n"
                                          "target = \"127.0.0.1:80\"\nport = 80\n"),
      "checker[0].port: unknown key"));
}

// A second group, so that binding a checker to it shows the index is resolved.
std::string with_second_group(std::string_view tail) {
  return std::string(kMinimal) + "\n[[group]]\nname = \"h\"\n\n[[group.rule]]\nproto = \"udp\"\n" +
         "ports = 53\n" + std::string(tail);
}

TEST(Config, EachCheckerKindWithItsTarget) {
  struct Case {
    std::string_view kind;
    std::string_view target;
    CheckerKind expected;
  };
  for (const Case& c :
       {Case{"tcp", "127.0.0.1:80", CheckerKind::kTcp},
        Case{"tcp", "[::1]:8080", CheckerKind::kTcp}, Case{"ping", "10.0.0.1", CheckerKind::kPing},
        Case{"interface", "eth0", CheckerKind::kInterface},
        Case{"custom", "systemctl is-active nginx", CheckerKind::kCustom}}) {
    const LoadResult r =
        parse(std::string(kMinimal) + "\n[[checker]]\nname = \"c\"\nkind = \"" +
                  std::string(c.kind) + "\"\ntarget = \"" + std::string(c.target) + "\"\n",
              "t.toml");
    ASSERT_TRUE(r.errors.empty()) << c.kind << " " << c.target << ": "
                                  << r.errors.front().to_string();
    ASSERT_EQ(r.config->checkers.size(), 1u);
    EXPECT_EQ(r.config->checkers[0].kind, c.expected) << c.target;
    EXPECT_EQ(r.config->checkers[0].target, c.target);
  }
}

TEST(Config, CheckerDefaultsAndGroupBinding) {
  const LoadResult r = parse(with_second_group("\n[[checker]]\nname = \"nginx\"\nkind = \"tcp\"\n"
                                               "target = \"127.0.0.1:80\"\n\n"
                                               "[[checker]]\nname = \"dns\"\nkind = \"ping\"\n"
                                               "target = \"10.0.0.53\"\ngroup = \"h\"\n"
                                               "interval_ms = 1000\ntimeout_ms = 900\n"
                                               "rise = 3\nfall = 1\n"),
                             "t.toml");
  ASSERT_TRUE(r.errors.empty()) << r.errors.front().to_string();
  ASSERT_EQ(r.config->checkers.size(), 2u);
  const Checker& nginx = r.config->checkers[0];
  EXPECT_EQ(nginx.name, "nginx");
  EXPECT_EQ(nginx.interval_ms, 500u);
  EXPECT_EQ(nginx.timeout_ms, 400u);
  EXPECT_EQ(nginx.rise, 2u);
  EXPECT_EQ(nginx.fall, 2u);
  EXPECT_FALSE(nginx.group.has_value()) << "unbound: the whole node";
  const Checker& dns = r.config->checkers[1];
  EXPECT_EQ(dns.interval_ms, 1000u);
  EXPECT_EQ(dns.timeout_ms, 900u);
  EXPECT_EQ(dns.rise, 3u);
  EXPECT_EQ(dns.fall, 1u);
  EXPECT_EQ(dns.group, std::optional<std::size_t>(1));
}

constexpr const char* kChecker = R"(
[[checker]]
name = "web"
kind = "tcp"
target = "127.0.0.1:80"
)";

std::vector<std::string> checker_errors(std::string_view from, std::string_view to) {
  return errors_in(std::string(kMinimal) + kChecker, from, to);
}

TEST(Config, EachCheckerError) {
  const auto missing_kind = checker_errors("kind = \"tcp\"\n", "");
  EXPECT_TRUE(has_error(missing_kind, "checker[0].kind: missing required key"));
  EXPECT_EQ(missing_kind.size(), 1u);
  EXPECT_TRUE(
      has_error(checker_errors("kind = \"tcp\"", "kind = \"http\""),
                "checker[0].kind: unknown value \"http\" (expected one of: tcp, ping, interface, "
                "custom)"));
  EXPECT_TRUE(has_error(checker_errors("\"127.0.0.1:80\"", "\"127.0.0.1\""),
                        "checker[0].target: expected address:port (127.0.0.1:80, [::1]:80), got "
                        "\"127.0.0.1\""));
  EXPECT_TRUE(has_error(checker_errors("\"127.0.0.1:80\"", "\"::1:8080\""),
                        "checker[0].target: expected address:port"));
  EXPECT_TRUE(has_error(checker_errors("\"127.0.0.1:80\"", "\"127.0.0.1:0\""),
                        "checker[0].target: expected address:port"));
  EXPECT_TRUE(has_error(checker_errors("kind = \"tcp\"\ntarget = \"127.0.0.1:80\"",
                                       "kind = \"ping\"\ntarget = \"gateway\""),
                        "checker[0].target: not an IPv4 or IPv6 address: \"gateway\""));
  EXPECT_TRUE(has_error(checker_errors("kind = \"tcp\"\ntarget = \"127.0.0.1:80\"",
                                       "kind = \"interface\"\ntarget = \"eth0/1\""),
                        "checker[0].target: \"eth0/1\" is not a valid interface name"));
  EXPECT_TRUE(has_error(error_lines(std::string(kMinimal) + kChecker + kChecker),
                        "checker[1].name: duplicate checker \"web\""));
  EXPECT_TRUE(has_error(checker_errors("\"127.0.0.1:80\"", "\"127.0.0.1:80\"\ngroup = \"db\""),
                        "checker[0].group: no [[group]] named \"db\""));
  EXPECT_TRUE(has_error(checker_errors("\"127.0.0.1:80\"", "\"127.0.0.1:80\"\ninterval_ms = 0"),
                        "checker[0].interval_ms: out of range: 0 not in 10..3600000"));
}

// A custom checker's user and env: kept as written (the checker looks the user up again
// for its ids); absent, the defaults ("nobody", only PATH).
TEST(Config, CustomCheckerUserAndEnv) {
  const std::string custom =
      std::string(kMinimal) + "\n[[checker]]\nname = \"c\"\nkind = \"custom\"\ntarget = \"true\"\n";
  const LoadResult plain = parse(custom, "t.toml");
  ASSERT_TRUE(plain.errors.empty()) << plain.errors.front().to_string();
  EXPECT_EQ(plain.config->checkers[0].user, "");
  EXPECT_TRUE(plain.config->checkers[0].env.empty());
  const LoadResult r = parse(
      custom + "user = \"root\"\nenv = [\"PATH=/opt/bin\", \"_A1=x=y\", \"EMPTY=\"]\n", "t.toml");
  ASSERT_TRUE(r.errors.empty()) << r.errors.front().to_string();
  EXPECT_EQ(r.config->checkers[0].user, "root");
  EXPECT_EQ(r.config->checkers[0].env,
            (std::vector<std::string>{"PATH=/opt/bin", "_A1=x=y", "EMPTY="}));
}

TEST(Config, EachCustomCheckerError) {
  const std::string custom = std::string(kMinimal) + kChecker;
  auto errors = [&](std::string_view tail) {
    return error_lines(replaced(custom, "kind = \"tcp\"\ntarget = \"127.0.0.1:80\"",
                                "kind = \"custom\"\ntarget = \"true\"\n" + std::string(tail)));
  };
  // A user this system does not have: the file, the line and the key.
  const std::string missing = replaced(custom, "kind = \"tcp\"\ntarget = \"127.0.0.1:80\"",
                                       "kind = \"custom\"\ntarget = \"true\"\n"
                                       "user = \"vipfarm-no-such-user\"");
  const std::size_t line =
      1 + static_cast<std::size_t>(
              std::count(missing.begin(), missing.begin() + missing.find("user ="), '\n'));
  const auto no_user = error_lines(missing);
  ASSERT_EQ(no_user.size(), 1u);
  EXPECT_EQ(no_user[0], "t.toml:" + std::to_string(line) +
                            ":8: checker[0].user: no user \"vipfarm-no-such-user\" on this system");
  EXPECT_TRUE(has_error(errors("user = \"\""), "checker[0].user: must not be empty"));
  EXPECT_TRUE(has_error(errors("user = \"root\\u0000x\""),
                        "checker[0].user: must not contain a NUL character"));
  EXPECT_TRUE(has_error(errors("user = 0"), "checker[0].user: expected a string"));
  EXPECT_TRUE(has_error(errors("env = \"A=1\""),
                        "checker[0].env: expected an array of \"NAME=value\" strings"));
  EXPECT_TRUE(has_error(errors("env = [1]"), "checker[0].env: expected a \"NAME=value\" string"));
  EXPECT_TRUE(has_error(errors("env = [\"A\"]"), "checker[0].env: \"A\": expected NAME=value"));
  for (const std::string_view name : {"1A", "A-B", "", "A B", "\\u00e9"}) {
    EXPECT_TRUE(has_error(errors("env = [\"" + std::string(name) + "=x\"]"),
                          "is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"))
        << name;
  }
  EXPECT_TRUE(has_error(errors("env = [\"A=1\", \"A=2\"]"), "checker[0].env: A is set twice"));
  EXPECT_TRUE(has_error(errors("env = [\"A=\\u0000\"]"),
                        "checker[0].env: A: the value must not contain a NUL character"));
  // Only a command has a user and an environment.
  EXPECT_TRUE(has_error(checker_errors("\"127.0.0.1:80\"", "\"127.0.0.1:80\"\nuser = \"root\""),
                        "checker[0].user: only for kind = \"custom\""));
  EXPECT_TRUE(has_error(checker_errors("\"127.0.0.1:80\"", "\"127.0.0.1:80\"\nenv = []"),
                        "checker[0].env: only for kind = \"custom\""));
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(Config, ShippedExamplesAreValid) {
  for (const char* name : {"conf/lab.toml", "conf/production.toml", "conf/gateway.toml",
                           "tests/lab/gateway.toml", "tests/fixtures/fixture.toml"}) {
    const LoadResult r = load_file(std::string(VIPFARM_SOURCE_DIR) + "/" + name);
    EXPECT_TRUE(r.errors.empty()) << name << ": "
                                  << (r.errors.empty() ? "" : r.errors[0].to_string());
  }
}

TEST(Config, ReadmeReferenceIsGeneratedFromTheSchema) {
  const std::string readme = read(std::string(VIPFARM_SOURCE_DIR) + "/README.md");
  EXPECT_NE(readme.find(reference_markdown()), std::string::npos)
      << "README.md's configuration table is stale: regenerate it with "
         "scripts/gen-reference";
}

TEST(Config, ProductionExampleCommentsEveryKey) {
  const std::string text = read(std::string(VIPFARM_SOURCE_DIR) + "/conf/production.toml");
  for (const KeySpec& spec : schema()) {
    const std::string_view path = spec.path;
    const auto last = path.find_last_of(".]");
    const std::string leaf(last == std::string_view::npos ? path : path.substr(last + 1));
    EXPECT_NE(text.find(leaf), std::string::npos)
        << spec.path << " is not shown in production.toml";
  }
}

// Hot reload: what changed, named by schema keys, and whether a running daemon may take it.
const std::string kWithMembership = std::string(kMinimal) + R"(
[membership]
[[membership.key]]
id = 1
file = "/etc/vipfarm/cluster.key"
[[checker]]
name = "web"
kind = "tcp"
target = "127.0.0.1:80"
)";

TEST(Reload, ChangedKeysNameSchemaKeysAndTellReloadableFromRestart) {
  const Config base = loaded(kWithMembership);
  struct Case {
    std::string_view from, to, key;
    bool reloadable;
  };
  const std::vector<Case> cases = {
      {"ports = 80", "ports = \"80,443\"", "group[].rule", true},
      {"name = \"g\"", "name = \"g\"\nmode = \"failover\"", "group[].mode", true},
      {"name = \"g\"", "name = \"g\"\n[[group.member]]\nnode = 1\nweight = 1", "group[].member",
       true},
      {"[[vip]]", "[flows]\nudp_timeout = 60\n[[vip]]", "flows.udp_timeout", true},
      {"[[vip]]", "[flows]\nwindow = 60\n[[vip]]", "flows.window", true},
      {"[[vip]]", "[flows]\nhandoff = false\n[[vip]]", "flows.handoff", false},
      {"[[vip]]", "[flows]\ncapacity = 4096\n[[vip]]", "flows.capacity", false},
      {"name = \"web\"\n\n", "name = \"web\"\nunmatched = \"pass\"\n\n", "cluster.unmatched", true},
      {"name = \"web\"\n\n", "name = \"web\"\nbuckets = 512\n\n", "cluster.buckets", false},
      {"address = \"192.0.2.2\"", "address = \"192.0.2.3\"", "cluster.node", false},
      {"address = \"198.51.100.50\"", "address = \"198.51.100.51\"", "vip", false},
      {"name = \"g\"", "name = \"h\"", "group", false},
      {"[membership]", "[membership]\ninterval_ms = 150", "membership.interval_ms", true},
      {"[membership]", "[membership]\nsplit_brain = \"majority\"", "membership.split_brain", true},
      {"[membership]", "[membership]\nsplit_brain = \"majority\"\nwitness = \"192.0.2.254\"",
       "membership.split_brain", true},
      {"[membership]", "[membership]\nport = 9471", "membership.port", false},
      {"target = \"127.0.0.1:80\"", "target = \"127.0.0.1:8080\"", "checker", true},
      {"[[checker]]", "[dataplane]\nuplink = \"net_null0\"\nworkers = 2\n[[checker]]",
       "dataplane.uplink", false},
  };
  for (const Case& c : cases) {
    const Config next = loaded(replaced(kWithMembership, c.from, c.to));
    const std::vector<std::string> keys = changed_keys(base, next);
    ASSERT_FALSE(keys.empty()) << c.key;
    EXPECT_EQ(keys.front(), c.key) << c.to;
    for (const std::string& key : keys) EXPECT_NE(find_key(key), nullptr) << key;
    const std::string refusal = reload_refusal(base, next);
    if (c.reloadable) {
      EXPECT_EQ(refusal, "") << c.key;
    } else {
      EXPECT_NE(refusal.find("need a restart"), std::string::npos) << c.key;
      EXPECT_NE(refusal.find(c.key), std::string::npos) << refusal;
    }
  }
  // A weight alone is a weight change, not a member change.
  const Config weighted = loaded(replaced(kWithMembership, "name = \"g\"",
                                          "name = \"g\"\n[[group.member]]\nnode = 1\nweight = 1\n"
                                          "[[group.member]]\nnode = 2\nweight = 1"));
  const Config heavier = loaded(replaced(kWithMembership, "name = \"g\"",
                                         "name = \"g\"\n[[group.member]]\nnode = 1\nweight = 3\n"
                                         "[[group.member]]\nnode = 2\nweight = 1"));
  EXPECT_EQ(changed_keys(weighted, heavier), std::vector<std::string>{"group[].member[].weight"});
  EXPECT_TRUE(changed_keys(base, loaded(kWithMembership)).empty());
}

TEST(Config, L2ModePerVipIsInTheFingerprint) {
  const Config flood = loaded(kMinimal);
  EXPECT_EQ(flood.vips[0].l2_mode, L2Mode::kFlood);
  const std::string text = replaced(kMinimal, "address = \"198.51.100.50\"",
                                    "address = \"198.51.100.50\"\nl2_mode = \"directed\"");
  const Config directed = loaded(text);
  EXPECT_EQ(directed.vips[0].l2_mode, L2Mode::kDirected);
  EXPECT_NE(fingerprint(flood), fingerprint(directed));
  EXPECT_EQ(changed_keys(flood, directed), std::vector<std::string>{"vip"});
  EXPECT_TRUE(has_error(errors_with("address = \"198.51.100.50\"",
                                    "address = \"198.51.100.50\"\nl2_mode = \"routed\""),
                        "vip[0].l2_mode: unknown value \"routed\""));
  EXPECT_EQ(loaded(replaced(kMinimal, "address = \"198.51.100.50\"",
                            "address = \"2001:db8::50\"\nl2_mode = \"directed\""))
                .vips[0]
                .l2_mode,
            L2Mode::kDirected);
}

TEST(Config, NodeMacIsOptionalAndUnicast) {
  const Config plain = loaded(kMinimal);
  EXPECT_FALSE(plain.nodes[1].mac.has_value());
  const Config with = loaded(replaced(kMinimal, "address = \"192.0.2.2\"",
                                      "address = \"192.0.2.2\"\nmac = \"02:00:5e:00:00:02\""));
  ASSERT_TRUE(with.nodes[1].mac.has_value());
  EXPECT_EQ(vipfarm::to_string(*with.nodes[1].mac), "02:00:5E:00:00:02");
  EXPECT_TRUE(has_error(errors_with("address = \"192.0.2.2\"",
                                    "address = \"192.0.2.2\"\nmac = \"01:00:5e:00:00:02\""),
                        "cluster.node[1].mac: not a unicast MAC address"));
}

TEST(Reload, HeartbeatTimersChangeOnlyInStepsThePeersCanFollow) {
  const Config base = loaded(kWithMembership);  // 100 ms x 8: dead after 800 ms
  auto with = [](std::string_view timers) {
    return loaded(
        replaced(kWithMembership, "[membership]", "[membership]\n" + std::string(timers)));
  };
  EXPECT_EQ(reload_refusal(base, with("interval_ms = 400")), "");  // 400 <= 800/2, 100 <= 3200/2
  EXPECT_EQ(reload_refusal(base, with("interval_ms = 50")), "");
  EXPECT_EQ(reload_refusal(base, with("dead_after = 4")), "");  // 100 <= 400/2
  const std::string too_slow = reload_refusal(base, with("interval_ms = 500"));
  EXPECT_NE(too_slow.find("membership.interval_ms 500"), std::string::npos) << too_slow;
  EXPECT_NE(too_slow.find("800 ms"), std::string::npos) << too_slow;
  const std::string too_eager = reload_refusal(base, with("interval_ms = 20\ndead_after = 5"));
  EXPECT_NE(too_eager.find("100 ms"), std::string::npos) << too_eager;
  // The same target in two steps: 100 -> 400 -> 1000 with dead_after 8.
  EXPECT_EQ(reload_refusal(with("interval_ms = 400"), with("interval_ms = 1000")), "");
}

// A config with an entry in every table array, for changing each key of the schema alone:
// kMembership's, a client_net rule, a port and a checker.
const std::string kEveryTable =
    replaced(kMinimal, "ports = 80", "ports = 80\nkey = \"client_net\"") + kMembership + R"(
[dataplane]
uplink = "net_null0"
[[checker]]
name = "web"
kind = "tcp"
target = "127.0.0.1:80"
)";

IpAddr ip(std::string_view text) { return *IpAddr::parse(text); }
Prefix prefix(std::string_view text) { return *parse_prefix(text); }

// A change of each schema key that changed_keys() finds (each row with a Compare), made to
// kEveryTable's config. A key added to the schema without a case here fails the test below.
struct KeyChange {
  std::string_view key;
  void (*change)(Config&);
};
const std::vector<KeyChange> kKeyChanges = {
    {"node", [](Config& c) { c.node_id = NodeId{2}; }},
    {"node.id", [](Config& c) { c.node_id = NodeId{2}; }},
    {"node.name", [](Config& c) { c.node_name = "b"; }},
    {"cluster.name", [](Config& c) { c.cluster_name = "mail"; }},
    {"cluster.buckets", [](Config& c) { c.buckets = 512; }},
    {"cluster.seed", [](Config& c) { c.seed = 7; }},
    {"cluster.unmatched", [](Config& c) { c.unmatched = Unmatched::kPass; }},
    {"cluster.icmp_echo", [](Config& c) { c.icmp_echo = IcmpEcho::kNone; }},
    {"cluster.node", [](Config& c) { c.nodes.pop_back(); }},
    {"cluster.node[].id", [](Config& c) { c.nodes[1].id = NodeId{3}; }},
    {"cluster.node[].name", [](Config& c) { c.nodes[1].name = "c"; }},
    {"cluster.node[].address", [](Config& c) { c.nodes[1].address = ip("192.0.2.3"); }},
    {"cluster.node[].mac", [](Config& c) { c.nodes[1].mac = MacAddr{2, 0, 0x5e, 0, 0, 2}; }},
    {"vip", [](Config& c) { c.vips.push_back(c.vips[0]); }},
    {"vip[].address", [](Config& c) { c.vips[0].address = ip("198.51.100.51"); }},
    {"vip[].mac", [](Config& c) { c.vips[0].mac[5] ^= 1; }},
    {"vip[].gateway", [](Config& c) { c.vips[0].gateway = true; }},
    {"vip[].port", [](Config& c) { c.vips[0].port = 1; }},
    {"vip[].l2_mode", [](Config& c) { c.vips[0].l2_mode = L2Mode::kDirected; }},
    {"group", [](Config& c) { c.groups.push_back(c.groups[0]); }},
    {"group[].name", [](Config& c) { c.groups[0].name = "h"; }},
    {"group[].mode", [](Config& c) { c.groups[0].mode = assignment::Mode::kFailover; }},
    {"group[].member", [](Config& c) { c.groups[0].members.pop_back(); }},
    {"group[].member[].node", [](Config& c) { c.groups[0].members[1].node = NodeId{3}; }},
    {"group[].member[].weight", [](Config& c) { c.groups[0].members[1].weight = 2; }},
    {"group[].member[].priority", [](Config& c) { c.groups[0].members[1].priority = 1; }},
    {"group[].rule", [](Config& c) { c.groups[0].rules.push_back(c.groups[0].rules[0]); }},
    {"group[].rule[].vip", [](Config& c) { c.groups[0].rules[0].vip = 0; }},
    {"group[].rule[].proto", [](Config& c) { c.groups[0].rules[0].proto = Proto::kUdp; }},
    {"group[].rule[].ports",
     [](Config& c) {
       c.groups[0].rules[0].ports.push_back({443, 443});
     }},
    {"group[].rule[].dst",
     [](Config& c) { c.groups[0].rules[0].dst.push_back(prefix("10.0.0.0/8")); }},
    {"group[].rule[].key", [](Config& c) { c.groups[0].rules[0].key = KeyKind::kFiveTuple; }},
    {"group[].rule[].prefix", [](Config& c) { c.groups[0].rules[0].prefix = 16; }},
    {"group[].rule[].prefix6", [](Config& c) { c.groups[0].rules[0].prefix6 = 48; }},
    {"dataplane.uplink", [](Config& c) { c.dataplane.ports[0].uplink = "net_null1"; }},
    {"dataplane.port", [](Config& c) { c.dataplane.ports[0].name = "inside"; }},
    {"dataplane.port[].name", [](Config& c) { c.dataplane.ports[0].name = "inside"; }},
    {"dataplane.port[].uplink", [](Config& c) { c.dataplane.ports[0].uplink = "net_null1"; }},
    {"dataplane.port[].exception", [](Config& c) { c.dataplane.ports[0].exception = "tap1"; }},
    {"dataplane.port[].address",
     [](Config& c) { c.dataplane.ports[0].addresses.push_back(prefix("203.0.113.1/24")); }},
    {"dataplane.eal_args", [](Config& c) { c.dataplane.eal_args.push_back("--no-huge"); }},
    {"dataplane.workers", [](Config& c) { c.dataplane.workers = 2; }},
    {"dataplane.poll", [](Config& c) { c.dataplane.poll = Poll::kAdaptive; }},
    {"dataplane.burst", [](Config& c) { c.dataplane.burst = 16; }},
    {"dataplane.garp_interval", [](Config& c) { c.dataplane.garp_interval_s = 30; }},
    {"dataplane.garp_duration", [](Config& c) { c.dataplane.garp_duration_s = 0; }},
    {"exception.name", [](Config& c) { c.exception.name = "tap1"; }},
    {"exception.prefix", [](Config& c) { c.exception.prefix = 16; }},
    {"exception.prefix6", [](Config& c) { c.exception.prefix6 = 48; }},
    {"exception.ring_size", [](Config& c) { c.exception.ring_size = 1024; }},
    {"api.socket", [](Config& c) { c.api.socket = "/run/vipfarm/other.sock"; }},
    {"metrics.listen", [](Config& c) { c.metrics.listen = ""; }},
    {"membership", [](Config& c) { c.membership.present = false; }},
    {"membership.port", [](Config& c) { ++c.membership.port; }},
    // kMembership's 50 ms x 6 to 100 ms x 6, or to 50 ms x 7: steps the peers can follow.
    {"membership.interval_ms", [](Config& c) { c.membership.interval_ms = 100; }},
    {"membership.dead_after", [](Config& c) { ++c.membership.dead_after; }},
    {"membership.agreement_timeout_ms", [](Config& c) { ++c.membership.agreement_timeout_ms; }},
    {"membership.split_brain", [](Config& c) { c.membership.split_brain = SplitBrain::kServe; }},
    {"membership.witness", [](Config& c) { c.membership.witness = ip("192.0.2.253"); }},
    {"membership.witness_port", [](Config& c) { ++c.membership.witness_port; }},
    {"membership.flap_limit", [](Config& c) { ++c.membership.flap_limit; }},
    {"membership.flap_window", [](Config& c) { ++c.membership.flap_window_s; }},
    {"membership.hold_down", [](Config& c) { ++c.membership.hold_down_s; }},
    {"membership.lease_ms", [](Config& c) { ++c.membership.lease_ms; }},
    {"membership.key", [](Config& c) { c.membership.keys.pop_back(); }},
    {"membership.key[].id", [](Config& c) { c.membership.keys[1].id = 3; }},
    {"membership.key[].file", [](Config& c) { c.membership.keys[1].file = "/etc/vipfarm/3.key"; }},
    {"membership.send_key", [](Config& c) { c.membership.send_key = 1; }},
    {"membership.lan", [](Config& c) { c.membership.lans.clear(); }},
    {"membership.lan[].name", [](Config& c) { c.membership.lans[0].name = "storage"; }},
    {"membership.lan[].node", [](Config& c) { c.membership.lans[0].addresses.pop_back(); }},
    {"membership.lan[].node[].id",
     [](Config& c) { c.membership.lans[0].addresses[1].first = NodeId{3}; }},
    {"membership.lan[].node[].address",
     [](Config& c) { c.membership.lans[0].addresses[1].second = ip("fd00:9::3"); }},
    {"flows.handoff", [](Config& c) { c.flows.handoff = false; }},
    {"flows.capacity", [](Config& c) { c.flows.capacity = 4096; }},
    {"flows.window", [](Config& c) { c.flows.window_s = 60; }},
    {"flows.syn_timeout_ms", [](Config& c) { c.flows.syn_timeout_ms = 1000; }},
    {"flows.established_timeout", [](Config& c) { c.flows.established_timeout_s = 60; }},
    {"flows.closing_timeout_ms", [](Config& c) { c.flows.closing_timeout_ms = 1000; }},
    {"flows.udp_timeout", [](Config& c) { c.flows.udp_timeout_s = 60; }},
    {"checker", [](Config& c) { c.checkers.clear(); }},
    {"checker[].name", [](Config& c) { c.checkers[0].name = "api"; }},
    {"checker[].kind", [](Config& c) { c.checkers[0].kind = CheckerKind::kPing; }},
    {"checker[].target", [](Config& c) { c.checkers[0].target = "127.0.0.1:8080"; }},
    {"checker[].interval_ms", [](Config& c) { c.checkers[0].interval_ms = 1000; }},
    {"checker[].timeout_ms", [](Config& c) { c.checkers[0].timeout_ms = 900; }},
    {"checker[].rise", [](Config& c) { c.checkers[0].rise = 3; }},
    {"checker[].fall", [](Config& c) { c.checkers[0].fall = 3; }},
    {"checker[].group", [](Config& c) { c.checkers[0].group = 0; }},
    {"checker[].user", [](Config& c) { c.checkers[0].user = "daemon"; }},
    {"checker[].env", [](Config& c) { c.checkers[0].env.push_back("LANG=C"); }},
};

// Each key changed alone is named alone, by itself or by the key whose comparison covers it
// (a table array's field), and reload refuses it exactly when its schema row says kRestart.
TEST(Reload, EachSchemaKeyChangedAloneIsNamedAndRefusedAsItsRowSays) {
  const Config base = loaded(kEveryTable);
  ASSERT_EQ(base.dataplane.ports.size(), 1u);
  ASSERT_EQ(base.membership.lans.size(), 1u);
  ASSERT_EQ(base.groups[0].rules[0].key, KeyKind::kClientNet);
  for (const KeySpec& spec : schema()) {
    SCOPED_TRACE(spec.path);
    if (spec.compare.differs == nullptr && spec.compare.within.empty()) {
      EXPECT_EQ(spec.type, ValueType::kTable) << "only a plain table may go without a Compare";
      continue;
    }
    const auto change = std::find_if(kKeyChanges.begin(), kKeyChanges.end(),
                                     [&spec](const KeyChange& c) { return c.key == spec.path; });
    ASSERT_NE(change, kKeyChanges.end()) << "no case in kKeyChanges";
    Config next = base;
    change->change(next);
    const std::string named(spec.compare.within.empty() ? spec.path : spec.compare.within);
    EXPECT_EQ(changed_keys(base, next), std::vector<std::string>{named});
    const std::string refusal = reload_refusal(base, next);
    if (spec.reload == Reload::kRestart) {
      EXPECT_EQ(
          refusal,
          "these changes need a restart (or the rolling procedure in docs/handoff.md): " + named);
    } else {
      EXPECT_EQ(refusal, "");
    }
  }
  for (const KeyChange& c : kKeyChanges) EXPECT_NE(find_key(c.key), nullptr) << c.key;
}

// A field compared within another key reloads as that key does, and that key has a
// comparison of its own: the refusal names it, and refuses exactly what the field's row says.
TEST(Reload, FieldsComparedWithinAKeyReloadAsItDoes) {
  for (const KeySpec& spec : schema()) {
    if (spec.compare.within.empty()) continue;
    SCOPED_TRACE(spec.path);
    EXPECT_EQ(spec.compare.differs, nullptr);
    const KeySpec* whole = find_key(spec.compare.within);
    ASSERT_NE(whole, nullptr);
    EXPECT_NE(whole->compare.differs, nullptr);
    EXPECT_EQ(whole->reload, spec.reload);
  }
}

// Several keys changed at once are named in schema order, restart-only ones alone refused.
TEST(Reload, SeveralChangesAreNamedInSchemaOrder) {
  const Config base = loaded(kEveryTable);
  Config next = base;
  next.checkers[0].rise = 3;
  next.flows.capacity = 4096;
  next.cluster_name = "mail";
  next.groups[0].members[0].weight = 2;
  EXPECT_EQ(changed_keys(base, next),
            (std::vector<std::string>{"cluster.name", "group[].member[].weight", "flows.capacity",
                                      "checker"}));
  EXPECT_EQ(reload_refusal(base, next),
            "these changes need a restart (or the rolling procedure in docs/handoff.md): "
            "cluster.name, flows.capacity");
}

// Issue 16: net_af_packet hands the data plane IPv4 fragments reassembled and cut at the mbuf
// size; a config with a rule that takes UDP, ICMP or every protocol gets a warning naming
// the uplink's key and the alternative.
TEST(Config, AfPacketUplinkIsWarnedOfWhereFragmentsCome) {
  const auto warnings_of = [](std::string text) {
    const LoadResult r = parse(text, "t.toml");
    EXPECT_TRUE(r.errors.empty()) << r.errors.front().to_string();
    return r.config ? warnings(*r.config) : std::vector<std::string>{};
  };
  const std::string af_packet = "[dataplane]\nuplink = \"net_af_packet0,iface=eth1\"\n[[group]]";
  const std::string udp =
      replaced(replaced(kMinimal, "proto = \"tcp\"", "proto = \"udp\""), "[[group]]", af_packet);
  auto w = warnings_of(udp);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0],
            "dataplane.uplink: net_af_packet reassembles IPv4 fragments in the kernel and cuts "
            "them at the mbuf size, so every fragmented datagram of group \"g\"'s udp rule is "
            "lost: use \"net_af_xdp0,iface=eth1\" (or \"net_pcap0,iface=eth1,phy_mac=1\"), which "
            "deliver fragments as they come");
  w = warnings_of(replaced(replaced(kMinimal, "proto = \"tcp\"\nports = 80", "proto = \"any\""),
                           "[[group]]",
                           "[[dataplane.port]]\nname = \"in\"\nuplink = "
                           "\"net_af_packet0,iface=in0\"\n[[group]]"));
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("dataplane.port[0].uplink: net_af_packet"), std::string::npos) << w[0];
  EXPECT_NE(w[0].find("\"g\"'s any rule"), std::string::npos) << w[0];
  // TCP only, and af_xdp or pcap uplinks: nothing to say.
  EXPECT_TRUE(warnings_of(replaced(kMinimal, "[[group]]", af_packet)).empty());
  for (const char* uplink : {"net_af_xdp0,iface=eth1", "net_pcap0,iface=eth1,phy_mac=1"}) {
    EXPECT_TRUE(
        warnings_of(replaced(replaced(kMinimal, "proto = \"tcp\"", "proto = \"udp\""), "[[group]]",
                             std::string("[dataplane]\nuplink = \"") + uplink + "\"\n[[group]]"))
            .empty())
        << uplink;
  }
}

TEST(Net, ParseEndpointIpv4) {
  const auto e = parse_endpoint("192.0.2.1:80");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->address, IpAddr::parse("192.0.2.1"));
  EXPECT_EQ(e->port, 80u);
}

TEST(Net, ParseEndpointBracketedIpv6) {
  const auto e = parse_endpoint("[2001:db8::1]:65535");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->address, IpAddr::parse("2001:db8::1"));
  EXPECT_EQ(e->port, 65535u);
}

TEST(Net, ParseEndpointRejectsMalformed) {
  for (const std::string_view text : {
           "192.0.2.1",        // no port
           "192.0.2.1:",       // empty port
           "[2001:db8::1]",    // no port
           "192.0.2.1:65536",  // port out of range
           "192.0.2.1:0",      // port 0
           "192.0.2.1:8o",     // trailing garbage in the port
           "2001:db8::1:80",   // IPv6 without brackets
           "web.example:80",   // a name, not an address
           "garbage",          //
           "",                 //
       }) {
    EXPECT_FALSE(parse_endpoint(text)) << "\"" << text << "\"";
  }
}

}  // namespace
}  // namespace vipfarm::config
