// Directed VIPs (docs/directed.md) in the data plane: the requesters each worker remembers,
// the ARP/ND answers a node gives or withholds, the one hop to a bucket's owner, and the
// announcements after a view change (main lcore).
#include "impl.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>

namespace vipfarm::dataplane {

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

}  // namespace vipfarm::dataplane
