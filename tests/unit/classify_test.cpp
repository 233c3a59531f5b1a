// The classifier against the fixture table, plus the I4 (fragments) and I5 (ICMP errors)
// agreements and the ownership step.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "fixtures/frames.hpp"

namespace vipfarm::packet {
namespace {

using fixtures::Case;

class ClassifyTest : public ::testing::Test {
 protected:
  config::Config config_ = fixtures::load_fixture_config();
  Classifier classifier_{config_};

  Result classify(const std::vector<std::byte>& f) const { return classifier_.classify(f); }
};

TEST_F(ClassifyTest, FixtureTable) {
  const std::vector<Case> cases = fixtures::cases();
  ASSERT_GE(cases.size(), 40u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Result r = classify(c.frame);
    EXPECT_EQ(to_string(r.verdict), to_string(c.verdict));
    EXPECT_EQ(to_string(r.reason), to_string(c.reason));
    if (c.verdict == Verdict::kFarm) {
      EXPECT_EQ(r.group, c.group);
      EXPECT_LT(r.bucket, config_.buckets);
    }
  }
}

TEST_F(ClassifyTest, BurstGivesTheSameVerdictsAsOneByOne) {
  const std::vector<Case> cases = fixtures::cases();
  std::vector<std::span<const std::byte>> frames;
  for (std::size_t i = 0; i < 3 * Classifier::kMaxBurst + 5; ++i) {
    frames.emplace_back(cases[(i * 7) % cases.size()].frame);
  }
  std::vector<Result> burst(frames.size());
  classifier_.classify_burst(frames.data(), frames.size(), burst.data());
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const Result one = classifier_.classify(frames[i]);
    EXPECT_EQ(burst[i].verdict, one.verdict) << i;
    EXPECT_EQ(burst[i].reason, one.reason) << i;
    EXPECT_EQ(burst[i].group, one.group) << i;
    EXPECT_EQ(burst[i].bucket, one.bucket) << i;
    EXPECT_EQ(burst[i].vip, one.vip) << i;
  }
}

TEST_F(ClassifyTest, EveryPrefixOfEveryFixtureIsHarmless) {
  // I6: any cut of a valid frame gives a verdict, never a read past the end (ASan in
  // the fuzz build; here at least every verdict is well-formed).
  for (const Case& c : fixtures::cases()) {
    for (std::size_t n = 0; n <= c.frame.size(); ++n) {
      const std::vector<std::byte> cut(c.frame.begin(), c.frame.begin() + n);
      const Result r = classify(cut);
      ASSERT_LT(static_cast<std::size_t>(r.verdict), kVerdictCount) << c.name << " cut " << n;
      ASSERT_EQ(r.reason == Malformed::kNone, r.verdict != Verdict::kMalformed) << c.name;
    }
  }
}

TEST_F(ClassifyTest, FragmentsOfOneDatagramAgreeWhateverTheKey) {
  using fixtures::tcp;
  using fixtures::udp;
  struct Flow {
    fixtures::FrameSpec spec;
  };
  // One flow per rule/key of the fixture config, both families.
  const std::vector<fixtures::FrameSpec> flows = {
      tcp("203.0.113.7", 40000, "198.51.100.10", 80),    // on_port
      tcp("203.0.113.7", 40000, "198.51.100.10", 8080),  // five_tuple
      udp("203.0.113.7", 40000, "198.51.100.20", 53),    // on_ipid
      tcp("203.0.113.7", 40000, "198.51.100.20", 853),   // client_net
      tcp("2001:db8:1::7", 40000, "2001:db8::10", 443),  // on_port
  };
  for (fixtures::FrameSpec spec : flows) {
    for (std::uint16_t id = 1; id < 200; id += 7) {
      spec.ip_id = id;
      spec.frag_ident = id * 1000u;
      spec.frag_offset = 0;
      spec.more_fragments = true;
      const Result first = classify(fixtures::frame(spec));
      ASSERT_EQ(first.verdict, Verdict::kFarm);
      for (std::uint16_t offset : {1, 185, 370}) {
        spec.frag_offset = offset;
        spec.more_fragments = offset != 370;
        const Result later = classify(fixtures::frame(spec));
        ASSERT_EQ(later.verdict, first.verdict);
        ASSERT_EQ(later.group, first.group);
        ASSERT_EQ(later.bucket, first.bucket) << "id " << id << " offset " << offset;
      }
    }
  }
}

TEST_F(ClassifyTest, IcmpErrorsFollowTheFlow) {
  // I5: an error about VIP→client lands in the bucket of client→VIP, for every key that
  // uses ports (full quote) and for address keys even when the ports are cut off.
  for (std::uint16_t port = 1024; port < 1024 + 400; port += 13) {
    const auto forward = fixtures::frame(fixtures::tcp("203.0.113.7", port, "198.51.100.10", 80));
    const auto reply = fixtures::frame(fixtures::tcp("198.51.100.10", 80, "203.0.113.7", port));
    const Result flow = classify(forward);
    for (std::uint8_t type : {3, 11, 12}) {
      const Result err =
          classify(fixtures::icmp_error("192.0.2.254", "198.51.100.10", type, 4, reply, 28));
      ASSERT_EQ(err.verdict, Verdict::kFarm);
      EXPECT_EQ(err.group, flow.group);
      EXPECT_EQ(err.bucket, flow.bucket) << "type " << int(type) << " port " << port;
    }
    const auto forward5 =
        fixtures::frame(fixtures::tcp("203.0.113.7", port, "198.51.100.10", 8050));
    const auto reply5 = fixtures::frame(fixtures::tcp("198.51.100.10", 8050, "203.0.113.7", port));
    EXPECT_EQ(
        classify(fixtures::icmp_error("192.0.2.254", "198.51.100.10", 3, 4, reply5, 28)).bucket,
        classify(forward5).bucket);
    const auto forward6 =
        fixtures::frame(fixtures::tcp("2001:db8:1::7", port, "2001:db8::10", 443));
    const auto reply6 = fixtures::frame(fixtures::tcp("2001:db8::10", 443, "2001:db8:1::7", port));
    for (std::uint8_t type : {1, 2, 3}) {
      const Result err =
          classify(fixtures::icmp_error("2001:db8:ff::1", "2001:db8::10", type, 0, reply6, 48));
      ASSERT_EQ(err.verdict, Verdict::kFarm);
      EXPECT_EQ(err.bucket, classify(forward6).bucket) << "type " << int(type);
    }
  }
  // client_net (address only): a quote cut before the ports still finds the owner.
  const auto fwd = fixtures::frame(fixtures::tcp("203.0.113.7", 5000, "198.51.100.20", 853));
  const auto rep = fixtures::frame(fixtures::tcp("198.51.100.20", 853, "203.0.113.7", 5000));
  EXPECT_EQ(classify(fixtures::icmp_error("192.0.2.254", "198.51.100.20", 3, 1, rep, 20)).bucket,
            classify(fwd).bucket);
}

TEST_F(ClassifyTest, KeysUseWhatTheySay) {
  using fixtures::tcp;
  auto bucket = [&](const fixtures::FrameSpec& s) { return classify(fixtures::frame(s)).bucket; };
  // client_net /24: every client of 203.0.113.0/24 shares a bucket; ports do not matter.
  const BucketId net = bucket(tcp("203.0.113.1", 1000, "198.51.100.20", 53));
  for (int host = 2; host < 255; host += 17) {
    const std::string addr = "203.0.113." + std::to_string(host);
    EXPECT_EQ(
        bucket(tcp(addr.c_str(), static_cast<std::uint16_t>(host * 100), "198.51.100.20", 53)),
        net);
  }
  // on_port: client ports spread over buckets.
  std::set<BucketId> spread;
  for (std::uint16_t p = 1000; p < 1100; ++p)
    spread.insert(bucket(tcp("203.0.113.7", p, "198.51.100.10", 80)));
  EXPECT_GT(spread.size(), 50u);
  // on_ipid: IP id changes the bucket, ports do not.
  fixtures::FrameSpec dns = fixtures::udp("203.0.113.9", 1000, "198.51.100.20", 53);
  const BucketId id0 = bucket(dns);
  dns.src_port = 2000;
  EXPECT_EQ(bucket(dns), id0);
  std::set<BucketId> ids;
  for (std::uint16_t id = 0; id < 100; ++id) {
    dns.ip_id = id;
    ids.insert(bucket(dns));
  }
  EXPECT_GT(ids.size(), 50u);
}

TEST_F(ClassifyTest, OwnershipSplitsFarmTrafficIntoAcceptAndNotOwner) {
  const config::ViewMask all = config::all_nodes(config_);
  std::array<Ownership, 3> nodes = {Ownership::compute(config_, NodeId{1}, all),
                                    Ownership::compute(config_, NodeId{2}, all),
                                    Ownership::compute(config_, NodeId{3}, all)};
  for (std::uint16_t p = 1000; p < 3000; ++p) {
    const Result base =
        classify(fixtures::frame(fixtures::tcp("203.0.113.7", p, "198.51.100.10", 80)));
    int accepted = 0;
    for (const Ownership& o : nodes) {
      Result r = base;
      o.apply(r);
      ASSERT_TRUE(r.verdict == Verdict::kAccept || r.verdict == Verdict::kNotOwner);
      accepted += r.verdict == Verdict::kAccept;
    }
    ASSERT_EQ(accepted, 1) << "exactly one node takes each packet (I1), port " << p;
  }
  Result pass = classify(fixtures::frame(fixtures::tcp("203.0.113.7", 1, "192.0.2.1", 22)));
  nodes[0].apply(pass);
  EXPECT_EQ(pass.verdict, Verdict::kPass);
}

// Directed mode (docs/directed.md): an ARP request for a directed VIP is keyed on the
// requester's address like an unmatched echo request, so exactly one node (the owner of
// that bucket) answers each requester; a flood VIP's requests are answered by every node.
TEST(ClassifyDirected, ArpRequestsAreKeyedOnTheRequesterSoOneNodeAnswers) {
  config::Config config = fixtures::load_fixture_config();
  const Classifier flood(config);
  config.vips[0].l2_mode = config::L2Mode::kDirected;
  const Classifier directed(config);
  const std::string vip = config.vips[0].address.to_string();
  const config::ViewMask all = config::all_nodes(config);
  std::vector<Ownership> nodes;
  for (const config::ClusterNode& n : config.nodes)
    nodes.push_back(Ownership::compute(config, n.id, all));
  std::set<BucketId> buckets;
  int compared = 0;
  for (int i = 1; i <= 200; ++i) {
    const std::string requester = "203.0.113." + std::to_string(i);
    const auto frame = fixtures::arp(1, vip.c_str(), 42, requester.c_str());
    const Result f = flood.classify(frame);
    EXPECT_EQ(f.verdict, Verdict::kArpVip);
    EXPECT_FALSE(f.directed);
    const Result r = directed.classify(frame);
    ASSERT_EQ(r.verdict, Verdict::kArpVip);
    ASSERT_TRUE(r.directed);
    int answering = 0;
    for (const Ownership& o : nodes) answering += o.owns(r.group, r.bucket) ? 1 : 0;
    ASSERT_EQ(answering, 1) << requester;
    // The same bucket as the requester's unmatched echo request (both keyed on_addr).
    const Result echo =
        directed.classify(fixtures::frame(fixtures::icmp(requester.c_str(), vip.c_str(), 8)));
    if (echo.verdict == Verdict::kFarm && echo.group == r.group) {
      EXPECT_EQ(echo.bucket, r.bucket) << requester;
      ++compared;
    }
    buckets.insert(r.bucket);
  }
  EXPECT_GT(buckets.size(), 100u);  // requesters spread over the buckets
  EXPECT_EQ(compared, 200);         // the fixture's VIP has no ICMP rule: echo is keyed too
}

TEST(ClassifyEchoPolicy, NoneTurnsUnmatchedEchoIntoNoRule) {
  config::Config config = fixtures::load_fixture_config();
  config.icmp_echo = config::IcmpEcho::kNone;
  const Classifier classifier(config);
  EXPECT_EQ(classifier.classify(fixtures::frame(fixtures::icmp("203.0.113.7", "198.51.100.10", 8)))
                .verdict,
            Verdict::kNoRule);
}

}  // namespace
}  // namespace vipfarm::packet

