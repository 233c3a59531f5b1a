// Bucket assignment by recursive capacitated rendezvous: the scoring hash, the capacity
// rules per level and the deferred-acceptance matching. docs/assignment.md explains why.
#include "vipfarm/assignment/assignment.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cstdint>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

namespace vipfarm::assignment {
namespace {

// Every owner decision below is integer arithmetic on these values, so the result is the
// same on every CPU, compiler and version that keeps these constants and the mixer.
constexpr std::uint64_t kBucketMul = 0x9E3779B97F4A7C15;  // odd: b -> b*K is a bijection
constexpr std::uint64_t kNodeMul = 0xD6E8FEB86659FD93;    // odd: n -> n*K is a bijection

// The splitmix64 finaliser. It is a bijection on 64 bits, which is what makes hash ties
// impossible (see pair_hash()).
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9;
  x ^= x >> 27;
  x *= 0x94D049BB133111EB;
  x ^= x >> 31;
  return x;
}

// Per-bucket half of pair_hash(), computed once per bucket and level.
constexpr std::uint64_t bucket_key(std::uint64_t seed, BucketId bucket) noexcept {
  return mix64(seed ^ (std::uint64_t{bucket} * kBucketMul));
}

// pair_hash(b, n) = mix64(mix64(seed ^ b*kBucketMul) ^ n*kNodeMul). For one bucket,
// distinct nodes give distinct hashes; for one node, distinct buckets give distinct hashes
// (both arguments pass through bijections only). A node ranks buckets by this hash.
constexpr std::uint64_t pair_hash(std::uint64_t key, std::uint64_t node_term) noexcept {
  return mix64(key ^ node_term);
}

// log2(1 + i/256) for i = 0..256 in Q32, computed bit by bit from a Q30 mantissa at compile
// time (square; a result >= 2 means the next bit is 1). The last few bits carry rounding
// noise; what matters is that the table is exact integers, the same everywhere, and
// increasing (checked below).
constexpr std::array<std::uint64_t, 257> kLog2Table = [] {
  std::array<std::uint64_t, 257> table{};
  for (std::uint64_t i = 0; i <= 256; ++i) {
    std::uint64_t y = (std::uint64_t{1} << 30) + (i << 22);
    std::uint64_t fraction = 0;
    for (int b = 31; b >= 0; --b) {
      y = (y * y) >> 30;
      if (y >= (std::uint64_t{2} << 30)) {
        y >>= 1;
        fraction |= std::uint64_t{1} << b;
      }
    }
    table[i] = fraction;
  }
  return table;
}();
static_assert(std::is_sorted(kLog2Table.begin(), kLog2Table.end()) &&
              std::adjacent_find(kLog2Table.begin(), kLog2Table.end()) == kLog2Table.end());

// -log2(u) in Q32 for u = (top 53 bits of h, plus 1) / 2^53, in (0, 1]: the table above with
// linear interpolation on the next 24 mantissa bits (error below 1e-5). Non-increasing in h.
constexpr std::uint64_t neg_log2(std::uint64_t h) noexcept {
  const std::uint64_t x = (h >> 11) + 1;  // 1 .. 2^53
  const int zeros = std::countl_zero(x);
  const std::uint64_t mantissa = x << zeros;  // leading 1 at bit 63
  const std::uint64_t index = (mantissa >> 55) & 0xFF;
  const std::uint64_t between = (mantissa >> 31) & 0xFFFFFF;
  const std::uint64_t fraction =
      kLog2Table[index] + (((kLog2Table[index + 1] - kLog2Table[index]) * between) >> 24);
  const auto exponent = static_cast<std::uint64_t>(63 - zeros);
  return (std::uint64_t{53} << 32) - ((exponent << 32) + fraction);
}

// Ring times are products E * reciprocal with E = neg_log2(h) / 2^8 < 53 * 2^24 < 2^30 and
// reciprocal = 2^34 / weight: below 2^64. Weights are first scaled below 2^20 (the same
// shift for every node) so that the reciprocal keeps at least 14 significant bits.
constexpr int kRingWeightBits = 20;
constexpr int kRingReciprocalBits = 34;

// The time at which node n's exponential clock of rate weight(n) rings for this bucket:
// -ln(u)/weight up to a constant factor. A bucket prefers the node that rings first (ties:
// higher h), so with no capacity in the way node n would get the share weight(n)/W of
// the buckets (weighted rendezvous). The capacities then only correct the sampling noise,
// which keeps a weight change from reshuffling buckets between the other nodes.
constexpr std::uint64_t ring_time(std::uint64_t h, std::uint64_t reciprocal) noexcept {
  return (neg_log2(h) >> 8) * reciprocal;
}

// ring_time() is non-increasing in h, so for every h whose top byte is j it is at least
// the time at the largest such h. Comparing that bound first lets a bucket skip the
// logarithm for almost every node that cannot ring first; the choice stays exact.
constexpr std::array<std::uint64_t, 256> kNegLog2Floor = [] {
  std::array<std::uint64_t, 256> floor{};
  for (std::uint64_t j = 0; j < 256; ++j)
    floor[j] = neg_log2((j << 56) | ((std::uint64_t{1} << 56) - 1)) >> 8;
  return floor;
}();

constexpr std::uint64_t ring_time_floor(std::uint64_t h, std::uint64_t reciprocal) noexcept {
  return kNegLog2Floor[h >> 56] * reciprocal;
}

using NodeSet = std::uint64_t;  // bit i: the i-th weighted member (ascending node id)
using Counts = std::array<std::uint64_t, kMaxNodes>;

constexpr NodeSet bit(unsigned index) noexcept { return NodeSet{1} << index; }

// Largest-remainder apportionment of `total` over the nodes in `set`, proportional to
// `weights`. Equal remainders go to the lower index, i.e. the lower node id. Products stay
// below 2^48 (total <= 2^16, weight < 2^32), so uint64 never overflows.
Counts largest_remainder(std::uint64_t total, const Counts& weights, NodeSet set) {
  std::uint64_t weight_sum = 0;
  for (NodeSet m = set; m != 0; m &= m - 1) weight_sum += weights[std::countr_zero(m)];
  Counts quota{};
  Counts remainder{};
  std::array<unsigned, kMaxNodes> order{};
  unsigned count = 0;
  std::uint64_t given = 0;
  for (NodeSet m = set; m != 0; m &= m - 1) {
    const auto i = static_cast<unsigned>(std::countr_zero(m));
    quota[i] = total * weights[i] / weight_sum;
    remainder[i] = total * weights[i] % weight_sum;
    given += quota[i];
    order[count++] = i;
  }
  // Fewer units are left than nodes with a non-zero remainder, so a node of weight 0
  // never receives one.
  std::sort(order.begin(), order.begin() + count, [&](unsigned a, unsigned b) {
    return remainder[a] != remainder[b] ? remainder[a] > remainder[b] : a < b;
  });
  for (unsigned k = 0; given + k < total; ++k) ++quota[order[k]];
  return quota;
}

// Apportionment of `total` over `set` proportional to `weights` in which each node gets its
// floor share plus at most one unit, with probability equal to its fractional share over
// the choice of `offset`: the remainders are laid end to end in index order and a unit
// goes to each one that a point offset + k*W (k = 0, 1, ...) falls in. Levels 3 and down
// use it with a hashed offset; largest remainder there would send every small list's
// units to the same heaviest node, a bias that adds up over many lists.
Counts sampled_shares(std::uint64_t total, const Counts& weights, NodeSet set,
                      std::uint64_t offset) {
  std::uint64_t weight_sum = 0;
  for (NodeSet m = set; m != 0; m &= m - 1) weight_sum += weights[std::countr_zero(m)];
  Counts share{};
  std::uint64_t point = offset % weight_sum;
  std::uint64_t end = 0;  // of the remainders laid down so far
  for (NodeSet m = set; m != 0; m &= m - 1) {
    const auto i = static_cast<unsigned>(std::countr_zero(m));
    share[i] = total * weights[i] / weight_sum;
    end += total * weights[i] % weight_sum;
    if (point < end) {  // remainders are < weight_sum, so at most one point per node
      ++share[i];
      point += weight_sum;
    }
  }
  return share;
}

// A weighted member (weight > 0, id 1..kMaxNodes), by ascending id.
struct Node {
  NodeId id;
  std::uint64_t weight;
  bool eligible;
};

// Members in a canonical order so that the input's order cannot matter. Configuration
// rejects duplicate ids; should one slip through, the smallest record by (id, weight,
// priority, eligible) wins, which again does not depend on the order.
std::vector<Member> canonical(const std::vector<Member>& members) {
  std::vector<Member> sorted;
  sorted.reserve(members.size());
  for (const Member& m : members) {
    if (to_int(m.node) >= 1 && to_int(m.node) <= kMaxNodes) sorted.push_back(m);
  }
  const auto key = [](const Member& m) {
    return std::tuple{to_int(m.node), m.weight, m.priority, m.eligible};
  };
  std::sort(sorted.begin(), sorted.end(),
            [&](const Member& a, const Member& b) { return key(a) < key(b); });
  sorted.erase(std::unique(sorted.begin(), sorted.end(),
                           [](const Member& a, const Member& b) { return a.node == b.node; }),
               sorted.end());
  return sorted;
}

// One proposal accepted by a node, ordered in the node's min-heap by pair_hash(): for one
// node, ring_time() never increases with the hash, so this is the bucket side's order too.
struct Held {
  std::uint64_t hash;
  std::uint32_t local;  // index into the list being split
};

constexpr bool heap_order(const Held& a, const Held& b) noexcept { return a.hash > b.hash; }

class Splitter {
 public:
  Splitter(std::vector<Node> nodes, std::uint64_t seed, std::uint32_t buckets,
           std::vector<NodeId>& owner)
      : nodes_(std::move(nodes)), seed_(seed), buckets_(buckets), owner_(owner) {
    for (unsigned i = 0; i < nodes_.size(); ++i) {
      weights_[i] = nodes_[i].weight;
      node_term_[i] = std::uint64_t{to_int(nodes_[i].id)} * kNodeMul;
      all_ |= bit(i);
      if (nodes_[i].eligible) eligible_ |= bit(i);
    }
    const std::uint64_t heaviest = *std::max_element(weights_.begin(), weights_.end());
    const int shift = std::max(0, static_cast<int>(std::bit_width(heaviest)) - kRingWeightBits);
    for (unsigned i = 0; i < nodes_.size(); ++i) {
      const std::uint64_t scaled = std::max<std::uint64_t>(1, weights_[i] >> shift);
      reciprocal_[i] = (std::uint64_t{1} << kRingReciprocalBits) / scaled;
    }
  }

