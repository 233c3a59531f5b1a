// Config loading: defaults, every class of error with its location, fingerprint scope,
// the shipped examples, and the README's reference staying generated from the schema.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

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

std::vector<std::string> error_lines(std::string_view text) {
  std::vector<std::string> out;
  for (const Error& e : parse(text, "t.toml").errors) out.push_back(e.to_string());
  return out;
}

// Loads kMinimal with `from` replaced by `to` and returns its errors.
std::vector<std::string> errors_with(std::string_view from, std::string_view to) {
  std::string text = kMinimal;
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  text.replace(at, from.size(), to);
  return error_lines(text);
}

::testing::AssertionResult has_error(const std::vector<std::string>& errors,
                                     std::string_view what) {
  for (const std::string& e : errors) {
    if (e.find(what) != std::string::npos) return ::testing::AssertionSuccess();
  }
  std::string all;
  for (const std::string& e : errors) all += "\n  " + e;
  return ::testing::AssertionFailure() << "no error containing \"" << what << "\" in:" << all;
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
            "on_addr, on_port, on_ipid, five_tuple, client_net)");
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

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(Config, ShippedExamplesAreValid) {
  for (const char* name :
       {"conf/lab.toml", "conf/production.toml", "tests/fixtures/fixture.toml"}) {
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

}  // namespace
}  // namespace vipfarm::config
