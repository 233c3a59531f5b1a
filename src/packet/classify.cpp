// The classifier: parse (L2, VLAN, ARP, IPv4, IPv6 extension chain, L4, ICMP quotes),
// rule lookup, key, hash. Every read is bounds-checked against the frame or datagram end.
#include "vipfarm/packet/classify.hpp"

#include <algorithm>

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

inline bool proto_matches(Proto rule, const Flow& flow) noexcept {
  switch (rule) {
    case Proto::kAny:
      return true;
    case Proto::kTcp:
      return flow.proto == kProtoTcp;
    case Proto::kUdp:
      return flow.proto == kProtoUdp;
    case Proto::kIcmp:
      return flow.proto == (flow.v6 ? kProtoIcmpv6 : kProtoIcmp);
  }
  return false;
}

inline FlowKey make_key(const Classifier::CompiledRule& rule, const Flow& flow) noexcept {
  FlowKey key;
  key.w[0] = flow.client.hi;
  key.w[1] = flow.client.lo;
  switch (rule.key) {
    case KeyKind::kOnAddr:
      break;
    case KeyKind::kClientNet: {
      const IpAddr net = flow.client.masked(flow.v6 ? rule.prefix6 : rule.prefix);
      key.w[0] = net.hi;
      key.w[1] = net.lo;
      break;
    }
    case KeyKind::kOnPort:
      key.w[4] = flow.has_ports ? flow.client_port : 0;
      break;
    case KeyKind::kOnIpid:
      key.w[4] = flow.ident;
      break;
    case KeyKind::kFiveTuple:
      key.w[2] = flow.server.hi;
      key.w[3] = flow.server.lo;
      key.w[4] = std::uint64_t{flow.proto} << 32;
      if (flow.has_ports) {
        key.w[4] |= std::uint64_t{flow.client_port} << 16 | flow.server_port;
      }
      break;
  }
  return key;
}

}  // namespace

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
  for (std::size_t v = 0; v < config.vips.size(); ++v) {
    VipEntry entry{config.vips[v].address, static_cast<std::uint32_t>(rules_.size()), 0, -1};
    for (std::size_t g = 0; g < config.groups.size(); ++g) {
      for (const config::Rule& rule : config.groups[g].rules) {
        if (rule.vip && *rule.vip != v) continue;
        if (entry.echo_group < 0 && config.icmp_echo == config::IcmpEcho::kOne) {
          entry.echo_group = static_cast<std::int32_t>(g);
        }
        const auto ports_begin = static_cast<std::uint32_t>(ports_.size());
        ports_.insert(ports_.end(), rule.ports.begin(), rule.ports.end());
        rules_.push_back({static_cast<std::uint16_t>(g), rule.proto, rule.key, rule.prefix,
                          rule.prefix6, ports_begin, static_cast<std::uint32_t>(ports_.size())});
      }
    }
    entry.rules_end = static_cast<std::uint32_t>(rules_.size());
    vips_.push_back(entry);
  }
}

Result Classifier::classify(std::span<const std::byte> frame) const noexcept {
  const auto* p = reinterpret_cast<const std::uint8_t*>(frame.data());
  const auto size = static_cast<std::uint32_t>(frame.size());
  Result result;
  auto malformed = [&result](Malformed reason) {
    result.verdict = Verdict::kMalformed;
    result.reason = reason;
    return result;
  };
  // An IPv4-mapped address inside IPv6 is not the IPv4 VIP: families never mix.
  auto find_vip = [this](const IpAddr& address, bool v6) -> int {
    if (v6 && address.is_v4()) return -1;
    for (std::size_t i = 0; i < vips_.size(); ++i) {
      if (vips_[i].address == address) return static_cast<int>(i);
    }
    return -1;
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
    vip = find_vip(flow.server, false);
    if (vip < 0) return result;
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
    if (w.proto == kProtoIcmpv6 && !fragment && l4_len >= 24 && l4[0] == 135) {
      const int target = find_vip(ipv6_at(l4 + 8), true);
      if (target >= 0) {
        result.verdict = Verdict::kNdVip;
        result.vip = static_cast<std::uint16_t>(target);
        return result;
      }
    }
    flow.server = ipv6_at(l3 + 24);
    vip = find_vip(flow.server, true);
    if (vip < 0) return result;
    flow.client = ipv6_at(l3 + 8);
    flow.ident = w.has_frag_header ? w.frag_ident : (be32(l3) & 0xfffff);
  } else if (ether == kEtherArp) {
    if (avail < 28) return malformed(Malformed::kArpTruncated);
    if (be16(l3) == 1 && be16(l3 + 2) == kEtherIpv4 && l3[4] == 6 && l3[5] == 4 &&
        be16(l3 + 6) == 1) {
      const int target = find_vip(IpAddr::v4(be32(l3 + 24)), false);
      if (target >= 0) {
        result.verdict = Verdict::kArpVip;
        result.vip = static_cast<std::uint16_t>(target);
      }
    }
    return result;
  } else {
    return result;
  }

  result.vip = static_cast<std::uint16_t>(vip);
  if (fragment) {
    flow.ports_unknown = true;  // even a first fragment's L4 header is not read (I4)
  } else {
    const Malformed m = parse_l4(l4, l4_len, flow);
    if (m != Malformed::kNone) return malformed(m);
  }

  // An ICMP error carries the quoted flow: the rule is looked up for the quoted server.
  const int rule_vip = flow.server == vips_[vip].address ? vip : find_vip(flow.server, flow.v6);
  result.verdict = Verdict::kNoRule;
  if (rule_vip < 0) return result;
  const VipEntry& entry = vips_[rule_vip];
  const CompiledRule* match = nullptr;
  for (std::uint32_t r = entry.rules_begin; r < entry.rules_end && match == nullptr; ++r) {
    const CompiledRule& rule = rules_[r];
    if (!proto_matches(rule.proto, flow)) continue;
    if (rule.ports_begin != rule.ports_end && !flow.ports_unknown) {
      if (!flow.has_ports) continue;
      const auto* first = ports_.data() + rule.ports_begin;
      const auto* last = ports_.data() + rule.ports_end;
      if (std::none_of(first, last, [&](const config::PortRange& range) {
            return flow.server_port >= range.first && flow.server_port <= range.last;
          })) {
        continue;
      }
    }
    match = &rule;
  }
  CompiledRule echo;
  if (match == nullptr) {
    if (!flow.echo_request || entry.echo_group < 0) return result;
    echo = {
        static_cast<std::uint16_t>(entry.echo_group), Proto::kAny, KeyKind::kOnAddr, 0, 0, 0, 0};
    match = &echo;
  }
  result.verdict = Verdict::kFarm;
  result.group = match->group;
  result.bucket = static_cast<BucketId>(hash_key(seeds_, make_key(*match, flow)) & bucket_mask_);
  return result;
}

}  // namespace vipfarm::packet
