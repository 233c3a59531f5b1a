// The per-worker flow table (issue 5, docs/handoff.md): the flows one lcore accepted, with
// their TCP state and idle timeouts, so a bucket can be handed off without breaking them.
//
// Layout. Sets of 16 ways; the set count is a power of two with at least 2 slots per flow of
// `capacity` (load <= 50% at capacity, where a 16-way set overflows with probability ~0.4%).
// Two arrays, allocated once, 64-byte aligned:
//   - signatures: 16 x 16-bit per set (32 bytes, half a cache line; 0 = free way). A lookup
//     compares the 16 signatures of its set at once and reads only the entries whose
//     signature matches (a false match costs one entry read in 4096 lookups at 16 ways).
//   - entries: 48 bytes each, 16 per set (768 bytes, 12 cache lines): the 37 meaningful
//     bytes of the tuple, state, group, last-seen ms and bucket. No pointers, no chains.
// Set index: the hash's low bits; signature: its top 16 bits (never 0). Memory per flow of
// capacity: 2 x (48 + 2) = 100 bytes when 2 x capacity is a power of two, at most 200.
//
// Time. `now_ms` is a free-running uint32 millisecond clock (it wraps every 49.7 days); an
// entry's age is the signed 32-bit difference now - last_seen, so a wrap is harmless and a
// timestamp slightly ahead of `now` reads as age 0. Timeouts are capped at 2^31 - 1 ms. An
// entry idle for more than 2^31 ms would read as young again: sweep() visits every set far
// more often than that, so it never happens to a table that is swept.
//
// Eviction, only when a new flow's set has no free way:
//   1. an expired entry (counted as expired);
//   2. else the oldest embryonic entry (kSyn: a SYN seen, no ACK yet);
//   3. else, only if the new flow is not embryonic, the least recently seen entry of the
//      set (established, closing or UDP), counted in evicted_established: when more flows
//      are live than the table holds, the idlest one in the set gives way;
//   4. else the insert is refused (nullptr, counted).
// A SYN flood inserts only embryonic entries, and an embryonic entry can only displace
// another embryonic or an expired one: established flows are never its victims, and the
// flood's entries are bounded by the free ways left beside the live flows (plus the ones it
// evicts from itself). A real client's SYN survives until as many later SYNs land in its own
// set as there are embryonic ways there: at 1M flows, about 1M flood SYNs per way.
//
// Accounting. A slot stays live until find(), insert(), sweep() or erase() frees it, also
// after its timeout: stats().live and live_in() count occupied slots, so a bucket is released
// only once sweep() has reclaimed its expired flows (a conservative delay of one sweep pass).
// Invariant: live = inserted - evicted_embryonic - evicted_established - expired - erased.
//
// Threading: one owner lcore; no locks, no allocation after construction, no exceptions.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "vipfarm/common/net.hpp"
#include "vipfarm/packet/hash.hpp"

namespace vipfarm::flow {

// A flow as the client sent it. tcp_flags and pad are not part of its identity.
struct FlowTuple {
  IpAddr client;  // IPv4 mapped into 128 bits
  IpAddr server;
  std::uint16_t client_port = 0;
  std::uint16_t server_port = 0;
  std::uint8_t proto = 0;      // 6 TCP, 17 UDP, others allowed
  std::uint8_t tcp_flags = 0;  // FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10; 0 for non-TCP
  std::uint8_t pad[2] = {};
};
static_assert(sizeof(FlowTuple) == 40);

// Local to this node (not the cluster-wide bucket hash): no seed, free to change. Each address
// is folded with its own words too, so no single word value zeroes a product.
inline std::uint64_t hash_tuple(const FlowTuple& t) noexcept {
  using packet::mum;
  const std::uint64_t ports = t.client_port | std::uint64_t{t.server_port} << 16 |
                              std::uint64_t{t.proto} << 32;
  const std::uint64_t c =
      mum(t.client.hi ^ 0x243F6A8885A308D3ULL, t.client.lo ^ 0x13198A2E03707344ULL) ^
      t.client.hi ^ t.client.lo;
  const std::uint64_t s =
      mum(t.server.hi ^ 0xA4093822299F31D0ULL, t.server.lo ^ 0x082EFA98EC4E6C89ULL) ^
      t.server.hi ^ t.server.lo;
  return mum(c ^ 0x452821E638D01377ULL, s ^ ports ^ 0xBE5466CF34E90C6CULL);
}

enum class FlowState : std::uint8_t {
  kFree,
  kSyn,  // SYN seen, not established: embryonic
  kEstablished,
  kClosing,  // FIN or RST seen
  kUdp,      // any non-TCP flow: idle timeout only
};

struct FlowTimeouts {  // milliseconds; capped at 2^31 - 1
  std::uint32_t syn = 5'000;
  std::uint32_t established = 3'600'000;
  std::uint32_t closing = 10'000;
  std::uint32_t udp = 30'000;
};

struct FlowStats {
  std::uint64_t inserted = 0;
  std::uint64_t refused = 0;  // insert declined: set full of live flows it may not evict
  std::uint64_t evicted_embryonic = 0;
  std::uint64_t evicted_established = 0;  // any non-embryonic: established, closing, UDP
  std::uint64_t expired = 0;              // freed after their timeout (find, insert, sweep)
  std::uint64_t erased = 0;
  std::uint64_t live = 0;       // occupied slots (expired ones until they are freed)
  std::uint64_t embryonic = 0;  // of which kSyn
};

class alignas(64) FlowTable {
 public:
  // Opaque to callers: reached through find()/insert(), used through touch(), state(),
  // erase(). Valid until the next insert(), sweep() or erase() of this table.
  class Entry {
    friend class FlowTable;
    IpAddr client_;
    IpAddr server_;
    std::uint16_t client_port_;
    std::uint16_t server_port_;
    std::uint8_t proto_;
    FlowState state_;
    std::uint16_t group_;
    std::uint32_t last_seen_ms_;
    std::uint32_t bucket_;
  };

