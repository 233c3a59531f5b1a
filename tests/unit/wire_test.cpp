// The heartbeat wire format: round trip, and every rejection reason (I6: nothing
// unauthenticated is ever accepted).
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include <openssl/evp.h>

#include <atomic>

#include "vipfarm/membership/wire.hpp"

// OpenSSL's EVP_MAC_final, wrapped at link time (tests/unit/meson.build: --wrap): while
// g_fail_mac is set, it fails as OpenSSL may (out of memory, a provider error) and writes
// nothing, which is how the HMAC failure is injected under the real heartbeat code.
std::atomic<bool> g_fail_mac{false};
extern "C" int __real_EVP_MAC_final(EVP_MAC_CTX* ctx, unsigned char* out, size_t* outl,
                                    size_t outsize);
extern "C" int __wrap_EVP_MAC_final(EVP_MAC_CTX* ctx, unsigned char* out, size_t* outl,
                                    size_t outsize) {
  if (g_fail_mac.load()) return 0;
  return __real_EVP_MAC_final(ctx, out, outl, outsize);
}

namespace vipfarm::membership {
namespace {

std::vector<std::uint8_t> key_bytes(std::uint8_t fill, std::size_t size = 32) {
  return std::vector<std::uint8_t>(size, fill);
}

class WireTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(keys_.add(1, key1_), "");
    ASSERT_EQ(keys_.add(2, key2_), "");
    hb_.state = NodeState::kUp;
    hb_.key_id = 1;
    hb_.cluster = cluster_;
    hb_.node = 2;
    hb_.incarnation = 1764000000123;
    hb_.sequence = 42;
    for (std::size_t i = 0; i < hb_.fingerprint.size(); ++i) {
      hb_.fingerprint[i] = static_cast<std::uint8_t>(i * 7);
    }
    hb_.epoch = 9;
    hb_.installed = 0b111;
    hb_.proposed = 0b101;
    hb_.mac = {0x02, 0x00, 0x5e, 0x10, 0x20, 0x30};
    hb_.weights = {1, 2, 300};
  }

  Decoded decode_as_node1(const std::vector<std::uint8_t>& d) const {
    return decode(d, keys_, cluster_, 1, 0b111);
  }

  std::vector<std::uint8_t> key1_ = key_bytes(0x11), key2_ = key_bytes(0x22, 48);
  Keyring keys_;
  std::uint64_t cluster_ = cluster_id("lab");
  Heartbeat hb_;
};

TEST_F(WireTest, RoundTrip) {
  const auto d = encode(hb_, key1_);
  EXPECT_EQ(d.size(), kHeaderBytes + 2 * 3 + 2 + kMacBytes);
  const Decoded r = decode_as_node1(d);
  ASSERT_TRUE(r.heartbeat.has_value()) << to_string(r.reason);
  EXPECT_EQ(*r.heartbeat, hb_);
  // Releasing buckets 5 of group 0 and 200 of group 2, with 3 groups of 256 buckets.
  const std::vector<std::pair<std::uint16_t, std::uint32_t>> held = {{0, 5}, {2, 200}};
  hb_.releasing = release_map(held, 3, 256);
  ASSERT_EQ(hb_.releasing.size(), 3 * 256 / 8);
  const auto f = encode(hb_, key1_);
  EXPECT_EQ(f.size(), kHeaderBytes + 2 * 3 + 2 + 96 + kMacBytes);
  const Decoded g = decode_as_node1(f);
  ASSERT_TRUE(g.heartbeat.has_value()) << to_string(g.reason);
  EXPECT_EQ(*g.heartbeat, hb_);
  for (std::size_t group = 0; group < 3; ++group) {
    for (std::uint32_t b = 0; b < 256; ++b) {
      const bool want = (group == 0 && b == 5) || (group == 2 && b == 200);
      ASSERT_EQ(releases(g.heartbeat->releasing, group, b, 256), want) << group << " " << b;
    }
  }
}

