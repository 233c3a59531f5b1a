// Bucket assignment: a pure function from a group's members to an owner per bucket.
// See docs/assignment.md for the algorithm and the properties it guarantees.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vipfarm/common/types.hpp"

namespace vipfarm::assignment {

enum class Mode : std::uint8_t { kBalance, kFailover };

struct Member {
  NodeId node;
  std::uint32_t weight = 1;   // 0: never owns a bucket
  std::int32_t priority = 0;  // failover mode: the highest eligible priority owns all
  bool eligible = true;       // in the current view and UP
};

struct Input {
  std::vector<Member> members;  // every configured member of the group, any order
  Mode mode = Mode::kBalance;
  std::uint32_t buckets = kDefaultBuckets;  // power of two, 1..65536
  std::uint64_t seed = 0;
};

// Owner of each bucket (size == input.buckets); kNoNode where no member is eligible.
std::vector<NodeId> assign(const Input& input);

}  // namespace vipfarm::assignment
