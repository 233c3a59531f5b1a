// The bucket hash of docs/classifier.md §5: seeded, integer-only, identical on every node.
#pragma once

#include <array>
#include <cstdint>

namespace vipfarm::packet {

constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

__extension__ typedef unsigned __int128 Uint128;  // GCC and clang; -Wpedantic wants the marker

// Folds the 128-bit product: one multiply mixes every bit of both operands.
constexpr std::uint64_t mum(std::uint64_t a, std::uint64_t b) noexcept {
  const Uint128 p = static_cast<Uint128>(a) * b;
  return static_cast<std::uint64_t>(p >> 64) ^ static_cast<std::uint64_t>(p);
}

// The five key words (w0..w4 of the spec). Left uninitialised on purpose: burst arrays of
// keys are filled by the classifier, and zeroing them first was a measurable cost.
struct FlowKey {
  std::array<std::uint64_t, 5> w;
};

struct HashSeeds {
  std::array<std::uint64_t, 6> s{};

  static constexpr HashSeeds from(std::uint64_t seed) noexcept {
    HashSeeds out;
    for (std::uint64_t i = 0; i < out.s.size(); ++i) {
      out.s[i] = mix64(seed + (i + 1) * 0x9E3779B97F4A7C15ULL);
    }
    return out;
  }
};

constexpr std::uint64_t hash_key(const HashSeeds& seeds, const FlowKey& key) noexcept {
  const std::uint64_t a = mum(key.w[0] ^ seeds.s[0], key.w[1] ^ seeds.s[1]);
  const std::uint64_t b = mum(key.w[2] ^ seeds.s[2], key.w[3] ^ seeds.s[3]);
  return mum(a ^ seeds.s[4], b ^ key.w[4] ^ seeds.s[5]);
}

}  // namespace vipfarm::packet