TEST(ReleaseMap, EveryBucketHasItsBitUpTo2048AndLargerFarmsFoldConservatively) {
  std::vector<std::pair<std::uint16_t, std::uint32_t>> held = {{1, 1023}};
  auto map = release_map(held, 2, 1024);
  EXPECT_EQ(map.size(), kMaxReleaseBytes);
  std::size_t set = 0;
  for (std::size_t g = 0; g < 2; ++g) {
    for (std::uint32_t b = 0; b < 1024; ++b) set += releases(map, g, b, 1024) ? 1 : 0;
  }
  EXPECT_EQ(set, 1U);
  EXPECT_TRUE(releases(map, 1, 1023, 1024));
  // 65536 buckets: bucket 3 and bucket 3 + 2048 share a bit (both read as held), never
  // one held and read as released.
  held = {{0, 3}};
  map = release_map(held, 1, 65536);
  EXPECT_EQ(map.size(), kMaxReleaseBytes);
  EXPECT_TRUE(releases(map, 0, 3, 65536));
  EXPECT_TRUE(releases(map, 0, 3 + 2048, 65536));
  EXPECT_FALSE(releases(map, 0, 4, 65536));
  EXPECT_TRUE(release_map({}, 1, 65536).empty());
  EXPECT_FALSE(releases({}, 0, 3, 65536));
}

TEST_F(WireTest, EitherKeyOfTheRingVerifiesSoKeysRotateWithoutARestart) {
  hb_.key_id = 2;
  ASSERT_TRUE(decode_as_node1(encode(hb_, key2_)).heartbeat.has_value());
  hb_.key_id = 1;
  ASSERT_TRUE(decode_as_node1(encode(hb_, key1_)).heartbeat.has_value());
}

TEST_F(WireTest, KeyringRefusesShortAndDuplicateKeys) {
  Keyring ring;
  EXPECT_NE(ring.add(7, key_bytes(1, 31)), "");
  EXPECT_EQ(ring.add(7, key_bytes(1, 32)), "");
  EXPECT_NE(ring.add(7, key_bytes(2, 32)), "");
  EXPECT_EQ(ring.find(8), nullptr);
}

TEST_F(WireTest, EveryTruncationIsMalformed) {
  const auto d = encode(hb_, key1_);
  for (std::size_t n = 0; n < d.size(); ++n) {
    const Decoded r = decode_as_node1({d.begin(), d.begin() + static_cast<std::ptrdiff_t>(n)});
    ASSERT_FALSE(r.heartbeat.has_value()) << n;
    ASSERT_EQ(r.reason, Reject::kMalformed) << n;
  }
}

TEST_F(WireTest, OversizedAndBadLayoutsAreMalformed) {
  auto d = encode(hb_, key1_);
  auto longer = d;
  longer.push_back(0);
  EXPECT_EQ(decode_as_node1(longer).reason, Reject::kMalformed);
  EXPECT_EQ(decode_as_node1(std::vector<std::uint8_t>(kMaxHeartbeatBytes + 1, 0)).reason,
            Reject::kMalformed);
  auto bad = [&](std::size_t at, std::uint8_t value) {
    auto copy = d;
    copy[at] = value;
    return decode_as_node1(copy).reason;
  };
  EXPECT_EQ(bad(0, 'X'), Reject::kMalformed);  // magic
  EXPECT_EQ(bad(4, 4), Reject::kMalformed);    // version
  EXPECT_EQ(bad(5, 4), Reject::kMalformed);    // state
  EXPECT_EQ(bad(4, 1), Reject::kMalformed);    // version 1 (a "releasing" flag, no map)
  EXPECT_EQ(bad(4, 2), Reject::kMalformed);    // version 2 (no heard list)
  EXPECT_EQ(bad(17, 2), Reject::kMalformed);   // flags: only bit 0 ("clear") is defined
  EXPECT_EQ(bad(17, 0x80), Reject::kMalformed);
  EXPECT_EQ(bad(18, 4), Reject::kMalformed);   // weight count disagrees with the size
  EXPECT_EQ(bad(18, 65), Reject::kMalformed);  // more groups than the bound
  EXPECT_EQ(bad(19, 1), Reject::kMalformed);   // heard count disagrees with the size
  EXPECT_EQ(bad(19, 64), Reject::kMalformed);  // more heard peers than the bound
  EXPECT_EQ(bad(98, 1), Reject::kMalformed);   // reserved after the MAC
  EXPECT_EQ(bad(99, 1), Reject::kMalformed);
  // Release map length: disagreeing with the size, or over the bound.
  const std::size_t len_at = kHeaderBytes + 2 * 3;
  EXPECT_EQ(bad(len_at + 1, 1), Reject::kMalformed);
  hb_.releasing.assign(kMaxReleaseBytes, 0xFF);
  auto full = encode(hb_, key1_);
  EXPECT_EQ(full.size(), kHeaderBytes + 2 * 3 + 2 + kMaxReleaseBytes + kMacBytes);
  EXPECT_TRUE(decode_as_node1(full).heartbeat.has_value());
  full[len_at] = 0x01;  // 256 + 256 bytes claimed
  EXPECT_EQ(decode_as_node1(full).reason, Reject::kMalformed);
}

