// The per-worker flow table (issue 5, docs/handoff.md): the flows one lcore accepted, with
// their TCP state and idle timeouts, so a bucket can be handed off without breaking them.
//
// Layout. Sets of 16 ways; the set count is a power of two with at least 2 slots per flow of
// `capacity` (load <= 50% at capacity, where a set of 16 overflows with probability ~0.4%).
// Two arrays, allocated once at construction (64-byte aligned; from 2 MiB on, 2 MiB aligned
// and advised to transparent huge pages, so lookups at 1M flows do not also miss the TLB):
//   - signatures: 16 x 16-bit per set (32 bytes, half a cache line; 0 = free way). A lookup
//     compares the 16 signatures of its set at once (SSE2) and reads only the entries whose
//     signature matches (a false match costs one entry read in 4096 lookups at 16 ways).
//   - entries: 48 bytes each, 16 per set (768 bytes, 12 cache lines): the 37 meaningful
//     bytes of the tuple in its own layout, state, group, last-seen ms and bucket. No
//     pointers, no chains. An entry is read with three aligned 16-byte loads.
// Set index: the hash's low bits; signature: its top 16 bits (never 0). A lookup touches two
// or three lines: the signatures' and the entry's (half the entries straddle two lines).
// Memory per flow of capacity: 2 x (48 + 2) = 100 bytes when 2 x capacity is a power of two
// (at most 200), plus 4 bytes per (group, bucket) counter.
//
// Use per burst, as the worker does: hash_tuple() and prefetch() every packet, then find()
// and touch() (or insert()) each. At 1M flows the first loop starts all the signature misses
// at once and the second overlaps the entry misses of consecutive packets. (A third stage
// prefetching the matched entries, or prefetching a set's first entry lines with its
// signatures, measured no faster: the core's outstanding misses are the limit.)
//
// Time. `now_ms` is a free-running uint32 millisecond clock (it wraps every 49.7 days); an
// entry's age is the signed 32-bit difference now - last_seen, so a wrap is harmless and a
// timestamp slightly ahead of `now` reads as age 0. Timeouts are capped at 2^31 - 1 ms. An
// entry idle for more than 2^31 ms would read as young again: sweep() visits every set far
// more often than that, so it never happens to a table that is swept.
//
// Unconfirmed entries: kSyn (a SYN seen, no ACK yet) and kOneWay (the first packet of a flow
// this node never saw open: a TCP segment without SYN, a first datagram). Anyone can forge
// those from random sources; a flow is confirmed (kEstablished, kUdp) by what a forger
// cannot cheaply repeat per tuple: the ACK that completes its handshake, or a second
// packet. (Replies leave through the kernel, so the worker never sees a flow both ways.)
// Eviction, only when a new flow's set has no free way:
//   1. an expired entry (counted as expired);
//   2. else the least recently seen unconfirmed entry (counted in evicted_embryonic);
//   3. else, only if the new flow is itself confirmed (a caller that knows, the tests), the
//      least recently seen entry of the set, counted in evicted_established;
//   4. else the insert is refused (nullptr, counted).
// A flood of SYNs or of spoofed ACKs and datagrams inserts only unconfirmed entries, which
// can only displace unconfirmed or expired ones: confirmed flows are never its victims, the
// flood's entries are bounded by the free ways left beside the live flows, and it evicts only
// unconfirmed entries (oldest first). One-way entries expire after the SYN timeout, so they
// hold a given-up bucket (live_in) seconds, not the established timeout. A real client's SYN
// survives until as many later SYNs land in its set as the set has embryonic ways: with 2^17 sets
// (1M capacity) and ~8 free ways a set, about a million flood SYNs, 100 ms of a 10 Mpps flood.
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
#include <cstring>
#include <memory>
#include <vector>

#include <emmintrin.h>

#include "vipfarm/common/net.hpp"
#include "vipfarm/packet/hash.hpp"

