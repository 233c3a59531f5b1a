// Directed VIPs' requester table (issue 16 item 8): a flood of spoofed ARP requests, from
// random addresses and MACs or from one MAC, never displaces confirmed requesters nor what
// was admitted before it; displacement order; the per-MAC cap; the admission rate; expiry;
// confirmations that land only on their own requester, also while the owner rewrites slots.
// And the packet helpers that read requesters and confirming traffic from frames.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "vipfarm/flow/requester_table.hpp"
#include "vipfarm/packet/build.hpp"
#include "vipfarm/packet/reply.hpp"
#include "vipfarm/packet/requester.hpp"

namespace vipfarm::flow {
namespace {

constexpr std::uint64_t kSeed = 0x5eed5eed12345678ULL;

RequesterKey client(std::uint32_t i, std::uint16_t vip = 0) {
  // Real clients: 10.77.x.y, each with its own MAC 02:77:00:xx:xx:xx.
  return {IpAddr::v4(0x0A4D0000U + i), 0x027700000000ULL + i, vip};
}

std::size_t count_standing(const std::vector<RequesterTable::Entry>& es, Standing s) {
  std::size_t n = 0;
  for (const auto& e : es) n += e.standing == s ? 1 : 0;
  return n;
}

bool stored(const Remembered& r) {
  return r.admission == Admission::kAdmitted || r.admission == Admission::kExcess ||
         r.admission == Admission::kCapped;
}
bool excess(const Remembered& r) { return r.admission == Admission::kExcess; }
bool known(const Remembered& r) { return r.admission == Admission::kKnown; }

const RequesterTable::Entry* find(const std::vector<RequesterTable::Entry>& es,
                                  const RequesterKey& k) {
  for (const auto& e : es) {
    if (e.key == k) return &e;
  }
  return nullptr;
}

// MACs that all fall in one set of `t`, starting the search at `from`.
std::vector<std::uint64_t> macs_in_one_set(const RequesterTable& t, std::size_t count,
                                           std::uint64_t from = 0x020000000000ULL) {
  const std::size_t target = t.set_of(from);
  std::vector<std::uint64_t> out;
  for (std::uint64_t m = from; out.size() < count; ++m) {
    if (t.set_of(m) == target) out.push_back(m);
  }
  return out;
}

TEST(RequesterTable, RemembersRefreshesAndIgnoresZeroMac) {
  RequesterTable t(kSeed);
  const Remembered first = t.remember(client(1), 1000);
  EXPECT_EQ(first.admission, Admission::kAdmitted);
  EXPECT_FALSE(first.displaced);
  EXPECT_TRUE(known(t.remember(client(1), 2000)));
  EXPECT_EQ(t.remember({IpAddr::v4(1), 0, 0}, 2000).admission, Admission::kRefused);
  const auto es = t.entries(3000);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].key, client(1));
  EXPECT_EQ(es[0].standing, Standing::kAdmitted);
  EXPECT_EQ(es[0].seen_ms, 2000u);
  // The same address and MAC for another VIP, and an IPv6 requester: entries of their own.
  EXPECT_TRUE(stored(t.remember(client(1, 1), 3000)));
  const RequesterKey v6{*IpAddr::parse("fd77::7"), 0x027700000001ULL, 2};
  EXPECT_TRUE(stored(t.remember(v6, 3000)));
  EXPECT_EQ(t.entries(3000).size(), 3u);
}