  void run() {
    if (eligible_ == 0) return;  // owner_ already holds kNoNode everywhere
    std::vector<BucketId> all(buckets_);
    for (BucketId b = 0; b < buckets_; ++b) all[b] = b;
    top_capacity_ = largest_remainder(buckets_, weights_, all_);
    split(all, all_, top_capacity_, Path{});
  }

 private:
  // The ineligible nodes a list went through: how many, the first one (levels 2 and 3
  // have their own capacity rules) and a hash of the whole sequence.
  struct Path {
    unsigned depth = 0;
    unsigned first = 0;
    std::uint64_t key = 0;
  };

  // Matches every bucket of `list` to a node of `set`, then follows the buckets that
  // landed on ineligible nodes one level down.
  void split(std::span<const BucketId> list, NodeSet set, const Counts& capacity,
             const Path& path) {
    const NodeSet usable = set & eligible_;
    if (std::has_single_bit(usable)) {
      // Deeper levels only ever remove ineligible nodes, so every bucket of `list` ends
      // on this one eligible node whatever the matching would do.
      const NodeId only = nodes_[std::countr_zero(usable)].id;
      for (BucketId b : list) owner_[b] = only;
      return;
    }
    const std::vector<std::uint8_t> matched = match(list, set, capacity);

    std::array<std::vector<BucketId>, kMaxNodes> child;
    for (std::size_t k = 0; k < list.size(); ++k) {
      const unsigned n = matched[k];
      if (nodes_[n].eligible) {
        owner_[list[k]] = nodes_[n].id;
      } else {
        child[n].push_back(list[k]);
      }
    }
    for (NodeSet m = set & ~eligible_; m != 0; m &= m - 1) {
      const auto down = static_cast<unsigned>(std::countr_zero(m));
      if (child[down].empty()) continue;
      const NodeSet rest = set & ~bit(down);
      const Path next{path.depth + 1, path.depth == 0 ? down : path.first,
                      mix64(path.key ^ seed_ ^ node_term_[down])};
      Counts next_capacity{};
      if (path.depth == 0) {
        next_capacity = level_two_capacity(down);
      } else if (path.depth == 1) {
        next_capacity = level_three_capacity(path.first, down);
      } else if (child[down].size() < static_cast<std::size_t>(std::popcount(rest))) {
        // Fewer buckets than nodes: most capacities would be 0 or 1, i.e. noise either
        // way, and following them level after level is what made a farm with almost
        // every node down slow (about 3 s at 65536 buckets, 62 of 64 down).
        place_by_ring_time(child[down], rest);
        continue;
      } else {
        next_capacity = sampled_shares(child[down].size(), weights_, rest, next.key);
      }
      split(child[down], rest, next_capacity, next);
    }
  }

