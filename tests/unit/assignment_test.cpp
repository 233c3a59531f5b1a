// Property tests for assign(): determinism, one owner (I1), leave stability, balance and
// movement (I3), failover. Scenarios come from fixed mt19937_64 seeds, so runs repeat.
#include "vipfarm/assignment/assignment.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace vipfarm::assignment {
namespace {

constexpr int kScenarios = 1000;

using Counts = std::array<std::int64_t, kMaxNodes + 1>;  // indexed by node id

Counts owned_counts(const std::vector<NodeId>& owner) {
  Counts counts{};
  for (NodeId n : owner) ++counts[to_int(n)];
  return counts;
}

// An independent statement of the largest-remainder quota: floor shares, then one more
// bucket for each of the largest remainders, equal remainders to the lower id. Members
// that are ineligible or have weight 0 get 0.
Counts lr_quota(const Input& input) {
  std::uint64_t total_weight = 0;
  for (const Member& m : input.members) {
    if (m.eligible) total_weight += m.weight;
  }
  Counts quota{};
  if (total_weight == 0) return quota;
  std::vector<std::pair<std::uint64_t, unsigned>> remainders;  // (remainder, id)
  std::uint64_t given = 0;
  for (const Member& m : input.members) {
    if (!m.eligible || m.weight == 0) continue;
    const std::uint64_t exact = std::uint64_t{input.buckets} * m.weight;
    quota[to_int(m.node)] = static_cast<std::int64_t>(exact / total_weight);
    given += exact / total_weight;
    remainders.emplace_back(exact % total_weight, to_int(m.node));
  }
  std::sort(remainders.begin(), remainders.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  for (std::size_t k = 0; given + k < input.buckets; ++k) ++quota[remainders[k].second];
  return quota;
}

std::int64_t max_deviation(const Input& input) {
  const Counts got = owned_counts(assign(input));
  const Counts want = lr_quota(input);
  std::int64_t worst = 0;
  for (unsigned id = 1; id <= kMaxNodes; ++id) {
    worst = std::max(worst, std::abs(got[id] - want[id]));
  }
  return worst;
}

Member* find(Input& input, unsigned id) {
  for (Member& m : input.members) {
    if (to_int(m.node) == id) return &m;
  }
  return nullptr;
}

struct Shape {
  unsigned min_members = 1;
  unsigned max_members = kMaxNodes;
  std::uint32_t min_weight = 0;
  std::uint32_t max_weight = 10;
  bool random_eligibility = true;
  std::uint32_t buckets = 0;  // 0: one of 256, 1024, 4096 at random
};

// Members with distinct random ids, in random order.
Input random_input(std::mt19937_64& rng, const Shape& shape) {
  std::vector<unsigned> ids(kMaxNodes);
  std::iota(ids.begin(), ids.end(), 1U);
  std::shuffle(ids.begin(), ids.end(), rng);
  const unsigned count =
      std::uniform_int_distribution<unsigned>(shape.min_members, shape.max_members)(rng);
  std::uniform_int_distribution<std::uint32_t> weight(shape.min_weight, shape.max_weight);
  constexpr std::array<std::uint32_t, 3> kBucketChoices{256, 1024, 4096};
  Input input;
  input.buckets = kBucketChoices[std::uniform_int_distribution<std::size_t>(0, 2)(rng)];
  if (shape.buckets != 0) input.buckets = shape.buckets;
  input.seed = rng();
  for (unsigned k = 0; k < count; ++k) {
    const bool eligible = !shape.random_eligibility || (rng() % 4 != 0);
    input.members.push_back(Member{NodeId(ids[k]), weight(rng), 0, eligible});
  }
  return input;
}

// Members that can own a bucket, by id.
std::vector<unsigned> owners_possible(const Input& input) {
  std::vector<unsigned> ids;
  for (const Member& m : input.members) {
    if (m.eligible && m.weight > 0) ids.push_back(to_int(m.node));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(Assignment, MemberOrderDoesNotMatter) {
  std::mt19937_64 rng(1);
  for (int s = 0; s < 200; ++s) {
    Input input = random_input(rng, {});
    const std::vector<NodeId> expected = assign(input);
    std::shuffle(input.members.begin(), input.members.end(), rng);
    ASSERT_EQ(assign(input), expected) << "scenario " << s;
  }
}

std::string owner_string(const std::vector<NodeId>& owner) {
  std::string out;
  for (NodeId n : owner) out += std::to_string(to_int(n)) + " ";
  return out;
}

// Every node of a farm must compute these same lists, across versions too: a change here
// splits the farm during a rolling upgrade, so it needs a migration plan, not a new vector.
TEST(Assignment, GoldenVectors) {
  Input input;
  input.buckets = 16;
  input.seed = 42;
  input.members = {{NodeId(1)}, {NodeId(2)}, {NodeId(3)}};
  EXPECT_EQ(owner_string(assign(input)), "1 1 3 2 3 1 2 1 3 2 2 1 1 2 3 3 ");

  input.members = {{NodeId(1), 1}, {NodeId(2), 2, 0, false}, {NodeId(3), 3}, {NodeId(4), 1}};
  EXPECT_EQ(owner_string(assign(input)), "1 4 3 4 3 4 3 1 3 3 3 3 3 1 3 3 ");

  // Three down: levels 2 and 3, sampled capacities and ring-order placement all take part.
  input.buckets = 64;
  input.seed = 7;
  input.members = {{NodeId(2), 5, 0, false}, {NodeId(3), 1},           {NodeId(5), 7, 0, false},
                   {NodeId(7), 2},           {NodeId(8), 4, 0, false}, {NodeId(9), 3}};
  EXPECT_EQ(owner_string(assign(input)),
            "3 3 7 7 7 9 9 9 9 3 7 9 9 3 9 9 7 9 9 3 7 9 3 9 9 9 9 9 9 9 7 7 "
            "7 3 9 9 3 7 9 9 9 7 7 9 9 9 7 3 7 9 7 7 7 7 9 9 7 9 3 9 7 9 9 7 ");
}

TEST(Assignment, OneEligibleOwnerPerBucket) {
  std::mt19937_64 rng(2);
  for (int s = 0; s < kScenarios; ++s) {
    const Input input = random_input(rng, {});
    const std::vector<NodeId> owner = assign(input);
    ASSERT_EQ(owner.size(), input.buckets);
    const std::vector<unsigned> possible = owners_possible(input);
    for (NodeId n : owner) {
      if (possible.empty()) {
        ASSERT_EQ(n, kNoNode) << "scenario " << s;
      } else {
        ASSERT_TRUE(std::binary_search(possible.begin(), possible.end(), to_int(n)))
            << "scenario " << s << " owner " << to_int(n);
      }
    }
  }
}

TEST(Assignment, LeaveMovesOnlyTheLeaversBuckets) {
  std::mt19937_64 rng(3);
  for (int s = 0; s < kScenarios; ++s) {
    Input input = random_input(rng, {});
    const std::vector<unsigned> possible = owners_possible(input);
    if (possible.empty()) continue;
    const unsigned leaver = possible[rng() % possible.size()];
    const std::vector<NodeId> before = assign(input);
    find(input, leaver)->eligible = false;
    const std::vector<NodeId> after = assign(input);
    for (std::size_t b = 0; b < before.size(); ++b) {
      // Leave: a bucket moves only if the leaver had it. Join (after -> before): the
      // joiner takes buckets, and no other bucket changes hands.
      if (to_int(before[b]) != leaver) {
        ASSERT_EQ(after[b], before[b]) << "scenario " << s << " bucket " << b;
      } else {
        ASSERT_NE(to_int(after[b]), leaver) << "scenario " << s << " bucket " << b;
      }
    }
  }
}

TEST(Assignment, FullSetOwnsExactQuota) {
  std::mt19937_64 rng(4);
  for (int s = 0; s < kScenarios; ++s) {
    const Input input = random_input(rng, {.random_eligibility = false});
    ASSERT_EQ(max_deviation(input), 0) << "scenario " << s;
  }
}

struct Deviations {
  std::int64_t worst = 0;
  int exact = 0;  // scenarios where every member owns exactly its quota
};

// Takes `down` random members holding weight out of the view in kScenarios scenarios and
// measures the deviation from the quota over the remaining weights.
Deviations deviations_with_down(unsigned down, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Deviations d;
  for (int s = 0; s < kScenarios; ++s) {
    Input input =
        random_input(rng, {.min_members = down + 1, .min_weight = 1, .random_eligibility = false});
    std::vector<unsigned> ids = owners_possible(input);
    std::shuffle(ids.begin(), ids.end(), rng);
    for (unsigned k = 0; k < down; ++k) find(input, ids[k])->eligible = false;
    const std::int64_t deviation = max_deviation(input);
    d.worst = std::max(d.worst, deviation);
    d.exact += deviation == 0;
  }
  return d;
}

// Level 2 hands each node exactly what it lacks to reach its quota without the leaver;
// only when the top level already rounded a node above that quota is there a +1 (and a
// -1 elsewhere). Measured: exact in 967 of these 1000 (97.6% of 5000). Apportioning by
// weight instead would also stay within one, but be exact in only about 10%.
TEST(Assignment, OneNodeDownWithinOneOfQuota) {
  const Deviations d = deviations_with_down(1, 5);
  std::cout << "[ balance  ] 1 node down: worst deviation " << d.worst << ", exact in " << d.exact
            << " of " << kScenarios << " scenarios\n";
  RecordProperty("worst_deviation_1_down", static_cast<int>(d.worst));
  EXPECT_LE(d.worst, 1);
  EXPECT_GE(d.exact, kScenarios * 95 / 100);
}

// Not exact by design: no memoryless rule can be (docs/assignment.md). The bounds are the
// worst seen over 10000 scenarios of this shape (2 down: 2; 3 down: 5 in this test's
// 1000, 8 once in 10000), so a regression of the level-2 or level-3 capacities shows.
TEST(Assignment, SeveralNodesDownNearQuota) {
  constexpr std::array<std::int64_t, 2> kBound{2, 6};
  for (unsigned down : {2U, 3U}) {
    const std::int64_t worst = deviations_with_down(down, 6 + down).worst;
    std::cout << "[ balance  ] " << down << " nodes down: worst deviation " << worst
              << " buckets over " << kScenarios << " scenarios\n";
    RecordProperty("worst_deviation_" + std::to_string(down) + "_down", static_cast<int>(worst));
    EXPECT_LE(worst, kBound[down - 2]) << down << " nodes down";
  }
}

// Buckets that change owner, and the least any rule could move: the buckets each node
// must give up to reach its new count.
struct Movement {
  std::int64_t moved = 0;
  std::int64_t minimum = 0;
};

Movement movement(const std::vector<NodeId>& before, const std::vector<NodeId>& after) {
  Movement m;
  for (std::size_t b = 0; b < before.size(); ++b) m.moved += before[b] != after[b];
  const Counts old_counts = owned_counts(before);
  const Counts new_counts = owned_counts(after);
  for (unsigned id = 1; id <= kMaxNodes; ++id) {
    m.minimum += std::max<std::int64_t>(0, old_counts[id] - new_counts[id]);
  }
  return m;
}

struct RatioStats {
  double mean = 0;
  double max = 0;
  double pooled = 0;  // all moved over all minimum: weighs each scenario by its size
};

// Applies `change` in kScenarios random farms of `shape`, all members eligible, and
// returns the ratio moved / minimum. Prints it: the design documents quote these numbers.
template <typename Change>
RatioStats movement_ratios(const std::string& what, std::uint64_t seed, Shape shape,
                           Change change) {
  std::mt19937_64 rng(seed);
  RatioStats stats;
  Movement total;
  int counted = 0;
  for (int s = 0; s < kScenarios; ++s) {
    Input input = random_input(rng, shape);
    const std::vector<NodeId> before = assign(input);
    change(input, rng);
    const Movement m = movement(before, assign(input));
    if (m.minimum == 0) {  // the quotas did not change, so neither may the owners
      EXPECT_EQ(m.moved, 0) << what << " scenario " << s;
      continue;
    }
    const double ratio = static_cast<double>(m.moved) / static_cast<double>(m.minimum);
    stats.mean += ratio;
    stats.max = std::max(stats.max, ratio);
    total.moved += m.moved;
    total.minimum += m.minimum;
    ++counted;
  }
  stats.mean /= counted;
  stats.pooled = static_cast<double>(total.moved) / static_cast<double>(total.minimum);
  std::cout << "[ movement ] " << what << ": mean " << stats.mean << " max " << stats.max
            << " pooled " << stats.pooled << " over " << counted << " scenarios\n";
  ::testing::Test::RecordProperty(what + "_mean_ratio", std::to_string(stats.mean));
  ::testing::Test::RecordProperty(what + "_max_ratio", std::to_string(stats.max));
  return stats;
}

void change_one_weight(Input& input, std::mt19937_64& rng) {
  Member& m = input.members[rng() % input.members.size()];
  const std::uint32_t old_weight = m.weight;
  while (m.weight == old_weight) m.weight = static_cast<std::uint32_t>(1 + rng() % 10);
}

void add_one_member(Input& input, std::mt19937_64& rng) {
  unsigned id = 0;
  while (id == 0 || find(input, id) != nullptr) id = static_cast<unsigned>(1 + rng() % kMaxNodes);
  input.members.push_back(Member{NodeId(id), static_cast<std::uint32_t>(1 + rng() % 10)});
}

// With at least 1024 buckets per member, a weight change or a new member moves within
// 10% of the minimum on average and never 50% more.
constexpr Shape kManyBucketsPerMember{.min_members = 2,
                                      .max_members = 16,
                                      .min_weight = 1,
                                      .random_eligibility = false,
                                      .buckets = 16384};

TEST(Assignment, WeightChangeMovesNearMinimum) {
  const RatioStats stats =
      movement_ratios("weight_change", 8, kManyBucketsPerMember, change_one_weight);
  EXPECT_LE(stats.mean, 1.1);
  EXPECT_LE(stats.max, 1.5);
}

TEST(Assignment, NewMemberMovesNearMinimum) {
  Shape shape = kManyBucketsPerMember;
  shape.min_members = 1;
  const RatioStats stats = movement_ratios("new_member", 9, shape, add_one_member);
  EXPECT_LE(stats.mean, 1.1);
  EXPECT_LE(stats.max, 1.5);
}

// With few buckets per member (64 members, 256 buckets: 4 each) the minimum is a bucket
// or two and this rule moves about twice that; no rule with exact quotas can always move
// the minimum (docs/assignment.md). The bounds are the measured values (mean 2.22 and
// 1.94, pooled 1.33 and 1.22) plus margin, to catch a regression; they are not a target.
TEST(Assignment, MovementAcrossAllFarmShapes) {
  const Shape shape{
      .min_members = 2, .max_members = kMaxNodes - 1, .min_weight = 1, .random_eligibility = false};
  const RatioStats weight =
      movement_ratios("weight_change_all_shapes", 10, shape, change_one_weight);
  EXPECT_LE(weight.mean, 2.5);
  EXPECT_LE(weight.pooled, 1.6);
  const RatioStats added = movement_ratios("new_member_all_shapes", 11, shape, add_one_member);
  EXPECT_LE(added.mean, 2.5);
  EXPECT_LE(added.pooled, 1.6);
}

TEST(Assignment, LargestBucketSpaceAndMemberCount) {
  Input input;
  input.buckets = kMaxBuckets;
  input.seed = 7;
  for (unsigned id = 1; id <= kMaxNodes; ++id) {
    input.members.push_back(Member{NodeId(id), 1 + id % 5, 0, id % 9 != 0});
  }
  const std::vector<NodeId> owner = assign(input);
  for (NodeId n : owner) ASSERT_TRUE(to_int(n) != 0 && to_int(n) % 9 != 0);
  // 7 of 64 down is best effort: quotas here are 640 to 1900 buckets; measured worst 10.
  const std::int64_t worst = max_deviation(input);
  RecordProperty("worst_deviation_7_of_64_down", static_cast<int>(worst));
  EXPECT_LE(worst, 20);
}

TEST(Assignment, FailoverGivesEverythingToHighestPriority) {
  Input input;
  input.mode = Mode::kFailover;
  input.buckets = 64;
  input.members = {{NodeId(5), 1, 10},  // highest priority, but ineligible below
                   {NodeId(3), 1, 7},
                   {NodeId(2), 1, 7},
                   {NodeId(1), 0, 9},  // weight 0: never owns, whatever its priority
                   {NodeId(4), 1, -3}};
  input.members[0].eligible = false;
  EXPECT_EQ(assign(input), std::vector<NodeId>(64, NodeId(2)));  // tie 2 vs 3: lower id

  find(input, 5)->eligible = true;
  EXPECT_EQ(assign(input), std::vector<NodeId>(64, NodeId(5)));

  for (Member& m : input.members) m.eligible = false;
  EXPECT_EQ(assign(input), std::vector<NodeId>(64, kNoNode));
}

TEST(Assignment, NoEligibleMemberMeansNoOwner) {
  Input input;
  input.buckets = 256;
  EXPECT_EQ(assign(input), std::vector<NodeId>(256, kNoNode));
  input.members = {{NodeId(1), 1, 0, false}, {NodeId(2), 0}, {NodeId(3), 4, 0, false}};
  EXPECT_EQ(assign(input), std::vector<NodeId>(256, kNoNode));
}

TEST(Assignment, WeightZeroNeverOwns) {
  std::mt19937_64 rng(10);
  for (int s = 0; s < kScenarios; ++s) {
    const Input input = random_input(rng, {});
    const std::vector<NodeId> owner = assign(input);
    for (const Member& m : input.members) {
      if (m.weight == 0) {
        ASSERT_EQ(std::count(owner.begin(), owner.end(), m.node), 0) << "scenario " << s;
      }
    }
  }
}

// Weights far above the configured range (0-1000) still give exact quotas and one owner:
// ring times scale weights down, the capacities never do.
TEST(Assignment, HugeWeightsKeepExactQuota) {
  std::mt19937_64 rng(12);
  for (int s = 0; s < 200; ++s) {
    Input input = random_input(rng, {.min_members = 2, .random_eligibility = false});
    for (Member& m : input.members) m.weight = static_cast<std::uint32_t>(1 + rng() % 4000000000U);
    ASSERT_EQ(max_deviation(input), 0) << "scenario " << s;
    input.members[rng() % input.members.size()].eligible = false;
    ASSERT_LE(max_deviation(input), 1) << "scenario " << s;
  }
}

// Ids outside 1..64 cannot come from a valid configuration; they never own, and a
// duplicated id resolves the same way whatever the order.
TEST(Assignment, InvalidAndDuplicateIds) {
  Input input;
  input.buckets = 256;
  input.members = {{NodeId(0), 5}, {NodeId(65), 5}, {NodeId(3), 1}, {NodeId(3), 2}, {NodeId(4), 1}};
  const std::vector<NodeId> owner = assign(input);
  for (NodeId n : owner) ASSERT_TRUE(n == NodeId(3) || n == NodeId(4));
  std::reverse(input.members.begin(), input.members.end());
  EXPECT_EQ(assign(input), owner);
}

TEST(Assignment, SingleBucket) {
  Input input;
  input.buckets = 1;
  input.members = {{NodeId(9), 3}, {NodeId(4), 1}};
  const std::vector<NodeId> owner = assign(input);
  ASSERT_EQ(owner.size(), 1U);
  EXPECT_EQ(owner[0], NodeId(9));  // quota: 9 -> 1 (0.75), 4 -> 0 (0.25)
}

}  // namespace
}  // namespace vipfarm::assignment