// The case: real clients asked (and some sent traffic here), then a flood of 10^5
// requests from random addresses and MACs at 10^4 a second. Every real client is still
// remembered with its standing; the flood holds the rest of the table, mostly as excess.
TEST(RequesterTable, RandomFloodDisplacesNoneOfTheClientsKnownBeforeIt) {
  RequesterTable t(kSeed);
  std::uint64_t now = 1'000'000;
  for (std::uint32_t i = 1; i <= 50; ++i) {
    ASSERT_TRUE(stored(t.remember(client(i), now)));
    if (i % 2 == 0) {
      EXPECT_TRUE(t.confirm(client(i), now + 5));
    }
    now += 20;
  }
  std::mt19937_64 rng(7);
  std::size_t over = 0, refused = 0;
  for (int i = 0; i < 100'000; ++i) {
    const RequesterKey spoofed{IpAddr::v4(static_cast<std::uint32_t>(rng())),
                               (rng() & 0xFEFFFFFFFFFFULL) | 0x020000000000ULL, 0};
    const Remembered r = t.remember(spoofed, now);
    over += excess(r) ? 1 : 0;
    refused += r.admission == Admission::kRefused ? 1 : 0;
    now += i % 10 == 0 ? 1 : 0;  // 10^4 requests a second of the table's clock: 10 s
  }
  const auto es = t.entries(now);
  for (std::uint32_t i = 1; i <= 50; ++i) {
    const auto* e = find(es, client(i));
    ASSERT_NE(e, nullptr) << "client " << i << " displaced by the flood";
    EXPECT_EQ(e->standing, i % 2 == 0 ? Standing::kConfirmed : Standing::kAdmitted) << i;
  }
  // The flood got what the clients left of the burst and the rate's 4 a second over 10 s
  // admitted; the rest is excess.
  EXPECT_GT(over, 99'000u);
  EXPECT_LE(count_standing(es, Standing::kAdmitted), 25u + (64u - 50u) + 4u * 12u);
  EXPECT_GT(es.size(), RequesterTable::kCapacity * 9 / 10);
  EXPECT_LT(refused, 1000u);  // excess displaces excess: the flood churns its own slots
}

// Confirmed clients everywhere: a table full of them (1024 confirmed) is not dented by the
// same flood; every newcomer is refused once the free slots are gone.
TEST(RequesterTable, RandomFloodNeverDisplacesConfirmedEntries) {
  RequesterTable t(kSeed);
  std::uint64_t now = 5'000'000;
  std::vector<RequesterKey> kept;
  for (std::uint32_t i = 1; kept.size() < 700; ++i) {
    now += 300;  // within the admission rate
    if (stored(t.remember(client(i), now))) {
      ASSERT_TRUE(t.confirm(client(i), now));
      kept.push_back(client(i));
    }
  }
  std::mt19937_64 rng(11);
  for (int i = 0; i < 100'000; ++i) {
    t.remember({IpAddr::v4(static_cast<std::uint32_t>(rng())),
                (rng() & 0xFEFFFFFFFFFFULL) | 0x020000000000ULL, 0},
               now + static_cast<std::uint64_t>(i) / 10);
  }
  const auto es = t.entries(now + 10'000);
  for (const RequesterKey& k : kept) {
    const auto* e = find(es, k);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->standing, Standing::kConfirmed);
  }
  EXPECT_EQ(count_standing(es, Standing::kConfirmed), kept.size());
}

// 10^5 requests from one MAC with random addresses: it ends with at most per_mac entries, and
// every other requester is still there (it never displaced any: its set had free slots).
TEST(RequesterTable, OneMacFloodRotatesThroughItsOwnSlots) {
  RequesterTable t(kSeed);
  std::uint64_t now = 1'000'000;
  for (std::uint32_t i = 1; i <= 200; ++i) {
    ASSERT_TRUE(stored(t.remember(client(i), now += 300)));
    if (i % 3 == 0) t.confirm(client(i), now);
  }
  const std::uint64_t attacker = 0x02BADBADBAD0ULL;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 100'000; ++i) {
    t.remember({IpAddr::v4(static_cast<std::uint32_t>(rng())), attacker, 0}, now);
    now += i % 10 == 0 ? 1 : 0;
  }
  const auto es = t.entries(now);
  std::size_t from_attacker = 0;
  for (const auto& e : es) from_attacker += e.key.mac48 == attacker ? 1 : 0;
  EXPECT_EQ(from_attacker, t.limits().per_mac);
  for (std::uint32_t i = 1; i <= 200; ++i) {
    const auto* e = find(es, client(i));
    ASSERT_NE(e, nullptr) << "client " << i;
    EXPECT_EQ(e->standing, i % 3 == 0 ? Standing::kConfirmed : Standing::kAdmitted);
  }
  EXPECT_EQ(es.size(), 200u + t.limits().per_mac);
}