namespace vipfarm::packet {
namespace {

TEST(FlowQuery, ParsesWhatOperatorsWrite) {
  const FlowQuery tcp = parse_flow_query("tcp", "203.0.113.7:40000", "198.51.100.10:80");
  ASSERT_EQ(tcp.error, "");
  EXPECT_EQ(tcp.spec.proto, 6);
  EXPECT_EQ(tcp.spec.src_port, 40000);
  EXPECT_EQ(tcp.spec.dst, *IpAddr::parse("198.51.100.10"));
  const FlowQuery v6 = parse_flow_query("udp", "[2001:db8::7]:53", "[2001:db8::10]:53");
  ASSERT_EQ(v6.error, "");
  EXPECT_EQ(v6.spec.proto, 17);
  const FlowQuery ping = parse_flow_query("icmp", "2001:db8::7", "2001:db8::10");
  ASSERT_EQ(ping.error, "");
  EXPECT_EQ(ping.spec.proto, 58);
  EXPECT_EQ(ping.spec.icmp_type, 128);
  EXPECT_EQ(parse_flow_query("sctp", "a", "b").error, "PROTO must be tcp, udp or icmp");
  EXPECT_EQ(parse_flow_query("tcp", "203.0.113.7", "198.51.100.10:80").error,
            "\"203.0.113.7\" needs a port");
  EXPECT_EQ(parse_flow_query("tcp", "203.0.113.7:99999", "198.51.100.10:80").error,
            "bad port in \"203.0.113.7:99999\"");
  EXPECT_EQ(parse_flow_query("tcp", "[2001:db8::7:1", "198.51.100.10:80").error,
            "bad endpoint \"[2001:db8::7:1\"");
  EXPECT_EQ(parse_flow_query("tcp", "[2001:db8::7]:1", "198.51.100.10:80").error,
            "CLIENT and SERVER must be of one address family");
  EXPECT_EQ(parse_flow_query("tcp", "nonsense:1", "198.51.100.10:80").error,
            "not an IP address: \"nonsense\"");
}

}  // namespace
}  // namespace vipfarm::packet

