// The flow table's cold paths: sizing and allocation, insertion with eviction, erase, sweep
// (the header owns the layout and the policy's rationale).
#include "vipfarm/flow/flow_table.hpp"

#include <algorithm>
#include <limits>
#include <memory>
#include <new>

#include <sys/mman.h>

namespace vipfarm::flow {

namespace {

constexpr std::int32_t cap_timeout(std::uint32_t ms) noexcept {
  return static_cast<std::int32_t>(
      std::min<std::uint32_t>(ms, std::numeric_limits<std::int32_t>::max()));
}

// At least two slots per flow, in a power of two of sets.
std::uint32_t set_count(std::uint32_t capacity) noexcept {
  const std::uint64_t sets =
      (std::uint64_t{capacity} * 2 + FlowTable::kWays - 1) / FlowTable::kWays;
  return static_cast<std::uint32_t>(std::bit_ceil(std::max<std::uint64_t>(sets, 1)));
}

constexpr std::size_t kHugePage = std::size_t{2} << 20;

}  // namespace

void FlowTable::AlignedDelete::operator()(void* p) const noexcept {
  ::operator delete (p, std::align_val_t{align});
}

// Zeroed (free) slots. Arrays of 2 MiB and more start on a 2 MiB boundary and ask for
// transparent huge pages: with 4 KiB pages every lookup at 1M flows also misses the TLB, and
// huge pages measured 10-20% faster there. Where THP is off the hint does nothing.
template <typename T>
std::unique_ptr<T, FlowTable::AlignedDelete> FlowTable::allocate(std::size_t count) {
  const std::size_t bytes = count * sizeof(T);
  const std::size_t align = bytes >= kHugePage ? kHugePage : alignof(T);
  void* raw = ::operator new (bytes, std::align_val_t{align});
  if (align == kHugePage) static_cast<void>(::madvise(raw, bytes, MADV_HUGEPAGE));
  std::unique_ptr<T, AlignedDelete> owned(static_cast<T*>(raw), AlignedDelete{align});
  std::uninitialized_value_construct_n(owned.get(), count);
  return owned;
}

FlowTable::FlowTable(std::uint32_t capacity, FlowTimeouts timeouts, std::uint16_t groups,
                     std::uint32_t buckets)
    : set_mask_(set_count(capacity) - 1),
      timeout_ms_{},
      stats_{},
      buckets_(buckets),
      groups_(groups),
      capacity_(capacity),
      sig_storage_(allocate<Signatures>(std::size_t{set_mask_} + 1)),
      way_storage_(allocate<Ways>(std::size_t{set_mask_} + 1)),
      live_storage_(std::size_t{groups} * buckets) {
  sigs_ = sig_storage_.get();
  ways_ = way_storage_.get();
  live_counts_ = live_storage_.data();
  set_timeouts(timeouts);
}

void FlowTable::set_timeouts(FlowTimeouts timeouts) noexcept {
  timeouts_ = timeouts;
  timeout_ms_ = {std::numeric_limits<std::int32_t>::max(),
                 cap_timeout(timeouts.syn),
                 cap_timeout(timeouts.established),
                 cap_timeout(timeouts.closing),
                 cap_timeout(timeouts.udp),
                 cap_timeout(timeouts.syn)};
}

std::size_t FlowTable::memory_bytes() const noexcept {
  return (std::size_t{set_mask_} + 1) * (sizeof(Signatures) + sizeof(Ways)) +
         live_storage_.size() * sizeof(std::uint32_t);
}

void FlowTable::release(std::uint32_t set, std::uint32_t way) noexcept {
  Entry& e = ways_[set].way[way];
  sigs_[set].way[way] = 0;
  --live_counts_[std::size_t{e.group_} * buckets_ + e.bucket_];
  --stats_.live;
  stats_.embryonic -= e.state_ == FlowState::kSyn;
  e.state_ = FlowState::kFree;
}

std::uint32_t FlowTable::make_room(std::uint32_t set, FlowState state,
                                   std::uint32_t now_ms) noexcept {
  std::uint32_t oldest_syn = kWays, oldest_other = kWays;
  std::int32_t syn_age = std::numeric_limits<std::int32_t>::min();
  std::int32_t other_age = std::numeric_limits<std::int32_t>::min();
  for (std::uint32_t w = 0; w < kWays; ++w) {
    const Entry& e = ways_[set].way[w];
    if (expired(e, now_ms)) {
      release(set, w);
      ++stats_.expired;
      return w;
    }
    const std::int32_t a = age(e, now_ms);
    if (e.state_ == FlowState::kSyn || e.state_ == FlowState::kOneWay) {
      if (a > syn_age) syn_age = a, oldest_syn = w;
    } else if (a > other_age) {
      other_age = a, oldest_other = w;
    }
  }
  if (oldest_syn != kWays) {
    release(set, oldest_syn);
    ++stats_.evicted_embryonic;
    return oldest_syn;
  }
  if (state != FlowState::kSyn && state != FlowState::kOneWay) {
    release(set, oldest_other);
    ++stats_.evicted_established;
    return oldest_other;
  }
  return kWays;
}

FlowTable::Entry* FlowTable::insert(const FlowTuple& t, std::uint64_t hash, FlowState state,
                                    std::uint16_t group, std::uint32_t bucket,
                                    std::uint32_t now_ms) noexcept {
  if (state == FlowState::kFree || group >= groups_ || bucket >= buckets_) return nullptr;
  const std::uint32_t set = set_of(hash);
  const std::uint32_t free = match(sigs_[set], 0);
  const std::uint32_t way = free != 0 ? static_cast<std::uint32_t>(std::countr_zero(free))
                                      : make_room(set, state, now_ms);
  if (way == kWays) {
    ++stats_.refused;
    return nullptr;
  }
  Entry& e = ways_[set].way[way];
  e.client_ = t.client;
  e.server_ = t.server;
  e.client_port_ = t.client_port;
  e.server_port_ = t.server_port;
  e.proto_ = t.proto;
  e.state_ = state;
  e.group_ = group;
  e.last_seen_ms_ = now_ms;
  e.bucket_ = bucket;
  sigs_[set].way[way] = signature_of(hash);
  ++live_counts_[std::size_t{group} * buckets_ + bucket];
  ++stats_.inserted;
  ++stats_.live;
  stats_.embryonic += state == FlowState::kSyn;
  return &e;
}

void FlowTable::erase(Entry& e) noexcept {
  // Ways are 64-byte aligned arrays of 16 entries: the address gives the set and the way.
  const auto offset = static_cast<std::size_t>(reinterpret_cast<const std::byte*>(&e) -
                                               reinterpret_cast<const std::byte*>(ways_));
  const auto set = static_cast<std::uint32_t>(offset / sizeof(Ways));
  const auto way = static_cast<std::uint32_t>(offset % sizeof(Ways) / sizeof(Entry));
  if (sigs_[set].way[way] == 0) return;  // already free: a stale pointer, kept harmless
  release(set, way);
  ++stats_.erased;
}

std::uint32_t FlowTable::sweep(std::uint32_t now_ms, std::uint32_t max_sets) noexcept {
  std::uint32_t freed = 0;
  const std::uint32_t sets = std::min(max_sets, set_mask_ + 1);
  for (std::uint32_t n = 0; n < sets; ++n) {
    const std::uint32_t set = cursor_;
    cursor_ = (cursor_ + 1) & set_mask_;
    for (std::uint32_t m = ~match(sigs_[set], 0) & 0xFFFF; m != 0; m &= m - 1) {
      const auto way = static_cast<std::uint32_t>(std::countr_zero(m));
      if (expired(ways_[set].way[way], now_ms)) {
        release(set, way);
        ++freed;
      }
    }
  }
  stats_.expired += freed;
  return freed;
}

}  // namespace vipfarm::flow