  // Without capacities, following a bucket down through ineligible nodes ends on the
  // first eligible node of its own ring order, so each bucket goes there directly.
  void place_by_ring_time(std::span<const BucketId> list, NodeSet set) {
    for (BucketId b : list) {
      owner_[b] = nodes_[earliest_ring(bucket_key(seed_, b), set & eligible_).node].id;
    }
  }

  // Capacities for the buckets that the top level gave to `down`: what each other node
  // lacks, after the top level, to reach its quota of all buckets without `down`. Used
  // as-is, the single-node-down counts are exactly those quotas. Level 3 needs them for
  // every pair, hence computed once per node.
  const Counts& level_two_capacity(unsigned down) {
    if ((level_two_known_ & bit(down)) == 0) {
      level_two_[down] = compute_level_two_capacity(down);
      level_two_known_ |= bit(down);
    }
    return level_two_[down];
  }

  Counts compute_level_two_capacity(unsigned down) const {
    const NodeSet rest = all_ & ~bit(down);
    const Counts target = largest_remainder(buckets_, weights_, rest);
    Counts deficit{};
    std::uint64_t deficit_sum = 0;
    for (NodeSet m = rest; m != 0; m &= m - 1) {
      const auto i = static_cast<unsigned>(std::countr_zero(m));
      deficit[i] = target[i] > top_capacity_[i] ? target[i] - top_capacity_[i] : 0;
      deficit_sum += deficit[i];
    }
    const std::uint64_t total = top_capacity_[down];
    if (deficit_sum == total) return deficit;
    // Rounding made some node's top-level count exceed its quota without `down`, so the
    // deficits overshoot `total`; share `total` in their proportion. deficit_sum >= total
    // > 0 here, so the deficits cannot all be zero.
    return largest_remainder(total, deficit, rest);
  }

