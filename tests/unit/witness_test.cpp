// The authenticated witness: round trip, every forgery refused, and the prober's
// reachable/unreachable transitions under an injected clock.
#include <gtest/gtest.h>

#include <random>

#include "vipfarm/membership/witness.hpp"

namespace vipfarm::membership {
namespace {

constexpr std::int64_t kMs = 1'000'000;

class WitnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(keys_.add(1, std::vector<std::uint8_t>(32, 0x11)), "");
    ASSERT_EQ(keys_.add(2, std::vector<std::uint8_t>(32, 0x22)), "");
    ASSERT_EQ(other_.add(1, std::vector<std::uint8_t>(32, 0x33)), "");
  }
  static WitnessNonce nonce(std::uint8_t fill) {
    WitnessNonce n{};
    n.fill(fill);
    return n;
  }
  // What an honest witness sends back for `probe`.
  std::vector<std::uint8_t> answer(const std::vector<std::uint8_t>& probe) const {
    return answer_witness_probe(probe, keys_, cluster_).answer;
  }

  Keyring keys_;
  Keyring other_;  // another farm's key under the same id
  const std::uint64_t cluster_ = cluster_id("lab");
};

TEST_F(WitnessTest, RoundTrip) {
  const WitnessMessage probe{false, 3, 2, cluster_, nonce(7), 0};
  const std::vector<std::uint8_t> wire = encode_witness(probe, keys_);
  ASSERT_EQ(wire.size(), kWitnessBytes);
  EXPECT_EQ(std::string(wire.begin(), wire.begin() + 4), "VFWP");
  const WitnessDecoded decoded = decode_witness(wire, keys_, cluster_, false);
  ASSERT_TRUE(decoded.message);
  EXPECT_EQ(*decoded.message, probe);

  const WitnessReply reply = answer_witness_probe(wire, keys_, cluster_);
  ASSERT_EQ(reply.answer.size(), kWitnessBytes);
  EXPECT_EQ(std::string(reply.answer.begin(), reply.answer.begin() + 4), "VFWA");
  const WitnessDecoded back = decode_witness(reply.answer, keys_, cluster_, true);
  ASSERT_TRUE(back.message);
  EXPECT_EQ(back.message->nonce, probe.nonce);
  EXPECT_EQ(back.message->key_id, 2);  // answered with the probe's key
  EXPECT_EQ(back.message->verdict, kWitnessReachable);
  // A probe is not an answer, nor the other way round.
  EXPECT_FALSE(decode_witness(wire, keys_, cluster_, true).message);
  EXPECT_FALSE(decode_witness(reply.answer, keys_, cluster_, false).message);
  EXPECT_TRUE(answer_witness_probe(reply.answer, keys_, cluster_).answer.empty());
  EXPECT_TRUE(encode_witness({false, 3, 9, cluster_, nonce(7), 0}, keys_).empty());  // no key 9
}