  static constexpr std::uint32_t kWays = 16;

  // capacity: flows the table must hold; groups x buckets: the per-bucket live counters.
  // Allocates everything here (and may throw std::bad_alloc here only).
  FlowTable(std::uint32_t capacity, FlowTimeouts timeouts, std::uint16_t groups,
            std::uint32_t buckets);
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;

  // The set's signature line; call for a whole burst before its first find().
  void prefetch(std::uint64_t hash) const noexcept {
    __builtin_prefetch(&sigs_[set_of(hash)]);
  }

  // The second stage of a burst, once prefetch() has run for all of it: reads the set's
  // signature line (cached by now) and prefetches the entries it matches, normally one.
  void prefetch_entry(std::uint64_t hash) const noexcept {
    const std::uint32_t set = set_of(hash);
    for (std::uint32_t m = match(sigs_[set], signature_of(hash)); m != 0; m &= m - 1) {
      const auto* e = reinterpret_cast<const char*>(&ways_[set].way[std::countr_zero(m)]);
      __builtin_prefetch(e);
      __builtin_prefetch(e + sizeof(Entry) - 1);  // half the entries straddle two lines
    }
  }

  const void* sig_addr(std::uint32_t set) const noexcept { return &sigs_[set]; }
  const void* ent_addr() const noexcept { return ways_; }
  // The live entry of `t`, or nullptr. An expired entry found is freed (counted as expired).
  Entry* find(const FlowTuple& t, std::uint64_t hash, std::uint32_t now_ms) noexcept;

  // A new flow (the caller saw find() == nullptr) in `state`, counted in (group, bucket).
  // nullptr when refused (see the eviction policy above), or without counting when `state`
  // is kFree or (group, bucket) is out of range (a caller's bug, kept harmless).
  Entry* insert(const FlowTuple& t, std::uint64_t hash, FlowState state, std::uint16_t group,
                std::uint32_t bucket, std::uint32_t now_ms) noexcept;

  // A packet of the flow: last-seen = now, and the TCP state machine on its flags:
  //   kSyn + ACK without SYN -> kEstablished; kSyn/kEstablished + FIN or RST -> kClosing.
  // A RST closes rather than erases: segments the client sent before it may still arrive
  // and belong to this node; the closing timeout frees the slot. kClosing and kUdp keep
  // their state (a SYN on a closing flow is the caller's to judge).
  void touch(Entry& e, std::uint8_t tcp_flags, std::uint32_t now_ms) noexcept;

  FlowState state(const Entry& e) const noexcept { return e.state_; }
  void erase(Entry& e) noexcept;

  // Examines up to `max_sets` sets from an internal cursor and frees their expired entries;
  // returns how many it freed. A full pass takes slots() / 16 sets.
  std::uint32_t sweep(std::uint32_t now_ms, std::uint32_t max_sets) noexcept;

  // Occupied slots of (group, bucket); 0 out of range.
  std::uint32_t live_in(std::uint16_t group, std::uint32_t bucket) const noexcept {
    return group < groups_ && bucket < buckets_ ? live_counts_[std::size_t{group} * buckets_ + bucket]
                                                : 0;
  }
  const FlowStats& stats() const noexcept { return stats_; }
  std::size_t memory_bytes() const noexcept;  // everything it allocated
  std::uint32_t capacity() const noexcept { return capacity_; }
  std::uint32_t slots() const noexcept { return set_mask_ * kWays + kWays; }

 private:
  static_assert(sizeof(Entry) == 48);