// The heard list (version 3): round trip, and every bad entry refused before the MAC.
TEST_F(WireTest, HeardListRoundTripsAndBadEntriesAreMalformed) {
  hb_.clear = true;
  hb_.heard = {{2, Heard::kMutual | Heard::kSupports, 77},
               {3, Heard::kHolds, 1},
               {64, 0, ~std::uint64_t{0}}};
  const auto d = encode(hb_, key1_);
  EXPECT_EQ(d.size(), kHeaderBytes + 2 * 3 + 2 + 3 * kHeardBytes + kMacBytes);
  const Decoded ok = decode_as_node1(d);
  ASSERT_TRUE(ok.heartbeat.has_value());
  EXPECT_EQ(*ok.heartbeat, hb_);
  const std::size_t at = kHeaderBytes + 2 * 3 + 2;  // the first entry
  auto bad = [&](std::size_t offset, std::uint8_t value) {
    auto copy = d;
    copy[at + offset] = value;
    return decode_as_node1(copy).reason;
  };
  EXPECT_EQ(bad(0, 0), Reject::kMalformed);                 // node 0
  EXPECT_EQ(bad(kHeardBytes * 2, 65), Reject::kMalformed);  // node 65
  EXPECT_EQ(bad(0, 3), Reject::kMalformed);                 // not ascending (3, 3)
  EXPECT_EQ(bad(kHeardBytes, 1), Reject::kMalformed);       // not ascending (2, 1)
  EXPECT_EQ(bad(1, 8), Reject::kMalformed);                 // an undefined flag
  EXPECT_EQ(bad(2, 0xAB), Reject::kBadMac);                 // a sequence byte: signed
  // At the bounds: 63 heard peers, 256 release bytes, 64 groups fit one IPv6 datagram.
  hb_.heard.clear();
  for (std::uint8_t id = 2; id <= 64; ++id) hb_.heard.push_back({id, Heard::kAllFlags, id});
  hb_.releasing.assign(kMaxReleaseBytes, 0xFF);
  hb_.weights.assign(kMaxWireGroups, 7);
  const auto full = encode(hb_, key1_);
  EXPECT_EQ(full.size(), kMaxHeartbeatBytes);
  EXPECT_LE(full.size(), 1280u - 40 - 8);
  ASSERT_TRUE(decode_as_node1(full).heartbeat.has_value());
  EXPECT_EQ(*decode_as_node1(full).heartbeat, hb_);
}

TEST_F(WireTest, UnknownKeyAndBadMac) {
  hb_.key_id = 9;
  EXPECT_EQ(decode_as_node1(encode(hb_, key1_)).reason, Reject::kUnknownKey);
  hb_.key_id = 1;
  EXPECT_EQ(decode_as_node1(encode(hb_, key2_)).reason, Reject::kBadMac);  // wrong key
  // Any bit flipped in a signed field the layout checks do not catch: bad MAC.
  const auto d = encode(hb_, key1_);
  for (std::size_t at : {8, 16, 20, 28, 36, 67, 68, 76, 84, 92, 97, 100, 105}) {
    auto copy = d;
    copy[at] ^= 0x01;
    ASSERT_EQ(decode_as_node1(copy).reason, Reject::kBadMac) << at;
  }
  auto copy = d;
  copy.back() ^= 0x80;  // the MAC itself
  EXPECT_EQ(decode_as_node1(copy).reason, Reject::kBadMac);
}

TEST_F(WireTest, AuthenticButWrongClusterOrUnknownNode) {
  hb_.cluster = cluster_id("another");
  EXPECT_EQ(decode_as_node1(encode(hb_, key1_)).reason, Reject::kWrongCluster);
  hb_.cluster = cluster_;
  for (std::uint8_t node : {0, 1, 4, 65, 255}) {  // none, ourselves, unconfigured, out of range
    hb_.node = node;
    EXPECT_EQ(decode_as_node1(encode(hb_, key1_)).reason, Reject::kUnknownNode) << int(node);
  }
}