namespace vipfarm::flow {

// A flow as the client sent it (a gateway's: its endpoints in the order the rule's key reads
// them, so both directions are one flow). tcp_flags and pad are not part of its identity.
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

// Local to this node (not the cluster-wide bucket hash): no seed, free to change. Each address's
// product is xored with its words, so a word equal to its constant (which zeroes the product)
// does not make the other word irrelevant.
inline std::uint64_t hash_tuple(const FlowTuple& t) noexcept {
  using packet::mum;
  const std::uint64_t ports =
      t.client_port | std::uint64_t{t.server_port} << 16 | std::uint64_t{t.proto} << 32;
  const std::uint64_t c =
      mum(t.client.hi ^ 0x243F6A8885A308D3ULL, t.client.lo ^ 0x13198A2E03707344ULL) ^ t.client.hi ^
      t.client.lo;
  const std::uint64_t s =
      mum(t.server.hi ^ 0xA4093822299F31D0ULL, t.server.lo ^ 0x082EFA98EC4E6C89ULL) ^ t.server.hi ^
      t.server.lo;
  return mum(c ^ 0x452821E638D01377ULL, s ^ ports ^ 0xBE5466CF34E90C6CULL);
}

enum class FlowState : std::uint8_t {
  kFree,
  kSyn,  // SYN seen, not established: embryonic
  kEstablished,
  kClosing,  // FIN or RST seen
  kUdp,      // any non-TCP flow seen twice: idle timeout only
  kOneWay,   // one packet of a flow never seen opening (unconfirmed; the SYN timeout)
};

struct FlowTimeouts {  // milliseconds; capped at 2^31 - 1
  std::uint32_t syn = 5'000;
  std::uint32_t established = 3'600'000;
  std::uint32_t closing = 10'000;
  std::uint32_t udp = 30'000;
  friend bool operator==(const FlowTimeouts&, const FlowTimeouts&) = default;
};

struct FlowStats {
  std::uint64_t inserted = 0;
  std::uint64_t refused = 0;            // insert declined: set full of live flows it may not evict
  std::uint64_t evicted_embryonic = 0;  // unconfirmed: embryonic (kSyn) or one-way
  std::uint64_t evicted_established = 0;  // confirmed, only for a confirmed insert
  std::uint64_t expired = 0;              // freed after their timeout (find, insert, sweep)
  std::uint64_t erased = 0;
  std::uint64_t live = 0;       // occupied slots (expired ones until they are freed)
  std::uint64_t embryonic = 0;  // of which kSyn
};

class alignas(64) FlowTable {
 public:
  // Opaque to callers: reached through find()/insert(), used through touch(), state(),
  // erase(). Valid until the table's next find(), insert(), sweep() or erase().
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

  // New timeouts (a reload): they apply to every entry, tracked ones included, from the
  // next lookup or sweep.
  void set_timeouts(FlowTimeouts timeouts) noexcept;
  const FlowTimeouts& timeouts() const noexcept { return timeouts_; }

  // The set's signature line: for a whole burst before its first find().
  void prefetch(std::uint64_t hash) const noexcept { __builtin_prefetch(&sigs_[set_of(hash)]); }

  // The live entry of `t`, or nullptr. An expired entry found is freed (counted as expired).
  Entry* find(const FlowTuple& t, std::uint64_t hash, std::uint32_t now_ms) noexcept;

  // A new flow (the caller saw find() == nullptr) in `state`, counted in (group, bucket).
  // nullptr when refused (see the eviction policy above), or without counting when `state`
  // is kFree or (group, bucket) is out of range (a caller's bug, kept harmless).
  Entry* insert(const FlowTuple& t, std::uint64_t hash, FlowState state, std::uint16_t group,
                std::uint32_t bucket, std::uint32_t now_ms) noexcept;

  // A packet of the flow: last-seen = now, and the TCP state machine on its flags:
  //   kSyn + ACK without SYN -> kEstablished; kSyn/kEstablished + FIN or RST -> kClosing;
  //   kOneWay: a second packet confirms it (TCP: kEstablished, or kClosing on FIN or RST;
  //   other protocols: kUdp).
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
    return group < groups_ && bucket < buckets_
               ? live_counts_[std::size_t{group} * buckets_ + bucket]
               : 0;
  }
  const FlowStats& stats() const noexcept { return stats_; }
  std::size_t memory_bytes() const noexcept;  // everything it allocated
  std::uint32_t capacity() const noexcept { return capacity_; }
  // Entries in all sets: about 2 x capacity.
  std::uint32_t slots() const noexcept { return set_mask_ * kWays + kWays; }

 private:
  static_assert(sizeof(Entry) == 48);

  struct alignas(32) Signatures {
    std::array<std::uint16_t, kWays> way;
  };
  struct alignas(64) Ways {
    std::array<Entry, kWays> way;
  };

  static constexpr std::uint8_t kFlagFin = 0x01, kFlagSyn = 0x02, kFlagRst = 0x04, kFlagAck = 0x10;

