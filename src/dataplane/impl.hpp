// The data plane's internals, shared by its files (ports, worker, exception, directed, sink,
// counters): Dataplane::Impl and the constants they agree on. Not a public header.
#pragma once

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "vipfarm/dataplane/dataplane.hpp"
#include "vipfarm/flow/requester_table.hpp"
#include "vipfarm/packet/requester.hpp"

namespace vipfarm::dataplane {

using ownership::flow_timeouts;
using ownership::Snapshot;

inline constexpr std::uint16_t kRxDescriptors = 1024;
inline constexpr std::uint16_t kTxDescriptors = 1024;
inline constexpr unsigned kMbufCache = 256;
// Beyond what rings, descriptors and caches can hold: bursts in flight, announcements, and
// vdevs that keep packets of their own (net_pcap's infinite_rx keeps its whole file).
inline constexpr unsigned kMbufHeadroom = 8192;

// Each port's ring of the farm's own heartbeats to the kernel (a few dozen a second per peer,
// and a forged flood's worth of room).
inline constexpr unsigned kHeartbeatRing = 1024;

// Adaptive polling: after kIdlePollsBeforeSleep empty polls, short sleeps; after
// kIdlePollsBeforeLongSleep, longer ones (an idle lab node then costs 2-3% of a core,
// and the first packet after a long silence waits at most kLongSleepMicros). The short
// phase is brief (8 short sleeps, about 2 ms): heartbeats and the kernel's own frames come
// tens of times a second, and each starts it again; wake-ups, not the polls, are what an
// idle lcore costs (measured in the lab: 32 short sleeps and 1 ms long ones were 2300
// wake-ups a second per node, 4-5% of a core; these, 2.5%).
inline constexpr unsigned kIdlePollsBeforeSleep = 64;
inline constexpr unsigned kIdlePollsBeforeLongSleep = 72;
inline constexpr unsigned kShortSleepMicros = 200;
inline constexpr unsigned kLongSleepMicros = 2000;

inline void idle_backoff(unsigned& idle) noexcept {
  if (++idle > kIdlePollsBeforeSleep) {
    rte_delay_us_sleep(idle > kIdlePollsBeforeLongSleep ? kLongSleepMicros : kShortSleepMicros);
  }
}
inline constexpr std::uint16_t kExceptionBurst = 32;

inline std::string eal_error(const std::string& what) {
  return what + ": " + rte_strerror(rte_errno);
}

inline std::string port_error(const std::string& what, int rc) {
  return what + ": " + rte_strerror(-rc);
}

struct Dataplane::Impl {
  config::Config config;
  rte_mempool* pool = nullptr;
  // One uplink and its exception port (the TAP; net_null in pipeline benchmarks) per
  // [[dataplane.port]]. What the kernel sends through a port's TAP leaves by its uplink.
  struct Port {
    std::string name;
    std::uint16_t uplink = 0;
    std::uint16_t tap = 0;
    rte_ring* to_kernel = nullptr;  // workers → exception lcore (MP/SC)
    // The farm's heartbeats to this node, on their own ring that the exception lcore empties
    // first: never behind VIP traffic (or a flood of it) in to_kernel.
    rte_ring* heartbeats = nullptr;
    // Exception lcore → worker 0, which sends it on its own TX queue: the uplink then needs
    // exactly one queue pair per worker (with af_packet, an unpolled extra RX queue would
    // swallow its share of the traffic).
    rte_ring* to_uplink = nullptr;
    MacAddr mac{};  // the uplink's: the Ethernet source of everything sent on it
    std::uint64_t own48 = 0;
  };
  std::vector<Port> ports;
  rte_rcu_qsbr* qsbr = nullptr;
  std::uint32_t workers = 1;
  std::uint32_t burst = 32;
  bool adaptive = false;
  std::vector<packet::VipMac> vips;        // by VIP index: what ARP/ND answers carry
  std::vector<std::uint8_t> vip_directed;  // by VIP index (docs/directed.md)
  // Per port: the flood VIPs living there, announced and rewritten in its kernel's ARP/ND.
  std::vector<std::vector<packet::VipMac>> flood_vips;
  // Directed VIPs: the requesters (IPv4 and IPv6) each worker saw ask for a VIP, so that
  // their ARP owner can tell them its MAC after a view change (flow/requester_table.hpp: a
  // flood of spoofed requests cannot push the real clients out). One writer (the worker) per
  // table; every worker confirms in all of them; the main lcore reads them.
  std::vector<IpAddr> directed_v6;  // directed IPv6 VIPs: the kernel's NS from them rewritten
  IpAddr link_local;                // this node's, on the first port's TAP (vipfarmd adds it)
  std::vector<std::unique_ptr<flow::RequesterTable>> requesters;  // per worker
  void remember(std::uint16_t queue, std::uint16_t vip, const rte_mbuf* m, std::uint64_t clock_ms,
                LcoreCounters& c) noexcept;
  void confirm_requester(std::span<const std::byte> frame, std::uint16_t vip,
                         std::uint64_t clock_ms, LcoreCounters& c) noexcept;
  bool directed_answer(const Port& port, const Snapshot& snap, const packet::Result& r,
                       const rte_mbuf* m, bool leased, std::uint16_t queue, std::uint64_t clock_ms,
                       LcoreCounters& c, MacAddr& answer) noexcept;
  bool forward(const Port& port, const Snapshot& snap, const packet::Result& r, rte_mbuf* m,
               bool syn, LcoreCounters& c, rte_mbuf** out, unsigned& n, unsigned capacity) noexcept;
  std::uint64_t self_bit = 0;               // this node's bit (id-1)
  std::vector<std::uint64_t> virtual_macs;  // 48-bit values, for one compare each

