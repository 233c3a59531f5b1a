// Requesters of directed VIPs and the traffic that confirms them, read from raw bytes:
// offsets per RFC 826 (ARP), RFC 791 / 8200 (IPv4 / IPv6) and RFC 4861 (ND).
#include "vipfarm/packet/requester.hpp"

namespace vipfarm::packet {

namespace {

constexpr std::uint16_t kEtherIpv4 = 0x0800;
constexpr std::uint16_t kEtherArp = 0x0806;
constexpr std::uint16_t kEtherIpv6 = 0x86DD;
constexpr std::uint8_t kProtoTcp = 6;
constexpr std::uint8_t kProtoIcmpv6 = 58;
constexpr std::uint8_t kNeighbourSolicitation = 135;
constexpr std::uint8_t kTcpSyn = 0x02;
constexpr std::uint8_t kTcpAck = 0x10;

std::uint16_t be16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
std::uint32_t be32(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
IpAddr ip6_at(const std::uint8_t* p) noexcept {
  IpAddr a;
  for (int i = 0; i < 8; ++i) {
    a.hi = a.hi << 8 | p[i];
    a.lo = a.lo << 8 | p[8 + i];
  }
  return a;
}

// A usable Ethernet source: not zero, not a group address.
bool unicast_source(const std::uint8_t* f) noexcept {
  const std::uint64_t mac = mac48(f + 6);
  return mac != 0 && (f[6] & 1) == 0;
}

}  // namespace

bool requester_of(std::span<const std::byte> frame, Sender& sender) noexcept {
  const auto* f = reinterpret_cast<const std::uint8_t*>(frame.data());
  const std::size_t len = frame.size();
  if (len < 14 || !unicast_source(f)) return false;
  const std::uint16_t ether = be16(f + 12);
  if (ether == kEtherArp) {
    // Ethernet/IPv4 request: htype 1, ptype IPv4, hlen 6, plen 4, op 1.
    const std::uint8_t* a = f + 14;
    if (len < 14 + 28 || be16(a) != 1 || be16(a + 2) != kEtherIpv4 || a[4] != 6 || a[5] != 4 ||
        be16(a + 6) != 1) {
      return false;
    }
    const std::uint32_t spa = be32(a + 14);
    if (spa == 0) return false;
    sender = {IpAddr::v4(spa), mac48(f + 6)};
    return true;
  }
  if (ether == kEtherIpv6) {
    const std::uint8_t* ip = f + 14;
    if (len < 14 + 40 + 24 || (ip[0] >> 4) != 6 || ip[6] != kProtoIcmpv6 ||
        ip[40] != kNeighbourSolicitation) {
      return false;
    }
    const IpAddr src = ip6_at(ip + 8);
    if (src == IpAddr{}) return false;
    sender = {src, mac48(f + 6)};
    return true;
  }
  return false;
}

bool opening_sender(std::span<const std::byte> frame, Sender& sender) noexcept {
  const auto* f = reinterpret_cast<const std::uint8_t*>(frame.data());
  const std::size_t len = frame.size();
  if (len < 14) return false;
  const std::uint16_t ether = be16(f + 12);
  const std::uint8_t* ip = f + 14;
  if (ether == kEtherIpv4) {
    if (len < 14 + 20 || (ip[0] >> 4) != 4) return false;
    const std::size_t ihl = (ip[0] & 0x0f) * 4u;
    if (ihl < 20) return false;
    if (ip[9] == kProtoTcp && (be16(ip + 6) & 0x1fff) == 0) {
      if (len < 14 + ihl + 14) return false;
      const std::uint8_t flags = ip[ihl + 13];
      if ((flags & (kTcpSyn | kTcpAck)) != kTcpSyn) return false;
    }
    sender = {IpAddr::v4(be32(ip + 12)), mac48(f + 6)};
    return unicast_source(f);
  }
  if (ether == kEtherIpv6) {
    if (len < 14 + 40 || (ip[0] >> 4) != 6) return false;
    if (ip[6] == kProtoTcp) {
      if (len < 14 + 40 + 14) return false;
      const std::uint8_t flags = ip[40 + 13];
      if ((flags & (kTcpSyn | kTcpAck)) != kTcpSyn) return false;
    }
    sender = {ip6_at(ip + 8), mac48(f + 6)};
    return unicast_source(f);
  }
  return false;
}

}  // namespace vipfarm::packet
