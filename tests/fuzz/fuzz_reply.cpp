// libFuzzer target: arbitrary bytes as a frame through the ARP/ND answer builders and the
// rewrites of the kernel's own ARP/ND (packet/reply.hpp). Each works on a heap copy of
// exactly the span it is given, so AddressSanitizer catches a byte written past it; when a
// builder declines, the frame is untouched; when it answers, the answer says what RFC 826 and
// RFC 4861 require of it and every byte it had no business changing is unchanged.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <utility>
#include <vector>

#include "vipfarm/common/net.hpp"
#include "vipfarm/packet/reply.hpp"

namespace {

using vipfarm::IpAddr;
using vipfarm::MacAddr;
using vipfarm::packet::VipMac;
using Bytes = std::vector<std::uint8_t>;

constexpr MacAddr kOwn = {0x02, 0x00, 0x00, 0x00, 0x00, 0xaa};
constexpr MacAddr kVmac = {0x5a, 0xfe, 0xc6, 0x33, 0x64, 0x0a};
// The seeds' addresses: 198.51.100.10 and 2001:db8::10.
const VipMac kVips[] = {
    {IpAddr::v4(0xc633640a), {0x5a, 0xfe, 0xc6, 0x33, 0x64, 0x0a}},
    {IpAddr{0x20010db800000000ULL, 0x10}, {0x5a, 0xf6, 0x01, 0x02, 0x03, 0x04}},
};
const IpAddr kDirected[] = {IpAddr{0x20010db800000000ULL, 0x10}};
const IpAddr kLinkLocal{0xfe80000000000000ULL, 0xaa};

// The VIP rewrite_outgoing must have found for `sender`, by address alone as it looks.
const VipMac* vip_of(const IpAddr& sender) {
  for (const VipMac& v : kVips) {
    if (v.address == sender) return &v;
  }
  return nullptr;
}

std::span<std::byte> span_of(Bytes& b) { return std::as_writable_bytes(std::span(b)); }

std::uint16_t be16(const Bytes& b, std::size_t at) {
  return static_cast<std::uint16_t>(b[at] << 8 | b[at + 1]);
}

bool equal(const Bytes& a, std::size_t at, const Bytes& b, std::size_t from, std::size_t n) {
  return std::equal(a.begin() + static_cast<std::ptrdiff_t>(at),
                    a.begin() + static_cast<std::ptrdiff_t>(at + n),
                    b.begin() + static_cast<std::ptrdiff_t>(from));
}

bool equal(const Bytes& a, std::size_t at, const MacAddr& mac) {
  return std::equal(mac.begin(), mac.end(), a.begin() + static_cast<std::ptrdiff_t>(at));
}

IpAddr ip6_at(const Bytes& b, std::size_t at) {
  IpAddr a;
  for (std::size_t i = 0; i < 8; ++i) {
    a.hi = a.hi << 8 | b[at + i];
    a.lo = a.lo << 8 | b[at + 8 + i];
  }
  return a;
}

// Only bytes in [from, to) ranges differ between `before` and `after` (same size).
bool only_changed(const Bytes& before, const Bytes& after,
                  std::initializer_list<std::pair<std::size_t, std::size_t>> ranges) {
  for (std::size_t i = 0; i < before.size(); ++i) {
    if (before[i] == after[i]) continue;
    const bool allowed = std::any_of(ranges.begin(), ranges.end(),
                                     [i](const auto& r) { return i >= r.first && i < r.second; });
    if (!allowed) return false;
  }
  return true;
}

// Where the EtherType is after at most two VLAN tags; 0: too short or too many tags.
std::size_t ether_type_at(const Bytes& f, std::size_t length) {
  std::size_t at = 12;
  for (int tags = 0; tags <= 2; ++tags, at += 4) {
    if (at + 2 > length) return 0;
    const std::uint16_t type = be16(f, at);
    if (type != 0x8100 && type != 0x88a8) return at;
  }
  return 0;
}

// An ICMPv6 checksum that verifies sums, field included, to zero.
bool checksum_ok(const Bytes& f, std::size_t ip, std::size_t icmp_len) {
  const auto* p = reinterpret_cast<const std::byte*>(f.data());
  return vipfarm::packet::icmpv6_checksum(p + ip, p + ip + 40, icmp_len) == 0;
}

void check_arp_reply(const Bytes& frame) {
  // Exactly the ARP requests (opcode 1) whose 28 bytes of payload are all there.
  const std::size_t et = ether_type_at(frame, frame.size());
  const std::size_t arp = et + 2;
  const bool request =
      et != 0 && be16(frame, et) == 0x0806 && arp + 28 <= frame.size() && be16(frame, arp + 6) == 1;
  Bytes f = frame;
  const bool answered = vipfarm::packet::make_arp_reply(span_of(f), kOwn, kVmac);
  if (answered != request) __builtin_trap();
  if (!answered) {
    if (f != frame) __builtin_trap();
    return;
  }
  // To the requester, from this node; the virtual MAC only inside the ARP payload.
  if (!equal(f, 0, frame, arp + 8, 6) || !equal(f, 6, kOwn)) __builtin_trap();
  if (be16(f, arp + 6) != 2 || !equal(f, arp + 8, kVmac)) __builtin_trap();
  // Sender protocol: the address asked for; target: the request's sender.
  if (!equal(f, arp + 14, frame, arp + 24, 4) || !equal(f, arp + 18, frame, arp + 8, 6) ||
      !equal(f, arp + 24, frame, arp + 14, 4)) {
    __builtin_trap();
  }
  // VLAN tags, hardware and protocol types and whatever follows the ARP payload kept.
  if (!only_changed(frame, f, {{0, 12}, {arp + 6, arp + 28}})) __builtin_trap();
  // A reply is not answered.
  const Bytes reply = f;
  if (vipfarm::packet::make_arp_reply(span_of(f), kOwn, kVmac) || f != reply) __builtin_trap();
}

// The option of `type` among the ND options in [at, end), walked as RFC 4861 4.6 lays
// them out; 0 when there is none (no option starts at byte 0).
std::size_t find_option(const Bytes& f, std::size_t at, std::size_t end, std::uint8_t type) {
  while (at + 2 <= end && f[at + 1] != 0 && at + f[at + 1] * 8u <= end) {
    if (f[at] == type) return at;
    at += f[at + 1] * 8u;
  }
  return 0;
}

// The answer to `frame` in a buffer of `capacity` bytes (at least the frame's).
Bytes na_reply(const Bytes& frame, std::size_t capacity, std::size_t& length) {
  Bytes f(capacity, 0xa5);
  std::copy(frame.begin(), frame.end(), f.begin());
  const Bytes before = f;
  length = vipfarm::packet::make_na_reply(span_of(f), frame.size(), kOwn, kVmac);
  if (length > capacity) __builtin_trap();
  if (length == 0) {
    if (f != before) __builtin_trap();
    return f;
  }
  const std::size_t et = ether_type_at(frame, frame.size());
  if (et == 0 || be16(frame, et) != 0x86dd) __builtin_trap();
  const std::size_t ip = et + 2;
  const std::size_t icmp = ip + 40;
  if (icmp + 24 > frame.size() || frame[ip + 6] != 58 || frame[icmp] != 135) __builtin_trap();
  if (length != icmp + 32) __builtin_trap();
  // Nothing past the answer changed, nor the VLAN tags, version, class and flow label.
  if (!only_changed(before, f, {{0, 12}, {ip + 4, length}})) __builtin_trap();
  if (!equal(f, 6, kOwn)) __builtin_trap();
  if (be16(f, ip + 4) != 32 || f[ip + 6] != 58 || f[ip + 7] != 255) __builtin_trap();
  if (f[icmp] != 136 || f[icmp + 1] != 0) __builtin_trap();
  const IpAddr target = ip6_at(frame, icmp + 8);
  if (ip6_at(f, icmp + 8) != target || ip6_at(f, ip + 8) != target) __builtin_trap();
  if (f[icmp + 24] != 2 || f[icmp + 25] != 1 || !equal(f, icmp + 26, kVmac)) __builtin_trap();
  if (!checksum_ok(f, ip, 32)) __builtin_trap();
  const IpAddr source = ip6_at(frame, ip + 8);
  if (source == IpAddr{}) {
    // A duplicate-address probe: answered to all nodes, not solicited.
    const MacAddr all_nodes = {0x33, 0x33, 0, 0, 0, 1};
    if (!equal(f, 0, all_nodes) || ip6_at(f, ip + 24) != IpAddr{0xff02000000000000ULL, 1} ||
        (f[icmp + 4] & 0x40) != 0) {
      __builtin_trap();
    }
  } else {
    // Solicited, to the requester: the MAC of its source link-layer option, if it has
    // one within the IPv6 payload, else the Ethernet source.
    const std::size_t end = std::min<std::size_t>(frame.size(), icmp + be16(frame, ip + 4));
    const std::size_t sllao = find_option(frame, icmp + 24, end, 1);
    const std::size_t requester = sllao != 0 && frame[sllao + 1] == 1 ? sllao + 2 : 6;
    if (!equal(f, 0, frame, requester, 6) || ip6_at(f, ip + 24) != source ||
        (f[icmp + 4] & 0x40) == 0) {
      __builtin_trap();
    }
  }
  return f;
}

void check_na_reply(const Bytes& frame) {
  // Exactly the frame's room, one byte short of a DAD probe's answer, and room enough.
  std::size_t exact = 0;
  std::size_t short_by_one = 0;
  std::size_t roomy = 0;
  const Bytes a = na_reply(frame, frame.size(), exact);
  (void)na_reply(frame, frame.size() + 7, short_by_one);
  const Bytes b = na_reply(frame, frame.size() + 8, roomy);
  // More room never loses an answer, and never changes it: a solicitation of at least
  // 64 bytes of IPv6 needs at most 8 more for the answer.
  if (exact != 0 && (roomy != exact || !std::equal(a.begin(), a.end(), b.begin()))) {
    __builtin_trap();
  }
  if (short_by_one != 0 && roomy != short_by_one) __builtin_trap();
  // With room enough, every neighbour solicitation (no extension header) is answered.
  const std::size_t et = ether_type_at(frame, frame.size());
  const bool solicitation = et != 0 && be16(frame, et) == 0x86dd && et + 2 + 64 <= frame.size() &&
                            frame[et + 2 + 6] == 58 && frame[et + 2 + 40] == 135;
  if (solicitation != (roomy != 0)) __builtin_trap();
}

void check_rewrite_outgoing(const Bytes& frame) {
  Bytes f = frame;
  if (!vipfarm::packet::rewrite_outgoing(span_of(f), kVips)) {
    if (f != frame) __builtin_trap();
    return;
  }
  const std::size_t et = ether_type_at(frame, frame.size());
  if (et == 0) __builtin_trap();
  const std::size_t l3 = et + 2;
  if (be16(frame, et) == 0x0806) {
    // IPv4 over Ethernet only; the sender hardware address becomes the sender VIP's
    // virtual MAC, nothing else changes.
    if (l3 + 28 > frame.size() || be16(frame, l3 + 2) != 0x0800 || frame[l3 + 4] != 6 ||
        frame[l3 + 5] != 4) {
      __builtin_trap();
    }
    const std::uint32_t spa = std::uint32_t{frame[l3 + 14]} << 24 |
                              std::uint32_t{frame[l3 + 15]} << 16 |
                              std::uint32_t{frame[l3 + 16]} << 8 | frame[l3 + 17];
    const VipMac* vip = vip_of(IpAddr::v4(spa));
    if (vip == nullptr || !equal(f, l3 + 8, vip->mac)) __builtin_trap();
    if (!only_changed(frame, f, {{l3 + 8, l3 + 14}})) __builtin_trap();
    return;
  }
  if (be16(frame, et) != 0x86dd || l3 + 64 > frame.size() || frame[l3 + 6] != 58) {
    __builtin_trap();
  }
  const std::size_t icmp = l3 + 40;
  const std::size_t icmp_len = std::min<std::size_t>(be16(frame, l3 + 4), frame.size() - icmp);
  // NS: the sender is the IPv6 source, in the source link-layer option; NA: the target,
  // in the target link-layer option.
  const bool ns = frame[icmp] == 135;
  if (!ns && frame[icmp] != 136) __builtin_trap();
  const VipMac* vip = vip_of(ns ? ip6_at(frame, l3 + 8) : ip6_at(frame, icmp + 8));
  if (vip == nullptr) __builtin_trap();
  const std::size_t opt = find_option(frame, icmp + 24, icmp + icmp_len, ns ? 1 : 2);
  if (opt == 0 || frame[opt + 1] != 1 || !equal(f, opt + 2, vip->mac)) __builtin_trap();
  if (!only_changed(frame, f, {{opt + 2, opt + 8}, {icmp + 2, icmp + 4}})) __builtin_trap();
  if (!checksum_ok(f, l3, icmp_len)) __builtin_trap();
}

void check_rewrite_directed_ns(const Bytes& frame) {
  Bytes f = frame;
  if (!vipfarm::packet::rewrite_directed_ns(span_of(f), kDirected, kLinkLocal)) {
    if (f != frame) __builtin_trap();
    return;
  }
  const std::size_t et = ether_type_at(frame, frame.size());
  if (et == 0 || be16(frame, et) != 0x86dd) __builtin_trap();
  const std::size_t ip = et + 2;
  const std::size_t icmp = ip + 40;
  if (icmp + 24 > frame.size() || frame[ip + 6] != 58 || frame[icmp] != 135) __builtin_trap();
  if (ip6_at(frame, ip + 8) != kDirected[0] || ip6_at(f, ip + 8) != kLinkLocal) __builtin_trap();
  if (!only_changed(frame, f, {{ip + 8, ip + 24}, {icmp + 2, icmp + 4}})) __builtin_trap();
  // The checksum covers what the IPv6 payload length says is there; only a payload that
  // holds the checksum field itself can verify (the kernel never sends a shorter NS).
  const std::size_t icmp_len = std::min<std::size_t>(be16(frame, ip + 4), frame.size() - icmp);
  if (icmp_len >= 4 && !checksum_ok(f, ip, icmp_len)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes frame(data, data + size);
  check_arp_reply(frame);
  check_na_reply(frame);
  check_rewrite_outgoing(frame);
  check_rewrite_directed_ns(frame);
  return 0;
}
