// The flow handoff rule (flow::admit, docs/handoff.md) case by case: for each bucket mode,
// each kind of packet and what the table knows of its flow, whether the packet is accepted,
// which outcome is counted and what the table holds afterwards.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "vipfarm/flow/handoff.hpp"

namespace vipfarm::flow {
namespace {

constexpr std::uint8_t kUdp = 17;
constexpr std::uint8_t kSyn = kTcpSyn, kAck = kTcpAck, kSynAck = kTcpSyn | kTcpAck;
constexpr std::uint8_t kFinAck = kTcpFin | kTcpAck, kRst = kTcpRst;
constexpr std::uint32_t kNow = 1000;

enum class Packet { kTcp, kUdp, kIcmpErrorQuotingTcp };

struct Case {
  const char* name;
  BucketMode mode;
  Packet packet;
  std::uint8_t flags;                // TCP flags (0 for the others)
  std::optional<FlowState> tracked;  // the flow's entry before the packet, if any
  bool accepted;
  HandoffCounters counted;                 // the outcome counters after (from zero)
  std::optional<FlowState> tracked_after;  // the flow's entry after, if any
};

HandoffCounters count(std::uint64_t kept, std::uint64_t new_flows, std::uint64_t refused,
                      std::uint64_t untracked) {
  HandoffCounters c;
  c.kept = kept;
  c.new_flows = new_flows;
  c.refused = refused;
  c.untracked = untracked;
  return c;
}

const HandoffCounters kNone{};
constexpr auto kOwned = BucketMode::kOwned, kTaking = BucketMode::kTaking,
               kReleasing = BucketMode::kReleasing, kTrackedOnly = BucketMode::kTrackedOnly;
constexpr auto kTcp = Packet::kTcp, kDatagram = Packet::kUdp,
               kQuoted = Packet::kIcmpErrorQuotingTcp;
constexpr std::optional<FlowState> kUntracked = std::nullopt;

const std::vector<Case> kCases = {
    // Owned: everything accepted; a flow's first packet tracked (SYN embryonic, any other
    // one-way until confirmed), an ending segment not worth a slot.
    {"owned: a SYN starts an embryonic flow", kOwned, kTcp, kSyn, kUntracked, true, kNone,
     FlowState::kSyn},
    {"owned: an unknown ACK is tracked one-way", kOwned, kTcp, kAck, kUntracked, true, kNone,
     FlowState::kOneWay},
    {"owned: an unknown datagram is tracked one-way", kOwned, kDatagram, 0, kUntracked, true, kNone,
     FlowState::kOneWay},
    {"owned: an unknown FIN takes no slot", kOwned, kTcp, kFinAck, kUntracked, true, kNone,
     kUntracked},
    {"owned: an unknown RST takes no slot", kOwned, kTcp, kRst, kUntracked, true, kNone,
     kUntracked},
    {"owned: the handshake's ACK establishes the flow", kOwned, kTcp, kAck, FlowState::kSyn, true,
     kNone, FlowState::kEstablished},
    {"owned: a second datagram confirms the flow", kOwned, kDatagram, 0, FlowState::kOneWay, true,
     kNone, FlowState::kUdp},
    // Taking: new connections and the flows this node tracks; the previous owner's TCP
    // segments refused; datagrams stay with the previous owner for the window.
    {"taking: a SYN is a new connection", kTaking, kTcp, kSyn, kUntracked, true, count(0, 1, 0, 0),
     FlowState::kSyn},
    {"taking: an unknown ACK is the previous owner's", kTaking, kTcp, kAck, kUntracked, false,
     count(0, 0, 1, 0), kUntracked},
    {"taking: an unknown SYN-ACK is the previous owner's", kTaking, kTcp, kSynAck, kUntracked,
     false, count(0, 0, 1, 0), kUntracked},
    {"taking: an ICMP error quoting an unknown flow is harmless", kTaking, kQuoted, kAck,
     kUntracked, true, kNone, kUntracked},
    {"taking: an unknown datagram stays with the previous owner", kTaking, kDatagram, 0, kUntracked,
     false, kNone, kUntracked},
    {"taking: a tracked flow is this node's", kTaking, kTcp, kAck, FlowState::kEstablished, true,
     kNone, FlowState::kEstablished},
    {"taking: a SYN reusing an ended flow's tuple is a new connection", kTaking, kTcp, kSyn,
     FlowState::kClosing, true, count(0, 1, 0, 0), FlowState::kSyn},
    // Releasing: the flows this node tracks live on; other TCP is the new owner's; datagrams
    // stay here, untracked, until the bucket is released.
    {"releasing: a tracked flow is kept", kReleasing, kTcp, kAck, FlowState::kEstablished, true,
     count(1, 0, 0, 0), FlowState::kEstablished},
    {"releasing: a tracked flow's FIN is kept and ends it", kReleasing, kTcp, kFinAck,
     FlowState::kEstablished, true, count(1, 0, 0, 0), FlowState::kClosing},
    {"releasing: a tracked datagram flow is kept", kReleasing, kDatagram, 0, FlowState::kUdp, true,
     count(1, 0, 0, 0), FlowState::kUdp},
    {"releasing: an unknown SYN is the new owner's", kReleasing, kTcp, kSyn, kUntracked, false,
     kNone, kUntracked},
    {"releasing: an unknown ACK is the new owner's", kReleasing, kTcp, kAck, kUntracked, false,
     kNone, kUntracked},
    {"releasing: an unknown datagram stays here, untracked", kReleasing, kDatagram, 0, kUntracked,
     true, kNone, kUntracked},
    {"releasing: a SYN reusing an ended flow's tuple is the new owner's", kReleasing, kTcp, kSyn,
     FlowState::kClosing, false, kNone, kUntracked},
    // Tracked only (neither owned nor given up while others are released): only the flows
    // this node tracks.
    {"tracked only: a tracked flow", kTrackedOnly, kTcp, kAck, FlowState::kEstablished, true, kNone,
     FlowState::kEstablished},
    {"tracked only: an unknown SYN", kTrackedOnly, kTcp, kSyn, kUntracked, false, kNone,
     kUntracked},
    {"tracked only: an unknown datagram", kTrackedOnly, kDatagram, 0, kUntracked, false, kNone,
     kUntracked},
};

FlowTuple tuple(const Case& c) {
  FlowTuple t;
  t.client = *IpAddr::parse("192.0.2.7");
  t.server = *IpAddr::parse("198.51.100.1");
  t.client_port = 40000;
  t.server_port = 80;
  t.proto = c.packet == Packet::kUdp ? kUdp : kProtoTcp;
  t.tcp_flags = c.packet == Packet::kUdp ? 0 : c.flags;
  if (c.packet == Packet::kIcmpErrorQuotingTcp) t.pad[0] = kQuotedByIcmpError;
  return t;
}

std::string describe(const HandoffCounters& c) {
  return "kept " + std::to_string(c.kept) + ", new_flows " + std::to_string(c.new_flows) +
         ", refused " + std::to_string(c.refused) + ", untracked " + std::to_string(c.untracked);
}

TEST(HandoffRule, EveryModePacketAndFlowState) {
  constexpr FlowTimeouts kTimeouts{
      .syn = 5000, .established = 60000, .closing = 5000, .udp = 30000};
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    FlowTable table(64, kTimeouts, 1, 16);
    const FlowTuple t = tuple(c);
    // The table keys a flow by its tuple, whatever the flags of the packet at hand.
    FlowTuple key = t;
    key.tcp_flags = 0;
    key.pad[0] = 0;
    const std::uint64_t hash = hash_tuple(key);
    if (c.tracked) {
      ASSERT_NE(table.insert(key, hash, *c.tracked, 0, 3, kNow - 10), nullptr);
    }
    HandoffCounters counted;
    EXPECT_EQ(admit(table, t, hash, c.mode, 0, 3, kNow, counted), c.accepted);
    EXPECT_EQ(describe(counted), describe(c.counted));
    const FlowTable::Entry* e = table.find(key, hash, kNow);
    ASSERT_EQ(e != nullptr, c.tracked_after.has_value());
    if (e != nullptr) {
      EXPECT_EQ(table.state(*e), *c.tracked_after);
    }
  }
}

}  // namespace
}  // namespace vipfarm::flow
