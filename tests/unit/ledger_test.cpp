// Ownership (ownership/ledger.hpp) through a fake sink: the flow handoff rules of
// docs/handoff.md for each kind of view change (table-driven), bucket by bucket, against an
// assignment computed here independently; releases and takes from the peers' release maps;
// the window; weight changes held until acknowledged; the settled view; drain; reload; the
// lease; and one publication per commit.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fixtures/config_text.hpp"
#include "vipfarm/assignment/assignment.hpp"
#include "vipfarm/membership/wire.hpp"
#include "vipfarm/ownership/ledger.hpp"

namespace vipfarm::ownership {
namespace {

using Clock = Ledger::Clock;
using config::ViewMask;

constexpr const char* kFarm = R"(
[node]
id = 1

[cluster]
name = "web"
buckets = 64

[[cluster.node]]
id = 1
name = "a"
address = "192.0.2.1"

[[cluster.node]]
id = 2
name = "b"
address = "192.0.2.2"

[[cluster.node]]
id = 3
name = "c"
address = "192.0.2.3"

[[vip]]
address = "198.51.100.50"

[[group]]
name = "g"

[[group.rule]]
proto = "tcp"
ports = 80
)";

// What the data plane would be: what was published, the flows it tracks, the lease.
class FakeSink final : public SnapshotSink {
 public:
  void publish(std::unique_ptr<Snapshot> next) override { published.push_back(std::move(next)); }
  void renew_lease(std::chrono::nanoseconds duration) noexcept override {
    lease = duration;
    ++renewals;
  }
  void revoke_lease() noexcept override {
    lease.reset();
    ++revocations;
  }
  std::vector<std::uint64_t> flows_in(const std::vector<Bucket>& buckets) const override {
    std::vector<std::uint64_t> out;
    for (const Bucket& b : buckets) {
      const auto it = flows.find(b);
      out.push_back(it == flows.end() ? 0 : it->second);
    }
    return out;
  }
  const Snapshot& last() const {
    EXPECT_FALSE(published.empty());
    return *published.back();
  }

