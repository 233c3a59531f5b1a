// Frame → verdict, group and bucket (docs/classifier.md): a pure function over bytes,
// compiled once per configuration into an immutable Classifier.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "vipfarm/common/net.hpp"
#include "vipfarm/common/types.hpp"
#include "vipfarm/config/config.hpp"
#include "vipfarm/flow/flow_table.hpp"
#include "vipfarm/packet/build.hpp"
#include "vipfarm/packet/hash.hpp"

namespace vipfarm::packet {

enum class Verdict : std::uint8_t {
  kPass,      // not farm traffic: to the host unfiltered
  kFarm,      // farm traffic of `group`/`bucket`; Ownership turns it into accept/not_owner
  kAccept,    // farm traffic this node owns
  kNotOwner,  // farm traffic another node owns
  kNoRule,    // sent to a VIP, no rule matches
  kArpVip,    // ARP request for a VIP
  kNdVip,     // IPv6 neighbour solicitation for a VIP
  kMalformed,
};
inline constexpr std::size_t kVerdictCount = 8;

enum class Malformed : std::uint8_t {
  kNone,
  kRunt,
  kVlanTruncated,
  kVlanDepth,
  kArpTruncated,
  kL3Truncated,
  kIpVersion,
  kIpv4Ihl,
  kIpv4TotalLength,
  kIpv6PayloadLength,
  kExtTruncated,
  kExtChain,
  kL4Truncated,
  kTcpDataOffset,
  kUdpLength,
  kIcmpQuote,
};
inline constexpr std::size_t kMalformedCount = 16;

std::string_view to_string(Verdict verdict) noexcept;
std::string_view to_string(Malformed reason) noexcept;

struct Result {
  Verdict verdict = Verdict::kPass;
  Malformed reason = Malformed::kNone;
  std::uint16_t group = 0;  // valid for kFarm, kAccept, kNotOwner
  std::uint16_t vip = 0;    // index of the VIP (farm, no_rule, arp_vip, nd_vip)
  BucketId bucket = 0;      // valid for kFarm, kAccept, kNotOwner
  // kArpVip / kNdVip for a directed VIP (docs/directed.md): group and bucket are the
  // requester's (its address keyed on_addr in the VIP's first group); their owner answers.
  bool directed = false;
};

// This node's buckets: one bitmap per group, indexed with a mask.
class Ownership {
 public:
  Ownership() = default;
  Ownership(std::size_t groups, std::uint32_t buckets);
  // What `self` owns in every group of `config` when `view` is the set of eligible nodes.
  static Ownership compute(const config::Config& config, NodeId self, config::ViewMask view);

  void set(std::uint16_t group, BucketId bucket, bool owned) noexcept;
  bool empty() const noexcept { return bits_.empty(); }  // default-constructed
  bool owns(std::uint16_t group, BucketId bucket) const noexcept {
    const std::uint64_t word = bits_[group * words_per_group_ + (bucket >> 6)];
    return (word >> (bucket & 63)) & 1;
  }
  // kFarm → kAccept or kNotOwner; other verdicts unchanged.
  void apply(Result& result) const noexcept {
    if (result.verdict == Verdict::kFarm) {
      result.verdict = owns(result.group, result.bucket) ? Verdict::kAccept : Verdict::kNotOwner;
    }
  }

 private:
  std::uint32_t words_per_group_ = 0;
  std::vector<std::uint64_t> bits_;
};

// Whether `frame` is a UDP datagram to `port` (IPv4 and not a later fragment, or IPv6 with
// UDP as the first next header; under at most two VLAN tags): how the data plane tells the
// farm's heartbeats from the rest of the host's traffic, to hand them to the kernel ahead
// of it. Never reads past frame.size().
bool is_udp_to(std::span<const std::byte> frame, std::uint16_t port) noexcept;

// A flow query's frame (FlowQuery::spec) is addressed to the gateway VIP it goes through
// when its server is not a VIP: `via` names it (an address), or, left empty, the only
// gateway VIP of the flow's family. Returns why it cannot be, empty when done (or when
// nothing was needed). The owner tool and the admin API share it.
std::string route_through_gateway(const config::Config& config, std::string_view via,
                                  FrameSpec& spec);

class Classifier {
 public:
  explicit Classifier(const config::Config& config);

  static constexpr std::size_t kMaxBurst = 64;
  // Which VIPs a frame may be for: those of one dataplane port (config::Vip::port; the
  // daemon classifies each port's frames), or every VIP (offline tools).
  static constexpr std::size_t kEveryPort = SIZE_MAX;

