// The flow handoff rule (docs/handoff.md) for one farm packet on one worker: whether to
// accept it, given what this node is to the packet's bucket and the flows it tracks. Pure
// and inline: the worker calls it per packet, the unit tests call it directly.
//
//   owned      accept; track the flow (so it can be handed off later): a SYN as embryonic,
//              any other first packet as one-way until a second one confirms it, so a
//              flood of spoofed segments never displaces a confirmed flow (flow_table.hpp).
//   taking     the bucket was gained from a live node that still serves its flows there:
//              a TCP flow this node tracks, or a new connection (SYN without ACK, then
//              tracked): accept; any other TCP segment belongs to the previous owner's flows:
//              drop (an ICMP error quoting it: accept, harmless). UDP and other protocols stay
//              with the previous owner for the window: drop.
//   releasing  the bucket was given up: a flow this node tracks: accept (the connection
//              lives on); any other TCP segment: drop (the new owner's); UDP and others:
//              accept, untracked (this node keeps the bucket's datagrams until it releases
//              it, so no datagram is answered twice or by nobody).
#pragma once

#include <cstdint>

#include "vipfarm/flow/flow_table.hpp"

namespace vipfarm::flow {

// kTrackedOnly: a bucket neither owned nor given up, while this node releases others: only
// the flows it tracks (their bucket may have changed with a reload of the rules).
enum class BucketMode : std::uint8_t { kOwned, kTaking, kReleasing, kTrackedOnly };

inline constexpr std::uint8_t kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04, kTcpAck = 0x10;
inline constexpr std::uint8_t kProtoTcp = 6;
// FlowTuple::pad[0] (not part of a flow's identity): the packet is an ICMP error quoting the
// flow. Delivering one to a kernel without the connection is harmless (it is ignored), so
// a taking node accepts those of flows it does not know: PMTU discovery of the previous
// owner's connections keeps working if it has them, and of new ones in any case.
inline constexpr std::uint8_t kQuotedByIcmpError = 1;

// Per-worker counters of the rule's outcomes (beside the verdict counters, not instead),
// declared once: X(field, key, metric, help), exported like the data plane's own counters
// (vipfarm/dataplane/counters.hpp).
#define VIPFARM_HANDOFF_COUNTERS(X)                                                       \
  X(kept, "/handoff/kept", "vipfarm_handoff_kept_total",                                  \
    "Packets of tracked flows a node accepted in buckets it gave up (connections kept).") \
  X(new_flows, "/handoff/new_flows", "vipfarm_handoff_new_flows_total",                   \
    "New connections a node accepted in buckets it is taking over.")                      \
  X(refused, "/handoff/refused", "vipfarm_handoff_refused_total",                         \
    "TCP segments of flows a node never saw, dropped in buckets it is taking over.")      \
  X(untracked, "/handoff/untracked", "vipfarm_handoff_untracked_total",                   \
    "Flows of owned buckets the full flow table could not track (a later change cannot "  \
    "keep them).")

struct HandoffCounters {
#define VIPFARM_HANDOFF_FIELD(field, key, metric, help) std::uint64_t field = 0;
  VIPFARM_HANDOFF_COUNTERS(VIPFARM_HANDOFF_FIELD)
#undef VIPFARM_HANDOFF_FIELD
};

inline bool admit(FlowTable& table, const FlowTuple& t, std::uint64_t hash, BucketMode mode,
                  std::uint16_t group, std::uint32_t bucket, std::uint32_t now_ms,
                  HandoffCounters& c) noexcept {
  const bool tcp = t.proto == kProtoTcp;
  const bool syn = tcp && (t.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn;
  if (FlowTable::Entry* e = table.find(t, hash, now_ms)) {
    if (syn && table.state(*e) == FlowState::kClosing) {
      // The client reuses the tuple of a connection that ended: a new connection, which
      // belongs to the bucket's owner, not to this node's memory of the old one.
      table.erase(*e);
    } else {
      table.touch(*e, t.tcp_flags, now_ms);
      if (mode == BucketMode::kReleasing) ++c.kept;
      return true;
    }
  }
  switch (mode) {
    case BucketMode::kOwned: {
      // A segment that ends a connection is not worth a slot.
      if (tcp && (t.tcp_flags & (kTcpFin | kTcpRst)) != 0) return true;
      const FlowState state = syn ? FlowState::kSyn : FlowState::kOneWay;
      if (table.insert(t, hash, state, group, bucket, now_ms) == nullptr) ++c.untracked;
      return true;
    }
    case BucketMode::kTaking:
      if (t.pad[0] == kQuotedByIcmpError) return true;
      if (syn) {
        table.insert(t, hash, FlowState::kSyn, group, bucket, now_ms);
        ++c.new_flows;
        return true;
      }
      if (tcp) ++c.refused;
      return false;
    case BucketMode::kReleasing:
      return !tcp;  // an unknown TCP flow is the new owner's
    case BucketMode::kTrackedOnly:
      return false;
  }
  return false;
}

}  // namespace vipfarm::flow
