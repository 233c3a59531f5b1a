// The classifier: parse (L2, VLAN, ARP, IPv4, IPv6 extension chain, L4, ICMP quotes),
// rule lookup, key, hash. Every read is bounds-checked against the frame or datagram end.
#include "vipfarm/packet/classify.hpp"

#include "vipfarm/flow/handoff.hpp"

#include <algorithm>
#include <array>
#include <tuple>

namespace vipfarm::packet {

namespace {

using config::KeyKind;
using config::Proto;

constexpr std::uint16_t kEtherIpv4 = 0x0800;
constexpr std::uint16_t kEtherIpv6 = 0x86DD;
constexpr std::uint16_t kEtherArp = 0x0806;
constexpr std::uint16_t kEtherVlan = 0x8100;
constexpr std::uint16_t kEtherQinq = 0x88A8;
constexpr unsigned kMaxVlanTags = 2;
constexpr unsigned kMaxExtHeaders = 8;

constexpr std::uint8_t kProtoIcmp = 1;
constexpr std::uint8_t kProtoTcp = 6;
constexpr std::uint8_t kProtoUdp = 17;
constexpr std::uint8_t kProtoIcmpv6 = 58;

inline std::uint16_t be16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
inline std::uint32_t be32(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
inline std::uint64_t be64(const std::uint8_t* p) noexcept {
  return std::uint64_t{be32(p)} << 32 | be32(p + 4);
}
inline IpAddr ipv6_at(const std::uint8_t* p) noexcept { return {be64(p), be64(p + 8)}; }

// What the key needs to know about a VIP packet (docs/classifier.md §3).
struct Flow {
  IpAddr client;
  IpAddr server;
  std::uint32_t ident = 0;
  std::uint16_t client_port = 0;
  std::uint16_t server_port = 0;
  std::uint8_t proto = 0;
  bool v6 = false;
  bool has_ports = false;
  bool ports_unknown = false;  // a fragment or a short quote of TCP/UDP: match on vip+proto
  bool echo_request = false;
  std::uint8_t tcp_flags = 0;  // a TCP segment's own flags (not a quote's)
  bool quoted = false;         // the flow quoted by an ICMP error
};

// The IPv6 extension-header walk (§1.5). On return `offset` is the upper-layer header.
struct Ipv6Walk {
  std::uint8_t proto;
  std::uint32_t offset;  // from the start of the IPv6 header
  std::uint32_t frag_ident = 0;
  bool has_frag_header = false;
  bool fragment = false;
};

inline bool walk_ipv6(const std::uint8_t* ip, std::uint32_t end, Ipv6Walk& w) noexcept {
  w.proto = ip[6];
  w.offset = 40;
  for (unsigned n = 0;; ++n) {
    const std::uint8_t type = w.proto;
    if (type != 0 && type != 43 && type != 60 && type != 51 && type != 44) return true;
    if (n == kMaxExtHeaders) {
      w.proto = 0xff;  // marks "chain too long" for the caller
      return false;
    }
    if (w.offset + 2 > end) return false;
    const std::uint8_t* h = ip + w.offset;
    const std::uint32_t length = type == 44   ? 8
                                 : type == 51 ? (std::uint32_t{h[1]} + 2) * 4
                                              : (std::uint32_t{h[1]} + 1) * 8;
    if (w.offset + length > end) return false;
    if (type == 44) {
      const std::uint16_t frag = be16(h + 2);
      const bool fragment = (frag >> 3) != 0 || (frag & 1) != 0;
      if (!w.has_frag_header) w.frag_ident = be32(h + 4);  // the first one identifies
      w.has_frag_header = true;
      w.fragment = w.fragment || fragment;
      if ((frag >> 3) != 0) {  // a later fragment: what follows is not a header
        w.proto = h[0];
        w.offset += length;
        return true;
      }
    }
    w.proto = h[0];
    w.offset += length;
  }
}

inline bool is_icmp_error(bool v6, std::uint8_t type) noexcept {
  return v6 ? (type >= 1 && type <= 4) : (type == 3 || type == 11 || type == 12);
}

// Reads the flow an ICMP error quotes (§3, ICMP errors): client and server swapped.
inline Malformed parse_quote(const std::uint8_t* q, std::uint32_t len, bool v6,
                             Flow& flow) noexcept {
  std::uint32_t l4;
  bool fragment;
  if (!v6) {
    if (len < 20 || (q[0] >> 4) != 4) return Malformed::kIcmpQuote;
    const std::uint32_t ihl = (q[0] & 0x0f) * 4u;
    if (ihl < 20 || ihl > len) return Malformed::kIcmpQuote;
    flow.proto = q[9];
    flow.ident = be16(q + 4);
    flow.server = IpAddr::v4(be32(q + 12));
    flow.client = IpAddr::v4(be32(q + 16));
    fragment = (be16(q + 6) & 0x3fff) != 0;
    l4 = ihl;
  } else {
    if (len < 40 || (q[0] >> 4) != 6) return Malformed::kIcmpQuote;
    Ipv6Walk w;
    if (!walk_ipv6(q, len, w)) return Malformed::kIcmpQuote;
    flow.proto = w.proto;
    flow.ident = w.has_frag_header ? w.frag_ident : (be32(q) & 0xfffff);
    flow.server = ipv6_at(q + 8);
    flow.client = ipv6_at(q + 24);
    fragment = w.fragment;
    l4 = w.offset;
  }
  if (flow.proto == kProtoTcp || flow.proto == kProtoUdp) {
    if (!fragment && l4 + 4 <= len) {
      flow.server_port = be16(q + l4);
      flow.client_port = be16(q + l4 + 2);
      flow.has_ports = true;
    } else {
      flow.ports_unknown = true;
    }
  }
  return Malformed::kNone;
}

// Upper-layer checks and ports of a VIP packet that is not a fragment (§3).
inline Malformed parse_l4(const std::uint8_t* l4, std::uint32_t len, Flow& flow) noexcept {
  switch (flow.proto) {
    case kProtoTcp: {
      if (len < 20) return Malformed::kL4Truncated;
      const std::uint32_t doff = (l4[12] >> 4) * 4u;
      if (doff < 20 || doff > len) return Malformed::kTcpDataOffset;
      flow.client_port = be16(l4);
      flow.server_port = be16(l4 + 2);
      flow.tcp_flags = l4[13];
      flow.has_ports = true;
      return Malformed::kNone;
    }
    case kProtoUdp: {
      if (len < 8) return Malformed::kL4Truncated;
      const std::uint32_t ulen = be16(l4 + 4);
      if (ulen < 8 || ulen > len) return Malformed::kUdpLength;
      flow.client_port = be16(l4);
      flow.server_port = be16(l4 + 2);
      flow.has_ports = true;
      return Malformed::kNone;
    }
    case kProtoIcmp:
    case kProtoIcmpv6: {
      if ((flow.proto == kProtoIcmpv6) != flow.v6) return Malformed::kNone;  // foreign ICMP
      if (len < (flow.v6 ? 4u : 8u)) return Malformed::kL4Truncated;
      const std::uint8_t type = l4[0];
      if (is_icmp_error(flow.v6, type)) {
        if (len < 8) return Malformed::kIcmpQuote;
        Flow quoted;
        quoted.v6 = flow.v6;
        const Malformed m = parse_quote(l4 + 8, len - 8, flow.v6, quoted);
        quoted.quoted = true;
        if (m == Malformed::kNone) flow = quoted;
        return m;
      }
      flow.echo_request = type == (flow.v6 ? 128 : 8);
      return Malformed::kNone;
    }
    default:
      return Malformed::kNone;
  }
}

inline Classifier::ProtoClass proto_class(std::uint8_t proto, bool v6) noexcept {
  if (proto == kProtoTcp) return Classifier::kClassTcp;
  if (proto == kProtoUdp) return Classifier::kClassUdp;
  if (proto == (v6 ? kProtoIcmpv6 : kProtoIcmp)) return Classifier::kClassIcmp;
  return Classifier::kClassOther;
}

inline bool rule_has_class(Proto proto, Classifier::ProtoClass c) noexcept {
  switch (proto) {
    case Proto::kAny:
      return true;
    case Proto::kTcp:
      return c == Classifier::kClassTcp;
    case Proto::kUdp:
      return c == Classifier::kClassUdp;
    case Proto::kIcmp:
      return c == Classifier::kClassIcmp;
  }
  return false;
}

// The masks that make the key of docs/classifier.md §5 for `key` on a VIP of this family.
Classifier::CompiledRule compile_key(KeyKind key, std::uint8_t prefix, std::uint8_t prefix6,
                                     bool v6) {
  constexpr std::uint64_t kAll = ~std::uint64_t{0};
  Classifier::CompiledRule r{kAll, kAll, 0, 0, 0, 0, Classifier::kAsSent, 0, Classifier::kAnyPort,
                             0,    0};
  switch (key) {
    case KeyKind::kOnAddr:
      break;
    case KeyKind::kOnDstAddr:
      r.order = Classifier::kSwapped;
      break;
    case KeyKind::kOnDstPort:
      r.order = Classifier::kSwapped;
      r.m4 = 0xffff0000;
      r.s4 = 16;
      break;
    case KeyKind::kSymmetric:
      r.order = Classifier::kSorted;
      r.ms = kAll;
      break;
    case KeyKind::kSymmetricPort:
      r.order = Classifier::kSorted;
      r.ms = kAll;
      r.m4 = 0xff'ffff'ffff;
      break;
    case KeyKind::kClientNet: {
      const IpAddr mask =
          (v6 ? IpAddr{kAll, kAll} : IpAddr::v4(0xffffffff)).masked(v6 ? prefix6 : prefix);
      r.m0 = v6 ? mask.hi : kAll;
      r.m1 = v6 ? mask.lo : mask.lo | ~std::uint64_t{0xffffffff};
      break;
    }
    case KeyKind::kOnPort:
      r.m4 = 0xffff0000;
      r.s4 = 16;
      break;
    case KeyKind::kOnIpid:
      r.mi = kAll;
      break;
    case KeyKind::kFiveTuple:
      r.ms = kAll;
      r.m4 = 0xff'ffff'ffff;
      break;
  }
  return r;
}

// Whether the key takes the destination endpoint first (Classifier::Order).
inline bool swapped(const Classifier::CompiledRule& rule, const Flow& flow) noexcept {
  if (rule.order != Classifier::kSorted) return rule.order == Classifier::kSwapped;
  return std::tie(flow.server.hi, flow.server.lo, flow.server_port) <
         std::tie(flow.client.hi, flow.client.lo, flow.client_port);
}

inline FlowKey make_key(const Classifier::CompiledRule& rule, const Flow& flow,
                        bool swap) noexcept {
  if (!swap) [[likely]] {  // the source first: every service VIP's rule
    const std::uint64_t ports =
        std::uint64_t{flow.proto} << 32 | std::uint64_t{flow.client_port} << 16 | flow.server_port;
    return {{flow.client.hi & rule.m0, flow.client.lo & rule.m1, flow.server.hi & rule.ms,
             flow.server.lo & rule.ms, ((ports & rule.m4) >> rule.s4) | (flow.ident & rule.mi)}};
  }
  // The destination first: on_dst_ keys, and symmetric ones when it is the lower endpoint.
  const std::uint64_t ports =
      std::uint64_t{flow.proto} << 32 | std::uint64_t{flow.server_port} << 16 | flow.client_port;
  return {{flow.server.hi & rule.m0, flow.server.lo & rule.m1, flow.client.hi & rule.ms,
           flow.client.lo & rule.ms, ((ports & rule.m4) >> rule.s4) | (flow.ident & rule.mi)}};
}

}  // namespace

bool is_udp_to(std::span<const std::byte> frame, std::uint16_t port) noexcept {
  const auto* p = reinterpret_cast<const std::uint8_t*>(frame.data());
  const std::size_t size = frame.size();
  std::size_t off = 12;
  if (size < off + 2) return false;
  std::uint16_t ether = be16(p + off);
  for (unsigned tags = 0; ether == kEtherVlan || ether == kEtherQinq; ++tags) {
    if (tags == kMaxVlanTags || off + 6 > size) return false;
    off += 4;
    ether = be16(p + off);
  }
  off += 2;
  if (ether == kEtherIpv4) {
    if (size < off + 20) return false;
    const std::uint8_t* l3 = p + off;
    const std::size_t ihl = (l3[0] & 0x0f) * 4u;
    if ((l3[0] >> 4) != 4 || ihl < 20 || l3[9] != 17 || (be16(l3 + 6) & 0x1fff) != 0) return false;
    off += ihl;
  } else if (ether == kEtherIpv6) {
    if (size < off + 40 || (p[off] >> 4) != 6 || p[off + 6] != 17) return false;
    off += 40;
  } else {
    return false;
  }
  return size >= off + 8 && be16(p + off + 2) == port;
}

std::string_view to_string(Verdict verdict) noexcept {
  static constexpr std::string_view kNames[] = {"pass",    "farm",    "accept", "not_owner",
                                                "no_rule", "arp_vip", "nd_vip", "malformed"};
  return kNames[static_cast<std::size_t>(verdict)];
}

std::string_view to_string(Malformed reason) noexcept {
  static constexpr std::string_view kNames[] = {"",
                                                "runt",
                                                "vlan_truncated",
                                                "vlan_depth",
                                                "arp_truncated",
                                                "l3_truncated",
                                                "ip_version",
                                                "ipv4_ihl",
                                                "ipv4_total_length",
                                                "ipv6_payload_length",
                                                "ext_truncated",
                                                "ext_chain",
                                                "l4_truncated",
                                                "tcp_data_offset",
                                                "udp_length",
                                                "icmp_quote"};
  return kNames[static_cast<std::size_t>(reason)];
}

std::string route_through_gateway(const config::Config& config, std::string_view via,
                                  FrameSpec& spec) {
  const bool v4 = spec.dst.is_v4();
  std::vector<const config::Vip*> gateways;
  for (const config::Vip& vip : config.vips) {
    if (vip.gateway && vip.address.is_v4() == v4) gateways.push_back(&vip);
  }
  std::string known;  // their addresses, for the messages
  for (const config::Vip* vip : gateways) {
    known += (known.empty() ? "" : ", ") + vip->address.to_string();
  }
  if (!via.empty()) {
    const auto address = IpAddr::parse(via);
    for (const config::Vip* vip : gateways) {
      if (address && vip->address == *address) {
        spec.dst_mac = vip->mac;
        return {};
      }
    }
    return "--via " + std::string(via) + " is not a gateway VIP of the flow's family" +
           (known.empty() ? std::string(" (there is none)") : " (" + known + ")");
  }
  const bool to_vip = std::any_of(config.vips.begin(), config.vips.end(),
                                  [&](const config::Vip& v) { return v.address == spec.dst; });
  if (to_vip || gateways.empty()) return {};
  if (gateways.size() == 1) {
    spec.dst_mac = gateways[0]->mac;
    return {};
  }
  return "the server is not a VIP: name the gateway VIP the flow goes through with --via (" +
         known + ")";
}

Ownership::Ownership(std::size_t groups, std::uint32_t buckets)
    : words_per_group_(std::max<std::uint32_t>(1, buckets / 64)),
      bits_(groups * words_per_group_, 0) {}

void Ownership::set(std::uint16_t group, BucketId bucket, bool owned) noexcept {
  std::uint64_t& word = bits_[group * words_per_group_ + (bucket >> 6)];
  const std::uint64_t bit = std::uint64_t{1} << (bucket & 63);
  word = owned ? (word | bit) : (word & ~bit);
}

Ownership Ownership::compute(const config::Config& config, NodeId self, config::ViewMask view) {
  Ownership out(config.groups.size(), config.buckets);
  for (std::size_t g = 0; g < config.groups.size(); ++g) {
    const std::vector<NodeId> owners =
        assignment::assign(config::assignment_input(config, g, view));
    for (BucketId b = 0; b < owners.size(); ++b) {
      out.set(static_cast<std::uint16_t>(g), b, owners[b] == self);
    }
  }
  return out;
}

Classifier::Classifier(const config::Config& config)
    : seeds_(HashSeeds::from(config.seed)), bucket_mask_(config.buckets - 1) {
  PortSets port_sets;  // one bit set per distinct port list, shared by the rules that use it
  lookups_.resize(1 + std::max<std::size_t>(1, config.dataplane.ports.size()));
  for (std::size_t v = 0; v < config.vips.size(); ++v) {
    const config::Vip& vip = config.vips[v];
    const IpAddr& address = vip.address;
    const bool v6 = !address.is_v4();
    VipEntry entry{address, vip.gateway, {}, {}, -1, -1};
    for (unsigned c = 0; c < kClassCount; ++c) {
      entry.rules_begin[c] = static_cast<std::uint32_t>(rules_.size());
      for (std::size_t g = 0; g < config.groups.size(); ++g) {
        for (const config::Rule& rule : config.groups[g].rules) {
          if ((rule.vip && *rule.vip != v) || !rule_has_class(rule.proto, ProtoClass(c))) continue;
          CompiledRule compiled = compile_key(rule.key, rule.prefix, rule.prefix6, v6);
          compiled.group = static_cast<std::uint16_t>(g);
          compiled.port_set = rule.ports.empty() ? kAnyPort : port_set(rule.ports, port_sets);
          compiled.dst_begin = static_cast<std::uint32_t>(dst_.size());
          for (const Prefix& prefix : rule.dst) {  // only rules naming a gateway have dst
            constexpr std::uint64_t kAll = ~std::uint64_t{0};
            IpAddr mask = (v6 ? IpAddr{kAll, kAll} : IpAddr::v4(0xffffffff)).masked(prefix.length);
            if (!v6) {  // all 96 bits of the mapped prefix must match: families never mix
              mask.hi = kAll;
              mask.lo |= 0xffffffff00000000ULL;
            }
            dst_.push_back({prefix.address.masked(prefix.length), mask});
          }
          compiled.dst_end = static_cast<std::uint32_t>(dst_.size());
          rules_.push_back(compiled);
        }
      }
      entry.rules_end[c] = static_cast<std::uint32_t>(rules_.size());
    }
    // The client's address, keyed on_addr in the VIP's first group: who answers an echo
    // request no rule matches, and who answers a directed VIP's ARP / ND for a requester.
    std::int32_t by_client = -1;
    for (std::size_t g = 0; g < config.groups.size() && by_client < 0; ++g) {
      for (const config::Rule& rule : config.groups[g].rules) {
        if (rule.vip && *rule.vip != v) continue;
        CompiledRule client = compile_key(KeyKind::kOnAddr, 0, 0, v6);
        client.group = static_cast<std::uint16_t>(g);
        by_client = static_cast<std::int32_t>(rules_.size());
        rules_.push_back(client);
        break;
      }
    }
    if (config.icmp_echo == config::IcmpEcho::kOne) entry.echo_rule = by_client;
    if (vip.l2_mode == config::L2Mode::kDirected) entry.arp_rule = by_client;
    const auto index = static_cast<std::uint16_t>(v);
    for (const std::size_t at : {std::size_t{0}, vip.port + 1}) {
      if (at >= lookups_.size()) continue;  // a port the config does not have: offline only
      Lookup& l = lookups_[at];
      if (vip.gateway) {
        l.gateway_mac.push_back(mac48(vip.mac));
        l.gateway_index.push_back(index);
      }
      // A gateway's address too: its ARP / ND is answered like any VIP's.
      if (!v6) {
        l.vip4.push_back(address.v4_value());
        l.vip4_index.push_back(index);
      } else {
        l.vip6.push_back(index);
      }
    }
    vips_.push_back(entry);
  }
}

std::uint32_t Classifier::port_set(const std::vector<config::PortRange>& ports, PortSets& known) {
  for (const auto& [list, offset] : known) {
    if (list == ports) return offset;
  }
  constexpr std::size_t kWords = 65536 / 64;
  const auto offset = static_cast<std::uint32_t>(port_bits_.size());
  port_bits_.resize(port_bits_.size() + kWords, 0);
  for (const config::PortRange& range : ports) {
    for (std::uint32_t port = range.first; port <= range.last; ++port) {
      port_bits_[offset + (port >> 6)] |= std::uint64_t{1} << (port & 63);
    }
  }
  known.emplace_back(ports, offset);
  return offset;
}

inline int Classifier::find_vip4(const Lookup& at, std::uint32_t address) noexcept {
  for (std::size_t i = 0; i < at.vip4.size(); ++i) {
    if (at.vip4[i] == address) return at.vip4_index[i];
  }
  return -1;
}

// Only IPv6 VIPs are listed: an IPv4-mapped address inside IPv6 is never the IPv4 VIP.
inline int Classifier::find_vip6(const Lookup& at, const IpAddr& address) const noexcept {
  for (const std::uint16_t i : at.vip6) {
    if (vips_[i].address == address) return i;
  }
  return -1;
}

inline int Classifier::find_gateway(const Lookup& at, std::uint64_t mac) noexcept {
  for (std::size_t i = 0; i < at.gateway_mac.size(); ++i) {
    if (at.gateway_mac[i] == mac) return at.gateway_index[i];
  }
  return -1;
}

inline bool Classifier::dst_matches(const CompiledRule& rule,
                                    const IpAddr& address) const noexcept {
  if (rule.dst_begin == rule.dst_end) return true;
  for (std::uint32_t i = rule.dst_begin; i < rule.dst_end; ++i) {
    const DstPrefix& d = dst_[i];
    if ((address.hi & d.mask.hi) == d.net.hi && (address.lo & d.mask.lo) == d.net.lo) return true;
  }
  return false;
}

// A directed VIP's ARP request or neighbour solicitation: keyed on the requester's address
// like an echo request, so that the owner of its bucket, one node, answers.
void Classifier::key_requester(const VipEntry& vip, const IpAddr& requester, FlowKey& key,
                               Result& result) const noexcept {
  if (vip.arp_rule < 0) return;
  const CompiledRule& rule = rules_[static_cast<std::size_t>(vip.arp_rule)];
  Flow flow;
  flow.v6 = !requester.is_v4();
  flow.client = requester;
  key = make_key(rule, flow, false);
  result.group = rule.group;
  result.directed = true;
}

void Classifier::prepare(std::span<const std::byte> frame, const Lookup& at, FlowKey& key,
                         Result& result, flow::FlowTuple* tuple) const noexcept {
  const auto* p = reinterpret_cast<const std::uint8_t*>(frame.data());
  const auto size = static_cast<std::uint32_t>(frame.size());
  // Written in place, field by field: a Result built on the stack and returned in registers
  // costs a store-forwarding stall per packet (narrow stores, then one wide load).
  result = Result{};
  auto malformed = [&result](Malformed reason) {
    result.verdict = Verdict::kMalformed;
    result.reason = reason;
  };
  if (size < 14) return malformed(Malformed::kRunt);
  std::uint32_t off = 12;
  std::uint16_t ether = be16(p + off);
  for (unsigned tags = 0; ether == kEtherVlan || ether == kEtherQinq; ++tags) {
    if (tags == kMaxVlanTags) return malformed(Malformed::kVlanDepth);
    if (off + 6 > size) return malformed(Malformed::kVlanTruncated);
    off += 4;
    ether = be16(p + off);
  }
  off += 2;
  const std::uint8_t* l3 = p + off;
  const std::uint32_t avail = size - off;

  Flow flow;
  int vip = -1;
  const std::uint8_t* l4 = nullptr;
  std::uint32_t l4_len = 0;
  bool fragment = false;

  if (ether == kEtherIpv4) {
    if (avail < 20) return malformed(Malformed::kL3Truncated);
    if ((l3[0] >> 4) != 4) return malformed(Malformed::kIpVersion);
    const std::uint32_t ihl = (l3[0] & 0x0f) * 4u;
    if (ihl < 20) return malformed(Malformed::kIpv4Ihl);
    if (ihl > avail) return malformed(Malformed::kL3Truncated);
    const std::uint32_t total = be16(l3 + 2);
    if (total < ihl || total > avail) return malformed(Malformed::kIpv4TotalLength);
    flow.server = IpAddr::v4(be32(l3 + 16));
    // A gateway's frames by its virtual MAC, whatever their destination (§2). Written out
    // in each family's branch: a shared helper measured 9-13 more instructions per packet
    // (callgrind) on farms without gateways.
    vip = at.gateway_mac.empty() ? -1 : find_gateway(at, mac48(p));
    if (vip < 0) {
      vip = find_vip4(at, flow.server.v4_value());
      if (vip < 0) return;
    } else if (!vips_[vip].address.is_v4()) {
      result.verdict = Verdict::kNoRule;  // to an IPv6 gateway's MAC: no rule can take it
      result.vip = static_cast<std::uint16_t>(vip);
      return;
    }
    flow.client = IpAddr::v4(be32(l3 + 12));
    flow.proto = l3[9];
    flow.ident = be16(l3 + 4);
    const std::uint16_t frag = be16(l3 + 6);
    fragment = (frag & 0x3fff) != 0;
    l4 = l3 + ihl;
    l4_len = total - ihl;
  } else if (ether == kEtherIpv6) {
    if (avail < 40) return malformed(Malformed::kL3Truncated);
    if ((l3[0] >> 4) != 6) return malformed(Malformed::kIpVersion);
    const std::uint32_t payload = be16(l3 + 4);
    if (payload == 0 || 40 + payload > avail) return malformed(Malformed::kIpv6PayloadLength);
    const std::uint32_t end = 40 + payload;
    Ipv6Walk w;
    if (!walk_ipv6(l3, end, w)) {
      return malformed(w.proto == 0xff ? Malformed::kExtChain : Malformed::kExtTruncated);
    }
    flow.v6 = true;
    flow.proto = w.proto;
    fragment = w.fragment;
    l4 = l3 + w.offset;
    l4_len = end - w.offset;
    if (w.proto == kProtoIcmpv6 && !fragment && l4_len >= 4 && l4[0] >= 133 && l4[0] <= 137) {
      // Neighbour discovery is the host's, except solicitations for a VIP, which the data
      // plane answers; an advertisement to a VIP answers some node's kernel: every one
      // gets it.
      // Only a solicitation with hop limit 255 (sent on the link, RFC 4861 §7.1.1) is answered.
      const int target =
          l4[0] == 135 && l4_len >= 24 && l3[7] == 255 ? find_vip6(at, ipv6_at(l4 + 8)) : -1;
      if (target >= 0) {
        result.verdict = Verdict::kNdVip;
        result.vip = static_cast<std::uint16_t>(target);
        key_requester(vips_[target], ipv6_at(l3 + 8), key, result);
      }
      return;
    }
    flow.server = ipv6_at(l3 + 24);
    vip = at.gateway_mac.empty() ? -1 : find_gateway(at, mac48(p));
    if (vip < 0) {
      vip = find_vip6(at, flow.server);
      if (vip < 0) return;
    } else if (vips_[vip].address.is_v4()) {
      result.verdict = Verdict::kNoRule;  // to an IPv4 gateway's MAC: no rule can take it
      result.vip = static_cast<std::uint16_t>(vip);
      return;
    }
    flow.client = ipv6_at(l3 + 8);
    flow.ident = w.has_frag_header ? w.frag_ident : (be32(l3) & 0xfffff);
  } else if (ether == kEtherArp) {
    if (avail < 28) return malformed(Malformed::kArpTruncated);
    // A request from the VIP for the VIP is a gratuitous ARP, another node's announcement.
    // A sender hardware address with the group bit (broadcast, multicast) would have every
    // node broadcast its answer: such a request is not answered.
    if (be16(l3) == 1 && be16(l3 + 2) == kEtherIpv4 && l3[4] == 6 && l3[5] == 4 &&
        be16(l3 + 6) == 1 && be32(l3 + 14) != be32(l3 + 24) && (l3[8] & 1) == 0) {
      const int target = find_vip4(at, be32(l3 + 24));
      if (target >= 0) {
        result.verdict = Verdict::kArpVip;
        result.vip = static_cast<std::uint16_t>(target);
        key_requester(vips_[target], IpAddr::v4(be32(l3 + 14)), key, result);
      }
    }
    return;
  } else {
    return;
  }

  result.vip = static_cast<std::uint16_t>(vip);
  if (fragment) {
    flow.ports_unknown = true;  // even a first fragment's L4 header is not read (I4)
  } else {
    const Malformed m = parse_l4(l4, l4_len, flow);
    if (m != Malformed::kNone) return malformed(m);
  }

  // An ICMP error carries the quoted flow: the rule is looked up for the quoted server
  // (a gateway's rules are its own, whatever the destination).
  const int rule_vip = flow.server == vips_[vip].address || vips_[vip].gateway ? vip
                       : flow.v6 ? find_vip6(at, flow.server)
                                 : find_vip4(at, flow.server.v4_value());
  result.verdict = Verdict::kNoRule;
  if (rule_vip < 0) return;
  const VipEntry& entry = vips_[rule_vip];
  const unsigned c = proto_class(flow.proto, flow.v6);
  const CompiledRule* match = nullptr;
  for (std::uint32_t r = entry.rules_begin[c]; r < entry.rules_end[c]; ++r) {
    const CompiledRule& rule = rules_[r];
    if (entry.gateway && !dst_matches(rule, flow.server)) continue;  // only gateways have dst
    if (rule.port_set == kAnyPort || flow.ports_unknown) {
      match = &rule;
      break;
    }
    if (!flow.has_ports) continue;
    const std::uint64_t word = port_bits_[rule.port_set + (flow.server_port >> 6)];
    if ((word >> (flow.server_port & 63) & 1) != 0) {
      match = &rule;
      break;
    }
  }
  if (match == nullptr) {
    if (!flow.echo_request || entry.echo_rule < 0) return;
    match = &rules_[static_cast<std::size_t>(entry.echo_rule)];
  }
  result.verdict = Verdict::kFarm;
  result.group = match->group;
  const bool swap = match->order != kAsSent && swapped(*match, flow);
  key = make_key(*match, flow, swap);
  if (tuple != nullptr) {
    tuple->client = swap ? flow.server : flow.client;
    tuple->server = swap ? flow.client : flow.server;
    tuple->client_port = swap ? flow.server_port : flow.client_port;
    tuple->server_port = swap ? flow.client_port : flow.server_port;
    tuple->proto = flow.proto;
    tuple->tcp_flags = flow.tcp_flags;
    tuple->pad[0] = flow.quoted ? flow::kQuotedByIcmpError : 0;
  }
}

Result Classifier::classify(std::span<const std::byte> frame, std::size_t port) const noexcept {
  FlowKey key;  // set by prepare() exactly when the verdict is kFarm or the result directed
  Result result;
  prepare(frame, lookup(port), key, result, nullptr);
  if (result.verdict == Verdict::kFarm || result.directed) {
    result.bucket = static_cast<BucketId>(hash_key(seeds_, key) & bucket_mask_);
  }
  return result;
}

void Classifier::classify_burst(const std::span<const std::byte>* frames, std::size_t count,
                                Result* results, flow::FlowTuple* tuples,
                                std::size_t port) const noexcept {
  const Lookup& at = lookup(port);
  // Stage 1 parses and matches (branchy), stage 2 hashes (independent multiplies that
  // pipeline across packets): one packet's hash no longer waits behind the next's parse.
  std::array<FlowKey, kMaxBurst> keys;  // only farm results' keys are set and read
  for (std::size_t done = 0; done < count; done += kMaxBurst) {
    const std::size_t n = std::min(kMaxBurst, count - done);
    for (std::size_t i = 0; i < n; ++i) {
      prepare(frames[done + i], at, keys[i], results[done + i],
              tuples != nullptr ? tuples + done + i : nullptr);
    }
    for (std::size_t i = 0; i < n; ++i) {
      Result& r = results[done + i];
      if (r.verdict == Verdict::kFarm || r.directed) {
        r.bucket = static_cast<BucketId>(hash_key(seeds_, keys[i]) & bucket_mask_);
      }
    }
  }
}

}  // namespace vipfarm::packet