  // Never reads past frame.size(); never allocates or throws.
  Result classify(std::span<const std::byte> frame, std::size_t port = kEveryPort) const noexcept;
  // The same verdicts for `count` frames, in stages (the dataplane's path). With `tuples`,
  // each farm packet's flow goes to tuples[i], for flow tracking: as the client sent it (an
  // ICMP error's: the quoted flow), its endpoints in the order the rule's key takes them, so
  // both directions of a gateway's connection are one flow.
  void classify_burst(const std::span<const std::byte>* frames, std::size_t count, Result* results,
                      flow::FlowTuple* tuples = nullptr,
                      std::size_t port = kEveryPort) const noexcept;

  std::uint32_t buckets() const noexcept { return bucket_mask_ + 1; }
  std::size_t vip_count() const noexcept { return vips_.size(); }

  // Protocol classes a VIP's rules are pre-filtered by, so lookup never tests a protocol.
  enum ProtoClass : std::uint8_t { kClassTcp, kClassUdp, kClassIcmp, kClassOther, kClassCount };

  // Which endpoint of the flow the key takes first (a, the "client" of the masks below).
  enum Order : std::uint8_t {
    kAsSent,   // a = the source (the client), b = the destination
    kSwapped,  // a = the destination: on_dst_addr, on_dst_port
    kSorted,   // the lower (address, port) endpoint first: symmetric keys
  };
  // A rule compiled for one VIP (so one family): with a, b the endpoints in `order`, the key
  // is built without branches as w0 = a.hi & m0, w1 = a.lo & m1, w2/w3 = b & ms,
  // w4 = ((proto << 32 | a_port << 16 | b_port) & m4) >> s4 | (ident & mi).
  struct CompiledRule {
    std::uint64_t m0, m1, ms, m4, mi;
    std::uint8_t s4;
    Order order;
    std::uint16_t group;
    // Into port_bits_, where a 65536-bit set of the rule's server ports starts (one test,
    // no branch per range); kAnyPort: every port.
    std::uint32_t port_set;
    // Gateway VIPs: the rule's destination prefixes, dst_[dst_begin, dst_end); none: any.
    std::uint32_t dst_begin, dst_end;
  };
  static constexpr std::uint32_t kAnyPort = 0xffffffff;
  // A destination prefix: address & mask == net (IPv4 within its mapped 128 bits).
  struct DstPrefix {
    IpAddr net;
    IpAddr mask;
  };

 private:
  struct VipEntry {
    IpAddr address;
    bool gateway;  // rules are looked up for this VIP whatever the destination
    std::uint32_t rules_begin[kClassCount];  // into rules_, per protocol class
    std::uint32_t rules_end[kClassCount];
    std::int32_t echo_rule;  // into rules_; -1: echo requests no rule matches get no_rule
    std::int32_t arp_rule;   // into rules_; directed VIPs: who answers a requester; else -1
  };

  // The VIPs one port's frames may be for: service VIPs by address, gateways by MAC.
  struct Lookup {
    std::vector<std::uint32_t> vip4;  // IPv4 VIPs' addresses, vip4_index their vips_ index
    std::vector<std::uint16_t> vip4_index;
    std::vector<std::uint16_t> vip6;         // IPv6 VIPs, by vips_ index
    std::vector<std::uint64_t> gateway_mac;  // gateway VIPs' virtual MACs (48 bits)
    std::vector<std::uint16_t> gateway_index;
  };
  const Lookup& lookup(std::size_t port) const noexcept {
    return port < lookups_.size() - 1 ? lookups_[port + 1] : lookups_[0];
  }
  static int find_vip4(const Lookup& at, std::uint32_t address) noexcept;
  int find_vip6(const Lookup& at, const IpAddr& address) const noexcept;
  static int find_gateway(const Lookup& at, std::uint64_t mac48) noexcept;
  bool dst_matches(const CompiledRule& rule, const IpAddr& address) const noexcept;
  // Everything but the hash: kFarm results come with their key for the hashing stage.
  void prepare(std::span<const std::byte> frame, const Lookup& at, FlowKey& key, Result& result,
               flow::FlowTuple* tuple) const noexcept;
  void key_requester(const VipEntry& vip, const IpAddr& requester, FlowKey& key,
                     Result& result) const noexcept;

  HashSeeds seeds_;
  std::uint32_t bucket_mask_;
  std::vector<VipEntry> vips_;
  std::vector<Lookup> lookups_;  // [0] every VIP; [1 + p] those of dataplane port p
  std::vector<CompiledRule> rules_;
  std::vector<DstPrefix> dst_;
  std::vector<std::uint64_t> port_bits_;  // 1024 words per distinct port list of the rules
  // The offset of a 65536-bit set of `ports` in port_bits_, appended at the first use.
  using PortSets = std::vector<std::pair<std::vector<config::PortRange>, std::uint32_t>>;
  std::uint32_t port_set(const std::vector<config::PortRange>& ports, PortSets& known);
};

}  // namespace vipfarm::packet
