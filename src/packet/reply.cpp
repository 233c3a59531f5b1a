// ARP/ND answers and announcements built on raw bytes (no EAL): the data plane copies them
// into mbufs. Offsets follow RFC 826 (ARP) and RFC 4861 (ND).
#include "vipfarm/packet/reply.hpp"

#include <algorithm>
#include <cstring>

namespace vipfarm::packet {

namespace {

constexpr std::uint8_t kNeighbourSolicitation = 135;
constexpr std::uint8_t kNeighbourAdvertisement = 136;
constexpr std::uint8_t kOptSourceLinkAddr = 1;
constexpr std::uint8_t kOptTargetLinkAddr = 2;

std::uint8_t* bytes(std::span<std::byte> s) { return reinterpret_cast<std::uint8_t*>(s.data()); }

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
void put16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
void put_mac(std::uint8_t* p, const MacAddr& mac) { std::memcpy(p, mac.data(), 6); }
void put_ip6(std::uint8_t* p, const IpAddr& a) {
  for (int i = 0; i < 8; ++i) {
    p[i] = static_cast<std::uint8_t>(a.hi >> (56 - 8 * i));
    p[8 + i] = static_cast<std::uint8_t>(a.lo >> (56 - 8 * i));
  }
}
IpAddr ip6_at(const std::uint8_t* p) {
  IpAddr a;
  for (int i = 0; i < 8; ++i) {
    a.hi = a.hi << 8 | p[i];
    a.lo = a.lo << 8 | p[8 + i];
  }
  return a;
}

// An untagged ICMPv6 frame at `f`, zeroed first: Ethernet from `src_mac` to `dst_mac`,
// IPv6 from `src` to `dst` (hop limit 255, as neighbour discovery requires) with
// `icmp_len` bytes of ICMPv6. Returns the ICMPv6 header; finish with icmpv6_done().
std::uint8_t* icmpv6_frame(std::uint8_t* f, const std::uint8_t* dst_mac, const MacAddr& src_mac,
                           const IpAddr& src, const IpAddr& dst, std::uint16_t icmp_len) {
  std::memset(f, 0, 14 + 40 + icmp_len);
  std::memcpy(f, dst_mac, 6);
  put_mac(f + 6, src_mac);
  put16(f + 12, 0x86DD);
  std::uint8_t* ip = f + 14;
  ip[0] = 0x60;
  put16(ip + 4, icmp_len);
  ip[6] = 58;
  ip[7] = 255;
  put_ip6(ip + 8, src);
  put_ip6(ip + 24, dst);
  return ip + 40;
}

// The checksum of the ICMPv6 message icmpv6_frame() laid out at `f`.
void icmpv6_done(std::uint8_t* f, std::uint16_t icmp_len) {
  std::uint8_t* ip = f + 14;
  put16(ip + 40 + 2, icmpv6_checksum(reinterpret_cast<std::byte*>(ip),
                                     reinterpret_cast<std::byte*>(ip + 40), icmp_len));
}

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

// Offset of the EtherType after up to two VLAN tags; 0 if the frame is too short.
std::size_t ether_type_offset(const std::uint8_t* f, std::size_t len) {
  std::size_t off = 12;
  for (int tags = 0; tags < 3; ++tags) {
    if (off + 2 > len) return 0;
    const std::uint16_t type = be16(f + off);
    if (type != 0x8100 && type != 0x88A8) return off;
    off += 4;
  }
  return 0;
}

const VipMac* find(std::span<const VipMac> vips, const IpAddr& a) {
  for (const VipMac& v : vips) {
    if (v.address == a) return &v;
  }
  return nullptr;
}

std::uint32_t sum16(const std::uint8_t* p, std::size_t len, std::uint32_t sum) {
  for (std::size_t i = 0; i + 1 < len; i += 2) sum += be16(p + i);
  if (len & 1) sum += std::uint32_t{p[len - 1]} << 8;
  return sum;
}

// Walks ND options from `opt` to `end`; returns the first of `type` or nullptr.
std::uint8_t* find_option(std::uint8_t* opt, std::uint8_t* end, std::uint8_t type) {
  while (opt + 2 <= end && opt[1] != 0 && opt + opt[1] * 8 <= end) {
    if (opt[0] == type) return opt;
    opt += opt[1] * 8;
  }
  return nullptr;
}

}  // namespace

std::uint16_t icmpv6_checksum(const std::byte* ip_bytes, const std::byte* l4_bytes,
                              std::size_t l4_len) noexcept {
  const auto* ip = reinterpret_cast<const std::uint8_t*>(ip_bytes);
  const auto* l4 = reinterpret_cast<const std::uint8_t*>(l4_bytes);
  std::uint32_t sum = sum16(ip + 8, 32, 0);  // source and destination
  sum += static_cast<std::uint32_t>(l4_len >> 16) + static_cast<std::uint32_t>(l4_len & 0xffff);
  sum += 58;
  sum = sum16(l4, l4_len, sum);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

bool make_arp_reply(std::span<std::byte> frame, const MacAddr& own, const MacAddr& vmac) noexcept {
  std::uint8_t* f = bytes(frame);
  const std::size_t et = ether_type_offset(f, frame.size());
  if (et == 0 || be16(f + et) != 0x0806 || et + 2 + 28 > frame.size()) return false;
  std::uint8_t* arp = f + et + 2;
  if (be16(arp + 6) != 1) return false;
  std::uint8_t requester_mac[6];
  std::uint8_t requester_ip[4];
  std::uint8_t target_ip[4];
  std::memcpy(requester_mac, arp + 8, 6);
  std::memcpy(requester_ip, arp + 14, 4);
  std::memcpy(target_ip, arp + 24, 4);
  std::memcpy(f, requester_mac, 6);  // Ethernet destination: the requester
  put_mac(f + 6, own);               // Ethernet source: this node, never the virtual MAC
  put16(arp + 6, 2);
  put_mac(arp + 8, vmac);
  std::memcpy(arp + 14, target_ip, 4);
  std::memcpy(arp + 18, requester_mac, 6);
  std::memcpy(arp + 24, requester_ip, 4);
  return true;
}

std::size_t make_na_reply(std::span<std::byte> buffer, std::size_t length, const MacAddr& own,
                          const MacAddr& vmac) noexcept {
  std::uint8_t* f = bytes(buffer);
  const std::size_t et = ether_type_offset(f, length);
  if (et == 0 || be16(f + et) != 0x86DD) return 0;
  std::uint8_t* ip = f + et + 2;
  const std::size_t ip_off = et + 2;
  if (ip_off + 40 + 24 > length || ip[6] != 58) return 0;  // no extension headers in ND
  std::uint8_t* icmp = ip + 40;
  if (icmp[0] != kNeighbourSolicitation) return 0;
  const std::size_t reply_len = ip_off + 40 + 32;
  if (reply_len > buffer.size()) return 0;
  const IpAddr source = ip6_at(ip + 8);
  const IpAddr target = ip6_at(icmp + 8);
  const bool dad = source == IpAddr{};
  std::uint8_t requester_mac[6];
  std::memcpy(requester_mac, f + 6, 6);
  if (const std::uint8_t* sllao = find_option(
          icmp + 24, f + std::min(length, ip_off + 40 + be16(ip + 4)), kOptSourceLinkAddr);
      sllao != nullptr && sllao[1] == 1) {
    std::memcpy(requester_mac, sllao + 2, 6);
  }
  if (dad) {  // answer a duplicate-address probe to all nodes (RFC 4861 7.2.4)
    const std::uint8_t all_nodes_mac[6] = {0x33, 0x33, 0, 0, 0, 1};
    std::memcpy(f, all_nodes_mac, 6);
  } else {
    std::memcpy(f, requester_mac, 6);
  }
  put_mac(f + 6, own);
  put16(ip + 4, 32);  // payload length
  ip[7] = 255;        // hop limit: ND requires 255
  put_ip6(ip + 24, dad ? IpAddr{0xff02000000000000ULL, 1} : source);
  put_ip6(ip + 8, target);
  icmp[0] = kNeighbourAdvertisement;
  icmp[1] = 0;
  icmp[4] = dad ? 0x20 : 0x60;  // S (not for DAD) and O: the virtual MAC is authoritative
  icmp[5] = icmp[6] = icmp[7] = 0;
  put_ip6(icmp + 8, target);
  icmp[24] = kOptTargetLinkAddr;
  icmp[25] = 1;
  put_mac(icmp + 26, vmac);
  put16(icmp + 2, 0);
  put16(icmp + 2,
        icmpv6_checksum(reinterpret_cast<std::byte*>(ip), reinterpret_cast<std::byte*>(icmp), 32));
  return reply_len;
}

std::size_t build_arp(std::span<std::byte> out, std::uint16_t op, const MacAddr& eth_dst,
                      const MacAddr& sha, std::uint32_t spa, const MacAddr& tha,
                      std::uint32_t tpa) noexcept {
  if (out.size() < 60) return 0;
  std::uint8_t* f = bytes(out);
  std::memset(f, 0, 60);
  put_mac(f, eth_dst);
  put_mac(f + 6, sha);
  put16(f + 12, 0x0806);
  std::uint8_t* arp = f + 14;
  put16(arp, 1);
  put16(arp + 2, 0x0800);
  arp[4] = 6;
  arp[5] = 4;
  put16(arp + 6, op);
  put_mac(arp + 8, sha);
  put_mac(arp + 18, tha);
  for (int i = 0; i < 4; ++i) {
    arp[14 + i] = static_cast<std::uint8_t>(spa >> (24 - 8 * i));
    arp[24 + i] = static_cast<std::uint8_t>(tpa >> (24 - 8 * i));
  }
  return 60;
}

std::size_t build_na(std::span<std::byte> out, const MacAddr& own, const IpAddr& vip,
                     const MacAddr& dst_mac, const IpAddr& dst_ip) noexcept {
  if (out.size() < 86) return 0;
  std::uint8_t* f = bytes(out);
  std::uint8_t* icmp = icmpv6_frame(f, dst_mac.data(), own, vip, dst_ip, 32);
  icmp[0] = kNeighbourAdvertisement;
  icmp[4] = 0x20;  // O: override the cache's old MAC
  put_ip6(icmp + 8, vip);
  icmp[24] = kOptTargetLinkAddr;
  icmp[25] = 1;
  put_mac(icmp + 26, own);
  icmpv6_done(f, 32);
  return 86;
}

std::size_t build_ns(std::span<std::byte> out, const MacAddr& src_mac, const IpAddr& src_ip,
                     const IpAddr& target) noexcept {
  if (out.size() < 78) return 0;
  std::uint8_t* f = bytes(out);
  const std::uint8_t group_mac[6] = {0x33,
                                     0x33,
                                     0xff,
                                     static_cast<std::uint8_t>(target.lo >> 16),
                                     static_cast<std::uint8_t>(target.lo >> 8),
                                     static_cast<std::uint8_t>(target.lo)};
  const IpAddr group{0xff02000000000000ULL, 0x00000001ff000000ULL | (target.lo & 0xffffff)};
  std::uint8_t* icmp = icmpv6_frame(f, group_mac, src_mac, src_ip, group, 24);
  icmp[0] = kNeighbourSolicitation;
  put_ip6(icmp + 8, target);
  icmpv6_done(f, 24);
  return 78;
}

bool rewrite_directed_ns(std::span<std::byte> frame, std::span<const IpAddr> directed_vips,
                         const IpAddr& link_local) noexcept {
  if (directed_vips.empty()) return false;
  std::uint8_t* f = bytes(frame);
  const std::size_t et = ether_type_offset(f, frame.size());
  if (et == 0 || be16(f + et) != 0x86DD) return false;
  std::uint8_t* ip = f + et + 2;
  if (et + 2 + 40 + 24 > frame.size() || ip[6] != 58) return false;
  std::uint8_t* icmp = ip + 40;
  if (icmp[0] != kNeighbourSolicitation) return false;
  const IpAddr source = ip6_at(ip + 8);
  if (std::find(directed_vips.begin(), directed_vips.end(), source) == directed_vips.end()) {
    return false;
  }
  const std::size_t icmp_len = std::min<std::size_t>(be16(ip + 4), frame.size() - (et + 2 + 40));
  put_ip6(ip + 8, link_local);
  put16(icmp + 2, 0);
  put16(icmp + 2, icmpv6_checksum(reinterpret_cast<std::byte*>(ip),
                                  reinterpret_cast<std::byte*>(icmp), icmp_len));
  return true;
}

std::size_t build_announcement(std::span<std::byte> out, const MacAddr& own,
                               const VipMac& vip) noexcept {
  if (out.size() < 86) return 0;
  if (vip.address.is_v4()) {
    // A request: every stack updates its cache from it.
    const MacAddr broadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const std::uint32_t a = vip.address.v4_value();
    std::uint8_t* f = bytes(out);
    build_arp(out, 1, broadcast, own, a, MacAddr{}, a);
    put_mac(f + 14 + 8, vip.mac);  // the sender hardware address: the virtual MAC
    return 60;                     // padded to the Ethernet minimum
  }
  std::uint8_t* f = bytes(out);
  const std::uint8_t all_nodes_mac[6] = {0x33, 0x33, 0, 0, 0, 1};
  std::uint8_t* icmp =
      icmpv6_frame(f, all_nodes_mac, own, vip.address, IpAddr{0xff02000000000000ULL, 1}, 32);
  icmp[0] = kNeighbourAdvertisement;
  icmp[4] = 0x20;  // O: override caches holding another MAC
  put_ip6(icmp + 8, vip.address);
  icmp[24] = kOptTargetLinkAddr;
  icmp[25] = 1;
  put_mac(icmp + 26, vip.mac);
  icmpv6_done(f, 32);
  return 86;
}

bool rewrite_outgoing(std::span<std::byte> frame, std::span<const VipMac> vips) noexcept {
  std::uint8_t* f = bytes(frame);
  const std::size_t et = ether_type_offset(f, frame.size());
  if (et == 0) return false;
  const std::uint16_t type = be16(f + et);
  if (type == 0x0806) {
    std::uint8_t* arp = f + et + 2;
    if (et + 2 + 28 > frame.size() || be16(arp + 2) != 0x0800 || arp[4] != 6 || arp[5] != 4) {
      return false;
    }
    const VipMac* vip = find(vips, IpAddr::v4(be32(arp + 14)));
    if (vip == nullptr) return false;
    put_mac(arp + 8, vip->mac);
    return true;
  }
  if (type != 0x86DD) return false;
  std::uint8_t* ip = f + et + 2;
  if (et + 2 + 40 + 24 > frame.size() || ip[6] != 58) return false;
  std::uint8_t* icmp = ip + 40;
  const std::size_t icmp_len = std::min<std::size_t>(be16(ip + 4), frame.size() - (et + 2 + 40));
  std::uint8_t option;
  const VipMac* vip;
  if (icmp[0] == kNeighbourSolicitation) {  // the sender is the IPv6 source
    option = kOptSourceLinkAddr;
    vip = find(vips, ip6_at(ip + 8));
  } else if (icmp[0] == kNeighbourAdvertisement) {  // the sender is the target
    option = kOptTargetLinkAddr;
    vip = find(vips, ip6_at(icmp + 8));
  } else {
    return false;
  }
  if (vip == nullptr) return false;
  std::uint8_t* opt = find_option(icmp + 24, icmp + icmp_len, option);
  if (opt == nullptr || opt[1] != 1) return false;
  put_mac(opt + 2, vip->mac);
  put16(icmp + 2, 0);
  put16(icmp + 2, icmpv6_checksum(reinterpret_cast<std::byte*>(ip),
                                  reinterpret_cast<std::byte*>(icmp), icmp_len));
  return true;
}

}  // namespace vipfarm::packet