// One set, filled by hand: 2 excess, 3 admitted, 3 confirmed. Newcomers past the rate take
// the excess slots (least recently seen first) and nothing more; newcomers within the rate
// then take the admitted ones (least recently seen first); confirmed ones are never taken.
TEST(RequesterTable, DisplacementOrderExcessThenAdmittedNeverConfirmed) {
  RequesterLimits limits;
  limits.burst = 6;  // the 6 admitted / confirmed fillers; then the rate alone
  limits.rate_per_s = 1;
  RequesterTable t(kSeed, limits);
  const auto macs = macs_in_one_set(t, 20);
  auto key = [&](std::size_t i) { return RequesterKey{IpAddr::v4(0x0A000000U + i), macs[i], 0}; };
  std::uint64_t now = 100'000;
  for (std::size_t i = 0; i < 6; ++i) ASSERT_TRUE(stored(t.remember(key(i), now + i)));
  for (std::size_t i = 3; i < 6; ++i) ASSERT_TRUE(t.confirm(key(i), now + 10));
  // Tokens spent: the next two (same millisecond) come in as excess, into the free ways.
  for (std::size_t i = 6; i < 8; ++i) {
    const Remembered r = t.remember(key(i), now + 20 + i);
    EXPECT_TRUE(excess(r) && !r.displaced) << i;
  }
  now += 30;
  // Excess newcomer 8 displaces excess 6 (least recently seen), 9 displaces 7, 10 displaces
  // 8 (now the oldest excess), and so on: the admitted and confirmed slots are never taken.
  for (std::size_t i = 8; i < 12; ++i) {
    const Remembered r = t.remember(key(i), now + i);
    EXPECT_TRUE(excess(r) && r.displaced && r.victim == Standing::kExcess) << i;
    EXPECT_EQ(find(t.entries(now + i), key(i - 2)), nullptr) << i;
  }
  auto es = t.entries(now + 20);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_NE(find(es, key(i)), nullptr) << i;
  EXPECT_EQ(count_standing(es, Standing::kExcess), 2u);
  // Admitted newcomers (one token a second): first the two excess slots, then admitted 0, 1, 2
  // in the order they were seen; then nothing but confirmed is left: refused.
  now += 1000;
  std::vector<std::size_t> gone;
  for (std::size_t i = 12; i < 18; ++i, now += 1000) {
    const Remembered r = t.remember(key(i), now);
    EXPECT_EQ(r.admission, Admission::kAdmitted) << i;
    EXPECT_TRUE(r.displaced) << i;
    EXPECT_EQ(r.victim, i < 14 ? Standing::kExcess : Standing::kAdmitted) << i;
    es = t.entries(now);
    for (std::size_t j = 0; j < 3; ++j) {
      if (find(es, key(j)) == nullptr && std::find(gone.begin(), gone.end(), j) == gone.end()) {
        gone.push_back(j);
      }
    }
  }
  EXPECT_EQ(gone, (std::vector<std::size_t>{0, 1, 2}));
  es = t.entries(now);
  for (std::size_t i = 3; i < 6; ++i) {
    const auto* e = find(es, key(i));
    ASSERT_NE(e, nullptr) << i;
    EXPECT_EQ(e->standing, Standing::kConfirmed);
  }
  // A set of 3 confirmed and 5 admitted newcomers: confirm those too, then a newcomer within
  // the rate is refused.
  for (std::size_t i = 12; i < 18; ++i) t.confirm(key(i), now);
  const Remembered r = t.remember(key(19), now + 5000);
  EXPECT_EQ(r.admission, Admission::kRefused);
  EXPECT_FALSE(r.displaced);
  EXPECT_EQ(count_standing(t.entries(now + 5000), Standing::kConfirmed), 8u);
}