  struct alignas(32) Signatures {
    std::array<std::uint16_t, kWays> way;
  };
  struct alignas(64) Ways {
    std::array<Entry, kWays> way;
  };

  static constexpr std::uint8_t kFlagFin = 0x01, kFlagSyn = 0x02, kFlagRst = 0x04,
                                kFlagAck = 0x10;

  std::uint32_t set_of(std::uint64_t hash) const noexcept {
    return static_cast<std::uint32_t>(hash) & set_mask_;
  }
  static std::uint16_t signature_of(std::uint64_t hash) noexcept {
    const auto sig = static_cast<std::uint16_t>(hash >> 48);
    return sig == 0 ? 1 : sig;
  }
  // Bit w set where way w's signature equals `sig` (0: the free ways). SSE2 is part of
  // x86-64 itself; the scalar loop (which GCC does not vectorise) keeps other targets building.
  static std::uint32_t match(const Signatures& s, std::uint16_t sig) noexcept {
#if defined(__SSE2__)
    const __m128i needle = _mm_set1_epi16(static_cast<short>(sig));
    const auto* lanes = reinterpret_cast<const __m128i*>(s.way.data());
    const __m128i lo = _mm_cmpeq_epi16(_mm_load_si128(lanes), needle);
    const __m128i hi = _mm_cmpeq_epi16(_mm_load_si128(lanes + 1), needle);
    return static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_packs_epi16(lo, hi)));
#else
    std::uint32_t mask = 0;
    for (std::uint32_t w = 0; w < kWays; ++w) mask |= std::uint32_t{s.way[w] == sig} << w;
    return mask;
#endif
  }
  static bool same_flow(const Entry& e, const FlowTuple& t) noexcept {
    return ((e.client_.hi ^ t.client.hi) | (e.client_.lo ^ t.client.lo) |
            (e.server_.hi ^ t.server.hi) | (e.server_.lo ^ t.server.lo) |
            ((e.client_port_ ^ t.client_port) | (e.server_port_ ^ t.server_port) << 16 |
             std::uint64_t(e.proto_ ^ t.proto) << 32)) == 0;
  }
  static std::int32_t age(const Entry& e, std::uint32_t now_ms) noexcept {
    return static_cast<std::int32_t>(now_ms - e.last_seen_ms_);
  }
  bool expired(const Entry& e, std::uint32_t now_ms) const noexcept {
    return age(e, now_ms) > timeout_ms_[static_cast<std::size_t>(e.state_)];
  }
  // Empties a way and takes it out of every live count (the caller counts why).
  void release(std::uint32_t set, std::uint32_t way) noexcept;
  // A way of a full set for a new flow in `state`, freed; kWays when none may go.
  std::uint32_t make_room(std::uint32_t set, FlowState state, std::uint32_t now_ms) noexcept;

  // Hot: read on every lookup.
  Signatures* sigs_;
  Ways* ways_;
  std::uint32_t set_mask_;
  std::array<std::int32_t, 5> timeout_ms_;  // by FlowState; kFree never expires
  FlowStats stats_;
  // Cold.
  std::uint32_t* live_counts_;
  std::uint32_t buckets_;
  std::uint16_t groups_;
  std::uint32_t capacity_;
  std::uint32_t cursor_ = 0;
  std::unique_ptr<Signatures[]> sig_storage_;
  std::unique_ptr<Ways[]> way_storage_;
  std::vector<std::uint32_t> live_storage_;
};

inline FlowTable::Entry* FlowTable::find(const FlowTuple& t, std::uint64_t hash,
                                         std::uint32_t now_ms) noexcept {
  const std::uint32_t set = set_of(hash);
  for (std::uint32_t m = match(sigs_[set], signature_of(hash)); m != 0; m &= m - 1) {
    const auto way = static_cast<std::uint32_t>(std::countr_zero(m));
    Entry& e = ways_[set].way[way];
    if (same_flow(e, t)) {
      if (expired(e, now_ms)) [[unlikely]] {
        release(set, way);
        ++stats_.expired;
        return nullptr;
      }
      return &e;
    }
  }
  return nullptr;
}

inline void FlowTable::touch(Entry& e, std::uint8_t tcp_flags, std::uint32_t now_ms) noexcept {
  e.last_seen_ms_ = now_ms;
  if (e.state_ != FlowState::kSyn && e.state_ != FlowState::kEstablished) return;
  if ((tcp_flags & (kFlagFin | kFlagRst)) != 0) {
    stats_.embryonic -= e.state_ == FlowState::kSyn;
    e.state_ = FlowState::kClosing;
  } else if (e.state_ == FlowState::kSyn && (tcp_flags & (kFlagSyn | kFlagAck)) == kFlagAck) {
    --stats_.embryonic;
    e.state_ = FlowState::kEstablished;
  }
}

}  // namespace vipfarm::flow