TEST_F(WireTest, RandomDatagramsAreNeverAccepted) {
  std::mt19937_64 rng(20261125);
  const auto d = encode(hb_, key1_);
  std::array<std::size_t, kRejectCount> seen{};
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::uint8_t> junk;
    if (i % 2 == 0) {  // valid header and size, random bytes after the key id
      junk = d;
      for (std::size_t at = 8; at < junk.size(); ++at) junk[at] = static_cast<std::uint8_t>(rng());
      junk[17] = junk[19] = junk[98] = junk[99] = 0;  // no flags, no heard list
      junk[18] = 3;
      junk[kHeaderBytes + 6] = junk[kHeaderBytes + 7] = 0;  // no release map
    } else {
      junk.resize(rng() % (kMaxHeartbeatBytes + 16));
      for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    }
    const Decoded r = decode_as_node1(junk);
    ASSERT_FALSE(r.heartbeat.has_value()) << i;
    ++seen[static_cast<std::size_t>(r.reason)];
  }
  EXPECT_GT(seen[static_cast<std::size_t>(Reject::kBadMac)], 9000u);
  EXPECT_GT(seen[static_cast<std::size_t>(Reject::kMalformed)], 9000u);
}

// A failing HMAC computation refuses the datagram (bad_mac): the expected MAC is never
// taken as all zeroes, so a datagram with a zero MAC (or any) does not verify.
TEST_F(WireTest, AFailingHmacRefusesTheDatagram) {
  auto good = encode(hb_, key1_);
  auto zero = good;
  std::fill(zero.end() - static_cast<std::ptrdiff_t>(kMacBytes), zero.end(), 0);
  ASSERT_TRUE(decode_as_node1(good).heartbeat.has_value());
  g_fail_mac = true;
  const Decoded with_zero = decode_as_node1(zero);
  const Decoded with_real = decode_as_node1(good);
  std::array<std::uint8_t, 32> out{};
  const bool computed = keys_.mac(1, good, out);
  g_fail_mac = false;
  EXPECT_FALSE(computed);
  EXPECT_FALSE(with_zero.heartbeat.has_value());
  EXPECT_EQ(with_zero.reason, Reject::kBadMac);
  EXPECT_FALSE(with_real.heartbeat.has_value());
  EXPECT_EQ(with_real.reason, Reject::kBadMac);
  EXPECT_TRUE(decode_as_node1(good).heartbeat.has_value());  // and it recovers
}

// Incarnations are random, not ordered: another incarnation is refused while the current one
// is heard (a replayed previous boot), accepted once the current one has been silent for
// forget_after (the peer was declared dead: a restart, whatever its clock says).
TEST(Freshness, AnotherIncarnationOnlyAfterTheCurrentFellSilent) {
  constexpr std::int64_t kMs = 1'000'000;
  Freshness f(800 * kMs);
  EXPECT_EQ(f.check(2, 100, 5, 0), std::nullopt);
  EXPECT_EQ(f.check(2, 100, 6, 10 * kMs), std::nullopt);
  EXPECT_EQ(f.check(2, 100, 6, 20 * kMs), Reject::kReplay);   // the same datagram again
  EXPECT_EQ(f.check(2, 100, 3, 20 * kMs), Reject::kReplay);   // an old sequence
  EXPECT_EQ(f.check(2, 7, 1, 500 * kMs), Reject::kStale);     // restarted too soon, or forged
  EXPECT_EQ(f.check(2, 7, 2, 809 * kMs), Reject::kStale);     // 799 ms after the last accepted
  EXPECT_EQ(f.check(2, 7, 3, 810 * kMs), std::nullopt);       // 800 ms: the old boot is dead
  EXPECT_EQ(f.check(2, 100, 99, 900 * kMs), Reject::kStale);  // the previous boot, replayed
  EXPECT_EQ(f.check(2, 7, 3, 900 * kMs), Reject::kReplay);
  EXPECT_EQ(f.check(3, 1, 1, 900 * kMs), std::nullopt);  // peers are independent
  f.forget(2);
  EXPECT_EQ(f.check(2, 50, 1, 901 * kMs), std::nullopt);
  EXPECT_EQ(f.check(0, 1, 1, 901 * kMs), Reject::kUnknownNode);
}

