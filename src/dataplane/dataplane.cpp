// Worker and exception loops over DPDK ports. Workers never lock, allocate, throw or log;
// an error on the packet path is a counter. Control-side code here may do all of those.
#include "vipfarm/dataplane/dataplane.hpp"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>
#include <tuple>

#include "vipfarm/flow/requester_table.hpp"
#include "vipfarm/packet/requester.hpp"

namespace vipfarm::dataplane {

namespace {

constexpr std::uint16_t kRxDescriptors = 1024;
constexpr std::uint16_t kTxDescriptors = 1024;
constexpr unsigned kMbufCache = 256;
// Beyond what rings, descriptors and caches can hold: bursts in flight, announcements, and
// vdevs that keep packets of their own (net_pcap's infinite_rx keeps its whole file).
constexpr unsigned kMbufHeadroom = 8192;

// Each port's ring of the farm's own heartbeats to the kernel (a few dozen a second per peer,
// and a forged flood's worth of room).
constexpr unsigned kHeartbeatRing = 1024;

// Every place an mbuf can wait at once, so that a full exception ring (the kernel behind)
// never starves an uplink's receive path of buffers: each port queue's descriptors, both
// rings of each port, and each lcore's mempool cache (which may hold 1.5 times its size).
unsigned mbuf_count(std::uint32_t workers, std::uint32_t ring_size, std::size_t ports) {
  const unsigned per_queue = kRxDescriptors + kTxDescriptors;
  const auto p = static_cast<unsigned>(ports);
  return p * ((workers + 1) * per_queue + 2 * ring_size + kHeartbeatRing) +
         (workers + 1) * (kMbufCache * 3 / 2) + kMbufHeadroom;
}
// Adaptive polling: after kIdlePollsBeforeSleep empty polls, short sleeps; after
// kIdlePollsBeforeLongSleep, longer ones (an idle lab node then costs 2-3% of a core,
// and the first packet after a long silence waits at most kLongSleepMicros). The short
// phase is brief (8 short sleeps, about 2 ms): heartbeats and the kernel's own frames come
// tens of times a second, and each starts it again; wake-ups, not the polls, are what an
// idle lcore costs (measured in the lab: 32 short sleeps and 1 ms long ones were 2300
// wake-ups a second per node, 4-5% of a core; these, 2.5%).
constexpr unsigned kIdlePollsBeforeSleep = 64;
constexpr unsigned kIdlePollsBeforeLongSleep = 72;
constexpr unsigned kShortSleepMicros = 200;
constexpr unsigned kLongSleepMicros = 2000;

void idle_backoff(unsigned& idle) noexcept {
  if (++idle > kIdlePollsBeforeSleep) {
    rte_delay_us_sleep(idle > kIdlePollsBeforeLongSleep ? kLongSleepMicros : kShortSleepMicros);
  }
}
constexpr std::uint16_t kExceptionBurst = 32;

std::string eal_error(const std::string& what) { return what + ": " + rte_strerror(rte_errno); }

// The mbuf pool, as rte_pktmbuf_pool_create() makes it, but `packed` for an af_xdp uplink:
// that driver registers the pool's memory as its UMEM, sized populated objects x object
// size from the first object, so every mbuf must lie within that span. A default pool
// keeps each object within one page, and on 4 KiB pages (EAL --no-huge) that leaves a gap
// after every 2.3 KiB mbuf: the pool spanned 91 MB, the UMEM 53 MB, and each mbuf beyond
// it that the driver put on the fill ring was dropped there by the kernel (an invalid
// address), until the fill ring ran dry and the uplink received nothing more, for good
// (issue 16: a 10^5/s flood did it within a second). Packed (no IOVA-contiguity per
// object, which only DMA needs, and af_xdp does none of its own) and in one chunk, the
// pool is exactly the span the driver registers.
std::string create_mbuf_pool(unsigned count, bool packed, rte_mempool*& pool) {
  const unsigned element = sizeof(rte_mbuf) + RTE_MBUF_DEFAULT_BUF_SIZE;
  pool = rte_mempool_create_empty(
      "vipfarm_mbufs", count, element, kMbufCache, sizeof(rte_pktmbuf_pool_private),
      static_cast<int>(rte_socket_id()), packed ? RTE_MEMPOOL_F_NO_IOVA_CONTIG : 0);
  if (pool == nullptr) return eal_error("mbuf pool");
  if (rte_mempool_set_ops_byname(pool, rte_mbuf_best_mempool_ops(), nullptr) != 0) {
    return eal_error("mbuf pool handler");
  }
  rte_pktmbuf_pool_private room{};
  room.mbuf_data_room_size = RTE_MBUF_DEFAULT_BUF_SIZE;
  rte_pktmbuf_pool_init(pool, &room);
  if (rte_mempool_populate_default(pool) < 0) return eal_error("mbuf pool memory");
  rte_mempool_obj_iter(pool, rte_pktmbuf_init, nullptr);
  if (packed && pool->nb_mem_chunks != 1) {
    return "an af_xdp uplink needs the mbuf pool in one contiguous area, and EAL gave it " +
           std::to_string(pool->nb_mem_chunks) +
           " (its memory is fragmented: give EAL more with -m, or use hugepages)";
  }
  return {};
}

std::string port_error(const std::string& what, int rc) { return what + ": " + rte_strerror(-rc); }

}  // namespace

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

// An untagged ARP request's or neighbour solicitation's sender (a tagged one is answered
// but not remembered: the re-announcement goes out untagged).
void Dataplane::Impl::remember(std::uint16_t queue, std::uint16_t vip, const rte_mbuf* m,
                               std::uint64_t clock_ms, LcoreCounters& c) noexcept {
  packet::Sender who;
  if (!packet::requester_of({rte_pktmbuf_mtod(m, const std::byte*), rte_pktmbuf_data_len(m)},
                            who)) {
    return;
  }
  const flow::Remembered r = requesters[queue]->remember({who.address, who.mac48, vip}, clock_ms);
  switch (r.admission) {
    case flow::Admission::kKnown:
      return;
    case flow::Admission::kAdmitted:
      ++c.requesters_admitted;
      break;
    case flow::Admission::kExcess:
      ++c.requesters_excess;
      break;
    case flow::Admission::kCapped:
      ++c.requesters_capped;
      break;
    case flow::Admission::kRefused:
      ++c.requesters_refused;
      break;
  }
  // An admitted requester pushed out: a LAN with more requesters than the table, or a
  // flood's admitted share. (Excess ones pushing out excess ones is the flood churning.)
  if (r.displaced && r.victim == flow::Standing::kAdmitted) ++c.requesters_displaced;
}

// Traffic to a directed VIP (`frame`, sent to this node's MAC): a SYN or a datagram from a
// remembered requester's address and MAC confirms it, in whichever worker's table it is.
void Dataplane::Impl::confirm_requester(std::span<const std::byte> frame, std::uint16_t vip,
                                        std::uint64_t clock_ms, LcoreCounters& c) noexcept {
  packet::Sender from;
  if (!packet::opening_sender(frame, from)) return;
  for (const auto& table : requesters) {
    if (table->confirm({from.address, from.mac48, vip}, clock_ms)) {
      ++c.requesters_confirmed;
      return;
    }
  }
}

// A directed VIP's ARP request / neighbour solicitation `m`: remembers its sender, and
// sets `answer` to the MAC it gets: this node's when it is the requester's ARP owner (it
// owns the requester's bucket); for a unicast request (a cache refresh, which reaches this
// node only) the ARP owner's. False: another node answers, this one stays silent.
bool Dataplane::Impl::directed_answer(const Port& port, const Snapshot& snap,
                                      const packet::Result& r, const rte_mbuf* m, bool leased,
                                      std::uint16_t queue, std::uint64_t clock_ms, LcoreCounters& c,
                                      MacAddr& answer) noexcept {
  remember(queue, r.vip, m, clock_ms, c);
  if (!leased) return false;
  if (snap.ownership.owns(r.group, r.bucket)) {
    answer = port.mac;
    return true;
  }
  if (snap.owners.empty() || mac48(rte_pktmbuf_mtod(m, const std::uint8_t*)) != port.own48) {
    return false;
  }
  const NodeId owner = snap.owners[std::size_t{r.group} * snap.classifier.buckets() + r.bucket];
  const std::uint64_t owner_mac = snap.node_macs[to_int(owner)];
  if (owner == kNoNode || owner_mac == 0) return false;
  answer = mac_from48(owner_mac);
  return true;
}

// Directed VIPs (docs/directed.md): `m`, a frame for a bucket this node does not serve it
// for, goes one hop on to the nodes that would accept it in flood mode: the bucket's owner
// and, during a handoff, the peers still releasing the bucket (a copy each; a SYN to the
// owner alone). Never a frame another node forwarded already. False: nothing was sent and
// the caller drops `m`.
bool Dataplane::Impl::forward(const Port& port, const Snapshot& snap, const packet::Result& r,
                              rte_mbuf* m, bool syn, LcoreCounters& c, rte_mbuf** out, unsigned& n,
                              unsigned capacity) noexcept {
  auto* eth = rte_pktmbuf_mtod(m, std::uint8_t*);
  const std::uint64_t src48 = mac48(eth + 6);
  for (const std::uint64_t node : snap.known_macs) {
    if (node == src48) {
      ++c.forward_refused;
      return false;
    }
  }
  const std::size_t at = std::size_t{r.group} * snap.classifier.buckets() + r.bucket;
  std::uint64_t targets = 0;
  if (snap.owners[at] != kNoNode) targets |= std::uint64_t{1} << (to_int(snap.owners[at]) - 1);
  if (!syn && !snap.releasers.empty()) targets |= snap.releasers[at];
  targets &= ~self_bit;
  std::array<std::uint8_t, kMaxNodes> ids;
  unsigned count = 0;
  for (std::uint64_t t = targets; t != 0; t &= t - 1) {
    const auto id = static_cast<std::uint8_t>(std::countr_zero(t) + 1);
    if (snap.node_macs[id] == 0) {
      ++c.forward_no_mac;
    } else {
      ids[count++] = id;
    }
  }
  if (count == 0) {
    if (targets == 0) ++c.forward_no_mac;  // no owner at all
    return false;
  }
  std::memcpy(eth + 6, port.mac.data(), 6);
  for (unsigned k = 0; k < count && n < capacity; ++k) {
    // The last target gets the frame itself, the others copies.
    rte_mbuf* f = k + 1 == count ? m : rte_pktmbuf_copy(m, pool, 0, UINT32_MAX);
    if (f == nullptr) {
      ++c.forward_no_mac;
      continue;
    }
    const std::uint64_t to = snap.node_macs[ids[k]];
    auto* dst = rte_pktmbuf_mtod(f, std::uint8_t*);
    put_mac48(dst, to);
    ++c.forwarded[ids[k]];
    out[n++] = f;
    if (f == m) return true;
  }
  return false;  // no room for the frame itself: the caller drops it
}

int Dataplane::Impl::worker_main(void* arg) {
  auto* args = static_cast<WorkerArgs*>(arg);
  args->impl->worker(args->queue);
  return 0;
}

void Dataplane::Impl::worker(std::uint16_t queue) noexcept {
  LcoreCounters& c = counters[1 + queue];
  const unsigned thread_id = queue;
  rte_rcu_qsbr_thread_register(qsbr, thread_id);
  rte_rcu_qsbr_thread_online(qsbr, thread_id);
  Burst b;
  b.table = flows.empty() ? nullptr : flows[queue].get();
  unsigned idle = 0;
  while (!stop->load(std::memory_order_relaxed)) {
    const Snapshot* snap = current.load(std::memory_order_acquire);
    c.generation = snap->generation;
    // A snapshot with other flow timeouts (a reload) reaches this lcore's table here.
    if (b.table != nullptr && !(snap->timeouts == b.table->timeouts())) {
      b.table->set_timeouts(snap->timeouts);
    }
    unsigned received = 0;
    for (std::size_t p = 0; p < ports.size(); ++p) {
      if (queue == 0) drain_to_uplink(p, c);
      received += poll_port(p, queue, snap, b, c);
    }
    // Quiescent: this lcore holds no pointer into `snap` past here. When every port was
    // idle, the next burst will use the current snapshot, so the generation exported above
    // is what "applied everywhere" waits for.
    rte_rcu_qsbr_quiescent(qsbr, thread_id);
    if (received != 0) {
      idle = 0;
      continue;
    }
    if (b.table != nullptr && idle % 16 == 0) {
      b.table->sweep(static_cast<std::uint32_t>(rte_rdtsc() / cycles_per_ms), 64);
    }
    if (adaptive) idle_backoff(idle);
  }
  rte_rcu_qsbr_thread_offline(qsbr, thread_id);
  rte_rcu_qsbr_thread_unregister(qsbr, thread_id);
}

std::uint16_t Dataplane::Impl::poll_port(std::size_t p, std::uint16_t queue, const Snapshot* snap,
                                         Burst& b, LcoreCounters& c) noexcept {
  const Port& port = ports[p];
  auto& rx = b.rx;
  auto& results = b.results;
  flow::FlowTable* table = b.table;
  const std::uint16_t n =
      rte_eth_rx_burst(port.uplink, queue, rx.data(), static_cast<std::uint16_t>(burst));
  if (n == 0) return 0;
  for (std::uint16_t i = 0; i < n; ++i) {
    // Only the first segment is classified: headers of interest live in it (af_packet
    // and NIC ports deliver single-segment frames up to the mbuf size).
    b.frames[i] = {rte_pktmbuf_mtod(rx[i], const std::byte*), rte_pktmbuf_data_len(rx[i])};
    c.rx_bytes += rte_pktmbuf_pkt_len(rx[i]);
    if (i + 4 < n) rte_prefetch0(rte_pktmbuf_mtod(rx[i + 4], void*));
  }
  c.rx_packets += n;
  c.port_rx[p] += n;
  const bool track = table != nullptr && snap->track;
  snap->classifier.classify_burst(b.frames.data(), n, results.data(),
                                  track ? b.tuples.data() : nullptr, p);
  if (!snap->owners.empty()) {
    // Directed VIPs: only frames sent to this node's own MAC are its to judge; a copy
    // of another node's (a switch flooding unknown unicast) is not, and is dropped as
    // foreign unicast.
    for (std::uint16_t i = 0; i < n; ++i) {
      packet::Result& r = results[i];
      if ((r.verdict == packet::Verdict::kFarm || r.verdict == packet::Verdict::kNoRule) &&
          vip_directed[r.vip] != 0 &&
          mac48(rte_pktmbuf_mtod(rx[i], const std::uint8_t*)) != port.own48) {
        r.verdict = packet::Verdict::kPass;
      }
    }
  }
  const std::uint64_t tsc = rte_rdtsc();
  const bool path_ok = tsc < exception_alive.load(std::memory_order_relaxed) + stall_cycles;
  const bool leased = path_ok && tsc < lease_until.load(std::memory_order_relaxed);
  const std::uint64_t clock_ms = tsc / cycles_per_ms;
  const auto now_ms = static_cast<std::uint32_t>(clock_ms);
  // The handoff sets exist (flows tracked); releasing_any: some bucket is being released.
  const bool handing = track && !snap->taking.empty();
  const bool releasing_any = handing && snap->releasing_any;
  if (track) {
    // Flow lookups of the burst: hash and prefetch them all, then decide packet by packet.
    for (std::uint16_t i = 0; i < n; ++i) {
      const packet::Result& r = results[i];
      if (r.verdict == packet::Verdict::kFarm &&
          (releasing_any || snap->ownership.owns(r.group, r.bucket))) {
        b.hashes[i] = flow::hash_tuple(b.tuples[i]);
        table->prefetch(b.hashes[i]);
      }
    }
    if (++b.bursts % 64 == 0) table->sweep(now_ms, 4);
  }
  auto& kernel = b.kernel;
  auto& heartbeats = b.heartbeats;
  auto& reply = b.reply;
  auto& drop = b.drop;
  unsigned nk = 0, nh = 0, nr = 0, nd = 0;
  for (std::uint16_t i = 0; i < n; ++i) {
    packet::Result& r = results[i];
    if (leased && track && r.verdict == packet::Verdict::kFarm) {
      const bool mine = snap->ownership.owns(r.group, r.bucket);
      if (mine || releasing_any) {
        // Releasing: every packet of a flow this node tracks, whatever bucket today's rules
        // give it (a reload may change them); untracked UDP only in the buckets given up.
        const flow::BucketMode mode =
            !mine ? (snap->releasing.owns(r.group, r.bucket) ? flow::BucketMode::kReleasing
                                                             : flow::BucketMode::kTrackedOnly)
            : handing && snap->taking.owns(r.group, r.bucket) ? flow::BucketMode::kTaking
                                                              : flow::BucketMode::kOwned;
        r.verdict = flow::admit(*table, b.tuples[i], b.hashes[i], mode, r.group, r.bucket, now_ms,
                                c.handoff)
                        ? packet::Verdict::kAccept
                        : packet::Verdict::kNotOwner;
      } else {
        r.verdict = packet::Verdict::kNotOwner;
      }
    } else if (leased) [[likely]] {
      snap->ownership.apply(r);
    } else if (r.verdict == packet::Verdict::kFarm) {
      r.verdict = packet::Verdict::kNotOwner;  // a stale ownership is never served
      ++(path_ok ? c.lease_expired : c.exception_stalled);
    }
    ++c.verdicts[static_cast<std::size_t>(r.verdict)];
    rte_mbuf* m = rx[i];
    switch (r.verdict) {
      case packet::Verdict::kPass: {
        // Host traffic: broadcast, multicast and this port's MAC as they are; frames to a
        // virtual MAC (ARP/ND answers to the kernel's own requests from a VIP) readdressed
        // to the TAP; unicast for other hosts, flooded by the switch, dropped here.
        auto* dst = rte_pktmbuf_mtod(m, std::uint8_t*);
        const std::uint64_t d48 = mac48(dst);
        // A peer's heartbeat (from a farm node's uplink MAC) on its own ring; anything else
        // to the membership port (a forged flood) waits with the rest of the host's traffic.
        if (d48 == port.own48 && packet::is_udp_to(b.frames[i], heartbeat_port) &&
            std::find(snap->known_macs.begin(), snap->known_macs.end(), mac48(dst + 6)) !=
                snap->known_macs.end()) {
          heartbeats[nh++] = m;
        } else if ((dst[0] & 1) != 0 || d48 == port.own48) {
          kernel[nk++] = m;
        } else if (is_virtual_mac(d48)) {
          std::memcpy(dst, port.mac.data(), 6);
          kernel[nk++] = m;
        } else {
          ++c.foreign_unicast;
          drop[nd++] = m;
        }
        break;
      }
      case packet::Verdict::kAccept:
        if (!requesters.empty() && vip_directed[r.vip] != 0) {
          confirm_requester(b.frames[i], r.vip, clock_ms, c);
        }
        // Sent to the virtual MAC; the kernel only takes frames for the TAP's own MAC.
        std::memcpy(rte_pktmbuf_mtod(m, void*), port.mac.data(), 6);
        kernel[nk++] = m;
        break;
      case packet::Verdict::kNoRule:
        if (snap->unmatched == config::Unmatched::kPass) {
          kernel[nk++] = m;
        } else {
          drop[nd++] = m;
        }
        break;
      case packet::Verdict::kArpVip: {
        MacAddr answer = vips[r.vip].mac;
        if (r.directed && !directed_answer(port, *snap, r, m, leased, queue, clock_ms, c, answer)) {
          ++c.directed_silent;
          drop[nd++] = m;
          break;
        }
        if (packet::make_arp_reply({rte_pktmbuf_mtod(m, std::byte*), rte_pktmbuf_data_len(m)},
                                   port.mac, answer)) {
          ++c.arp_replies;
          reply[nr++] = m;
        } else {
          ++c.reply_failures;
          drop[nd++] = m;
        }
        break;
      }
      case packet::Verdict::kNdVip: {
        MacAddr answer = vips[r.vip].mac;
        if (r.directed && !directed_answer(port, *snap, r, m, leased, queue, clock_ms, c, answer)) {
          ++c.directed_silent;
          drop[nd++] = m;
          break;
        }
        const std::size_t capacity = rte_pktmbuf_data_len(m) + rte_pktmbuf_tailroom(m);
        const std::size_t len =
            m->nb_segs == 1 ? packet::make_na_reply({rte_pktmbuf_mtod(m, std::byte*), capacity},
                                                    rte_pktmbuf_data_len(m), port.mac, answer)
                            : 0;
        if (len != 0) {
          m->data_len = static_cast<std::uint16_t>(len);
          m->pkt_len = static_cast<std::uint32_t>(len);
          ++c.nd_replies;
          reply[nr++] = m;
        } else {
          ++c.reply_failures;
          drop[nd++] = m;
        }
        break;
      }
      case packet::Verdict::kMalformed:
        ++c.malformed[static_cast<std::size_t>(r.reason)];
        drop[nd++] = m;
        break;
      default: {  // kNotOwner (kFarm never survives apply())
        const bool syn = track && b.tuples[i].proto == 6 && (b.tuples[i].tcp_flags & 0x12) == 0x02;
        if (!snap->owners.empty() && vip_directed[r.vip] != 0) {
          // The requester's own frame (before forward() rewrites its source MAC).
          if (!requesters.empty()) confirm_requester(b.frames[i], r.vip, clock_ms, c);
          if (forward(port, *snap, r, m, syn, c, reply.data(), nr, reply.size())) break;
        }
        drop[nd++] = m;
        break;
      }
    }
  }
  auto to_kernel = [&c](rte_ring* ring, rte_mbuf** frames, unsigned count) {
    if (count == 0) return;
    const unsigned queued =
        rte_ring_enqueue_burst(ring, reinterpret_cast<void**>(frames), count, nullptr);
    if (queued < count) {
      c.exception_ring_full += count - queued;
      rte_pktmbuf_free_bulk(frames + queued, count - queued);
    }
  };
  to_kernel(port.heartbeats, heartbeats.data(), nh);
  to_kernel(port.to_kernel, kernel.data(), nk);
  if (nr != 0) {
    const std::uint16_t sent =
        rte_eth_tx_burst(port.uplink, queue, reply.data(), static_cast<std::uint16_t>(nr));
    c.port_tx[p] += sent;
    if (sent < nr) {
      c.uplink_tx_drops += nr - sent;
      rte_pktmbuf_free_bulk(reply.data() + sent, nr - sent);
    }
  }
  if (nd != 0) rte_pktmbuf_free_bulk(drop.data(), nd);
  return n;
}

void Dataplane::Impl::drain_to_uplink(std::size_t p, LcoreCounters& c) noexcept {
  const Port& port = ports[p];
  std::array<rte_mbuf*, kExceptionBurst> out;
  const unsigned n = rte_ring_sc_dequeue_burst(port.to_uplink, reinterpret_cast<void**>(out.data()),
                                               kExceptionBurst, nullptr);
  if (n == 0) return;
  const std::uint16_t sent =
      rte_eth_tx_burst(port.uplink, 0, out.data(), static_cast<std::uint16_t>(n));
  c.uplink_tx_from_kernel += sent;
  c.port_tx[p] += sent;
  if (sent < n) {
    c.uplink_tx_drops += n - sent;
    rte_pktmbuf_free_bulk(out.data() + sent, n - sent);
  }
}

// One pass of the exception path of port `p`: accepted and host traffic into the kernel,
// and what the kernel sends handed to worker 0 for the uplink.
void Dataplane::Impl::exception_poll(std::size_t p, LcoreCounters& c) noexcept {
  const Port& port = ports[p];
  std::array<rte_mbuf*, kExceptionBurst> burst_buf;
  // The heartbeats first: a burst of VIP traffic delays them by one TAP write at most.
  for (rte_ring* ring : {port.heartbeats, port.to_kernel}) {
    const unsigned n = rte_ring_dequeue_burst(ring, reinterpret_cast<void**>(burst_buf.data()),
                                              kExceptionBurst, nullptr);
    if (n == 0) continue;
    // The workers filled these on another core: start every header's and then every
    // frame's cache misses now, rather than one by one inside the port's TX (the TAP's
    // copy into the kernel reads every byte).
    for (unsigned i = 0; i < n; ++i) rte_prefetch0(burst_buf[i]);
    for (unsigned i = 0; i < n; ++i) {
      const auto* data = rte_pktmbuf_mtod(burst_buf[i], const char*);
      const unsigned len = rte_pktmbuf_data_len(burst_buf[i]);
      for (unsigned at = 0; at < len; at += RTE_CACHE_LINE_SIZE) rte_prefetch1(data + at);
    }
    const std::uint16_t sent =
        rte_eth_tx_burst(port.tap, 0, burst_buf.data(), static_cast<std::uint16_t>(n));
    c.exception_tx += sent;
    if (sent < n) {
      c.exception_tx_drops += n - sent;
      rte_pktmbuf_free_bulk(burst_buf.data() + sent, n - sent);
    }
  }
  const std::uint16_t m = rte_eth_rx_burst(port.tap, 0, burst_buf.data(), kExceptionBurst);
  if (m != 0) {
    c.exception_rx += m;
    for (std::uint16_t i = 0; i < m; ++i) {
      rte_mbuf* f = burst_buf[i];
      const std::span<std::byte> frame{rte_pktmbuf_mtod(f, std::byte*), rte_pktmbuf_data_len(f)};
      if (packet::rewrite_outgoing(frame, flood_vips[p]) ||
          (p == 0 && packet::rewrite_directed_ns(frame, directed_v6, link_local))) {
        ++c.kernel_rewrites;
      }
    }
    const unsigned queued = rte_ring_sp_enqueue_burst(
        port.to_uplink, reinterpret_cast<void**>(burst_buf.data()), m, nullptr);
    if (queued < m) {
      c.to_uplink_ring_full += m - queued;
      rte_pktmbuf_free_bulk(burst_buf.data() + queued, m - queued);
    }
  }
}

void Dataplane::Impl::discard_stale(LcoreCounters& c) noexcept {
  std::array<rte_mbuf*, kExceptionBurst> burst_buf;
  for (const Port& port : ports) {
    for (rte_ring* ring : {port.heartbeats, port.to_kernel}) {
      unsigned n = 0;
      while ((n = rte_ring_dequeue_burst(ring, reinterpret_cast<void**>(burst_buf.data()),
                                         kExceptionBurst, nullptr)) != 0) {
        c.exception_stale += n;
        rte_pktmbuf_free_bulk(burst_buf.data(), n);
      }
    }
  }
}

Dataplane::Dataplane() : impl_(std::make_unique<Impl>()) {}

Dataplane::~Dataplane() { shutdown(); }

void Dataplane::shutdown() {
  if (impl_->eal_up) {
    impl_->eal_up = false;
    for (Impl::Port& port : impl_->ports) {
      rte_eth_dev_stop(port.uplink);
      rte_eth_dev_stop(port.tap);
      rte_eth_dev_close(port.tap);  // removes the TAP interface from the kernel
      rte_eth_dev_close(port.uplink);
      rte_ring_free(port.to_kernel);
      rte_ring_free(port.heartbeats);
      rte_ring_free(port.to_uplink);
    }
    delete impl_->current.exchange(nullptr);
    rte_free(impl_->qsbr);
    rte_mempool_free(impl_->pool);
    rte_eal_cleanup();
  }
}

namespace {

// Several RX queues on a device with RSS: spread flows with a symmetric Toeplitz key (the
// 0x6d5a pattern: a flow's two directions get one hash), the same on every port, so both
// directions of a gateway's connection reach one worker and its flow table (docs/gateway.md,
// "Workers"). Vdevs without RSS (af_packet spreads by the kernel's flow hash, which is
// symmetric too) keep their own distribution.
std::string setup_port(std::uint16_t port, std::uint16_t rxq, std::uint16_t txq,
                       rte_mempool* pool) {
  rte_eth_conf conf{};
  rte_eth_dev_info info{};
  std::vector<std::uint8_t> key;
  if (int rc = rte_eth_dev_info_get(port, &info); rc != 0) {
    return port_error("device info of port " + std::to_string(port), rc);
  }
  const std::uint64_t hash =
      (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
  if (rxq > 1 && hash != 0) {
    key.resize(info.hash_key_size != 0 ? info.hash_key_size : 40);
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = i % 2 == 0 ? 0x6d : 0x5a;
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_key = key.data();
    conf.rx_adv_conf.rss_conf.rss_key_len = static_cast<std::uint8_t>(key.size());
    conf.rx_adv_conf.rss_conf.rss_hf = hash;
  }
  int rc = rte_eth_dev_configure(port, rxq, txq, &conf);
  if (rc < 0) return port_error("configure port " + std::to_string(port), rc);
  std::uint16_t rxd = kRxDescriptors, txd = kTxDescriptors;
  rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
  const int socket = rte_eth_dev_socket_id(port);
  for (std::uint16_t q = 0; q < rxq; ++q) {
    rc = rte_eth_rx_queue_setup(port, q, rxd, static_cast<unsigned>(socket), nullptr, pool);
    if (rc < 0)
      return port_error("rx queue " + std::to_string(q) + " of port " + std::to_string(port), rc);
  }
  for (std::uint16_t q = 0; q < txq; ++q) {
    rc = rte_eth_tx_queue_setup(port, q, txd, static_cast<unsigned>(socket), nullptr);
    if (rc < 0)
      return port_error("tx queue " + std::to_string(q) + " of port " + std::to_string(port), rc);
  }
  return {};
}

}  // namespace

std::string Dataplane::start(const config::Config& config, const std::string& program,
                             const std::vector<std::string>& extra_eal, ExceptionPort exception) {
  return bring_up(config, program, extra_eal, exception, {});
}

std::string Dataplane::start(const config::Config& config, const std::string& program,
                             const std::vector<std::string>& extra_eal,
                             const MakePorts& make_ports) {
  return bring_up(config, program, extra_eal, ExceptionPort::kNull, make_ports);
}

std::string Dataplane::bring_up(const config::Config& config, const std::string& program,
                                const std::vector<std::string>& extra_eal, ExceptionPort exception,
                                const MakePorts& make_ports) {
  Impl& d = *impl_;
  d.config = config;
  d.self_bit = std::uint64_t{1} << (to_int(config.node_id) - 1);
  d.workers = config.dataplane.workers;
  d.burst = config.dataplane.burst;
  d.adaptive = config.dataplane.poll == config::Poll::kAdaptive;
  const std::vector<config::Port>& ports = config.dataplane.ports;
  if (ports.empty()) return "no [dataplane] port";
  d.flood_vips.resize(ports.size());
  for (const config::Vip& v : config.vips) {
    const bool directed = v.l2_mode == config::L2Mode::kDirected;
    d.vips.push_back({v.address, v.mac});
    d.vip_directed.push_back(directed ? 1 : 0);
    if (directed && !v.address.is_v4()) d.directed_v6.push_back(v.address);
    if (directed) continue;  // no virtual MAC: each node answers with its own
    d.flood_vips[v.port].push_back({v.address, v.mac});
    d.virtual_macs.push_back(mac48(v.mac.data()));
  }

  std::vector<std::string> args = {program};
  args.insert(args.end(), config.dataplane.eal_args.begin(), config.dataplane.eal_args.end());
  args.insert(args.end(), extra_eal.begin(), extra_eal.end());
  const bool has_lcores = std::any_of(args.begin(), args.end(), [](const std::string& a) {
    return a == "-l" || a == "-c" || a.starts_with("--lcores");
  });
  if (!has_lcores) {
    args.push_back("-l");
    args.push_back("0-" + std::to_string(d.workers));
  }
  const bool tap = exception == ExceptionPort::kTap && !make_ports;
  std::vector<std::string> uplink_names, exception_names;
  for (std::size_t p = 0; p < ports.size() && !make_ports; ++p) {
    std::string uplink = ports[p].uplink;
    const bool vdev = uplink.starts_with("net_");
    // af_packet: one queue pair (one socket in a fanout group) per worker.
    if (uplink.starts_with("net_af_packet") && uplink.find("qpairs=") == std::string::npos) {
      uplink += ",qpairs=" + std::to_string(d.workers);
    }
    // af_xdp: one XDP socket per worker, on the interface's queues 0..workers-1 (the kernel
    // interface needs that many, and spreads flows over them by its own hash).
    if (uplink.starts_with("net_af_xdp") && uplink.find("queue_count=") == std::string::npos) {
      uplink += ",queue_count=" + std::to_string(d.workers);
    }
    args.push_back(vdev ? "--vdev=" + uplink : "-a");
    if (!vdev) args.push_back(uplink);
    uplink_names.push_back(vdev ? uplink.substr(0, uplink.find(',')) : uplink);
    // net_null's no-rx: a null port would otherwise produce packets whenever it is polled.
    exception_names.push_back((tap ? "net_tap_vipfarm" : "net_null_vipfarm") + std::to_string(p));
    args.push_back("--vdev=" + exception_names.back() +
                   (tap ? ",iface=" + ports[p].exception : std::string(",no-rx=1")));
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0) return eal_error("EAL init");
  d.eal_up = true;
  if (rte_lcore_count() < d.workers + 1) {
    return "EAL gave " + std::to_string(rte_lcore_count()) + " lcores; need " +
           std::to_string(d.workers + 1) + " (main + workers)";
  }
  std::vector<PortIds> given;
  if (make_ports) {
    if (std::string error = make_ports(given); !error.empty()) return error;
    if (given.size() != ports.size()) {
      return "the caller made " + std::to_string(given.size()) + " port pairs for " +
             std::to_string(ports.size()) + " [dataplane] ports";
    }
  }

  const bool af_xdp = std::any_of(ports.begin(), ports.end(), [](const config::Port& port) {
    return port.uplink.starts_with("net_af_xdp");
  });
  if (std::string error = create_mbuf_pool(
          mbuf_count(d.workers, config.exception.ring_size, ports.size()), af_xdp, d.pool);
      !error.empty()) {
    return error;
  }
  const std::size_t qsbr_size = rte_rcu_qsbr_get_memsize(d.workers);
  d.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("vipfarm_qsbr", qsbr_size, RTE_CACHE_LINE_SIZE));
  if (d.qsbr == nullptr || rte_rcu_qsbr_init(d.qsbr, d.workers) != 0) return "RCU state";