  bool is_virtual_mac(std::uint64_t mac48) const noexcept {
    for (const std::uint64_t v : virtual_macs) {
      if (v == mac48) return true;
    }
    return false;
  }
  // Workers read this once per burst; acquire pairs with publish()'s release so a worker
  // sees a fully built snapshot.
  std::atomic<const Snapshot*> current{nullptr};
  // Snapshots replaced but perhaps still read by a worker, each with the RCU token taken
  // when it was replaced (publish(), reclaim()): the control thread and the main lcore.
  struct Retired {
    std::unique_ptr<const Snapshot> snapshot;
    std::uint64_t token;
  };
  std::mutex retired_mutex;
  std::vector<Retired> retired;
  // TSC deadline of the ownership lease; the maximum until membership first renews it.
  std::atomic<std::uint64_t> lease_until{UINT64_MAX};
  // The exception lcore's last pass (TSC; 0 while it is not running). Workers accept VIP
  // traffic only while it is younger than stall_cycles: a stalled exception path queues
  // nothing for the kernel that could be answered late, after its buckets moved.
  std::atomic<std::uint64_t> exception_alive{0};
  std::uint64_t stall_cycles = UINT64_MAX / 2;
  std::uint16_t heartbeat_port = 0;     // [membership] port: the frames for `heartbeats`
  std::vector<LcoreCounters> counters;  // [0] the exception lcore, [1..] the workers
  std::vector<std::unique_ptr<flow::FlowTable>> flows;  // per worker; empty without handoff
  std::uint64_t cycles_per_ms = 1;
  const std::atomic<bool>* stop = nullptr;
  bool eal_up = false;
  std::vector<unsigned> worker_lcores;

  struct WorkerArgs {
    Impl* impl;
    std::uint16_t queue;
  };
  std::vector<WorkerArgs> worker_args;

  // One worker's burst buffers (on its stack) and per-worker state between bursts.
  struct Burst {
    std::array<rte_mbuf*, packet::Classifier::kMaxBurst> rx;
    std::array<std::span<const std::byte>, packet::Classifier::kMaxBurst> frames;
    std::array<packet::Result, packet::Classifier::kMaxBurst> results;
    std::array<rte_mbuf*, packet::Classifier::kMaxBurst> kernel, heartbeats, drop;
    // Replies and forwarded frames; room for copies to a handoff's several targets.
    std::array<rte_mbuf*, 4 * packet::Classifier::kMaxBurst> reply;
    std::array<flow::FlowTuple, packet::Classifier::kMaxBurst> tuples;
    std::array<std::uint64_t, packet::Classifier::kMaxBurst> hashes;
    flow::FlowTable* table;
    unsigned bursts = 0;
  };

  static int worker_main(void* arg);
  void worker(std::uint16_t queue) noexcept;
  // One burst from port `p`'s queue `queue`: classified and acted on. Returns its size.
  std::uint16_t poll_port(std::size_t p, std::uint16_t queue, const Snapshot* snap, Burst& b,
                          LcoreCounters& c) noexcept;
  void drain_to_uplink(std::size_t p, LcoreCounters& c) noexcept;
  void exception_poll(std::size_t p, LcoreCounters& c) noexcept;
  // After the exception lcore was stopped: what waited in its rings is dropped, counted.
  void discard_stale(LcoreCounters& c) noexcept;
};

}  // namespace vipfarm::dataplane
