// The directed VIPs' requester table (requester_table.hpp): admission rate, standing,
// displacement order and the per-MAC cap on the owner's side; tagged confirmations and
// sequence-locked reads for the other threads.
#include "vipfarm/flow/requester_table.hpp"

#include <algorithm>
#include <limits>

namespace vipfarm::flow {

namespace {

constexpr std::uint64_t kMilli = 1000;  // token units per admission

// The 64-bit finaliser of MurmurHash3: every bit of the MAC moves the set index.
std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

std::uint64_t key_word(const RequesterKey& key) noexcept { return key.mac48 << 16 | key.vip; }

std::uint32_t second_of(std::uint64_t now_ms) noexcept {
  return static_cast<std::uint32_t>(now_ms / 1000 + 1);
}

// Victim order: lower standing first, then least recently seen.
struct Rank {
  Standing standing = Standing::kConfirmed;
  std::uint64_t seen = std::numeric_limits<std::uint64_t>::max();
  bool operator<(const Rank& o) const noexcept {
    return standing != o.standing ? standing < o.standing : seen < o.seen;
  }
};

}  // namespace

RequesterTable::RequesterTable(std::uint64_t seed, RequesterLimits limits)
    : seed_(seed),
      limits_(limits),
      sets_(std::make_unique<Set[]>(kSets)),
      tokens_(std::uint64_t{limits.burst} * kMilli) {}

std::size_t RequesterTable::set_of(std::uint64_t mac48) const noexcept {
  return static_cast<std::size_t>(mix(mac48 ^ seed_) >> (64 - 7));
}
static_assert(RequesterTable::kSets == 1 << 7);

Standing RequesterTable::effective(const Set& s, std::size_t way, std::uint32_t seq,
                                   std::uint64_t now_ms) const noexcept {
  const std::uint64_t c = s.confirm[way].load(std::memory_order_relaxed);
  const auto last = static_cast<std::uint32_t>(c);
  if ((c >> 32) == seq && last != 0) {
    const std::uint64_t age_s = second_of(now_ms) - std::min(last, second_of(now_ms));
    return age_s * 1000 < limits_.confirmed_for_ms ? Standing::kConfirmed : Standing::kAdmitted;
  }
  return static_cast<Standing>(s.standing[way].load(std::memory_order_relaxed));
}

bool RequesterTable::expired(Standing standing, std::uint64_t seen,
                             std::uint64_t now_ms) const noexcept {
  return standing == Standing::kExcess && now_ms > seen && now_ms - seen > limits_.excess_ttl_ms;
}

bool RequesterTable::admissible(std::uint64_t now_ms) noexcept {
  const std::uint64_t cap = std::uint64_t{limits_.burst} * kMilli;
  if (!started_) {
    started_ = true;
    refilled_ms_ = now_ms;
  } else if (now_ms > refilled_ms_) {
    const std::uint64_t elapsed = std::min<std::uint64_t>(now_ms - refilled_ms_, cap);
    tokens_ = std::min(cap, tokens_ + elapsed * limits_.rate_per_s);
    refilled_ms_ = now_ms;
  }
  return tokens_ >= kMilli;
}

void RequesterTable::install(Set& s, std::size_t way, const RequesterKey& key, Standing standing,
                             std::uint64_t now_ms) noexcept {
  const std::uint32_t q = s.seq[way].load(std::memory_order_relaxed);
  s.seq[way].store(q + 1, std::memory_order_relaxed);
  // Readers that saw the old even value see the odd one (or a changed one) after reading any
  // field written below: they retry.
  std::atomic_thread_fence(std::memory_order_release);
  s.key[way].store(key_word(key), std::memory_order_relaxed);
  s.hi[way].store(key.address.hi, std::memory_order_relaxed);
  s.lo[way].store(key.address.lo, std::memory_order_relaxed);
  s.seen[way].store(now_ms, std::memory_order_relaxed);
  s.standing[way].store(static_cast<std::uint8_t>(standing), std::memory_order_relaxed);
  // A confirmer tagged with q fails its compare-and-swap from here on; one that succeeded
  // before is overwritten: a confirmation never passes to the slot's next requester.
  s.confirm[way].store(std::uint64_t{q + 2} << 32, std::memory_order_relaxed);
  s.seq[way].store(q + 2, std::memory_order_release);  // publishes the fields above
}

Remembered RequesterTable::remember(const RequesterKey& key, std::uint64_t now_ms) noexcept {
  Remembered out;
  if (key.mac48 == 0 || (key.mac48 >> 48) != 0) return out;
  Set& s = sets_[set_of(key.mac48)];
  const std::uint64_t word = key_word(key);
  constexpr std::size_t kNone = kWays;
  std::size_t free_way = kNone, victim = kNone, own_victim = kNone;
  Rank victim_rank, own_rank;
  unsigned same_mac = 0;
  for (std::size_t w = 0; w < kWays; ++w) {
    // The owner is the only writer of everything but `confirm`: relaxed reads are exact.
    const std::uint64_t k = s.key[w].load(std::memory_order_relaxed);
    const std::uint64_t seen = s.seen[w].load(std::memory_order_relaxed);
    const std::uint32_t q = s.seq[w].load(std::memory_order_relaxed);
    if (k == 0) {
      if (free_way == kNone) free_way = w;
      continue;
    }
    const Standing standing = effective(s, w, q, now_ms);
    if (k == word && s.hi[w].load(std::memory_order_relaxed) == key.address.hi &&
        s.lo[w].load(std::memory_order_relaxed) == key.address.lo) {
      // Also an expired entry: a requester is never in two slots.
      out.admission = Admission::kKnown;
      s.seen[w].store(now_ms, std::memory_order_relaxed);
      // Asking again while the rate allows: a flood's survivor is a client after all.
      if (standing == Standing::kExcess && admissible(now_ms)) {
        tokens_ -= kMilli;
        s.standing[w].store(static_cast<std::uint8_t>(Standing::kAdmitted),
                            std::memory_order_relaxed);
      }
      return out;
    }
    if (expired(standing, seen, now_ms)) {
      if (free_way == kNone) free_way = w;
      continue;
    }
    const Rank rank{standing, seen};
    if ((k >> 16) == key.mac48) {
      ++same_mac;
      if (rank < own_rank) {
        own_rank = rank;
        own_victim = w;
      }
    }
    if (rank < victim_rank) {
      victim_rank = rank;
      victim = w;
    }
  }
  if (same_mac >= limits_.per_mac) {
    // At its cap, a MAC rotates through its own slots at their standing, spending no rate.
    if (own_rank.standing == Standing::kConfirmed) return out;
    install(s, own_victim, key, own_rank.standing, now_ms);
    out.admission = Admission::kCapped;
    return out;
  }
  const bool admit = admissible(now_ms);
  std::size_t way = free_way;
  if (way == kNone) {
    const bool may = victim_rank.standing == Standing::kExcess ||
                     (victim_rank.standing == Standing::kAdmitted && admit);
    if (!may) return out;  // refused
    way = victim;
    out.displaced = true;
    out.victim = victim_rank.standing;
  }
  if (admit) tokens_ -= kMilli;
  install(s, way, key, admit ? Standing::kAdmitted : Standing::kExcess, now_ms);
  out.admission = admit ? Admission::kAdmitted : Admission::kExcess;
  return out;
}

bool RequesterTable::confirm(const RequesterKey& key, std::uint64_t now_ms) noexcept {
  if (key.mac48 == 0 || (key.mac48 >> 48) != 0) return false;
  Set& s = sets_[set_of(key.mac48)];
  const std::uint64_t word = key_word(key);
  for (std::size_t w = 0; w < kWays; ++w) {
    if (s.key[w].load(std::memory_order_relaxed) != word) continue;
    // A consistent view of the slot under the sequence lock; the compare-and-swap below then
    // lands only while the slot still holds that requester (its tag is the sequence).
    const std::uint32_t q = s.seq[w].load(std::memory_order_acquire);
    if ((q & 1) != 0) continue;
    const bool same = s.key[w].load(std::memory_order_relaxed) == word &&
                      s.hi[w].load(std::memory_order_relaxed) == key.address.hi &&
                      s.lo[w].load(std::memory_order_relaxed) == key.address.lo;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (!same || s.seq[w].load(std::memory_order_relaxed) != q) continue;
    std::uint64_t c = s.confirm[w].load(std::memory_order_relaxed);
    if ((c >> 32) != q) return false;
    const std::uint32_t now_s = second_of(now_ms);
    if (static_cast<std::uint32_t>(c) == now_s) return false;
    // Relaxed: the word carries its own tag; nothing else is published with it.
    return s.confirm[w].compare_exchange_strong(c, std::uint64_t{q} << 32 | now_s,
                                                std::memory_order_relaxed);
  }
  return false;
}

std::vector<RequesterTable::Entry> RequesterTable::entries(std::uint64_t now_ms) const {
  std::vector<Entry> out;
  for (std::size_t i = 0; i < kSets; ++i) {
    const Set& s = sets_[i];
    for (std::size_t w = 0; w < kWays; ++w) {
      // The owner finishes a slot in a few stores: a handful of retries always suffices; a
      // slot still changing after them is skipped (it holds a requester just seen).
      for (int attempt = 0; attempt < 64; ++attempt) {
        const std::uint32_t q = s.seq[w].load(std::memory_order_acquire);
        if ((q & 1) != 0) continue;
        const std::uint64_t k = s.key[w].load(std::memory_order_relaxed);
        Entry e{};
        e.key.address.hi = s.hi[w].load(std::memory_order_relaxed);
        e.key.address.lo = s.lo[w].load(std::memory_order_relaxed);
        e.seen_ms = s.seen[w].load(std::memory_order_relaxed);
        e.standing = effective(s, w, q, now_ms);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (s.seq[w].load(std::memory_order_relaxed) != q) continue;
        if (k != 0 && !expired(e.standing, e.seen_ms, now_ms)) {
          e.key.mac48 = k >> 16;
          e.key.vip = static_cast<std::uint16_t>(k);
          out.push_back(e);
        }
        break;
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    return a.standing != b.standing ? a.standing > b.standing : a.seen_ms > b.seen_ms;
  });
  return out;
}

}  // namespace vipfarm::flow
