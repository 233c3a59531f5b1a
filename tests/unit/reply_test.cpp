// ARP/ND answers, announcements and the outgoing rewrite: the virtual MAC only inside the
// payload, this node's MAC as the Ethernet source, valid ICMPv6 checksums.
#include <gtest/gtest.h>

#include <cstring>

#include "fixtures/frames.hpp"
#include "vipfarm/packet/reply.hpp"

namespace vipfarm::packet {
namespace {

const MacAddr kOwn = {0x02, 0, 0, 0, 0, 0x01};
const MacAddr kVmac = {0x5A, 0xFE, 198, 51, 100, 10};

const std::uint8_t* u8(const std::vector<std::byte>& f) {
  return reinterpret_cast<const std::uint8_t*>(f.data());
}
MacAddr mac_at(const std::vector<std::byte>& f, std::size_t at) {
  MacAddr m;
  std::memcpy(m.data(), u8(f) + at, 6);
  return m;
}
bool checksum_ok(const std::vector<std::byte>& f, std::size_t ip_at) {
  const std::size_t len = static_cast<std::size_t>(u8(f)[ip_at + 4] << 8 | u8(f)[ip_at + 5]);
  // Summing a packet that carries its correct checksum gives 0 after the complement.
  return icmpv6_checksum(f.data() + ip_at, f.data() + ip_at + 40, len) == 0;
}

TEST(Reply, ArpRequestForVipBecomesReplyWithVirtualMacInPayloadOnly) {
  std::vector<std::byte> f = fixtures::arp(1, "198.51.100.10");
  // Requester: MAC 02:02:02:02:02:02 (fixture), IP 0.0.0.0 → give it one.
  f[28] = std::byte(203), f[29] = std::byte(0), f[30] = std::byte(113), f[31] = std::byte(7);
  for (int i = 0; i < 6; ++i) f[22 + i] = std::byte(0x02);
  ASSERT_TRUE(make_arp_reply(f, kOwn, kVmac));
  EXPECT_EQ(mac_at(f, 0), (MacAddr{2, 2, 2, 2, 2, 2}));  // to the requester
  EXPECT_EQ(mac_at(f, 6), kOwn);                         // from this node, not the VMAC
  EXPECT_EQ(u8(f)[21], 2);                               // op = reply
  EXPECT_EQ(mac_at(f, 22), kVmac);                       // sender hardware = virtual MAC
  EXPECT_EQ(IpAddr::v4(static_cast<std::uint32_t>(u8(f)[28] << 24 | u8(f)[29] << 16 |
                                                  u8(f)[30] << 8 | u8(f)[31])),
            fixtures::ip("198.51.100.10"));
  EXPECT_EQ(mac_at(f, 32), (MacAddr{2, 2, 2, 2, 2, 2}));
  EXPECT_EQ(u8(f)[38], 203);  // target protocol address = the requester
}

TEST(Reply, NeighbourSolicitationBecomesAdvertisement) {
  const config::Config config = fixtures::load_fixture_config();
  const Classifier classifier(config);
  for (const fixtures::Case& c : fixtures::cases()) {
    if (c.verdict != Verdict::kNdVip) continue;
    std::vector<std::byte> f = c.frame;
    f.resize(256);
    const std::size_t len = make_na_reply(f, c.frame.size(), kOwn, kVmac);
    ASSERT_EQ(len, 14u + 40 + 32) << c.name;
    f.resize(len);
    EXPECT_EQ(mac_at(f, 6), kOwn);
    EXPECT_EQ(u8(f)[14 + 7], 255);        // hop limit
    EXPECT_EQ(u8(f)[14 + 40], 136);       // NA
    EXPECT_EQ(u8(f)[14 + 40 + 4], 0x60);  // solicited + override
    EXPECT_EQ(u8(f)[14 + 40 + 24], 2);    // target link-layer address option
    EXPECT_EQ(mac_at(f, 14 + 40 + 26), kVmac);
    EXPECT_TRUE(checksum_ok(f, 14));
    // The answer is not itself mistaken for farm traffic or a solicitation.
    EXPECT_NE(classifier.classify(f).verdict, Verdict::kNdVip);
  }
}

TEST(Reply, AnnouncementsCarryTheVirtualMacAndOwnSource) {
  std::vector<std::byte> out(128);
  const std::size_t n4 = build_announcement(out, kOwn, {fixtures::ip("198.51.100.10"), kVmac});
  ASSERT_EQ(n4, 60u);
  EXPECT_EQ(mac_at(out, 0), (MacAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
  EXPECT_EQ(mac_at(out, 6), kOwn);
  EXPECT_EQ(mac_at(out, 22), kVmac);
  std::vector<std::byte> out6(128);
  const std::size_t n6 = build_announcement(out6, kOwn, {fixtures::ip("2001:db8::10"), kVmac});
  ASSERT_EQ(n6, 86u);
  out6.resize(n6);
  EXPECT_EQ(mac_at(out6, 6), kOwn);
  EXPECT_EQ(mac_at(out6, 14 + 40 + 26), kVmac);
  EXPECT_TRUE(checksum_ok(out6, 14));
}

TEST(Reply, KernelArpNamingAVipGetsTheVirtualMac) {
  const std::vector<VipMac> vips = {{fixtures::ip("198.51.100.10"), kVmac}};
  // The kernel asks "who has 203.0.113.7, tell 198.51.100.10" with its own MAC.
  std::vector<std::byte> f = fixtures::arp(1, "203.0.113.7");
  for (int i = 0; i < 6; ++i) f[22 + i] = std::byte(kOwn[i]);
  const std::uint8_t vip[4] = {198, 51, 100, 10};
  for (int i = 0; i < 4; ++i) f[28 + i] = std::byte(vip[i]);
  ASSERT_TRUE(rewrite_outgoing(f, vips));
  EXPECT_EQ(mac_at(f, 22), kVmac);
  EXPECT_EQ(mac_at(f, 6), (MacAddr{2, 2, 2, 2, 2, 2})) << "Ethernet source untouched";
  // The same request from the node's own address is left alone.
  std::vector<std::byte> g = fixtures::arp(1, "203.0.113.7");
  const std::uint8_t own_ip[4] = {192, 0, 2, 1};
  for (int i = 0; i < 4; ++i) g[28 + i] = std::byte(own_ip[i]);
  EXPECT_FALSE(rewrite_outgoing(g, vips));
}

TEST(Reply, KernelSolicitationFromAVipGetsTheVirtualMac) {
  const std::vector<VipMac> vips = {{fixtures::ip("2001:db8::10"), kVmac}};
  fixtures::FrameSpec ns = fixtures::icmp("2001:db8::10", "ff02::1:ff00:7", 135);
  ns.payload.assign(24, std::byte(0));
  const IpAddr target = fixtures::ip("2001:db8:1::7");
  for (int i = 0; i < 8; ++i) {
    ns.payload[i] = std::byte(target.hi >> (56 - 8 * i));
    ns.payload[8 + i] = std::byte(target.lo >> (56 - 8 * i));
  }
  ns.payload[16] = std::byte(1);  // source link-layer address option = own MAC
  ns.payload[17] = std::byte(1);
  for (int i = 0; i < 6; ++i) ns.payload[18 + i] = std::byte(kOwn[i]);
  std::vector<std::byte> f = fixtures::frame(ns);
  ASSERT_TRUE(rewrite_outgoing(f, vips));
  EXPECT_EQ(mac_at(f, 14 + 40 + 26), kVmac);
  EXPECT_TRUE(checksum_ok(f, 14));
}

// Directed VIPs (docs/directed.md): the kernel's solicitation from a directed VIP leaves
// from the node's link-local address (checksum valid); from a flood VIP or the node's own
// address it is left alone.
TEST(Reply, KernelSolicitationFromADirectedVipLeavesFromTheLinkLocal) {
  const std::vector<IpAddr> directed = {fixtures::ip("2001:db8::10")};
  const IpAddr link_local = link_local_of(kOwn);
  EXPECT_EQ(link_local, fixtures::ip("fe80::ff:fe00:1"));
  auto ns_from = [](const char* source) {
    fixtures::FrameSpec ns = fixtures::icmp(source, "ff02::1:ff00:7", 135);
    ns.payload.assign(24, std::byte(0));
    ns.payload[16] = std::byte(1);
    ns.payload[17] = std::byte(1);
    for (int i = 0; i < 6; ++i) ns.payload[18 + i] = std::byte(kOwn[i]);
    return fixtures::frame(ns);
  };
  std::vector<std::byte> f = ns_from("2001:db8::10");
  ASSERT_TRUE(rewrite_directed_ns(f, directed, link_local));
  IpAddr source;
  for (int i = 0; i < 8; ++i) {
    source.hi = source.hi << 8 | u8(f)[14 + 8 + i];
    source.lo = source.lo << 8 | u8(f)[14 + 16 + i];
  }
  EXPECT_EQ(source, link_local);
  EXPECT_TRUE(checksum_ok(f, 14));
  std::vector<std::byte> other = ns_from("2001:db8::99");
  EXPECT_FALSE(rewrite_directed_ns(other, directed, link_local));
  EXPECT_FALSE(rewrite_directed_ns(f, {}, link_local));
}

// What a directed VIP sends a known requester after a view change, and the solicitation
// vipfarm classifies to find a requester's owner: well formed, valid checksums.
TEST(Reply, DirectedAnnouncementsAndProbesAreWellFormed) {
  const MacAddr requester_mac = {0x02, 0, 0, 0, 0, 0x77};
  std::vector<std::byte> arp(60);
  ASSERT_EQ(build_arp(arp, 2, requester_mac, kOwn, 0xC6336410, requester_mac, 0xCB007107), 60u);
  EXPECT_EQ(mac_at(arp, 0), requester_mac);
  EXPECT_EQ(mac_at(arp, 6), kOwn);
  EXPECT_EQ(u8(arp)[21], 2);         // a reply
  EXPECT_EQ(mac_at(arp, 22), kOwn);  // sender: this node
  EXPECT_EQ(u8(arp)[28], 198);       // sender address: the VIP
  EXPECT_EQ(mac_at(arp, 32), requester_mac);
  std::vector<std::byte> na(86);
  ASSERT_EQ(build_na(na, kOwn, fixtures::ip("2001:db8::10"), requester_mac,
                     fixtures::ip("2001:db8:1::7")),
            86u);
  EXPECT_EQ(mac_at(na, 0), requester_mac);
  EXPECT_EQ(u8(na)[14 + 40], 136);
  EXPECT_EQ(u8(na)[14 + 40 + 4], 0x20);  // override, not solicited
  EXPECT_EQ(mac_at(na, 14 + 40 + 26), kOwn);
  EXPECT_TRUE(checksum_ok(na, 14));
  std::vector<std::byte> ns(78);
  ASSERT_EQ(build_ns(ns, kOwn, fixtures::ip("2001:db8:1::7"), fixtures::ip("2001:db8::10")), 78u);
  EXPECT_EQ(u8(ns)[14 + 40], 135);
  EXPECT_EQ(u8(ns)[0], 0x33);
  EXPECT_EQ(u8(ns)[2], 0xff);
  EXPECT_TRUE(checksum_ok(ns, 14));
  std::vector<std::byte> small(59);
  EXPECT_EQ(build_arp(small, 1, kOwn, kOwn, 1, kOwn, 2), 0u);
}

TEST(Reply, BrokenFramesAreLeftAlone) {
  const std::vector<VipMac> vips = {{fixtures::ip("198.51.100.10"), kVmac}};
  for (const fixtures::Case& c : fixtures::cases()) {
    for (std::size_t n = 0; n < c.frame.size(); n += 3) {
      std::vector<std::byte> cut(c.frame.begin(), c.frame.begin() + n);
      std::vector<std::byte> buffer = cut;
      buffer.resize(n + 64);
      rewrite_outgoing(cut, vips);
      make_arp_reply(cut, kOwn, kVmac);
      EXPECT_LE(make_na_reply(buffer, n, kOwn, kVmac), buffer.size());
    }
  }
}

}  // namespace
}  // namespace vipfarm::packet
