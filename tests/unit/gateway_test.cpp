// Gateway farms (docs/gateway.md): the config keys and their errors, the classifier taking a
// gateway's frames by its virtual MAC with dst prefixes, keys that keep both directions of a
// connection in one bucket (on_addr / on_dst_addr, on_port / on_dst_port, symmetric),
// I1, I4 and I5 through a gateway, per-port VIP lookup, and the owner query's --via.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>

#include "fixtures/config_text.hpp"
#include "fixtures/frames.hpp"
#include "vipfarm/config/config.hpp"
#include "vipfarm/packet/build.hpp"
#include "vipfarm/packet/classify.hpp"

namespace vipfarm::packet {
namespace {

// A two-armed firewall farm: inside clients 10.10.0.0/16 (and fd10::/64) route through
// the inside gateway VIPs; servers answer through the outside ones. A service VIP lives on
// the inside port beside them.
constexpr const char* kGateway = R"(
[node]
id = 1

[cluster]
name = "fw"
seed = 99

[[cluster.node]]
id = 1
name = "fw1"
address = "10.10.0.11"

[[cluster.node]]
id = 2
name = "fw2"
address = "10.10.0.12"

[[cluster.node]]
id = 3
name = "fw3"
address = "10.10.0.13"

[[vip]]
address = "10.10.0.1"
gateway = true
port = "inside"

[[vip]]
address = "192.0.2.1"
gateway = true
port = "outside"

[[vip]]
address = "fd10::1"
gateway = true
port = "inside"

[[vip]]
address = "fd20::1"
gateway = true
port = "outside"

[[vip]]
address = "10.10.0.100"
port = "inside"

[[group]]
name = "fw"

[[group.rule]]
vip = "10.10.0.1"
key = "on_addr"

[[group.rule]]
vip = "192.0.2.1"
dst = "10.10.0.0/16"
key = "on_dst_addr"

[[group.rule]]
vip = "fd10::1"
key = "on_addr"

[[group.rule]]
vip = "fd20::1"
dst = ["fd10::/64"]
key = "on_dst_addr"

[[group]]
name = "web"

[[group.rule]]
vip = "10.10.0.100"
proto = "tcp"
ports = 80

[dataplane]
eal_args = ["--no-huge"]

[[dataplane.port]]
name = "inside"
uplink = "net_af_packet0,iface=in0"
exception = "fwin"
address = ["fd10::11/64"]

[[dataplane.port]]
name = "outside"
uplink = "net_af_packet1,iface=out0"
exception = "fwout"
address = ["192.0.2.11/24", "fd20::11/64"]
)";

using fixtures::error_lines;
using fixtures::has_error;
using fixtures::replaced;

config::Config gateway_config(const std::string& text = kGateway) { return fixtures::loaded(text); }

TEST(GatewayConfig, TwoArmedFarmLoads) {
  const config::Config c = gateway_config();
  ASSERT_EQ(c.dataplane.ports.size(), 2u);
  EXPECT_EQ(c.dataplane.ports[0].name, "inside");
  EXPECT_EQ(c.dataplane.ports[1].exception, "fwout");
  ASSERT_EQ(c.dataplane.ports[1].addresses.size(), 2u);
  EXPECT_EQ(c.dataplane.ports[1].addresses[0].to_string(), "192.0.2.11/24");
  ASSERT_EQ(c.vips.size(), 5u);
  EXPECT_TRUE(c.vips[0].gateway);
  EXPECT_EQ(c.vips[1].port, 1u);
  EXPECT_FALSE(c.vips[4].gateway);
  EXPECT_EQ(c.vips[4].port, 0u);
  ASSERT_EQ(c.groups[0].rules[1].dst.size(), 1u);
  EXPECT_EQ(c.groups[0].rules[1].dst[0].to_string(), "10.10.0.0/16");
  EXPECT_TRUE(c.groups[0].rules[0].dst.empty());  // "*"
  EXPECT_EQ(c.groups[0].rules[1].key, config::KeyKind::kOnDstAddr);
}

TEST(GatewayConfig, ShortFormIsOnePortNamedUplink) {
  const config::Config c = gateway_config(R"(
[node]
id = 1
[cluster]
name = "x"
[[cluster.node]]
id = 1
name = "a"
address = "192.0.2.1"
[[vip]]
address = "192.0.2.100"
[[group]]
name = "g"
[[group.rule]]
proto = "tcp"
[dataplane]
uplink = "net_null0"
[exception]
name = "tap7"
)");
  ASSERT_EQ(c.dataplane.ports.size(), 1u);
  EXPECT_EQ(c.dataplane.ports[0].name, "uplink");
  EXPECT_EQ(c.dataplane.ports[0].uplink, "net_null0");
  EXPECT_EQ(c.dataplane.ports[0].exception, "tap7");
}

TEST(GatewayConfig, EachErrorNamesItsKeyAndReason) {
  const std::string base = kGateway;
  struct Case {
    std::string from, to, error;
  };
  const std::vector<Case> cases = {
      {"dst = \"10.10.0.0/16\"", "dst = \"10.10.0.0/8\"",
       "group[0].rule[1].dst: \"10.10.0.0/8\" has host bits set (did you mean 10.0.0.0/8?)"},
      {"dst = \"10.10.0.0/16\"", "dst = \"fd10::/64\"",
       "group[0].rule[1].dst: fd10::/64 is not of the VIP's family (192.0.2.1)"},
      {"dst = \"10.10.0.0/16\"", "dst = \"10.10.0.0/33\"",
       "group[0].rule[1].dst: \"10.10.0.0/33\" is not a prefix"},
      {"ports = 80", "ports = 80\ndst = \"10.0.0.0/8\"",
       "group[1].rule[0].dst: only for a rule whose vip is a gateway VIP"},
      {"ports = 80", "ports = 80\nkey = \"on_dst_addr\"",
       "group[1].rule[0].key: on_dst_addr on a service VIP hashes the VIP itself"},
      {"key = \"on_addr\"", "key = \"on_dst_port\"\nproto = \"icmp\"",
       "group[0].rule[0].key: ICMP has no ports: on_dst_port cannot apply"},
      {"port = \"outside\"", "port = \"dmz\"",
       "vip[1].port: no port named \"dmz\" (ports: inside, outside)"},
      {"gateway = true\nport = \"inside\"",
       "gateway = true\nport = \"inside\"\nl2_mode = \"directed\"",
       "vip[0].l2_mode: a gateway VIP is flood only"},
      {"address = [\"192.0.2.11/24\", \"fd20::11/64\"]", "address = [\"fd20::11/64\"]",
       "vip[1].gateway: this node has no IPv4 address on port \"outside\" "
       "(dataplane.port[1].address): the kernel routes through it"},
      {"address = [\"fd10::11/64\"]", "address = []", "dataplane.port[0].address: empty list"},
      {"address = [\"fd10::11/64\"]", "address = [\"fd10::11/129\"]",
       "dataplane.port[0].address: \"fd10::11/129\" is not address/prefix"},
      {"name = \"outside\"", "name = \"inside\"",
       "dataplane.port[1].name: duplicate port \"inside\""},
      {"uplink = \"net_af_packet1,iface=out0\"", "uplink = \"net_af_packet0,iface=out0\"",
       "dataplane.port[1].uplink: device \"net_af_packet0\" is another port's already"},
      {"exception = \"fwout\"", "exception = \"fwin\"",
       "dataplane.port[1].exception: TAP \"fwin\" is another port's already"},
      {"exception = \"fwout\"", "exception = \"a/b\"",
       "dataplane.port[1].exception: \"a/b\" is not a valid interface name"},
      {"eal_args = [\"--no-huge\"]", "eal_args = [\"--no-huge\"]\nuplink = \"net_null0\"",
       "dataplane.uplink: give either uplink (one port) or [[dataplane.port]] entries, not both"},
      {"[dataplane]", "[exception]\nname = \"x\"\n[dataplane]",
       "exception.name: with [[dataplane.port]] each port names its TAP"},
      {"exception = \"fwin\"", "exception = \"fwin\"\nmtu = 9000",
       "dataplane.port[0].mtu: unknown key"},
  };
  for (const Case& c : cases) {
    EXPECT_TRUE(has_error(error_lines(replaced(base, c.from, c.to)), c.error)) << c.to;
  }
}

TEST(GatewayConfig, DirectedVipsLiveOnTheFirstPort) {
  std::string text =
      replaced(kGateway, "address = \"10.10.0.100\"\nport = \"inside\"",
               "address = \"10.10.0.100\"\nport = \"outside\"\nl2_mode = \"directed\"");
  EXPECT_TRUE(has_error(error_lines(text), "vip[4].port: a directed VIP lives on the first port"));
}

TEST(GatewayConfig, GatewayAndDstAreInTheFingerprintThePortIsNot) {
  const config::Config base = gateway_config();
  const std::string fp = config::fingerprint(base);
  EXPECT_NE(config::fingerprint(gateway_config(
                replaced(kGateway, "dst = \"10.10.0.0/16\"", "dst = \"10.10.0.0/17\""))),
            fp);
  EXPECT_NE(
      config::fingerprint(gateway_config(replaced(kGateway, "address = \"10.10.0.100\"",
                                                  "address = \"10.10.0.100\"\ngateway = true"))),
      fp);
  // Port names and TAPs are this node's business: the farm agrees without them.
  const config::Config renamed =
      gateway_config(replaced(replaced(replaced(kGateway, "name = \"outside\"", "name = \"wan\""),
                                       "port = \"outside\"", "port = \"wan\""),
                              "port = \"outside\"", "port = \"wan\""));
  EXPECT_EQ(config::fingerprint(renamed), fp);
  const std::vector<std::string> changed = config::changed_keys(base, renamed);
  EXPECT_NE(std::find(changed.begin(), changed.end(), "dataplane.port"), changed.end());
  EXPECT_NE(config::reload_refusal(base, renamed).find("dataplane.port"), std::string::npos);
}

// Frames as they arrive: to the gateway's virtual MAC, any destination address.
std::vector<std::byte> via(const config::Config& c, std::size_t vip, FrameSpec spec) {
  spec.dst_mac = c.vips[vip].mac;
  return build_frame(spec);
}

FrameSpec tcp(const IpAddr& src, std::uint16_t sport, const IpAddr& dst, std::uint16_t dport) {
  FrameSpec s;
  s.src = src;
  s.dst = dst;
  s.proto = 6;
  s.src_port = sport;
  s.dst_port = dport;
  return s;
}

IpAddr ip(const char* text) { return *IpAddr::parse(text); }

TEST(GatewayClassify, FramesToTheVirtualMacAreFarmTrafficWhateverTheirDestination) {
  const config::Config c = gateway_config();
  const Classifier classifier(c);
  const Result out =
      classifier.classify(via(c, 0, tcp(ip("10.10.3.4"), 40000, ip("203.0.113.9"), 443)));
  EXPECT_EQ(out.verdict, Verdict::kFarm);
  EXPECT_EQ(out.vip, 0);
  EXPECT_EQ(out.group, 0);
  // The same packet to another MAC is not farm traffic (a node's own, or a foreign host's).
  EXPECT_EQ(
      classifier.classify(build_frame(tcp(ip("10.10.3.4"), 40000, ip("203.0.113.9"), 443))).verdict,
      Verdict::kPass);
  // Outside: only destinations in the rule's prefix.
  EXPECT_EQ(
      classifier.classify(via(c, 1, tcp(ip("203.0.113.9"), 443, ip("10.10.3.4"), 40000))).verdict,
      Verdict::kFarm);
  const Result stray =
      classifier.classify(via(c, 1, tcp(ip("203.0.113.9"), 443, ip("10.20.3.4"), 1)));
  EXPECT_EQ(stray.verdict, Verdict::kNoRule);
  EXPECT_EQ(stray.vip, 1);
  // The other family to a gateway's MAC: its VIP, and no rule can take it.
  const Result family = classifier.classify(via(c, 0, tcp(ip("fd10::5"), 1, ip("fd20::9"), 80)));
  EXPECT_EQ(family.verdict, Verdict::kNoRule);
  EXPECT_EQ(family.vip, 0);
  // The gateway's own address answers ARP and neighbour solicitations with its virtual MAC.
  EXPECT_EQ(classifier.classify(fixtures::arp(1, "10.10.0.1", 42, "10.10.3.4")).verdict,
            Verdict::kArpVip);
  // A service VIP beside them works as before.
  const Result web =
      classifier.classify(build_frame(tcp(ip("10.10.3.4"), 5, ip("10.10.0.100"), 80)));
  EXPECT_EQ(web.verdict, Verdict::kFarm);
  EXPECT_EQ(web.group, 1);
}

TEST(GatewayClassify, EachPortSeesOnlyItsOwnVips) {
  const config::Config c = gateway_config();
  const Classifier classifier(c);
  const auto inside = via(c, 0, tcp(ip("10.10.3.4"), 40000, ip("203.0.113.9"), 443));
  const auto outside = via(c, 1, tcp(ip("203.0.113.9"), 443, ip("10.10.3.4"), 40000));
  EXPECT_EQ(classifier.classify(inside, 0).verdict, Verdict::kFarm);
  EXPECT_EQ(classifier.classify(inside, 1).verdict, Verdict::kPass);
  EXPECT_EQ(classifier.classify(outside, 1).verdict, Verdict::kFarm);
  EXPECT_EQ(classifier.classify(outside, 0).verdict, Verdict::kPass);
  EXPECT_EQ(classifier.classify(fixtures::arp(1, "192.0.2.1", 42, "192.0.2.80"), 0).verdict,
            Verdict::kPass);
  EXPECT_EQ(classifier.classify(fixtures::arp(1, "192.0.2.1", 42, "192.0.2.80"), 1).verdict,
            Verdict::kArpVip);
  const auto web = build_frame(tcp(ip("10.10.3.4"), 5, ip("10.10.0.100"), 80));
  EXPECT_EQ(classifier.classify(web, 0).verdict, Verdict::kFarm);
  EXPECT_EQ(classifier.classify(web, 1).verdict, Verdict::kPass);
}

// The key pairs that claim to keep a connection on one node: its two directions, through
// the inside and the outside gateway, land in one bucket of one group, for many flows and
// both families; and the flow tuples of the two directions are one flow.
TEST(GatewayClassify, BothDirectionsOfAConnectionShareTheBucketAndTheFlow) {
  struct Pair {
    const char* inside_key;
    const char* outside_key;
  };
  const std::vector<Pair> pairs = {{"on_addr", "on_dst_addr"},
                                   {"on_port", "on_dst_port"},
                                   {"symmetric", "symmetric"},
                                   {"symmetric_port", "symmetric_port"}};
  std::mt19937_64 rng(8);
  for (const Pair& pair : pairs) {
    std::string text =
        replaced(kGateway, "vip = \"10.10.0.1\"\nkey = \"on_addr\"",
                 std::string("vip = \"10.10.0.1\"\nkey = \"") + pair.inside_key + "\"");
    text = replaced(text, "vip = \"fd10::1\"\nkey = \"on_addr\"",
                    std::string("vip = \"fd10::1\"\nkey = \"") + pair.inside_key + "\"");
    text = replaced(text, "dst = \"10.10.0.0/16\"\nkey = \"on_dst_addr\"",
                    std::string("dst = \"10.10.0.0/16\"\nkey = \"") + pair.outside_key + "\"");
    text = replaced(text, "dst = [\"fd10::/64\"]\nkey = \"on_dst_addr\"",
                    std::string("dst = [\"fd10::/64\"]\nkey = \"") + pair.outside_key + "\"");
    const config::Config c = gateway_config(text);
    const Classifier classifier(c);
    std::set<BucketId> buckets;
    for (int i = 0; i < 500; ++i) {
      const bool v6 = i % 2 == 1;
      const IpAddr client =
          v6 ? IpAddr{0xfd10000000000000ULL, rng() >> 16}
             : IpAddr::v4(0x0a0a0000U | static_cast<std::uint32_t>(rng() & 0xffff));
      const IpAddr server = v6 ? IpAddr{0x2001'0db8'0000'0000ULL | (rng() >> 48), rng()}
                               : IpAddr::v4(0xcb007100U | static_cast<std::uint32_t>(rng() & 0xff));
      const auto cport = static_cast<std::uint16_t>(1024 + rng() % 60000);
      const auto sport = static_cast<std::uint16_t>(1 + rng() % 1024);
      const auto there = via(c, v6 ? 2 : 0, tcp(client, cport, server, sport));
      const auto back = via(c, v6 ? 3 : 1, tcp(server, sport, client, cport));
      const std::span<const std::byte> frames[] = {there, back};
      Result r[2];
      flow::FlowTuple t[2];
      classifier.classify_burst(frames, 2, r, t);
      ASSERT_EQ(r[0].verdict, Verdict::kFarm) << pair.inside_key << " " << i;
      ASSERT_EQ(r[1].verdict, Verdict::kFarm) << pair.outside_key << " " << i;
      EXPECT_EQ(r[0].group, r[1].group);
      ASSERT_EQ(r[0].bucket, r[1].bucket) << pair.inside_key << " / " << pair.outside_key << " "
                                          << client.to_string() << " " << server.to_string();
      EXPECT_EQ(flow::hash_tuple(t[0]), flow::hash_tuple(t[1])) << pair.inside_key;
      EXPECT_EQ(t[0].client, t[1].client);
      EXPECT_EQ(t[0].client_port, t[1].client_port);
      buckets.insert(r[0].bucket);
    }
    EXPECT_GT(buckets.size(), 150u) << pair.inside_key << ": connections spread over the buckets";
  }
}

// I1 through a gateway: exactly one node accepts each packet, in both directions.
TEST(GatewayClassify, ExactlyOneNodeTakesEachPacketOfAConnection) {
  const config::Config c = gateway_config();
  const Classifier classifier(c);
  const config::ViewMask all = config::all_nodes(c);
  std::vector<Ownership> nodes;
  for (const config::ClusterNode& n : c.nodes) nodes.push_back(Ownership::compute(c, n.id, all));
  for (int i = 1; i <= 200; ++i) {
    const IpAddr client = IpAddr::v4(0x0a0a0100U + static_cast<std::uint32_t>(i));
    const auto there = via(c, 0, tcp(client, 40000, ip("198.51.100.80"), 80));
    const auto back = via(c, 1, tcp(ip("198.51.100.80"), 80, client, 40000));
    int taker[2] = {0, 0};
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      for (int d = 0; d < 2; ++d) {
        Result r = classifier.classify(d == 0 ? there : back);
        nodes[n].apply(r);
        ASSERT_TRUE(r.verdict == Verdict::kAccept || r.verdict == Verdict::kNotOwner);
        if (r.verdict == Verdict::kAccept) taker[d] = taker[d] * 10 + static_cast<int>(n + 1);
      }
    }
    ASSERT_GE(taker[0], 1);
    ASSERT_LE(taker[0], 3) << "one node takes the inside direction";
    EXPECT_EQ(taker[0], taker[1]) << "and the same one the outside direction";
  }
}

// I4 and I5 through a gateway: every fragment of a datagram, and an ICMP error about a
// connection (from a router beyond the outside, sent to the client), go where the
// connection goes.
TEST(GatewayClassify, FragmentsAndIcmpErrorsFollowTheConnection) {
  const config::Config c = gateway_config();
  const Classifier classifier(c);
  for (int i = 1; i <= 100; ++i) {
    const IpAddr client = IpAddr::v4(0x0a0a0200U + static_cast<std::uint32_t>(i));
    const Result flow = classifier.classify(via(c, 0, tcp(client, 40000, ip("198.51.100.80"), 80)));
    ASSERT_EQ(flow.verdict, Verdict::kFarm);
    FrameSpec frag = tcp(client, 40000, ip("198.51.100.80"), 80);
    frag.more_fragments = true;
    frag.ip_id = static_cast<std::uint16_t>(i);
    FrameSpec later = frag;
    later.more_fragments = false;
    later.frag_offset = 3;
    for (const FrameSpec& f : {frag, later}) {
      const Result r = classifier.classify(via(c, 0, f));
      EXPECT_EQ(r.verdict, Verdict::kFarm);
      EXPECT_EQ(r.bucket, flow.bucket) << "fragment of " << client.to_string();
    }
    // Frag needed from 192.0.2.254 to the client, quoting the client's segment.
    const auto quoted = tcp(client, 40000, ip("198.51.100.80"), 80);
    std::vector<std::byte> quote = build_frame(quoted);
    quote.erase(quote.begin(), quote.begin() + fixtures::kL3);
    FrameSpec error;
    error.src = ip("192.0.2.254");
    error.dst = client;
    error.proto = 1;
    error.icmp_type = 3;
    error.payload = quote;
    const Result r = classifier.classify(via(c, 1, error));
    EXPECT_EQ(r.verdict, Verdict::kFarm);
    EXPECT_EQ(r.bucket, flow.bucket) << "ICMP error about " << client.to_string();
  }
}

TEST(GatewayOwnerQuery, ViaNamesTheGatewayOrTheOnlyOneIsTaken) {
  const config::Config c = gateway_config();
  FlowQuery q = parse_flow_query("tcp", "10.10.3.4:40000", "198.51.100.80:80");
  ASSERT_EQ(q.error, "");
  EXPECT_EQ(route_through_gateway(c, "", q.spec),
            "the server is not a VIP: name the gateway VIP the flow goes through with --via "
            "(10.10.0.1, 192.0.2.1)");
  EXPECT_EQ(route_through_gateway(c, "10.10.0.100", q.spec),
            "--via 10.10.0.100 is not a gateway VIP of the flow's family (10.10.0.1, 192.0.2.1)");
  EXPECT_EQ(route_through_gateway(c, "fd10::1", q.spec),
            "--via fd10::1 is not a gateway VIP of the flow's family (10.10.0.1, 192.0.2.1)");
  ASSERT_EQ(route_through_gateway(c, "10.10.0.1", q.spec), "");
  EXPECT_EQ(q.spec.dst_mac, c.vips[0].mac);
  EXPECT_EQ(Classifier(c).classify(build_frame(q.spec)).verdict, Verdict::kFarm);
  // A flow to a VIP needs no gateway.
  FlowQuery web = parse_flow_query("tcp", "10.10.3.4:40000", "10.10.0.100:80");
  EXPECT_EQ(route_through_gateway(c, "", web.spec), "");
  EXPECT_EQ(web.spec.dst_mac, FrameSpec{}.dst_mac);
  // One gateway of the family: taken without --via.
  const config::Config one = gateway_config(
      replaced(replaced(kGateway, "address = \"fd20::1\"\ngateway = true", "address = \"fd20::1\""),
               "vip = \"fd20::1\"\ndst = [\"fd10::/64\"]\nkey = \"on_dst_addr\"",
               "vip = \"fd20::1\"\nkey = \"on_addr\""));
  FlowQuery v6 = parse_flow_query("tcp", "[fd10::5]:40000", "[2001:db8::80]:80");
  ASSERT_EQ(route_through_gateway(one, "", v6.spec), "");
  EXPECT_EQ(v6.spec.dst_mac, one.vips[2].mac);
}

}  // namespace
}  // namespace vipfarm::packet