TEST(RequesterTable, PerMacCapRotatesTheMacsOwnLeastRecentlySeenEntry) {
  RequesterTable t(kSeed);
  const std::uint64_t mac = 0x02AABBCCDD00ULL;
  auto key = [&](std::uint32_t i) { return RequesterKey{IpAddr::v4(0xC0000200U + i), mac, 0}; };
  std::uint64_t now = 10'000;
  for (std::uint32_t i = 0; i < 4; ++i) EXPECT_TRUE(stored(t.remember(key(i), now + i)));
  t.remember(key(0), now + 10);  // 0 seen again: 1 is now this MAC's least recently seen
  const Remembered r = t.remember(key(4), now + 20);
  EXPECT_EQ(r.admission, Admission::kCapped);
  auto es = t.entries(now + 20);
  EXPECT_EQ(es.size(), 4u);
  EXPECT_EQ(find(es, key(1)), nullptr);
  EXPECT_NE(find(es, key(0)), nullptr);
  // Confirmed entries of the MAC are kept: with all four confirmed, a fifth is refused.
  for (std::uint32_t i : {0u, 2u, 3u, 4u}) EXPECT_TRUE(t.confirm(key(i), now + 30));
  EXPECT_EQ(t.remember(key(5), now + 40).admission, Admission::kRefused);
  es = t.entries(now + 40);
  EXPECT_EQ(es.size(), 4u);
  EXPECT_EQ(count_standing(es, Standing::kConfirmed), 4u);
  // Another MAC is not affected by this one's cap.
  EXPECT_TRUE(stored(t.remember(client(9), now + 50)));
}

TEST(RequesterTable, AdmissionRateIsABurstThenASteadyRate) {
  RequesterTable t(kSeed);  // burst 64, 4 a second
  std::uint64_t now = 50'000;
  std::size_t admitted = 0;
  for (std::uint32_t i = 0; i < 1000; ++i) {
    admitted += t.remember(client(i), now).admission == Admission::kAdmitted ? 1 : 0;
  }
  EXPECT_EQ(admitted, 64u);
  now += 1000;
  admitted = 0;
  for (std::uint32_t i = 1000; i < 1100; ++i) {
    admitted += t.remember(client(i), now).admission == Admission::kAdmitted ? 1 : 0;
  }
  EXPECT_EQ(admitted, 4u);
  // An excess requester asking again while the rate allows becomes admitted.
  const auto es = t.entries(now);
  const auto it = std::find_if(es.begin(), es.end(),
                               [](const auto& e) { return e.standing == Standing::kExcess; });
  ASSERT_NE(it, es.end());
  const RequesterKey again = it->key;
  EXPECT_TRUE(known(t.remember(again, now + 1000)));
  EXPECT_EQ(find(t.entries(now + 1000), again)->standing, Standing::kAdmitted);
}

TEST(RequesterTable, ExcessEntriesExpireAdmittedOnesDoNot) {
  RequesterLimits limits;
  limits.burst = 1;
  limits.rate_per_s = 0;
  RequesterTable t(kSeed, limits);
  EXPECT_EQ(t.remember(client(1), 1000).admission, Admission::kAdmitted);
  EXPECT_TRUE(excess(t.remember(client(2), 1000)));
  EXPECT_TRUE(excess(t.remember(client(3), 1000)));
  t.confirm(client(3), 1000);  // once confirmed, at least admitted: no expiry
  EXPECT_EQ(t.entries(1000 + limits.excess_ttl_ms).size(), 3u);
  const auto later = t.entries(1001 + limits.excess_ttl_ms);
  EXPECT_EQ(later.size(), 2u);
  EXPECT_EQ(find(later, client(2)), nullptr);
  // Asking again revives it in its own slot (never two slots for one requester).
  EXPECT_TRUE(known(t.remember(client(2), 2000 + limits.excess_ttl_ms)));
  EXPECT_EQ(t.entries(2000 + limits.excess_ttl_ms).size(), 3u);
}