  std::uint32_t set_of(std::uint64_t hash) const noexcept {
    return static_cast<std::uint32_t>(hash) & set_mask_;
  }
  static std::uint16_t signature_of(std::uint64_t hash) noexcept {
    const auto sig = static_cast<std::uint16_t>(hash >> 48);
    return sig == 0 ? 1 : sig;
  }
  // Bit w set where way w's signature equals `sig` (0: the free ways). SSE2 intrinsics (the
  // build is x86-64 only): GCC does not vectorise the scalar loop, which is 100 instructions.
  static std::uint32_t match(const Signatures& s, std::uint16_t sig) noexcept {
    const __m128i needle = _mm_set1_epi16(static_cast<short>(sig));
    const auto* lanes = reinterpret_cast<const __m128i*>(s.way.data());
    const __m128i lo = _mm_cmpeq_epi16(_mm_load_si128(lanes), needle);
    const __m128i hi = _mm_cmpeq_epi16(_mm_load_si128(lanes + 1), needle);
    return static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_packs_epi16(lo, hi)));
  }
  enum class Probe : std::uint8_t { kOther, kLive, kExpired };
  // Whether `e` holds `t`, and if so whether it has expired, from three aligned 16-byte loads
  // of the entry. Every load of it waits on the same cache miss and holds a load-buffer slot
  // meanwhile: reading it field by field (9 loads) took 76 instead of 51 ns/packet at 1M flows.
  Probe probe(const Entry& e, const FlowTuple& t, std::uint32_t now_ms) const noexcept {
    static_assert(offsetof(FlowTuple, client_port) == 32 && offsetof(Entry, client_port_) == 32 &&
                  offsetof(Entry, last_seen_ms_) == 40);
    const auto* pe = reinterpret_cast<const __m128i*>(&e);
    const auto* pt = reinterpret_cast<const __m128i*>(&t);
    const __m128i addresses =
        _mm_or_si128(_mm_xor_si128(_mm_load_si128(pe), _mm_loadu_si128(pt)),
                     _mm_xor_si128(_mm_load_si128(pe + 1), _mm_loadu_si128(pt + 1)));
    const __m128i rest = _mm_load_si128(pe + 2);  // ports, proto, state, group | last seen
    const auto ports = static_cast<std::uint64_t>(_mm_cvtsi128_si64(rest));
    std::uint64_t want;
    std::memcpy(&want, &t.client_port, sizeof want);
    constexpr std::uint64_t kPortsProto = 0xFF'FFFF'FFFF;  // little-endian: bytes 32..36
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(addresses, _mm_setzero_si128())) != 0xFFFF ||
        ((ports ^ want) & kPortsProto) != 0) {
      return Probe::kOther;
    }
    const auto last_seen = static_cast<std::uint32_t>(_mm_cvtsi128_si32(_mm_srli_si128(rest, 8)));
    const auto state = static_cast<std::size_t>(ports >> 40 & 0xFF);
    return static_cast<std::int32_t>(now_ms - last_seen) > timeout_ms_[state] ? Probe::kExpired
                                                                              : Probe::kLive;
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

  struct AlignedDelete {
    std::size_t align;
    void operator()(void* p) const noexcept;
  };
  template <typename T>
  static std::unique_ptr<T, AlignedDelete> allocate(std::size_t count);

  // Hot: read on every lookup (the arrays' addresses again, beside the mask).
  Signatures* sigs_;
  Ways* ways_;
  std::uint32_t set_mask_;
  std::array<std::int32_t, 6> timeout_ms_;  // by FlowState; kFree never expires
  FlowStats stats_;
  // Cold.
  FlowTimeouts timeouts_;  // as given (timeout_ms_ holds them for the lookups)
  std::uint32_t* live_counts_;
  std::uint32_t buckets_;
  std::uint16_t groups_;
  std::uint32_t capacity_;
  std::uint32_t cursor_ = 0;  // sweep()'s next set
  std::unique_ptr<Signatures, AlignedDelete> sig_storage_;
  std::unique_ptr<Ways, AlignedDelete> way_storage_;
  std::vector<std::uint32_t> live_storage_;
};

inline FlowTable::Entry* FlowTable::find(const FlowTuple& t, std::uint64_t hash,
                                         std::uint32_t now_ms) noexcept {
  const std::uint32_t set = set_of(hash);
  for (std::uint32_t m = match(sigs_[set], signature_of(hash)); m != 0; m &= m - 1) {
    const auto way = static_cast<std::uint32_t>(std::countr_zero(m));
    Entry& e = ways_[set].way[way];
    const Probe p = probe(e, t, now_ms);
    if (p == Probe::kLive) [[likely]] {
      return &e;
    }
    if (p == Probe::kExpired) {
      release(set, way);
      ++stats_.expired;
      return nullptr;
    }
  }
  return nullptr;
}

inline void FlowTable::touch(Entry& e, std::uint8_t tcp_flags, std::uint32_t now_ms) noexcept {
  e.last_seen_ms_ = now_ms;
  if (e.state_ == FlowState::kOneWay) {
    e.state_ = e.proto_ != 6                              ? FlowState::kUdp
               : (tcp_flags & (kFlagFin | kFlagRst)) != 0 ? FlowState::kClosing
                                                          : FlowState::kEstablished;
    return;
  }
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
