// Who a directed VIP's requester is (docs/directed.md): the sender of an ARP request or
// neighbour solicitation the data plane answered, and the sender of VIP traffic that may
// confirm it. Pure functions over bytes: never read past the frame, never allocate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "vipfarm/common/net.hpp"

namespace vipfarm::packet {

// An IP address and the Ethernet source it came from.
struct Sender {
  IpAddr address;
  std::uint64_t mac48 = 0;
};

// The sender of an untagged ARP request (its sender protocol address) or IPv6 neighbour
// solicitation (its IPv6 source), with the frame's Ethernet source. False for anything else,
// a tagged frame (the unicast re-announcement goes out untagged), an unspecified sender
// (0.0.0.0 ARP probes, :: duplicate address detection: nothing to re-announce to) or a
// zero or group Ethernet source.
bool requester_of(std::span<const std::byte> frame, Sender& sender) noexcept;

// The source of an untagged IPv4 / IPv6 frame that can open something from a requester: a
// TCP segment with SYN and without ACK, or anything that is not TCP (UDP, ICMP, a fragment,
// an extension header chain). Later TCP segments of a connection return false: its SYN
// confirmed the requester already, and the data path checks no more than that.
bool opening_sender(std::span<const std::byte> frame, Sender& sender) noexcept;

}  // namespace vipfarm::packet