// Before any cryptography: what a datagram claims, read but not trusted.
TEST_F(WireTest, PeekReadsTheClaimOfAHeartbeatShapedDatagramOnly) {
  hb_.incarnation = 0x1122334455667788;
  hb_.sequence = 99;
  const auto d = encode(hb_, key1_);
  const auto claim = peek(d);
  ASSERT_TRUE(claim.has_value());
  EXPECT_EQ(claim->cluster, hb_.cluster);
  EXPECT_EQ(claim->node, hb_.node);
  EXPECT_EQ(claim->incarnation, hb_.incarnation);
  EXPECT_EQ(claim->sequence, 99u);
  EXPECT_FALSE(peek(std::span(d).first(kMinHeartbeatBytes - 1)).has_value());
  auto other = d;
  other[4] = 2;  // version 2
  EXPECT_FALSE(peek(other).has_value());
  other = d;
  other[0] = 'X';
  EXPECT_FALSE(peek(other).has_value());
  other = d;
  other.resize(kMaxHeartbeatBytes + 1);
  EXPECT_FALSE(peek(other).has_value());
}

// admit() refuses, without changing what check() accepts, what check() would refuse and
// sequences too far ahead of a heard incarnation; after silence anything may be verified.
TEST(Freshness, AdmitRefusesBeforeCryptographyWhatCannotBeFresh) {
  constexpr std::int64_t kMs = 1'000'000;
  Freshness f(800 * kMs);
  EXPECT_EQ(f.admit({0, 2, 100, 5}, 0), std::nullopt);  // nothing heard yet: any
  EXPECT_EQ(f.check(2, 100, 5, 0), std::nullopt);
  EXPECT_EQ(f.admit({0, 2, 100, 5}, kMs), Reject::kReplay);
  EXPECT_EQ(f.admit({0, 2, 7, 1}, kMs), Reject::kStale);
  EXPECT_EQ(f.admit({0, 2, 100, 5 + Freshness::kWindow}, kMs), std::nullopt);
  EXPECT_EQ(f.admit({0, 2, 100, 6 + Freshness::kWindow}, kMs), Reject::kAhead);
  EXPECT_EQ(f.admit({0, 2, 100, ~0ull}, kMs), Reject::kAhead);
  EXPECT_EQ(f.check(2, 100, 6, 2 * kMs), std::nullopt);  // admit() advanced nothing
  // Silent for forget_after: another incarnation, and any sequence, may be verified.
  EXPECT_EQ(f.admit({0, 2, 100, 1 << 30}, 802 * kMs), std::nullopt);
  EXPECT_EQ(f.admit({0, 2, 7, 1}, 802 * kMs), std::nullopt);
  EXPECT_EQ(f.admit({0, 0, 1, 1}, 802 * kMs), Reject::kUnknownNode);
}