TEST_F(WitnessTest, WitnessRefusesForgedProbes) {
  const std::vector<std::uint8_t> good =
      encode_witness({false, 1, 1, cluster_, nonce(1), 0}, keys_);
  EXPECT_EQ(answer_witness_probe(encode_witness({false, 1, 1, cluster_, nonce(1), 0}, other_),
                                 keys_, cluster_)
                .reason,
            Reject::kBadMac);
  EXPECT_EQ(answer_witness_probe(good, keys_, cluster_id("other")).reason, Reject::kWrongCluster);
  EXPECT_EQ(answer_witness_probe(encode_witness({false, 1, 1, cluster_, nonce(1), 0}, keys_),
                                 other_, cluster_)
                .reason,
            Reject::kBadMac);
  Keyring none;
  EXPECT_EQ(answer_witness_probe(good, none, cluster_).reason, Reject::kUnknownKey);
  for (std::size_t bit = 0; bit < 8 * good.size(); ++bit) {
    std::vector<std::uint8_t> flipped = good;
    flipped[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
    EXPECT_TRUE(answer_witness_probe(flipped, keys_, cluster_).answer.empty()) << "bit " << bit;
  }
  for (std::size_t size = 0; size < good.size(); ++size) {
    EXPECT_TRUE(answer_witness_probe(std::span(good).first(size), keys_, cluster_).answer.empty());
  }
  std::vector<std::uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_EQ(answer_witness_probe(longer, keys_, cluster_).reason, Reject::kMalformed);
  longer.resize(65536, 0xff);
  EXPECT_EQ(answer_witness_probe(longer, keys_, cluster_).reason, Reject::kMalformed);
  // Node ids outside 1..64 are malformed even when signed.
  EXPECT_EQ(answer_witness_probe(encode_witness({false, 0, 1, cluster_, nonce(1), 0}, keys_), keys_,
                                 cluster_)
                .reason,
            Reject::kMalformed);
  EXPECT_EQ(answer_witness_probe(encode_witness({false, 65, 1, cluster_, nonce(1), 0}, keys_),
                                 keys_, cluster_)
                .reason,
            Reject::kMalformed);
}

TEST_F(WitnessTest, ProberAcceptsOnlyTheAuthenticAnswerToItsOutstandingProbe) {
  WitnessProber prober(cluster_, 3);
  std::int64_t now = 1000 * kMs;
  const std::vector<std::uint8_t> first = prober.probe(now, keys_, 1, nonce(1));
  ASSERT_EQ(first.size(), kWitnessBytes);
  const std::vector<std::uint8_t> first_answer = answer(first);

  // Wrong key: an answer signed by another farm's key 1.
  const auto forged = encode_witness({true, 3, 1, cluster_, nonce(1), kWitnessReachable}, other_);
  EXPECT_EQ(prober.receive(forged, keys_, now), Reject::kBadMac);
  // Wrong cluster (same key, another cluster).
  EXPECT_EQ(
      prober.receive(
          encode_witness({true, 3, 1, cluster_id("other"), nonce(1), kWitnessReachable}, keys_),
          keys_, now),
      Reject::kWrongCluster);
  // Authentic, but for another node's probe, or another nonce.
  EXPECT_EQ(
      prober.receive(encode_witness({true, 4, 1, cluster_, nonce(1), kWitnessReachable}, keys_),
                     keys_, now),
      Reject::kUnknownNode);
  EXPECT_EQ(
      prober.receive(encode_witness({true, 3, 1, cluster_, nonce(2), kWitnessReachable}, keys_),
                     keys_, now),
      Reject::kReplay);
  // The probe itself reflected back.
  EXPECT_EQ(prober.receive(first, keys_, now), Reject::kMalformed);
  // Every flipped bit and every truncation of the real answer.
  for (std::size_t bit = 0; bit < 8 * first_answer.size(); ++bit) {
    std::vector<std::uint8_t> flipped = first_answer;
    flipped[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
    EXPECT_TRUE(prober.receive(flipped, keys_, now).has_value()) << "bit " << bit;
  }
  for (std::size_t size = 0; size < first_answer.size(); ++size) {
    EXPECT_EQ(prober.receive(std::span(first_answer).first(size), keys_, now), Reject::kMalformed);
  }
  std::vector<std::uint8_t> oversized = first_answer;
  oversized.resize(9000, 0);
  EXPECT_EQ(prober.receive(oversized, keys_, now), Reject::kMalformed);
  EXPECT_FALSE(prober.reachable());

  // The real one is taken once; the same answer again is a replay.
  EXPECT_EQ(prober.receive(first_answer, keys_, now + 5 * kMs), std::nullopt);
  EXPECT_TRUE(prober.reachable());
  EXPECT_EQ(prober.receive(first_answer, keys_, now + 6 * kMs), Reject::kReplay);

  // An old answer replayed against a newer probe matches nothing.
  now += 500 * kMs;
  const std::vector<std::uint8_t> second = prober.probe(now, keys_, 1, nonce(2));
  EXPECT_EQ(prober.receive(first_answer, keys_, now), Reject::kReplay);
  // An answer after the timeout is refused.
  EXPECT_EQ(prober.receive(answer(second), keys_, now + 400 * kMs), Reject::kReplay);
}

TEST_F(WitnessTest, RandomBytesAreNeverAccepted) {
  WitnessProber prober(cluster_, 1);
  const std::vector<std::uint8_t> probe = prober.probe(0, keys_, 1, nonce(5));
  std::mt19937_64 rng(20261207);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<std::size_t> size(0, 2 * kWitnessBytes);
  for (int i = 0; i < 10000; ++i) {
    // Half of them exactly the right size with the right magic and version, so the MAC
    // check is what refuses them.
    std::vector<std::uint8_t> d(i % 2 == 0 ? kWitnessBytes : size(rng));
    for (std::uint8_t& b : d) b = static_cast<std::uint8_t>(byte(rng));
    if (i % 2 == 0) {
      std::copy_n("VFWA", 4, d.begin());
      d[4] = 1;
      d[5] = 1;
      d[6] = 0;
      d[7] = 1;
      d[32] = kWitnessReachable;
    }
    ASSERT_TRUE(prober.receive(d, keys_, 1).has_value()) << i;
    if (i % 2 == 0) std::copy_n("VFWP", 4, d.begin());
    ASSERT_TRUE(answer_witness_probe(d, keys_, cluster_).answer.empty()) << i;
  }
  EXPECT_FALSE(prober.reachable());
  EXPECT_EQ(prober.receive(answer(probe), keys_, 1), std::nullopt);  // still works
}

TEST_F(WitnessTest, ProberTransitionsWithAFakeClock) {
  WitnessProber prober(cluster_, 2, 400 * kMs, 2);
  std::int64_t now = 0;
  std::uint8_t n = 0;
  // One period: a probe, then maybe its answer 10 ms later, then the timeout passes.
  auto period = [&](bool answered) {
    const auto probe = prober.probe(now, keys_, 1, nonce(++n));
    if (answered) {
      EXPECT_EQ(prober.receive(answer(probe), keys_, now + 10 * kMs), std::nullopt);
    }
    prober.tick(now + 450 * kMs);
    now += 500 * kMs;
  };
  EXPECT_FALSE(prober.reachable());  // starts unreachable
  period(false);
  EXPECT_FALSE(prober.reachable());
  period(true);
  EXPECT_TRUE(prober.reachable());  // one authentic answer
  period(false);
  EXPECT_TRUE(prober.reachable());  // one miss is tolerated
  period(true);
  period(false);
  EXPECT_TRUE(prober.reachable());  // misses must be in a row
  period(false);
  EXPECT_FALSE(prober.reachable());  // the second miss in a row
  period(false);
  EXPECT_FALSE(prober.reachable());
  period(true);
  EXPECT_TRUE(prober.reachable());

  // Without tick(): a new probe counts the unanswered one as missed.
  prober.probe(now, keys_, 1, nonce(++n));
  prober.probe(now + 500 * kMs, keys_, 1, nonce(++n));
  EXPECT_TRUE(prober.reachable());
  prober.probe(now + 1000 * kMs, keys_, 1, nonce(++n));
  EXPECT_FALSE(prober.reachable());
  // Signing fails (no key 9): counted as a miss, nothing outstanding.
  WitnessProber other(cluster_, 2);
  const auto p = other.probe(0, keys_, 1, nonce(1));
  EXPECT_EQ(other.receive(answer(p), keys_, 1), std::nullopt);
  EXPECT_TRUE(other.probe(500 * kMs, keys_, 9, nonce(2)).empty());
  EXPECT_TRUE(other.probe(1000 * kMs, keys_, 9, nonce(3)).empty());
  EXPECT_FALSE(other.reachable());
}

TEST_F(WitnessTest, RandomNonceDiffers) {
  const auto a = random_witness_nonce(), b = random_witness_nonce();
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);
}

}  // namespace
}  // namespace vipfarm::membership
