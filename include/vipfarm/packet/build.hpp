// Builds well-formed frames from a few fields: the owner tool's queries and test fixtures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vipfarm/common/net.hpp"

namespace vipfarm::packet {

struct FrameSpec {
  MacAddr dst_mac = {0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a};  // a gateway VIP's to reach it
  IpAddr src;
  IpAddr dst;  // same family as src
  std::uint8_t proto = 6;
  std::uint16_t src_port = 0;  // TCP/UDP
  std::uint16_t dst_port = 0;
  std::uint8_t icmp_type = 8;        // ICMP/ICMPv6 (8 or 128: echo request)
  std::vector<std::uint16_t> vlans;  // outermost first; the first uses 0x88A8 when two
  std::uint16_t ip_id = 0;
  std::uint32_t flow_label = 0;
  std::uint16_t frag_offset = 0;   // in 8-byte units; IPv6 adds a fragment header when set
  bool more_fragments = false;     // ... or when this is set
  std::uint32_t frag_ident = 0;    // IPv6 fragment header identification
  std::vector<std::byte> payload;  // after the L4 header (ICMP: after the 8-byte header)
};

std::vector<std::byte> build_frame(const FrameSpec& spec);

// A flow as operators write it, "PROTO CLIENT SERVER": tcp|udp|icmp, endpoints like
// 192.0.2.7:40000 or [2001:db8::7]:40000 (an address alone for icmp), both of one family.
// `spec` is the frame the client would send (an echo request for icmp); `error` says what
// is wrong, empty when the query is valid. The owner tool and the admin API share it.
struct FlowQuery {
  FrameSpec spec;
  std::string error;
};
FlowQuery parse_flow_query(std::string_view proto, std::string_view client,
                           std::string_view server);

}  // namespace vipfarm::packet