// Each peer's verifications are budgeted: a burst, then kBudgetPerSecond; peers apart.
TEST(Freshness, TheVerificationBudgetBoundsAFloodPerPeer) {
  constexpr std::int64_t kMs = 1'000'000;
  Freshness f(800 * kMs);
  const std::int64_t t0 = 5'000 * kMs;
  std::int64_t admitted = 0;
  for (int i = 0; i < 10'000; ++i) admitted += !f.admit({0, 3, 1, 1 + std::uint64_t(i)}, t0);
  EXPECT_EQ(admitted, Freshness::kBudgetBurst);
  EXPECT_EQ(f.admit({0, 3, 1, 1}, t0), Reject::kOverBudget);
  EXPECT_EQ(f.admit({0, 4, 1, 1}, t0), std::nullopt);  // another peer's budget is whole
  // A second later, a second's worth more (and no more than the burst).
  admitted = 0;
  for (int i = 0; i < 10'000; ++i) admitted += !f.admit({0, 3, 1, 1}, t0 + 1000 * kMs);
  EXPECT_EQ(admitted, std::min(Freshness::kBudgetPerSecond, Freshness::kBudgetBurst));
  // 100 ms after that: a tenth of a second's worth.
  admitted = 0;
  for (int i = 0; i < 10'000; ++i) admitted += !f.admit({0, 3, 1, 1}, t0 + 1100 * kMs);
  EXPECT_EQ(admitted, Freshness::kBudgetPerSecond / 10);
}

TEST(Wire, FingerprintFromHex) {
  const std::string hex(64, 'a');
  const auto fp = fingerprint_from_hex(hex);
  ASSERT_TRUE(fp.has_value());
  EXPECT_EQ((*fp)[0], 0xaa);
  EXPECT_FALSE(fingerprint_from_hex(hex.substr(1)).has_value());
  EXPECT_FALSE(fingerprint_from_hex(std::string(63, 'a') + "g").has_value());
  EXPECT_NE(cluster_id("a"), cluster_id("b"));
}

// The cluster key file: private (no group/other bits), at least 32 bytes, a regular file.
class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/vipfarm-keyfile-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string write(const std::string& name, std::size_t bytes, mode_t mode) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << std::string(bytes, 'k');
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string dir_;
};

TEST_F(KeyFileTest, APrivateKeyOfAtLeast32BytesIsRead) {
  std::vector<std::uint8_t> key;
  EXPECT_EQ(read_key_file(write("ok", 32, 0600), key), "");
  EXPECT_EQ(key, std::vector<std::uint8_t>(32, 'k'));
  EXPECT_EQ(read_key_file(write("ro", 64, 0400), key), "");
  EXPECT_EQ(key.size(), 64u);
}

TEST_F(KeyFileTest, GroupOrWorldAccessIsRefusedNamingTheMode) {
  for (const mode_t mode : {0644, 0640, 0604, 0620, 0602, 0610}) {
    std::vector<std::uint8_t> key;
    const std::string path = write("k" + std::to_string(mode), 32, mode);
    const std::string err = read_key_file(path, key);
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    EXPECT_NE(err.find(path), std::string::npos) << err;
    EXPECT_NE(err.find(std::string("mode ") + octal), std::string::npos) << err;
    EXPECT_NE(err.find("chmod 600"), std::string::npos) << err;
    EXPECT_TRUE(key.empty());
  }
}

TEST_F(KeyFileTest, AKeyOwnedByAnotherUserIsRefusedNamingTheOwner) {
  const std::string path = write("theirs", 32, 0600);
  if (::chown(path.c_str(), 65534, 65534) != 0) {
    GTEST_SKIP() << "chown needs root: " << std::strerror(errno);
  }
  std::vector<std::uint8_t> key;
  const std::string err = read_key_file(path, key);
  EXPECT_NE(err.find(path), std::string::npos) << err;
  EXPECT_NE(err.find("owned by uid 65534"), std::string::npos) << err;
  EXPECT_NE(err.find("chown root:root"), std::string::npos) << err;
  EXPECT_TRUE(key.empty());
}

TEST_F(KeyFileTest, ASymlinkIsNotFollowed) {
  const std::string target = write("real", 32, 0600);
  const std::string link = dir_ + "/link";
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  std::vector<std::uint8_t> key;
  const std::string err = read_key_file(link, key);
  EXPECT_NE(err.find(link), std::string::npos) << err;
  EXPECT_NE(err.find(std::strerror(ELOOP)), std::string::npos) << err;
  EXPECT_TRUE(key.empty());
}

TEST_F(KeyFileTest, AShortKeyAMissingFileAndADirectoryAreRefused) {
  std::vector<std::uint8_t> key;
  std::string err = read_key_file(write("short", 31, 0600), key);
  EXPECT_NE(err.find("holds 31 bytes; a cluster key needs at least 32"), std::string::npos) << err;
  EXPECT_TRUE(key.empty());
  err = read_key_file(dir_ + "/absent", key);
  EXPECT_NE(err.find("No such file"), std::string::npos) << err;
  ::chmod(dir_.c_str(), 0700);
  err = read_key_file(dir_, key);
  EXPECT_FALSE(err.empty());
}

TEST(Reject, EveryReasonHasAName) {
  EXPECT_EQ(to_string(Reject::kBadTtl), "bad_ttl");
  EXPECT_EQ(to_string(Reject::kReplay), "replay");
  EXPECT_EQ(to_string(Reject::kWrongSource), "wrong_source");
  EXPECT_EQ(to_string(Reject::kAhead), "ahead");
  EXPECT_EQ(to_string(Reject::kOverBudget), "over_budget");
  EXPECT_EQ(kRejectCount, 11u);
}

}  // namespace
}  // namespace vipfarm::membership