  // Capacities for the buckets that path (x, y) holds. With x and y both down, the lists
  // of (x, y) and (y, x) are all that remains to place, and together they hold exactly
  // what each node still lacks to reach its quota without x and y (the same sum as at
  // level 2). Both paths compute that need the same way and cut it in two: the path whose
  // first node has the lower id takes its share, the other the rest. Shares are sampled,
  // not largest-remainder: with many pairs down, the latter would favour the same nodes
  // in every pair.
  Counts level_three_capacity(unsigned x, unsigned y) {
    const NodeSet rest = all_ & ~bit(x) & ~bit(y);
    const Counts target = largest_remainder(buckets_, weights_, rest);
    const Counts& after_x = level_two_capacity(x);
    const Counts& after_y = level_two_capacity(y);
    Counts need{};
    std::uint64_t need_sum = 0;
    for (NodeSet m = rest; m != 0; m &= m - 1) {
      const auto i = static_cast<unsigned>(std::countr_zero(m));
      const std::uint64_t placed = top_capacity_[i] + after_x[i] + after_y[i];
      need[i] = target[i] > placed ? target[i] - placed : 0;
      need_sum += need[i];
    }
    // As at level 2 the needs can only overshoot, by the nodes that rounding already
    // placed above target.
    const std::uint64_t total = after_x[y] + after_y[x];
    const std::uint64_t offset = mix64(seed_ ^ node_term_[x] ^ node_term_[y]);  // symmetric
    const Counts both = need_sum == total ? need : sampled_shares(total, need, rest, offset);
    const bool x_first = x < y;
    const Counts first = sampled_shares(x_first ? after_x[y] : after_y[x], both, rest, offset);
    if (x_first) return first;
    Counts second{};
    for (NodeSet m = rest; m != 0; m &= m - 1) {
      const auto i = static_cast<unsigned>(std::countr_zero(m));
      second[i] = both[i] - first[i];  // a sampled share never exceeds its weight here
    }
    return second;
  }

  struct Ring {
    unsigned node;
    std::uint64_t hash;
  };

  // The node of `candidates` (not empty) whose clock rings first for the bucket with this
  // key; equal times go to the higher pair hash.
  Ring earliest_ring(std::uint64_t key, NodeSet candidates) const {
    auto best = static_cast<unsigned>(std::countr_zero(candidates));
    std::uint64_t best_hash = pair_hash(key, node_term_[best]);
    std::uint64_t best_time = ring_time(best_hash, reciprocal_[best]);
    for (NodeSet m = candidates & (candidates - 1); m != 0; m &= m - 1) {
      const auto i = static_cast<unsigned>(std::countr_zero(m));
      const std::uint64_t h = pair_hash(key, node_term_[i]);
      if (ring_time_floor(h, reciprocal_[i]) > best_time) continue;
      const std::uint64_t t = ring_time(h, reciprocal_[i]);
      if (t < best_time || (t == best_time && h > best_hash)) {
        best = i;
        best_hash = h;
        best_time = t;
      }
    }
    return {best, best_hash};
  }