namespace vipfarm::packet {
namespace {

// The heartbeat test of the data plane's host path: UDP to one port, both families, tagged
// or not, never a later fragment, never beyond the frame.
TEST(IsUdpTo, FindsTheDatagramsToOnePortOnly) {
  FrameSpec s;
  s.src = *IpAddr::parse("10.77.0.2");
  s.dst = *IpAddr::parse("10.77.0.1");
  s.proto = 17;
  s.src_port = 9470;
  s.dst_port = 9470;
  EXPECT_TRUE(is_udp_to(build_frame(s), 9470));
  EXPECT_FALSE(is_udp_to(build_frame(s), 9471));
  s.vlans = {10, 20};
  EXPECT_TRUE(is_udp_to(build_frame(s), 9470));
  s.vlans = {};
  s.frag_offset = 100;  // a later fragment: its bytes are not a UDP header
  EXPECT_FALSE(is_udp_to(build_frame(s), 9470));
  s.frag_offset = 0;
  s.proto = 6;
  EXPECT_FALSE(is_udp_to(build_frame(s), 9470));
  s.proto = 17;
  s.src = *IpAddr::parse("2001:db8::2");
  s.dst = *IpAddr::parse("2001:db8::1");
  const auto v6 = build_frame(s);
  EXPECT_TRUE(is_udp_to(v6, 9470));
  s.dst_port = 53;
  EXPECT_FALSE(is_udp_to(build_frame(s), 9470));
  for (std::size_t cut = 0; cut < v6.size(); ++cut) {
    const bool whole_header = cut >= 14 + 40 + 8;
    EXPECT_EQ(is_udp_to(std::span(v6).first(cut), 9470), whole_header) << cut;
  }
}

}  // namespace
}  // namespace vipfarm::packet
