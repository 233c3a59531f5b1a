// What the workers classify with (a Snapshot, immutable once published), and the interface
// through which ownership (ledger.hpp) reaches the workers: the data plane implements it,
// tests implement it with a fake.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "vipfarm/config/config.hpp"
#include "vipfarm/flow/flow_table.hpp"
#include "vipfarm/packet/classify.hpp"

namespace vipfarm::ownership {

// The flow table's timeouts from [flows].
inline flow::FlowTimeouts flow_timeouts(const config::Flows& f) noexcept {
  return {f.syn_timeout_ms, f.established_timeout_s * 1000, f.closing_timeout_ms,
          f.udp_timeout_s * 1000};
}

struct Snapshot {
  packet::Classifier classifier;
  packet::Ownership ownership;
  std::uint64_t generation = 0;
  config::Unmatched unmatched{};
  // Flow handoff (docs/handoff.md): owned buckets where only new connections and tracked
  // flows are accepted (a previous owner still serves its flows there), and buckets given
  // up where this node still serves the flows it tracks. Empty sets without handoff.
  packet::Ownership taking;
  packet::Ownership releasing;
  bool track = false;           // [flows] handoff: track the flows of owned buckets
  bool releasing_any = false;   // some bucket is being released: look up every farm packet
  flow::FlowTimeouts timeouts;  // [flows] timeouts (a reload may change them)
  // Directed VIPs (docs/directed.md): each bucket's owner in the view, flat by
  // group * buckets + bucket (empty when no VIP is directed), and every node's uplink MAC
  // as 48 bits (0: not heard yet), learned from heartbeats.
  std::vector<NodeId> owners;
  std::array<std::uint64_t, kMaxNodes + 1> node_macs{};
  std::vector<std::uint64_t> known_macs;  // the non-zero node_macs: the never-twice check
  // Directed VIPs during a handoff: per bucket (flat like owners), the peers that still
  // release it (bit id-1), to which frames go too; empty when none does.
  std::vector<std::uint64_t> releasers;
};

using Bucket = std::pair<std::uint16_t, BucketId>;  // (group, bucket)

// Where ownership goes: the workers. Called on the control thread only.
class SnapshotSink {
 public:
  // Makes `next` the snapshot every worker uses from its next burst, and returns at once:
  // the previous one is freed later, once no worker can still be reading it (deferred
  // reclamation, never a wait for a grace period).
  virtual void publish(std::unique_ptr<Snapshot> next) = 0;
  // The ownership lease (membership.hpp, "Leases"): the workers accept VIP traffic only
  // until `duration` after the last renewal.
  virtual void renew_lease(std::chrono::nanoseconds duration) noexcept = 0;
  virtual void revoke_lease() noexcept = 0;
  // Flows the workers track in each of `buckets` (a bucket given up is released when none
  // is left).
  virtual std::vector<std::uint64_t> flows_in(const std::vector<Bucket>& buckets) const = 0;

 protected:
  ~SnapshotSink() = default;
};

}  // namespace vipfarm::ownership