  // The unique stable matching between `list` and `set` where node n takes exactly
  // capacity[n] buckets, a bucket ranks nodes by ring_time() and a node ranks buckets by
  // pair_hash(). That is one common order, so the matching equals the greedy one over all
  // pairs and does not depend on the proposal order. Bucket-proposing deferred acceptance,
  // each node holding its accepted proposals in a min-heap; returns the node index matched
  // to each position of `list`.
  std::vector<std::uint8_t> match(std::span<const BucketId> list, NodeSet set,
                                  const Counts& capacity) const {
    const std::size_t size = list.size();
    std::vector<std::uint64_t> key(size);
    std::vector<NodeSet> proposed(size, 0);
    for (std::size_t k = 0; k < size; ++k) key[k] = bucket_key(seed_, list[k]);

    // Heaps laid out back to back in one buffer: capacities sum to list.size().
    std::array<std::size_t, kMaxNodes + 1> begin{};
    std::array<std::size_t, kMaxNodes> held{};
    for (unsigned i = 0; i < kMaxNodes; ++i) begin[i + 1] = begin[i] + capacity[i];
    // Every capacity rule hands out exactly list.size() places; with fewer, a bucket would
    // run out of nodes to propose to.
    assert(begin[kMaxNodes] == size);
    std::vector<Held> heap(size);
    NodeSet open = 0;  // a node of capacity 0 rejects every proposal: skip it up front
    for (NodeSet m = set; m != 0; m &= m - 1) {
      if (capacity[std::countr_zero(m)] > 0) open |= bit(std::countr_zero(m));
    }

    std::vector<std::uint32_t> free(size);
    for (std::size_t k = 0; k < size; ++k) free[k] = static_cast<std::uint32_t>(size - 1 - k);
    while (!free.empty()) {
      const std::uint32_t k = free.back();
      free.pop_back();
      // Next choice: the earliest-ringing node not yet proposed to. A bucket rejected by
      // every open node would need them all full, which the capacity sum rules out.
      const Ring ring = earliest_ring(key[k], open & ~proposed[k]);
      const unsigned best = ring.node;
      const std::uint64_t best_hash = ring.hash;
      proposed[k] |= bit(best);
      Held* const h = heap.data() + begin[best];
      if (held[best] < capacity[best]) {
        h[held[best]++] = {best_hash, k};
        std::push_heap(h, h + held[best], heap_order);
      } else if (h[0].hash < best_hash) {
        free.push_back(h[0].local);
        std::pop_heap(h, h + held[best], heap_order);
        h[held[best] - 1] = {best_hash, k};
        std::push_heap(h, h + held[best], heap_order);
      } else {
        free.push_back(k);
      }
    }

    std::vector<std::uint8_t> matched(size);
    for (NodeSet m = set; m != 0; m &= m - 1) {
      const auto i = static_cast<unsigned>(std::countr_zero(m));
      for (std::size_t j = begin[i]; j < begin[i] + held[i]; ++j) {
        matched[heap[j].local] = static_cast<std::uint8_t>(i);
      }
    }
    return matched;
  }

  std::vector<Node> nodes_;
  std::uint64_t seed_;
  std::uint32_t buckets_;
  std::vector<NodeId>& owner_;
  Counts weights_{};
  std::array<std::uint64_t, kMaxNodes> node_term_{};
  std::array<std::uint64_t, kMaxNodes> reciprocal_{};
  NodeSet all_ = 0;
  NodeSet eligible_ = 0;
  Counts top_capacity_{};
  std::array<Counts, kMaxNodes> level_two_{};
  NodeSet level_two_known_ = 0;
};

NodeId failover_owner(const std::vector<Member>& members) {
  const Member* best = nullptr;
  for (const Member& m : members) {  // ascending id: the first of equal priorities wins
    if (!m.eligible || m.weight == 0) continue;
    if (best == nullptr || m.priority > best->priority) best = &m;
  }
  return best == nullptr ? kNoNode : best->node;
}

}  // namespace

std::vector<NodeId> assign(const Input& input) {
  std::vector<NodeId> owner(input.buckets, kNoNode);
  const std::vector<Member> members = canonical(input.members);
  if (input.mode == Mode::kFailover) {
    std::fill(owner.begin(), owner.end(), failover_owner(members));
    return owner;
  }
  std::vector<Node> nodes;
  for (const Member& m : members) {
    if (m.weight > 0) nodes.push_back({m.node, m.weight, m.eligible});
  }
  Splitter(std::move(nodes), input.seed, input.buckets, owner).run();
  return owner;
}

}  // namespace vipfarm::assignment
