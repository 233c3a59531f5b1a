// Frames the data plane answers or sends for VIPs: ARP replies, neighbour advertisements,
// gratuitous announcements, and the rewrite of the kernel's own ARP/ND that names a VIP.
// The virtual MAC only ever travels inside ARP/ND payloads; the Ethernet source is always
// the node's own MAC, so no switch ever learns the virtual MAC on one port.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "vipfarm/common/net.hpp"

namespace vipfarm::packet {

struct VipMac {
  IpAddr address;
  MacAddr mac;
};

// A frame classified kArpVip, turned into its reply in place (VLAN tags kept).
// Returns false when the frame is not an ARP request (then it is left unchanged).
bool make_arp_reply(std::span<std::byte> frame, const MacAddr& own, const MacAddr& vmac) noexcept;

// A frame classified kNdVip (a neighbour solicitation), turned into the solicited neighbour
// advertisement in place. `capacity` is the usable buffer size from the frame's start; the
// reply may be longer than the solicitation (a DAD probe carries no link-layer option).
// Returns the reply's length, or 0 when it cannot be built.
std::size_t make_na_reply(std::span<std::byte> buffer, std::size_t length, const MacAddr& own,
                          const MacAddr& vmac) noexcept;

// Unsolicited announcements for one VIP: a gratuitous ARP request (IPv4) or an unsolicited
// NA to all nodes (IPv6). Returns the length written into `out` (at least 86 bytes).
std::size_t build_announcement(std::span<std::byte> out, const MacAddr& own,
                               const VipMac& vip) noexcept;

// An untagged IPv4 ARP frame (60 bytes, padded): operation `op` (1 request, 2 reply) from
// sender `sha`/`spa` to target `tha`/`tpa`, sent to `eth_dst`. Returns 60, or 0 when `out`
// is shorter. Directed VIPs: the unicast answer a requester gets after a view change, and
// the request vipfarm classifies to find a requester's ARP owner.
std::size_t build_arp(std::span<std::byte> out, std::uint16_t op, const MacAddr& eth_dst,
                      const MacAddr& sha, std::uint32_t spa, const MacAddr& tha,
                      std::uint32_t tpa) noexcept;

// IPv6 counterparts for directed VIPs: an unsolicited neighbour advertisement (override
// set) from `vip` with target link-layer address `own`, unicast to `dst_mac`/`dst_ip`; and
// a neighbour solicitation for `target` from `src_ip` (sent to its solicited-node group),
// which vipfarm classifies to find a requester's owner. Return the length written (86 for
// the NA, 78 for the NS), or 0 when `out` is too short.
std::size_t build_na(std::span<std::byte> out, const MacAddr& own, const IpAddr& vip,
                     const MacAddr& dst_mac, const IpAddr& dst_ip) noexcept;
std::size_t build_ns(std::span<std::byte> out, const MacAddr& src_mac, const IpAddr& src_ip,
                     const IpAddr& target) noexcept;

// The kernel's own neighbour solicitations from a directed VIP (a node asking for a
// client's MAC before answering it) leave with `link_local`, the node's own link-local
// address, as their source: the client's answer then comes to this node (not to the VIP's
// ARP owner), and the client does not re-point the VIP at it. Returns true if it
// rewrote.
bool rewrite_directed_ns(std::span<std::byte> frame, std::span<const IpAddr> directed_vips,
                         const IpAddr& link_local) noexcept;

// The kernel's own ARP packets and neighbour solicitations/advertisements that name a VIP
// as their sender carry the VIP's virtual MAC instead of this node's (CLUSTERIP did the
// same): otherwise a client would pin the VIP to this node. Returns true if it rewrote.
bool rewrite_outgoing(std::span<std::byte> frame, std::span<const VipMac> vips) noexcept;

// The ICMPv6 checksum of the IPv6 packet at `ip` (upper layer at `l4`, `l4_len` bytes).
std::uint16_t icmpv6_checksum(const std::byte* ip, const std::byte* l4,
                              std::size_t l4_len) noexcept;

}  // namespace vipfarm::packet