TEST(RequesterTable, ConfirmNeedsAddressMacAndVipAndLapses) {
  RequesterTable t(kSeed);
  const RequesterKey k = client(5, 1);
  t.remember(k, 1000);
  EXPECT_FALSE(t.confirm({k.address, k.mac48 + 1, 1}, 1500));            // another MAC
  EXPECT_FALSE(t.confirm({IpAddr::v4(0x0A4D00FFU), k.mac48, 1}, 1500));  // another address
  EXPECT_FALSE(t.confirm({k.address, k.mac48, 0}, 1500));                // another VIP
  EXPECT_EQ(t.entries(1500)[0].standing, Standing::kAdmitted);
  EXPECT_TRUE(t.confirm(k, 1500));
  EXPECT_FALSE(t.confirm(k, 1900));  // within the same second: no write
  EXPECT_TRUE(t.confirm(k, 2100));
  EXPECT_EQ(t.entries(2100)[0].standing, Standing::kConfirmed);
  const std::uint64_t lapse = 2100 + t.limits().confirmed_for_ms + 1000;
  EXPECT_EQ(t.entries(lapse)[0].standing, Standing::kAdmitted);
}

// The owner rotates one MAC's requesters through its 4 slots (addresses 0, 1, 2, ..., one a
// second of its clock) while another thread confirms the even addresses only and a third
// reads: a confirmation never lands on an odd one, and every entry read is whole (an address
// the owner wrote, with that MAC and VIP). Confirmations lapse after 2 s, so confirmed
// slots keep being taken again.
TEST(RequesterTable, ConfirmationsNeverLandOnTheSlotsNextRequester) {
  RequesterLimits limits;
  limits.confirmed_for_ms = 2000;
  RequesterTable t(kSeed, limits);
  const std::uint64_t mac = 0x02C0FFEE0000ULL;
  std::atomic<std::uint32_t> written{0};
  std::atomic<bool> done{false};
  std::thread confirmer([&] {
    while (!done.load(std::memory_order_relaxed)) {
      const std::uint32_t w = written.load(std::memory_order_acquire);
      for (std::uint32_t i = w > 8 ? w - 8 : 0; i <= w; ++i) {
        if (i % 2 == 0) t.confirm({IpAddr::v4(i), mac, 3}, std::uint64_t{w} * 1000);
      }
    }
  });
  std::size_t bad = 0, torn = 0;
  std::atomic<std::size_t> confirmed_seen{0};
  std::thread reader([&] {
    while (!done.load(std::memory_order_relaxed)) {
      const std::uint32_t w = written.load(std::memory_order_acquire);
      for (const auto& e : t.entries(std::uint64_t{w} * 1000)) {
        if (e.key.mac48 != mac || e.key.vip != 3 || !e.key.address.is_v4() ||
            e.key.address.v4_value() > written.load(std::memory_order_acquire)) {
          ++torn;
        } else if (e.standing == Standing::kConfirmed) {
          ++confirmed_seen;
          if (e.key.address.v4_value() % 2 != 0) ++bad;
        }
      }
    }
  });
  // Until the reader saw a few hundred confirmed entries and 200 ms passed (5 s at most).
  const auto start = std::chrono::steady_clock::now();
  for (std::uint32_t i = 0;; ++i) {
    written.store(i, std::memory_order_release);
    t.remember({IpAddr::v4(i), mac, 3}, std::uint64_t{i} * 1000);
    const auto spent = std::chrono::steady_clock::now() - start;
    if ((spent > std::chrono::milliseconds(200) && confirmed_seen.load() >= 300) ||
        spent > std::chrono::seconds(5)) {
      break;
    }
  }
  done.store(true);
  confirmer.join();
  reader.join();
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(torn, 0u);
  EXPECT_GE(confirmed_seen.load(), 300u);  // the confirmer did land some (the test can fail)
}

}  // namespace
}  // namespace vipfarm::flow