  std::vector<std::unique_ptr<Snapshot>> published;
  std::map<Bucket, std::uint64_t> flows;
  std::optional<std::chrono::nanoseconds> lease;
  int renewals = 0, revocations = 0;
};

ViewMask mask(std::initializer_list<unsigned> ids) {
  ViewMask m = 0;
  for (const unsigned id : ids) m |= ViewMask{1} << (id - 1);
  return m;
}

ViewInput input(ViewMask members, ViewMask alive) {
  ViewInput in;
  in.members = members;
  in.settled = members;
  in.alive = alive;
  return in;
}

config::Config farm(unsigned self, bool handoff = true) {
  config::Config c = fixtures::loaded(fixtures::replaced(
      kFarm, "id = 1\n\n[cluster]", "id = " + std::to_string(self) + "\n\n[cluster]"));
  c.flows.handoff = handoff;
  return c;
}

// The owners of group 0's buckets for `members`, computed without the ledger.
std::vector<NodeId> owners_of(const config::Config& c, ViewMask members) {
  return assignment::assign(config::assignment_input(c, 0, members));
}

std::uint32_t owned_count(const Snapshot& s, std::uint32_t buckets) {
  std::uint32_t n = 0;
  for (BucketId b = 0; b < buckets; ++b) n += s.ownership.owns(0, b) ? 1 : 0;
  return n;
}

// What a bucket is to this node after a change.
enum class Is { kNotMine, kOwned, kTaking, kReleasing };

Is state(const Snapshot& s, BucketId b) {
  const bool owned = s.ownership.owns(0, b);
  const bool taking = !s.taking.empty() && s.taking.owns(0, b);
  const bool releasing = !s.releasing.empty() && s.releasing.owns(0, b);
  EXPECT_FALSE(releasing && owned) << "bucket " << b << " both owned and released";
  EXPECT_TRUE(!taking || owned) << "bucket " << b << " taken without being owned";
  if (taking) return Is::kTaking;
  if (owned) return Is::kOwned;
  return releasing ? Is::kReleasing : Is::kNotMine;
}

struct ChangeCase {
  const char* name;
  unsigned self;
  std::optional<ViewMask> before;  // the view installed first (nullopt: none, a node starting)
  ViewMask before_alive;
  ViewMask after;  // the view installed then
  ViewMask after_alive;
  bool handoff;
  Is gained;  // a bucket this node gains
  Is given;   // a bucket it gives up, while it still tracks flows there
};

const std::vector<ChangeCase> kChanges = {
    {"a node joins a live farm: it takes new connections only", 3, std::nullopt, 0, mask({1, 2, 3}),
     mask({1, 2, 3}), true, Is::kTaking, Is::kNotMine},
    {"a peer joins: this node releases what it gives up", 1, mask({1, 2}), mask({1, 2, 3}),
     mask({1, 2, 3}), mask({1, 2, 3}), true, Is::kOwned, Is::kReleasing},
    {"a peer died: its buckets are taken whole at once", 1, mask({1, 2, 3}), mask({1, 2, 3}),
     mask({1, 2}), mask({1, 2}), true, Is::kOwned, Is::kReleasing},
    {"a peer left alive (stopped, drained): its buckets are taken", 1, mask({1, 2, 3}),
     mask({1, 2, 3}), mask({1, 2}), mask({1, 2, 3}), true, Is::kTaking, Is::kReleasing},
    {"alone, no peer alive: everything whole", 1, std::nullopt, 0, mask({1}), mask({1}), true,
     Is::kOwned, Is::kNotMine},
    {"starting while peers are alive: taken as a join", 2, std::nullopt, 0, mask({1, 2}),
     mask({1, 2, 3}), true, Is::kTaking, Is::kNotMine},
    {"handoff off: a plain bucket filter", 1, mask({1, 2}), mask({1, 2, 3}), mask({1, 2, 3}),
     mask({1, 2, 3}), false, Is::kOwned, Is::kNotMine},
    {"handoff off, a peer left alive", 1, mask({1, 2, 3}), mask({1, 2, 3}), mask({1, 2}),
     mask({1, 2, 3}), false, Is::kOwned, Is::kNotMine},
};

class Changes : public ::testing::TestWithParam<ChangeCase> {};

TEST_P(Changes, EveryBucketFollowsTheHandoffRule) {
  const ChangeCase& k = GetParam();
  const config::Config c = farm(k.self, k.handoff);
  FakeSink sink;
  Ledger ledger(c, sink, MacAddr{2, 0, 0, 0, 0, static_cast<std::uint8_t>(k.self)});
  const auto t0 = Clock::now();
  ledger.set_static_view(0, t0);  // what vipfarmd does before membership's first view
  if (k.before) {
    ledger.install(input(*k.before, k.before_alive), t0);
    ledger.progress_handoff({}, t0);  // that change's handoff over: no flows, no peer waits
  }
  const std::vector<NodeId> was =
      k.before ? owners_of(c, *k.before) : owners_of(c, k.after & ~(ViewMask{1} << (k.self - 1)));
  const std::vector<NodeId> now = owners_of(c, k.after);
  // The old owner still tracks flows in every bucket it gives up.
  for (BucketId b = 0; b < c.buckets; ++b) sink.flows[{0, b}] = 1;
  const Change change = ledger.install(input(k.after, k.after_alive), t0);
  EXPECT_TRUE(change.applied);
  ASSERT_TRUE(ledger.commit());
  const Snapshot& s = sink.last();
  const NodeId self{static_cast<std::uint8_t>(k.self)};
  unsigned gained = 0, given = 0, kept = 0;
  std::uint32_t moved = 0;
  for (BucketId b = 0; b < c.buckets; ++b) {
    if (k.before && was[b] != now[b]) ++moved;
    if (now[b] == self && was[b] != self) {
      ++gained;
      EXPECT_EQ(state(s, b), k.gained) << k.name << ": gained bucket " << b;
    } else if (now[b] != self && was[b] == self) {
      ++given;
      EXPECT_EQ(state(s, b), k.given) << k.name << ": given-up bucket " << b;
    } else if (now[b] == self) {
      ++kept;
      EXPECT_EQ(state(s, b), Is::kOwned) << k.name << ": kept bucket " << b;
    } else {
      EXPECT_EQ(state(s, b), Is::kNotMine) << k.name << ": someone else's bucket " << b;
    }
  }
  EXPECT_GT(gained + given, 0u) << k.name << ": the case moves no bucket of this node";
  if (k.before) {
    EXPECT_EQ(change.moved, moved);
  }
  EXPECT_EQ(s.track, k.handoff);
  EXPECT_EQ(s.releasing_any, k.given == Is::kReleasing && given != 0);
  EXPECT_EQ(ledger.shares()[0].owned, gained + kept);
  EXPECT_EQ(ledger.view(), k.after);
}

INSTANTIATE_TEST_SUITE_P(Ledger, Changes, ::testing::ValuesIn(kChanges),
                         [](const auto& info) { return "case" + std::to_string(info.index); });

// One node's ledger over the farm above, from vipfarmd's start (the static view 0).
struct Farm {
  config::Config c;
  FakeSink sink;
  Ledger ledger;
  Clock::time_point t0 = Clock::now();
  explicit Farm(unsigned self) : c(farm(self)), ledger(c, sink, MacAddr{2, 0, 0, 0, 0, 1}) {
    ledger.set_static_view(0, t0);
  }
  std::vector<Bucket> buckets(bool taking) const {
    const Ledger::Handoff h = ledger.handoff();
    return taking ? h.taking : h.releasing;
  }
};

TEST(Ledger, GivenUpBucketsAreReleasedWhenTheirFlowsEnd) {
  Farm f(1);
  f.ledger.install(input(mask({1, 2}), mask({1, 2, 3})), f.t0);
  f.ledger.install(input(mask({1, 2, 3}), mask({1, 2, 3})), f.t0);
  const std::vector<Bucket> given = f.buckets(false);
  ASSERT_GE(given.size(), 4u);
  // Flows in every other given-up bucket.
  std::vector<Bucket> held;
  for (std::size_t i = 0; i < given.size(); i += 2) {
    f.sink.flows[given[i]] = 3;
    held.push_back(given[i]);
  }
  f.ledger.commit();
  const std::size_t publications = f.sink.published.size();
  const HandoffProgress p = f.ledger.progress_handoff({}, f.t0 + std::chrono::seconds(1));
  EXPECT_EQ(p.released, given.size() - held.size());
  EXPECT_EQ(p.held, held.size());
  EXPECT_EQ(p.cut, 0u);
  EXPECT_FALSE(p.expired);
  EXPECT_EQ(f.buckets(false), held);
  EXPECT_EQ(p.release_map, membership::release_map(held, 1, f.c.buckets));
  ASSERT_TRUE(f.ledger.commit());
  EXPECT_EQ(f.sink.published.size(), publications + 1);
  for (const Bucket& b : given) {
    const bool still = f.sink.flows.count(b) != 0;
    EXPECT_EQ(f.sink.last().releasing.owns(0, b.second), still) << b.second;
  }
  // Nothing changed: nothing published.
  f.ledger.progress_handoff({}, f.t0 + std::chrono::seconds(2));
  EXPECT_FALSE(f.ledger.commit());
  // The window passes: the rest is released, its flows cut.
  const HandoffProgress end =
      f.ledger.progress_handoff({}, f.t0 + std::chrono::seconds(f.c.flows.window_s));
  EXPECT_TRUE(end.expired);
  EXPECT_EQ(end.released, held.size());
  EXPECT_EQ(end.cut, 3 * held.size());
  EXPECT_TRUE(end.release_map.empty());
  EXPECT_TRUE(f.buckets(false).empty());
}

TEST(Ledger, TakenBucketsBecomeWholeWhenEveryLivePeerReleasedThem) {
  Farm f(3);
  f.ledger.install(input(mask({1, 2, 3}), mask({1, 2, 3})), f.t0);
  const std::vector<Bucket> taking = f.buckets(true);
  ASSERT_GE(taking.size(), 2u);
  const Bucket first = taking.front();
  const std::vector<std::uint8_t> releases_first =
      membership::release_map(std::vector<Bucket>{first}, 1, f.c.buckets);
  const auto t = f.t0 + std::chrono::seconds(1);
  struct Step {
    const char* what;
    std::vector<PeerHandoff> peers;
    std::size_t whole;  // of the buckets still taking
  };
  const std::vector<Step> steps = {
      {"node 2 has not installed the view yet",
       {{NodeId{1}, true, true, {}}, {NodeId{2}, true, false, {}}},
       0},
      {"node 1 still releases the first bucket",
       {{NodeId{1}, true, true, releases_first}, {NodeId{2}, true, true, {}}},
       taking.size() - 1},
      {"a dead peer's release map does not count",
       {{NodeId{1}, false, true, releases_first}, {NodeId{2}, true, true, {}}},
       1},
  };
  std::size_t left = taking.size();
  for (const Step& s : steps) {
    const HandoffProgress p = f.ledger.progress_handoff(s.peers, t);
    EXPECT_EQ(p.whole, s.whole) << s.what;
    left -= p.whole;
    EXPECT_EQ(p.waiting, left) << s.what;
    EXPECT_EQ(f.buckets(true).size(), left) << s.what;
  }
  EXPECT_EQ(left, 0u);
  f.ledger.commit();
  for (const Bucket& b : taking) EXPECT_TRUE(f.sink.last().ownership.owns(0, b.second));
  EXPECT_FALSE(f.sink.last().taking.owns(0, first.second));
}

TEST(Ledger, TakenBucketsBecomeWholeWhenTheWindowPasses) {
  Farm f(3);
  f.ledger.install(input(mask({1, 2, 3}), mask({1, 2, 3})), f.t0);
  const std::size_t taking = f.buckets(true).size();
  ASSERT_GT(taking, 0u);
  const std::vector<PeerHandoff> silent = {{NodeId{1}, true, false, {}},
                                           {NodeId{2}, true, false, {}}};
  EXPECT_EQ(f.ledger.progress_handoff(silent, f.t0 + std::chrono::seconds(1)).whole, 0u);
  const HandoffProgress p =
      f.ledger.progress_handoff(silent, f.t0 + std::chrono::seconds(f.c.flows.window_s));
  EXPECT_TRUE(p.expired);
  EXPECT_EQ(p.whole, taking);
}

// Without membership (`view set`): no peer reports its handoff. The buckets given up are
// released as their flows end (a bucket left releasing would send every farm frame through
// the flow table for good: issue 18's drop path).
TEST(Ledger, AStaticViewsHandoffEndsWithoutPeers) {
  Farm f(1);
  f.ledger.set_static_view(mask({1, 2, 3}), f.t0);
  f.ledger.set_static_view(mask({2, 3}), f.t0);
  const std::vector<Bucket> given = f.buckets(false);
  ASSERT_FALSE(given.empty());
  f.sink.flows[given.front()] = 1;
  HandoffProgress p = f.ledger.progress_handoff({}, f.t0 + std::chrono::milliseconds(100));
  EXPECT_EQ(p.released, given.size() - 1);
  EXPECT_EQ(p.held, 1u);
  f.sink.flows.clear();
  p = f.ledger.progress_handoff({}, f.t0 + std::chrono::milliseconds(200));
  EXPECT_EQ(p.released, 1u);
  f.ledger.commit();
  EXPECT_FALSE(f.sink.last().releasing_any) << "every farm frame would be looked up";
  // Back to {1,2,3}: no node is known alive, so what node 1 takes back is whole at once.
  f.ledger.set_static_view(mask({1, 2, 3}), f.t0 + std::chrono::seconds(1));
  EXPECT_TRUE(f.buckets(true).empty());
  f.ledger.commit();
  for (const Bucket& b : given) EXPECT_TRUE(f.sink.last().ownership.owns(0, b.second));
}

TEST(Ledger, AWeightChangesGainsWaitUntilEveryMemberHeardIt) {
  Farm f(1);
  ViewInput in = input(mask({1, 2, 3}), mask({1, 2, 3}));
  in.weights.assign(kMaxNodes + 1, {});
  for (unsigned id = 1; id <= 3; ++id) in.weights[id] = {1};
  f.ledger.install(in, f.t0);
  EXPECT_FALSE(f.ledger.follow(in, f.t0).applied) << "nothing changed";
  const std::uint32_t before = f.ledger.shares()[0].owned;
  const std::vector<NodeId> old = f.ledger.owners()[0];
  // Node 1 advertises weight 4: it gains buckets, but not before the others heard of it.
  in.weights[1] = {4};
  in.weights_acknowledged = false;
  const Change c = f.ledger.follow(in, f.t0);
  EXPECT_TRUE(c.applied);
  EXPECT_TRUE(c.reweighted);
  EXPECT_GT(c.moved, 0u);
  const std::uint32_t after = f.ledger.shares()[0].owned;
  EXPECT_GT(after, before);
  f.ledger.commit();
  const std::vector<NodeId> neu = f.ledger.owners()[0];
  for (BucketId b = 0; b < f.c.buckets; ++b) {
    EXPECT_EQ(f.sink.last().ownership.owns(0, b), old[b] == NodeId{1} && neu[b] == NodeId{1})
        << "bucket " << b << ": the gains wait";
  }
  // Nothing is taken whole while the gains wait, even with the peers silent.
  const std::vector<PeerHandoff> peers = {{NodeId{2}, true, true, {}}, {NodeId{3}, true, true, {}}};
  EXPECT_EQ(f.ledger.progress_handoff(peers, f.t0).whole, 0u);
  EXPECT_FALSE(f.ledger.follow(in, f.t0).applied) << "still not acknowledged";
  in.weights_acknowledged = true;
  const Change ack = f.ledger.follow(in, f.t0);
  EXPECT_TRUE(ack.applied);
  EXPECT_FALSE(ack.reweighted);
  f.ledger.commit();
  EXPECT_EQ(owned_count(f.sink.last(), f.c.buckets), after);
  EXPECT_GT(f.ledger.progress_handoff(peers, f.t0).whole, 0u);
}

TEST(Ledger, AnUnsettledViewServesOnlyWhatItOwnsInBoth) {
  Farm f(1);
  ViewInput in = input(mask({1, 2}), mask({1, 2, 3}));
  in.settled = mask({1, 2, 3});
  f.ledger.install(in, f.t0);
  f.ledger.commit();
  const std::vector<NodeId> view = owners_of(f.c, mask({1, 2}));
  const std::vector<NodeId> settled = owners_of(f.c, mask({1, 2, 3}));
  for (BucketId b = 0; b < f.c.buckets; ++b) {
    EXPECT_EQ(f.sink.last().ownership.owns(0, b), view[b] == NodeId{1} && settled[b] == NodeId{1})
        << b;
  }
  in.settled = in.members;  // settled: the rest is served
  EXPECT_TRUE(f.ledger.follow(in, f.t0).applied);
  f.ledger.commit();
  for (BucketId b = 0; b < f.c.buckets; ++b) {
    EXPECT_EQ(f.sink.last().ownership.owns(0, b), view[b] == NodeId{1}) << b;
  }
}

TEST(Ledger, OneCommitOnePublicationWhateverChanged) {
  Farm f(1);
  EXPECT_TRUE(f.ledger.commit());  // the static view 0
  const std::uint64_t g = f.ledger.generation();
  EXPECT_FALSE(f.ledger.commit());
  f.ledger.install(input(mask({1, 2}), mask({1, 2, 3})), f.t0);
  f.ledger.set_node_mac(NodeId{2}, MacAddr{2, 0, 0, 0, 0, 2});
  f.ledger.set_farm(f.c);
  f.ledger.install(input(mask({1, 2, 3}), mask({1, 2, 3})), f.t0);
  f.ledger.progress_handoff({}, f.t0);
  const std::size_t n = f.sink.published.size();
  EXPECT_TRUE(f.ledger.commit());
  EXPECT_EQ(f.sink.published.size(), n + 1);
  EXPECT_EQ(f.ledger.generation(), g + 1);
  EXPECT_EQ(f.sink.last().generation, g + 1);
  EXPECT_EQ(f.sink.last().node_macs[2], mac48(MacAddr{2, 0, 0, 0, 0, 2}));
  EXPECT_TRUE(f.ledger.announce_requested.exchange(false));
  // The same MAC again changes nothing.
  f.ledger.set_node_mac(NodeId{2}, MacAddr{2, 0, 0, 0, 0, 2});
  EXPECT_FALSE(f.ledger.commit());
  EXPECT_FALSE(f.ledger.announce_requested.load());
}

TEST(Ledger, AReloadReachesTheWorkersAndAloneDerivesAgain) {
  Farm f(1);
  ViewInput in = input(mask({1}), mask({1}));
  f.ledger.install(in, f.t0);
  f.ledger.commit();
  config::Config next = f.c;
  next.unmatched = config::Unmatched::kPass;
  next.flows.syn_timeout_ms = f.c.flows.syn_timeout_ms + 1000;
  f.ledger.set_farm(next);
  ASSERT_TRUE(f.ledger.commit());
  EXPECT_EQ(f.sink.last().unmatched, config::Unmatched::kPass);
  EXPECT_EQ(f.sink.last().timeouts.syn, next.flows.syn_timeout_ms);
  EXPECT_EQ(owned_count(f.sink.last(), f.c.buckets), f.c.buckets) << "alone: every bucket";
  EXPECT_FALSE(f.ledger.follow(in, f.t0).applied);
  f.ledger.reassign();
  EXPECT_TRUE(f.ledger.follow(in, f.t0).applied);
  f.ledger.commit();
  EXPECT_EQ(f.ledger.farm().unmatched, config::Unmatched::kPass);
}

TEST(Ledger, DrainReleasesEverythingAndCountsTheFlowsCut) {
  Farm f(1);
  f.ledger.install(input(mask({1, 2, 3}), mask({1, 2, 3})), f.t0);
  f.ledger.install(input(mask({2, 3}), mask({1, 2, 3})), f.t0);  // node 1 drains out
  const std::vector<Bucket> given = f.buckets(false);
  ASSERT_FALSE(given.empty());
  f.sink.flows[given.front()] = 5;
  f.sink.flows[given.back()] += 2;
  EXPECT_EQ(f.ledger.release_all(), 7u);
  EXPECT_TRUE(f.buckets(false).empty());
  ASSERT_TRUE(f.ledger.commit());
  EXPECT_EQ(owned_count(f.sink.last(), f.c.buckets), 0u);
  EXPECT_FALSE(f.sink.last().releasing_any);
  EXPECT_EQ(f.ledger.release_all(), 0u);
}

TEST(Ledger, TheLeaseGoesToTheSink) {
  Farm f(1);
  f.ledger.set_lease(std::chrono::milliseconds(300));
  ASSERT_TRUE(f.sink.lease.has_value());
  EXPECT_EQ(*f.sink.lease, std::chrono::milliseconds(300));
  f.ledger.set_lease(std::nullopt);
  EXPECT_FALSE(f.sink.lease.has_value());
  EXPECT_EQ(f.sink.renewals, 1);
  EXPECT_EQ(f.sink.revocations, 1);
}

}  // namespace
}  // namespace vipfarm::ownership
