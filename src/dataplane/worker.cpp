// The workers: one lcore per uplink queue, a burst at a time through the stages of
// poll_port. They never lock, allocate, throw or log; an error on the packet path is a
// counter.
#include "impl.hpp"

#include <algorithm>
#include <cstring>

namespace vipfarm::dataplane {

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

namespace {

using Impl = Dataplane::Impl;

// What the stages of one burst share: the decisions taken once per burst and the counts of
// frames in each output (the buffers are the worker's Burst).
struct Pass {
  std::uint16_t n = 0;         // frames received
  bool track = false;          // flows are tracked ([flows] handoff)
  bool handing = false;        // the handoff sets exist
  bool releasing_any = false;  // some bucket is being released: look up every farm frame
  bool path_ok = false;        // the exception path runs
  bool leased = false;         // ... and the lease holds: VIP traffic may be accepted
  std::uint64_t clock_ms = 0;
  std::uint32_t now_ms = 0;
  unsigned nk = 0, nh = 0, nr = 0, nd = 0;  // to the kernel, heartbeats, replies, drops
};

// Stage 1: the burst classified (with each frame's flow tuple when flows are tracked). Only
// the first segment is classified: headers of interest live in it (af_packet and NIC ports
// deliver single-segment frames up to the mbuf size).
void classify(const Snapshot& snap, std::size_t p, Impl::Burst& b, Pass& s,
              LcoreCounters& c) noexcept {
  for (std::uint16_t i = 0; i < s.n; ++i) {
    b.frames[i] = {rte_pktmbuf_mtod(b.rx[i], const std::byte*), rte_pktmbuf_data_len(b.rx[i])};
    c.rx_bytes += rte_pktmbuf_pkt_len(b.rx[i]);
    if (i + 4 < s.n) rte_prefetch0(rte_pktmbuf_mtod(b.rx[i + 4], void*));
  }
  c.rx_packets += s.n;
  c.port_rx[p] += s.n;
  s.track = b.table != nullptr && snap.track;
  snap.classifier.classify_burst(b.frames.data(), s.n, b.results.data(),
                                 s.track ? b.tuples.data() : nullptr, p);
}

// Stage 2: directed VIPs. Only frames sent to this node's own MAC are its to judge; a copy of
// another node's (a switch flooding unknown unicast) is not, and is dropped as foreign
// unicast.
void directed_filter(const Impl& d, const Impl::Port& port, const Snapshot& snap, Impl::Burst& b,
                     const Pass& s) noexcept {
  if (snap.owners.empty()) return;
  for (std::uint16_t i = 0; i < s.n; ++i) {
    packet::Result& r = b.results[i];
    if ((r.verdict == packet::Verdict::kFarm || r.verdict == packet::Verdict::kNoRule) &&
        d.vip_directed[r.vip] != 0 &&
        mac48(rte_pktmbuf_mtod(b.rx[i], const std::uint8_t*)) != port.own48) {
      r.verdict = packet::Verdict::kPass;
    }
  }
}

// Stage 3: ownership. A farm frame is accepted when this node owns its bucket, holds the
// lease and its exception path runs; with flow handoff, by the handoff rule over the flow
// table (flow::admit), looked up for the whole burst first (hashed and prefetched).
void admit(const Impl& d, const Snapshot& snap, Impl::Burst& b, Pass& s,
           LcoreCounters& c) noexcept {
  const std::uint64_t tsc = rte_rdtsc();
  s.path_ok = tsc < d.exception_alive.load(std::memory_order_relaxed) + d.stall_cycles;
  s.leased = s.path_ok && tsc < d.lease_until.load(std::memory_order_relaxed);
  s.clock_ms = tsc / d.cycles_per_ms;
  s.now_ms = static_cast<std::uint32_t>(s.clock_ms);
  s.handing = s.track && !snap.taking.empty();
  s.releasing_any = s.handing && snap.releasing_any;
  flow::FlowTable* table = b.table;
  if (s.track) {
    for (std::uint16_t i = 0; i < s.n; ++i) {
      const packet::Result& r = b.results[i];
      if (r.verdict == packet::Verdict::kFarm &&
          (s.releasing_any || snap.ownership.owns(r.group, r.bucket))) {
        b.hashes[i] = flow::hash_tuple(b.tuples[i]);
        table->prefetch(b.hashes[i]);
      }
    }
    if (++b.bursts % 64 == 0) table->sweep(s.now_ms, 4);
  }
  for (std::uint16_t i = 0; i < s.n; ++i) {
    packet::Result& r = b.results[i];
    if (s.leased && s.track && r.verdict == packet::Verdict::kFarm) {
      const bool mine = snap.ownership.owns(r.group, r.bucket);
      if (mine || s.releasing_any) {
        // Releasing: every packet of a flow this node tracks, whatever bucket today's rules
        // give it (a reload may change them); untracked UDP only in the buckets given up.
        const flow::BucketMode mode =
            !mine ? (snap.releasing.owns(r.group, r.bucket) ? flow::BucketMode::kReleasing
                                                            : flow::BucketMode::kTrackedOnly)
            : s.handing && snap.taking.owns(r.group, r.bucket) ? flow::BucketMode::kTaking
                                                               : flow::BucketMode::kOwned;
        r.verdict = flow::admit(*table, b.tuples[i], b.hashes[i], mode, r.group, r.bucket, s.now_ms,
                                c.handoff)
                        ? packet::Verdict::kAccept
                        : packet::Verdict::kNotOwner;
      } else {
        r.verdict = packet::Verdict::kNotOwner;
      }
    } else if (s.leased) [[likely]] {
      snap.ownership.apply(r);
    } else if (r.verdict == packet::Verdict::kFarm) {
      r.verdict = packet::Verdict::kNotOwner;  // a stale ownership is never served
      ++(s.path_ok ? c.lease_expired : c.exception_stalled);
    }
    ++c.verdicts[static_cast<std::size_t>(r.verdict)];
  }
}

// Stage 4: each frame to its output by its verdict: the kernel (through the exception
// ring, or the heartbeat ring), a reply or a forwarded frame on the uplink, or dropped.
void dispatch(Impl& d, const Impl::Port& port, std::uint16_t queue, const Snapshot& snap,
              Impl::Burst& b, Pass& s, LcoreCounters& c) noexcept {
  auto& kernel = b.kernel;
  auto& reply = b.reply;
  auto& drop = b.drop;
  for (std::uint16_t i = 0; i < s.n; ++i) {
    const packet::Result& r = b.results[i];
    rte_mbuf* m = b.rx[i];
    switch (r.verdict) {
      case packet::Verdict::kPass: {
        // Host traffic: broadcast, multicast and this port's MAC as they are; frames to a
        // virtual MAC (ARP/ND answers to the kernel's own requests from a VIP) readdressed
        // to the TAP; unicast for other hosts, flooded by the switch, dropped here.
        auto* dst = rte_pktmbuf_mtod(m, std::uint8_t*);
        const std::uint64_t d48 = mac48(dst);
        // A peer's heartbeat (from a farm node's uplink MAC) on its own ring; anything else
        // to the membership port (a forged flood) waits with the rest of the host's traffic.
        if (d48 == port.own48 && packet::is_udp_to(b.frames[i], d.heartbeat_port) &&
            std::find(snap.known_macs.begin(), snap.known_macs.end(), mac48(dst + 6)) !=
                snap.known_macs.end()) {
          b.heartbeats[s.nh++] = m;
        } else if ((dst[0] & 1) != 0 || d48 == port.own48) {
          kernel[s.nk++] = m;
        } else if (d.is_virtual_mac(d48)) {
          std::memcpy(dst, port.mac.data(), 6);
          kernel[s.nk++] = m;
        } else {
          ++c.foreign_unicast;
          drop[s.nd++] = m;
        }
        break;
      }
      case packet::Verdict::kAccept:
        if (!d.requesters.empty() && d.vip_directed[r.vip] != 0) {
          d.confirm_requester(b.frames[i], r.vip, s.clock_ms, c);
        }
        // Sent to the virtual MAC; the kernel only takes frames for the TAP's own MAC.
        std::memcpy(rte_pktmbuf_mtod(m, void*), port.mac.data(), 6);
        kernel[s.nk++] = m;
        break;
      case packet::Verdict::kNoRule:
        if (snap.unmatched == config::Unmatched::kPass) {
          kernel[s.nk++] = m;
        } else {
          drop[s.nd++] = m;
        }
        break;
      case packet::Verdict::kArpVip:
      case packet::Verdict::kNdVip: {
        MacAddr answer = d.vips[r.vip].mac;
        if (r.directed &&
            !d.directed_answer(port, snap, r, m, s.leased, queue, s.clock_ms, c, answer)) {
          ++c.directed_silent;
          drop[s.nd++] = m;
          break;
        }
        const bool arp = r.verdict == packet::Verdict::kArpVip;
        std::size_t len = 0;  // the answer's length (it replaces the request); 0: none
        if (arp) {
          len = packet::make_arp_reply({rte_pktmbuf_mtod(m, std::byte*), rte_pktmbuf_data_len(m)},
                                       port.mac, answer)
                    ? rte_pktmbuf_data_len(m)
                    : 0;
        } else if (m->nb_segs == 1) {
          const std::size_t capacity = rte_pktmbuf_data_len(m) + rte_pktmbuf_tailroom(m);
          len = packet::make_na_reply({rte_pktmbuf_mtod(m, std::byte*), capacity},
                                      rte_pktmbuf_data_len(m), port.mac, answer);
        }
        if (len != 0) {
          if (!arp) {  // an NA is longer than the solicitation it answers
            m->data_len = static_cast<std::uint16_t>(len);
            m->pkt_len = static_cast<std::uint32_t>(len);
          }
          ++(arp ? c.arp_replies : c.nd_replies);
          reply[s.nr++] = m;
        } else {
          ++c.reply_failures;
          drop[s.nd++] = m;
        }
        break;
      }
      case packet::Verdict::kMalformed:
        ++c.malformed[static_cast<std::size_t>(r.reason)];
        drop[s.nd++] = m;
        break;
      default: {  // kNotOwner (kFarm never survives admit())
        const bool syn =
            s.track && b.tuples[i].proto == 6 && (b.tuples[i].tcp_flags & 0x12) == 0x02;
        if (!snap.owners.empty() && d.vip_directed[r.vip] != 0) {
          // The requester's own frame (before forward() rewrites its source MAC).
          if (!d.requesters.empty()) d.confirm_requester(b.frames[i], r.vip, s.clock_ms, c);
          if (d.forward(port, snap, r, m, syn, c, reply.data(), s.nr, reply.size())) break;
        }
        drop[s.nd++] = m;
        break;
      }
    }
  }
}

// Stage 5: the outputs flushed: to the exception lcore's rings, out of the uplink on this
// worker's TX queue, freed. A full ring or TX queue is a counted drop.
void flush(const Impl::Port& port, std::size_t p, std::uint16_t queue, Impl::Burst& b,
           const Pass& s, LcoreCounters& c) noexcept {
  auto to_kernel = [&c](rte_ring* ring, rte_mbuf** frames, unsigned count) {
    if (count == 0) return;
    const unsigned queued =
        rte_ring_enqueue_burst(ring, reinterpret_cast<void**>(frames), count, nullptr);
    if (queued < count) {
      c.exception_ring_full += count - queued;
      rte_pktmbuf_free_bulk(frames + queued, count - queued);
    }
  };
  to_kernel(port.heartbeats, b.heartbeats.data(), s.nh);
  to_kernel(port.to_kernel, b.kernel.data(), s.nk);
  if (s.nr != 0) {
    const std::uint16_t sent =
        rte_eth_tx_burst(port.uplink, queue, b.reply.data(), static_cast<std::uint16_t>(s.nr));
    c.port_tx[p] += sent;
    if (sent < s.nr) {
      c.uplink_tx_drops += s.nr - sent;
      rte_pktmbuf_free_bulk(b.reply.data() + sent, s.nr - sent);
    }
  }
  if (s.nd != 0) rte_pktmbuf_free_bulk(b.drop.data(), s.nd);
}

}  // namespace

// One burst, stage by stage (as l3fwd's): each stage runs over the whole burst before the
// next, so its loads and prefetches overlap across frames.
std::uint16_t Dataplane::Impl::poll_port(std::size_t p, std::uint16_t queue, const Snapshot* snap,
                                         Burst& b, LcoreCounters& c) noexcept {
  const Port& port = ports[p];
  Pass s;
  s.n = rte_eth_rx_burst(port.uplink, queue, b.rx.data(), static_cast<std::uint16_t>(burst));
  if (s.n == 0) return 0;
  classify(*snap, p, b, s, c);
  directed_filter(*this, port, *snap, b, s);
  admit(*this, *snap, b, s, c);
  dispatch(*this, port, queue, *snap, b, s, c);
  flush(port, p, queue, b, s, c);
  return s.n;
}

}  // namespace vipfarm::dataplane
