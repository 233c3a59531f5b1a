// Strong identifier types shared by every component.
#pragma once

#include <cstdint>

namespace vipfarm {

// A configured node (1..64). 0 is never a node: it means "no owner".
enum class NodeId : std::uint8_t {};
inline constexpr NodeId kNoNode{0};
inline constexpr unsigned kMaxNodes = 64;

constexpr unsigned to_int(NodeId id) noexcept { return static_cast<unsigned>(id); }

// Index of a bucket within a group's bucket space (0 .. buckets-1).
using BucketId = std::uint32_t;

inline constexpr std::uint32_t kDefaultBuckets = 256;
inline constexpr std::uint32_t kMaxBuckets = 65536;

}  // namespace vipfarm
