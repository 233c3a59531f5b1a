// Pinned hash vectors: the expected values were computed by an independent Python
// implementation of docs/classifier.md §5. If one of these changes, two versions of
// vipfarm would disagree about owners during a rolling upgrade.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "fixtures/frames.hpp"
#include "vipfarm/packet/hash.hpp"

namespace vipfarm::packet {
namespace {

constexpr std::uint64_t kV4 = IpAddr::kV4MappedTag;

TEST(Hash, PinnedVectors) {
  struct Vector {
    std::uint64_t seed;
    FlowKey key;
    std::uint64_t hash;
  };
  const Vector vectors[] = {
      {0, {{0, 0, 0, 0, 0}}, 0xa1d4b5f56b511b7fULL},
      {7, {{0, kV4 | 0xcb007107, 0, 0, 0}}, 0x0c70a533e0ab1fc8ULL},
      {7, {{0, kV4 | 0xcb007107, 0, 0, 40000}}, 0x7f4138ca4af049aaULL},
      {12345,
       {{0, kV4 | 0xc6336401, 0, kV4 | 0xc633640a, (6ULL << 32) | (40000ULL << 16) | 80}},
       0xba81af739be88d27ULL},
      {7, {{0x20010db800000000ULL, 7, 0, 0, 0}}, 0x20910d1a9b4cd4a8ULL},
      {0xfeedface,
       {{0x20010db800010000ULL, 0x42, 0x20010db800000000ULL, 0x10,
         (17ULL << 32) | (5353ULL << 16) | 53}},
       0xcfba68522d0299a3ULL},
  };
  for (const Vector& v : vectors) {
    EXPECT_EQ(hash_key(HashSeeds::from(v.seed), v.key), v.hash) << std::hex << v.hash;
  }
}

TEST(Hash, PinnedBucketsEndToEnd) {
  // The fixture config: seed 7, 256 buckets; web on_port for 198.51.100.10:80.
  const config::Config config = fixtures::load_fixture_config();
  const Classifier classifier(config);
  const Result r = classifier.classify(
      fixtures::frame(fixtures::tcp("203.0.113.7", 40000, "198.51.100.10", 80)));
  ASSERT_EQ(r.verdict, Verdict::kFarm);
  EXPECT_EQ(r.bucket, 170u);  // 0x7f4138ca4af049aa mod 256
}

TEST(Hash, BucketsAreUniform) {
  // Chi-square over 256 buckets for 256k random IPv4 clients with random ports; the 99.9%
  // quantile for 255 degrees of freedom is about 330.
  const HashSeeds seeds = HashSeeds::from(7);
  std::mt19937_64 rng(1);
  std::vector<double> counts(256, 0);
  const int n = 256 * 1024;
  for (int i = 0; i < n; ++i) {
    FlowKey key{{0, kV4 | (rng() & 0xffffffff), 0, 0, rng() & 0xffff}};
    counts[hash_key(seeds, key) & 255] += 1;
  }
  double chi2 = 0;
  const double expected = n / 256.0;
  for (double c : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 330.0);
}

TEST(Hash, SeedChangesEverything) {
  const FlowKey key{{0, kV4 | 0xcb007107, 0, 0, 40000}};
  EXPECT_NE(hash_key(HashSeeds::from(1), key), hash_key(HashSeeds::from(2), key));
}

}  // namespace
}  // namespace vipfarm::packet