  for (std::size_t p = 0; p < ports.size(); ++p) {
    Impl::Port port;
    port.name = ports[p].name;
    const std::string what = ports.size() > 1 ? " of port " + port.name : std::string();
    if (make_ports) {
      port.uplink = given[p].uplink;
      port.tap = given[p].exception;
    } else if (rte_eth_dev_get_port_by_name(uplink_names[p].c_str(), &port.uplink) != 0) {
      return "uplink \"" + uplink_names[p] + "\"" + what + " not found";
    } else if (rte_eth_dev_get_port_by_name(exception_names[p].c_str(), &port.tap) != 0) {
      return "exception port " + exception_names[p] + " not created";
    }
    const std::string suffix = std::to_string(p);
    port.to_kernel =
        rte_ring_create(("vipfarm_to_kernel" + suffix).c_str(), config.exception.ring_size,
                        static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
    if (port.to_kernel == nullptr) return eal_error("exception ring" + what);
    port.heartbeats = rte_ring_create(("vipfarm_heartbeats" + suffix).c_str(), kHeartbeatRing,
                                      static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
    if (port.heartbeats == nullptr) {
      rte_ring_free(port.to_kernel);
      return eal_error("heartbeat ring" + what);
    }
    port.to_uplink =
        rte_ring_create(("vipfarm_to_uplink" + suffix).c_str(), config.exception.ring_size,
                        static_cast<int>(rte_socket_id()), RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (port.to_uplink == nullptr) {
      rte_ring_free(port.to_kernel);
      rte_ring_free(port.heartbeats);
      return eal_error("uplink ring" + what);
    }
    d.ports.push_back(port);  // from here on shutdown() stops and frees it
    Impl::Port& added = d.ports.back();
    std::string err = setup_port(added.uplink, static_cast<std::uint16_t>(d.workers),
                                 static_cast<std::uint16_t>(d.workers), d.pool);
    if (!err.empty()) return err + what;
    err = setup_port(added.tap, 1, 1, d.pool);
    if (!err.empty()) return err + what;
    rte_ether_addr mac;
    if (rte_eth_macaddr_get(added.uplink, &mac) != 0) return "uplink MAC address" + what;
    std::memcpy(added.mac.data(), mac.addr_bytes, 6);
    added.own48 = mac48(added.mac.data());
    // The kernel's frames leave with the port's own MAC: give the TAP the uplink's address.
    if (int rc = tap ? rte_eth_dev_default_mac_addr_set(added.tap, &mac) : 0; rc != 0) {
      return port_error("TAP MAC address" + what, rc);
    }
    if (int rc = rte_eth_promiscuous_enable(added.uplink); rc != 0) {
      return port_error(
          "promiscuous mode on the uplink" + what + " (the virtual MAC's frames need it)", rc);
    }
    if (int rc = rte_eth_dev_start(added.uplink); rc < 0) {
      return port_error("start uplink" + what, rc);
    }
    if (int rc = rte_eth_dev_start(added.tap); rc < 0) return port_error("start TAP" + what, rc);
  }
  d.link_local = link_local_of(d.ports[0].mac);
  d.counters.assign(d.workers + 1, LcoreCounters{});
  if (std::find(d.vip_directed.begin(), d.vip_directed.end(), 1) != d.vip_directed.end()) {
    // One key per node for every table's set hash: a forger cannot aim at a client's set.
    std::random_device random;
    const std::uint64_t seed = std::uint64_t{random()} << 32 | random();
    for (std::uint32_t w = 0; w < d.workers; ++w) {
      d.requesters.push_back(std::make_unique<flow::RequesterTable>(seed));
    }
  }
  d.cycles_per_ms = std::max<std::uint64_t>(1, rte_get_tsc_hz() / 1000);
  d.stall_cycles = d.cycles_per_ms * static_cast<std::uint64_t>(kExceptionStall.count());
  d.heartbeat_port = config.membership.port;
  if (config.flows.handoff) {
    const flow::FlowTimeouts timeouts = flow_timeouts(config.flows);
    for (std::uint32_t w = 0; w < d.workers; ++w) {
      d.flows.push_back(std::make_unique<flow::FlowTable>(
          config.flows.capacity, timeouts, static_cast<std::uint16_t>(config.groups.size()),
          config.buckets));
    }
  }
  return {};
}

std::vector<std::uint64_t> Dataplane::flows_in(
    const std::vector<std::pair<std::uint16_t, BucketId>>& buckets) const {
  std::vector<std::uint64_t> out(buckets.size(), 0);
  for (const auto& table : impl_->flows) {
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      out[i] += table->live_in(buckets[i].first, buckets[i].second);
    }
  }
  return out;
}

void Dataplane::renew_lease(std::chrono::nanoseconds duration) noexcept {
  const auto cycles = static_cast<std::uint64_t>(static_cast<double>(duration.count()) *
                                                 static_cast<double>(rte_get_tsc_hz()) / 1e9);
  impl_->lease_until.store(rte_rdtsc() + cycles, std::memory_order_relaxed);
}

void Dataplane::revoke_lease() noexcept { impl_->lease_until.store(0, std::memory_order_relaxed); }

bool Dataplane::leased() const noexcept {
  return rte_rdtsc() < impl_->lease_until.load(std::memory_order_relaxed);
}

void Dataplane::publish(std::unique_ptr<Snapshot> next) {
  const Snapshot* old = impl_->current.exchange(next.release(), std::memory_order_acq_rel);
  if (old == nullptr) return;
  // Every worker passes a quiescent point after each burst (and each empty poll), so this
  // waits at most one burst's time.
  rte_rcu_qsbr_synchronize(impl_->qsbr, RTE_QSBR_THRID_INVALID);
  delete old;
}

void Dataplane::run(const std::atomic<bool>& stop, const std::function<void()>& on_idle) {
  Impl& d = *impl_;
  d.stop = &stop;
  d.worker_args.clear();
  for (std::uint32_t q = 0; q < d.workers; ++q)
    d.worker_args.push_back({&d, static_cast<std::uint16_t>(q)});
  d.exception_alive.store(rte_rdtsc(), std::memory_order_relaxed);
  unsigned q = 0;
  unsigned lcore;
  RTE_LCORE_FOREACH_WORKER(lcore) {
    if (q == d.workers) break;
    rte_eal_remote_launch(&Impl::worker_main, &d.worker_args[q++], lcore);
  }
  const std::uint64_t tick = rte_get_timer_hz() / 10;
  std::uint64_t next_tick = rte_get_timer_cycles() + tick;
  unsigned idle = 0;
  LcoreCounters& c = d.counters[0];
  while (!stop.load(std::memory_order_relaxed)) {
    // Stopped longer than kExceptionStall (the workers have queued no VIP traffic since):
    // what waited meanwhile is stale, and dropped before the workers queue again.
    const std::uint64_t now = rte_rdtsc();
    if (now >= d.exception_alive.load(std::memory_order_relaxed) + d.stall_cycles) {
      d.discard_stale(c);
    }
    d.exception_alive.store(now, std::memory_order_relaxed);
    const std::uint64_t before = c.exception_tx + c.exception_rx + c.exception_tx_drops;
    for (std::size_t p = 0; p < d.ports.size(); ++p) d.exception_poll(p, c);
    if (rte_get_timer_cycles() >= next_tick) {
      next_tick += tick;
      on_idle();
    }
    if (c.exception_tx + c.exception_rx + c.exception_tx_drops == before) {
      if (d.adaptive) idle_backoff(idle);
    } else {
      idle = 0;
    }
  }
  rte_eal_mp_wait_lcore();
  d.exception_alive.store(0, std::memory_order_relaxed);
}

std::chrono::nanoseconds Dataplane::exception_silence() const noexcept {
  const std::uint64_t alive = impl_->exception_alive.load(std::memory_order_relaxed);
  const std::uint64_t now = rte_rdtsc();
  if (alive == 0 || now <= alive) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(static_cast<std::int64_t>(static_cast<double>(now - alive) * 1e9 /
                                                            static_cast<double>(rte_get_tsc_hz())));
}

void Dataplane::announce(const AnswersRequester& answers) {
  Impl& d = *impl_;
  // Onto the uplink through worker 0's ring, counted in `sent` (or as ring full).
  auto send = [&d](std::size_t port, rte_mbuf* m, std::uint64_t& sent) {
    if (rte_ring_sp_enqueue(d.ports[port].to_uplink, m) == 0) {
      ++sent;
    } else {
      ++d.counters[0].to_uplink_ring_full;
      rte_pktmbuf_free(m);
    }
  };
  // Confirmed requesters first, then admitted, then excess (a full ring drops the last ones);
  // one announcement per requester, also when it is in several workers' tables.
  std::vector<flow::RequesterTable::Entry> known;
  const std::uint64_t clock_ms = rte_rdtsc() / d.cycles_per_ms;
  for (std::size_t w = 0; answers && w < d.requesters.size(); ++w) {
    const std::vector<flow::RequesterTable::Entry> seen = d.requesters[w]->entries(clock_ms);
    known.insert(known.end(), seen.begin(), seen.end());
  }
  // A requester in several tables once, at its best standing.
  auto same = [](const auto& a, const auto& b) { return a.key == b.key; };
  std::sort(known.begin(), known.end(), [](const auto& a, const auto& b) {
    return std::tie(a.key.address, a.key.mac48, a.key.vip, b.standing) <
           std::tie(b.key.address, b.key.mac48, b.key.vip, a.standing);
  });
  known.erase(std::unique(known.begin(), known.end(), same), known.end());
  std::stable_sort(known.begin(), known.end(),
                   [](const auto& a, const auto& b) { return a.standing > b.standing; });
  for (const flow::RequesterTable::Entry& e : known) {
    const flow::RequesterKey& key = e.key;
    if (key.vip >= d.vips.size() || !answers(key.vip, key.address)) continue;
    const MacAddr requester_mac = mac_from48(key.mac48);
    const IpAddr& who = key.address;
    rte_mbuf* m = rte_pktmbuf_alloc(d.pool);
    if (m == nullptr) continue;
    char* data = rte_pktmbuf_append(m, 86);
    const IpAddr& address = d.vips[key.vip].address;
    const std::size_t len =
        address.is_v4()
            ? packet::build_arp({reinterpret_cast<std::byte*>(data), 86}, 2, requester_mac,
                                d.ports[0].mac, address.v4_value(), requester_mac, who.v4_value())
            : packet::build_na({reinterpret_cast<std::byte*>(data), 86}, d.ports[0].mac, address,
                               requester_mac, who);
    rte_pktmbuf_trim(m, static_cast<std::uint16_t>(86 - len));
    send(0, m, d.counters[0].directed_announcements);  // directed VIPs: the first port's
  }
  // Directed VIPs are never announced by broadcast: it would steer every client to one node.
  for (std::size_t p = 0; p < d.ports.size(); ++p) {
    for (const packet::VipMac& vip : d.flood_vips[p]) {
      rte_mbuf* m = rte_pktmbuf_alloc(d.pool);
      if (m == nullptr) continue;
      char* data = rte_pktmbuf_append(m, 128);
      const std::size_t len = packet::build_announcement({reinterpret_cast<std::byte*>(data), 128},
                                                         d.ports[p].mac, vip);
      rte_pktmbuf_trim(m, static_cast<std::uint16_t>(128 - len));
      send(p, m, d.counters[0].announcements);
    }
  }
}

MacAddr Dataplane::uplink_mac() const { return port_mac(0); }

MacAddr Dataplane::port_mac(std::size_t port) const {
  return port < impl_->ports.size() ? impl_->ports[port].mac : MacAddr{};
}

std::size_t Dataplane::port_count() const { return impl_->ports.size(); }

std::string Dataplane::port_name(std::size_t port) const {
  return port < impl_->ports.size() ? impl_->ports[port].name : std::string();
}

Totals Dataplane::totals() const {
  Totals t;
  bool first_worker = true;
  for (std::size_t i = 0; i < impl_->counters.size(); ++i) {
    const LcoreCounters& c = impl_->counters[i];
    LcoreCounters& s = t.sum;
#define VIPFARM_SUM(field, key, metric, help) s.field += c.field;
    VIPFARM_LCORE_COUNTERS(VIPFARM_SUM)
#undef VIPFARM_SUM
#define VIPFARM_SUM_HANDOFF(field, key, metric, help) s.handoff.field += c.handoff.field;
    VIPFARM_HANDOFF_COUNTERS(VIPFARM_SUM_HANDOFF)
#undef VIPFARM_SUM_HANDOFF
    for (std::size_t v = 0; v < s.verdicts.size(); ++v) s.verdicts[v] += c.verdicts[v];
    for (std::size_t r = 0; r < s.malformed.size(); ++r) s.malformed[r] += c.malformed[r];
    for (std::size_t p = 0; p < c.port_rx.size(); ++p) {
      s.port_rx[p] += c.port_rx[p];
      s.port_tx[p] += c.port_tx[p];
    }
    for (std::size_t n = 0; n < c.forwarded.size(); ++n) s.forwarded[n] += c.forwarded[n];
    if (i > 0) {
      t.worker_rx.push_back(c.rx_packets);
      t.min_generation = first_worker ? c.generation : std::min(t.min_generation, c.generation);
      first_worker = false;
    }
  }
  // Read while the workers write: monotonic counters and gauges, a scrape-time view.
  for (const auto& table : impl_->flows) {
    const flow::FlowStats& f = table->stats();
    t.flows.inserted += f.inserted;
    t.flows.refused += f.refused;
    t.flows.evicted_embryonic += f.evicted_embryonic;
    t.flows.evicted_established += f.evicted_established;
    t.flows.expired += f.expired;
    t.flows.erased += f.erased;
    t.flows.live += f.live;
    t.flows.embryonic += f.embryonic;
    t.flows_capacity += table->capacity();
  }
  for (const Impl::Port& port : impl_->ports) {
    rte_eth_stats stats{};
    t.port_rx_missed.push_back(rte_eth_stats_get(port.uplink, &stats) == 0 ? stats.imissed : 0);
  }
  return t;
}

}  // namespace vipfarm::dataplane