namespace vipfarm::packet {
namespace {

std::span<const std::byte> bytes(const std::vector<std::byte>& f) { return {f.data(), f.size()}; }

std::vector<std::byte> arp_request(std::uint32_t spa, const MacAddr& src) {
  std::vector<std::byte> f(60);
  const MacAddr broadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  EXPECT_EQ(build_arp(f, 1, broadcast, src, spa, MacAddr{}, 0xC6336410U), 60u);
  return f;
}

TEST(RequesterOf, ArpRequestsAndNeighbourSolicitations) {
  const MacAddr mac = {0x02, 0x77, 0, 0, 0, 0x09};
  Sender s;
  ASSERT_TRUE(requester_of(bytes(arp_request(0x0A4D0009U, mac)), s));
  EXPECT_EQ(s.address, IpAddr::v4(0x0A4D0009U));
  EXPECT_EQ(s.mac48, mac48(mac));
  // An ARP probe (sender 0.0.0.0), a reply, a group source MAC: no requester.
  EXPECT_FALSE(requester_of(bytes(arp_request(0, mac)), s));
  std::vector<std::byte> reply(60);
  build_arp(reply, 2, mac, mac, 0x0A4D0009U, mac, 0xC6336410U);
  EXPECT_FALSE(requester_of(bytes(reply), s));
  EXPECT_FALSE(requester_of(bytes(arp_request(0x0A4D0009U, {0x03, 0, 0, 0, 0, 1})), s));
  // A neighbour solicitation; one from :: (duplicate address detection) is not a requester.
  std::vector<std::byte> ns(86);
  const IpAddr src = *IpAddr::parse("fd77::9");
  ns.resize(build_ns(ns, mac, src, *IpAddr::parse("fd77::100")));
  ASSERT_TRUE(requester_of(bytes(ns), s));
  EXPECT_EQ(s.address, src);
  EXPECT_EQ(s.mac48, mac48(mac));
  std::vector<std::byte> dad(86);
  dad.resize(build_ns(dad, mac, IpAddr{}, *IpAddr::parse("fd77::100")));
  EXPECT_FALSE(requester_of(bytes(dad), s));
  // Truncated frames never read past their end.
  const std::vector<std::byte> whole = arp_request(0x0A4D0009U, mac);
  for (std::size_t n = 0; n < 42; ++n) {
    const std::vector<std::byte> cut(whole.begin(), whole.begin() + static_cast<long>(n));
    EXPECT_FALSE(requester_of(bytes(cut), s)) << n;
  }
}

TEST(OpeningSender, SynsAndDatagramsButNotLaterSegments) {
  FrameSpec spec;
  spec.src = IpAddr::v4(0x0A4D0009U);
  spec.dst = IpAddr::v4(0x0A4D0064U);
  spec.src_port = 40000;
  spec.dst_port = 80;
  std::vector<std::byte> syn = build_frame(spec);  // the builder writes a SYN
  Sender s;
  ASSERT_TRUE(opening_sender(bytes(syn), s));
  EXPECT_EQ(s.address, spec.src);
  EXPECT_EQ(s.mac48, 0x020202020202ULL);
  std::vector<std::byte> group = syn;  // a group source MAC: nobody's
  group[6] = std::byte(0x03);
  EXPECT_FALSE(opening_sender(bytes(group), s));
  std::vector<std::byte> ack = syn;
  ack[14 + 20 + 13] = std::byte(0x10);
  EXPECT_FALSE(opening_sender(bytes(ack), s));
  std::vector<std::byte> synack = syn;
  synack[14 + 20 + 13] = std::byte(0x12);
  EXPECT_FALSE(opening_sender(bytes(synack), s));
  spec.proto = 17;
  EXPECT_TRUE(opening_sender(bytes(build_frame(spec)), s));
  spec.proto = 6;
  spec.src = *IpAddr::parse("fd77::9");
  spec.dst = *IpAddr::parse("fd77::100");
  std::vector<std::byte> syn6 = build_frame(spec);
  ASSERT_TRUE(opening_sender(bytes(syn6), s));
  EXPECT_EQ(s.address, spec.src);
  syn6[14 + 40 + 13] = std::byte(0x10);
  EXPECT_FALSE(opening_sender(bytes(syn6), s));
  // Tagged frames (not remembered either) and truncated ones: false, no read past the end.
  spec.vlans = {7};
  EXPECT_FALSE(opening_sender(bytes(build_frame(spec)), s));
  for (std::size_t n = 0; n < 14 + 20 + 14; ++n) {
    const std::vector<std::byte> cut(syn.begin(), syn.begin() + static_cast<long>(n));
    EXPECT_FALSE(opening_sender(bytes(cut), s)) << n;
  }
}

}  // namespace
}  // namespace vipfarm::packet
