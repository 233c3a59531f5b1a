// The flow table: identity, the TCP state machine, timeouts (also across a clock wrap),
// per-bucket counts, the eviction policy under a SYN flood and when overfull, incremental
// sweep, and a differential run against a plain std::unordered_map model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>
#include <unordered_map>
#include <vector>

#include "vipfarm/flow/flow_table.hpp"
#include "vipfarm/flow/handoff.hpp"

namespace vipfarm::flow {
namespace {

constexpr std::uint8_t kFin = 0x01, kSynFlag = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;
constexpr std::uint8_t kTcp = 6, kUdp = 17;

FlowTuple v4(std::uint32_t client, std::uint16_t client_port, std::uint8_t proto = kTcp,
             std::uint16_t server_port = 80, std::uint32_t server = 0xC6336401) {
  FlowTuple t;
  t.client = IpAddr::v4(client);
  t.server = IpAddr::v4(server);
  t.client_port = client_port;
  t.server_port = server_port;
  t.proto = proto;
  return t;
}

FlowTuple v6(std::uint64_t client_lo, std::uint16_t client_port, std::uint8_t proto = kTcp) {
  FlowTuple t;
  t.client = {0x20010db800010000ULL, client_lo};
  t.server = {0x20010db800000000ULL, 0x10};
  t.client_port = client_port;
  t.server_port = 443;
  t.proto = proto;
  return t;
}

// A random client, v4 or v6, TCP to the VIP: what a flood (or a crowd) sends.
FlowTuple random_tuple(std::mt19937_64& rng) {
  FlowTuple t = (rng() & 1) != 0 ? v4(static_cast<std::uint32_t>(rng()), 0) : v6(rng(), 0);
  t.client_port = static_cast<std::uint16_t>(rng());
  return t;
}

// Distinct timeouts per state, so a wrong lookup of the timeout shows.
constexpr FlowTimeouts kTimeouts{.syn = 100, .established = 1000, .closing = 50, .udp = 300};

FlowTable::Entry* find(FlowTable& table, const FlowTuple& t, std::uint32_t now) {
  return table.find(t, hash_tuple(t), now);
}

FlowTable::Entry* insert(FlowTable& table, const FlowTuple& t, FlowState state, std::uint32_t now,
                         std::uint16_t group = 0, std::uint32_t bucket = 0) {
  return table.insert(t, hash_tuple(t), state, group, bucket, now);
}

// touch() or erase() a flow that must be there (a failure, not a crash, when it is not).
void touch_found(FlowTable& table, const FlowTuple& t, std::uint8_t flags, std::uint32_t now) {
  FlowTable::Entry* e = find(table, t, now);
  ASSERT_NE(e, nullptr);
  table.touch(*e, flags, now);
}

void erase_found(FlowTable& table, const FlowTuple& t, std::uint32_t now) {
  FlowTable::Entry* e = find(table, t, now);
  ASSERT_NE(e, nullptr);
  table.erase(*e);
}

std::uint32_t set_of(const FlowTable& table, const FlowTuple& t) {
  return static_cast<std::uint32_t>(hash_tuple(t)) & (table.slots() / FlowTable::kWays - 1);
}

void expect_invariant(const FlowTable& table) {
  const FlowStats& s = table.stats();
  EXPECT_EQ(s.live,
            s.inserted - s.evicted_embryonic - s.evicted_established - s.expired - s.erased);
  EXPECT_LE(s.embryonic, s.live);
}

TEST(FlowTable, Sizing) {
  const FlowTable table(1 << 20, {}, 2, 256);
  EXPECT_EQ(table.capacity(), 1u << 20);
  EXPECT_EQ(table.slots(), 2u << 20);
  EXPECT_EQ(table.memory_bytes(), (2u << 20) * 50 + 2 * 256 * 4);
  EXPECT_EQ(FlowTable(1000, {}, 1, 1).slots(), 2048u);
  EXPECT_EQ(FlowTable(0, {}, 1, 1).slots(), FlowTable::kWays);
}

TEST(FlowTable, RoundTripIpv4AndIpv6) {
  FlowTable table(1024, kTimeouts, 1, 16);
  const FlowTuple a = v4(0xCB007107, 40000);
  const FlowTuple b = v6(0x42, 40000);
  EXPECT_EQ(find(table, a, 0), nullptr);
  FlowTable::Entry* ea = insert(table, a, FlowState::kEstablished, 0, 0, 3);
  FlowTable::Entry* eb = insert(table, b, FlowState::kUdp, 0, 0, 4);
  ASSERT_NE(ea, nullptr);
  ASSERT_NE(eb, nullptr);
  EXPECT_NE(ea, eb);
  EXPECT_EQ(find(table, a, 1), ea);
  EXPECT_EQ(find(table, b, 1), eb);
  EXPECT_EQ(table.state(*ea), FlowState::kEstablished);
  EXPECT_EQ(table.state(*eb), FlowState::kUdp);
  EXPECT_EQ(table.stats().live, 2u);

  table.erase(*ea);
  EXPECT_EQ(find(table, a, 2), nullptr);
  EXPECT_EQ(find(table, b, 2), eb);
  table.erase(*eb);
  EXPECT_EQ(find(table, b, 2), nullptr);
  table.erase(*eb);  // a stale pointer to a free slot changes nothing
  EXPECT_EQ(table.stats().erased, 2u);
  EXPECT_EQ(table.stats().live, 0u);
  EXPECT_EQ(table.live_in(0, 3) + table.live_in(0, 4), 0u);
  // The slot is reused for the same flow.
  EXPECT_NE(insert(table, a, FlowState::kSyn, 3), nullptr);
  EXPECT_NE(find(table, a, 3), nullptr);
  expect_invariant(table);
}

TEST(FlowTable, TcpFlagsAndPadAreNotIdentity) {
  FlowTable table(64, kTimeouts, 1, 1);
  FlowTuple syn = v4(0x0A000001, 1234);
  syn.tcp_flags = kSynFlag;
  FlowTable::Entry* e = insert(table, syn, FlowState::kSyn, 0);
  ASSERT_NE(e, nullptr);
  FlowTuple ack = syn;
  ack.tcp_flags = kAck | kPsh;
  ack.pad[0] = 0xAA;
  ack.pad[1] = 0x55;
  EXPECT_EQ(hash_tuple(ack), hash_tuple(syn));
  EXPECT_EQ(find(table, ack, 1), e);
}

TEST(FlowTable, PortsProtoAndAddressesMakeDistinctFlows) {
  FlowTable table(256, kTimeouts, 1, 1);
  const FlowTuple base = v4(0x0A000001, 1234);
  std::vector<FlowTuple> flows{base};
  flows.push_back(v4(0x0A000001, 1235));                        // client port
  flows.push_back(v4(0x0A000001, 1234, kTcp, 81));              // server port
  flows.push_back(v4(0x0A000001, 1234, kUdp));                  // proto
  flows.push_back(v4(0x0A000001, 1234, 132));                   // SCTP: any proto
  flows.push_back(v4(0x0A000002, 1234));                        // client address
  flows.push_back(v4(0x0A000001, 1234, kTcp, 80, 0xC6336402));  // server address
  FlowTuple swapped = base;                                     // the reverse direction
  std::swap(swapped.client, swapped.server);
  std::swap(swapped.client_port, swapped.server_port);
  flows.push_back(swapped);
  FlowTuple six = base;  // the same low 64 bits in IPv6
  six.client.hi = 0x20010db800000000ULL;
  flows.push_back(six);

  ASSERT_NE(insert(table, base, FlowState::kEstablished, 0), nullptr);
  for (std::size_t i = 1; i < flows.size(); ++i) {
    EXPECT_EQ(find(table, flows[i], 0), nullptr) << "variant " << i;
  }
  std::vector<FlowTable::Entry*> entries{find(table, base, 0)};
  for (std::size_t i = 1; i < flows.size(); ++i) {
    entries.push_back(insert(table, flows[i], FlowState::kEstablished, 0));
    ASSERT_NE(entries.back(), nullptr);
  }
  for (std::size_t i = 0; i < flows.size(); ++i) {
    EXPECT_EQ(find(table, flows[i], 0), entries[i]) << "variant " << i;
  }
  EXPECT_EQ(table.stats().live, flows.size());
}

// Flows that differ in one field but share a signature (found by search in a one-set
// table): the full tuple tells them apart, whichever way holds which.
TEST(FlowTable, SignatureCollisionsAreResolvedByTheFullTuple) {
  auto signature = [](const FlowTuple& t) {
    const auto sig = static_cast<std::uint16_t>(hash_tuple(t) >> 48);
    return sig == 0 ? 1 : sig;
  };
  using Change = void (*)(FlowTuple&);
  const std::pair<const char*, Change> fields[] = {
      {"client hi", [](FlowTuple& t) { t.client.hi ^= 1; }},
      {"client lo", [](FlowTuple& t) { t.client.lo ^= 1ULL << 40; }},
      {"server hi", [](FlowTuple& t) { t.server.hi ^= 1ULL << 63; }},
      {"server lo", [](FlowTuple& t) { t.server.lo ^= 1; }},
      {"client port", [](FlowTuple& t) { t.client_port ^= 0x8000; }},
      {"server port", [](FlowTuple& t) { t.server_port ^= 1; }},
      {"proto", [](FlowTuple& t) { t.proto = kUdp; }},
  };
  for (const auto& [name, change] : fields) {
    SCOPED_TRACE(name);
    FlowTable table(8, kTimeouts, 1, 1);  // one set: only the signature can tell flows apart
    ASSERT_EQ(table.slots(), FlowTable::kWays);
    FlowTuple base, other;
    for (std::uint32_t i = 0;; ++i) {
      ASSERT_LT(i, 1u << 22) << "no collision found";
      base = v6(0x42 + i, 1234);
      other = base;
      change(other);
      if (signature(base) == signature(other)) break;
    }
    ASSERT_NE(insert(table, base, FlowState::kEstablished, 0), nullptr);
    EXPECT_EQ(find(table, other, 0), nullptr);
    FlowTable::Entry* e = insert(table, other, FlowState::kUdp, 0);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(find(table, other, 0), e);  // behind the other flow's way
    EXPECT_EQ(table.state(*find(table, base, 0)), FlowState::kEstablished);
    erase_found(table, base, 0);
    EXPECT_EQ(find(table, other, 0), e);
    EXPECT_EQ(find(table, base, 0), nullptr);
  }
}

TEST(FlowTable, TcpStateMachine) {
  FlowTable table(64, kTimeouts, 1, 1);
  const FlowTuple t = v4(0x0A000001, 1234);
  FlowTable::Entry* e = insert(table, t, FlowState::kSyn, 0);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(table.stats().embryonic, 1u);
  table.touch(*e, kSynFlag, 1);  // a retransmitted SYN
  EXPECT_EQ(table.state(*e), FlowState::kSyn);
  table.touch(*e, kSynFlag | kAck, 2);  // not a client's handshake ACK
  EXPECT_EQ(table.state(*e), FlowState::kSyn);
  table.touch(*e, kAck, 3);
  EXPECT_EQ(table.state(*e), FlowState::kEstablished);
  EXPECT_EQ(table.stats().embryonic, 0u);
  table.touch(*e, kAck | kPsh, 4);
  EXPECT_EQ(table.state(*e), FlowState::kEstablished);
  table.touch(*e, kFin | kAck, 5);
  EXPECT_EQ(table.state(*e), FlowState::kClosing);
  table.touch(*e, kSynFlag, 6);  // closing stays closing
  EXPECT_EQ(table.state(*e), FlowState::kClosing);

  // RST closes a half-open flow too, and it stops being embryonic.
  const FlowTuple r = v4(0x0A000002, 1234);
  FlowTable::Entry* half = insert(table, r, FlowState::kSyn, 0);
  ASSERT_NE(half, nullptr);
  table.touch(*half, kRst, 1);
  EXPECT_EQ(table.state(*half), FlowState::kClosing);
  EXPECT_EQ(table.stats().embryonic, 0u);
  const FlowTuple rst = v4(0x0A000003, 1234);
  FlowTable::Entry* est = insert(table, rst, FlowState::kEstablished, 0);
  table.touch(*est, kRst | kAck, 1);
  EXPECT_EQ(table.state(*est), FlowState::kClosing);

  // Non-TCP flows keep their state whatever the flags say.
  FlowTable::Entry* udp = insert(table, v4(0x0A000004, 53, kUdp), FlowState::kUdp, 0);
  table.touch(*udp, kFin | kRst, 1);
  EXPECT_EQ(table.state(*udp), FlowState::kUdp);
  expect_invariant(table);
}

// Each state expires after exactly its own timeout of idleness; touch() restarts it.
TEST(FlowTable, ExpiryPerState) {
  struct Case {
    FlowState state;
    std::uint32_t timeout;
  };
  for (const Case c :
       {Case{FlowState::kSyn, kTimeouts.syn}, Case{FlowState::kEstablished, kTimeouts.established},
        Case{FlowState::kClosing, kTimeouts.closing}, Case{FlowState::kUdp, kTimeouts.udp}}) {
    SCOPED_TRACE(static_cast<int>(c.state));
    FlowTable table(64, kTimeouts, 1, 1);
    const FlowTuple t = v4(0x0A000001, 1234);
    FlowTable::Entry* e = insert(table, t, c.state, 1000);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(find(table, t, 1000 + c.timeout), e);
    table.touch(*e, 0, 1000 + c.timeout);
    EXPECT_EQ(find(table, t, 1000 + 2 * c.timeout), e);
    EXPECT_EQ(find(table, t, 1000 + 2 * c.timeout + 1), nullptr);
    EXPECT_EQ(table.stats().expired, 1u);
    EXPECT_EQ(table.stats().live, 0u);
    EXPECT_EQ(table.stats().embryonic, 0u);
    EXPECT_EQ(table.live_in(0, 0), 0u);
  }
}

// The clock wraps every 49.7 days: ages are taken modulo 2^32.
TEST(FlowTable, ExpiryAcrossClockWrap) {
  FlowTable table(64, kTimeouts, 1, 1);
  const std::uint32_t start = 0xFFFFFF00u;  // 256 ms before the wrap
  const FlowTuple est = v4(0x0A000001, 1);
  const FlowTuple syn = v4(0x0A000002, 2);
  FlowTable::Entry* e = insert(table, est, FlowState::kEstablished, start);
  ASSERT_NE(insert(table, syn, FlowState::kSyn, start + 200), nullptr);  // 56 ms before it
  EXPECT_EQ(find(table, est, start + 600), e);  // now_ms is 344 after the wrap
  EXPECT_NE(find(table, syn, start + 300), nullptr);
  EXPECT_EQ(find(table, syn, start + 301), nullptr);  // 101 ms old, across the wrap
  table.touch(*e, kAck, 100);
  EXPECT_EQ(find(table, est, 1100), e);
  EXPECT_EQ(find(table, est, 1101), nullptr);
  // A timestamp slightly ahead of now (another clock reading) is young, not ancient.
  const FlowTuple ahead = v4(0x0A000003, 3);
  ASSERT_NE(insert(table, ahead, FlowState::kClosing, 5), nullptr);
  EXPECT_NE(find(table, ahead, 0xFFFFFFF0u), nullptr);
  EXPECT_EQ(table.stats().expired, 2u);
}

// A reload's new timeouts apply to the flows already tracked, from the next lookup.
TEST(FlowTable, NewTimeoutsApplyToTrackedFlows) {
  FlowTable table(64, kTimeouts, 1, 1);
  const FlowTuple est = v4(0x0A000001, 1), udp = v4(0x0A000002, 2, kUdp, 53);
  ASSERT_NE(insert(table, est, FlowState::kEstablished, 0), nullptr);
  ASSERT_NE(insert(table, udp, FlowState::kUdp, 0), nullptr);
  EXPECT_NE(find(table, est, 400), nullptr);  // seen at 0, timeout 1000 ms
  table.set_timeouts({.syn = 100, .established = 500, .closing = 50, .udp = 2000});
  EXPECT_EQ(table.timeouts().established, 500u);
  EXPECT_NE(find(table, est, 500), nullptr);   // 500 ms idle: the new limit
  EXPECT_EQ(find(table, est, 501), nullptr);   // past it (the old one was 1000)
  EXPECT_NE(find(table, udp, 1900), nullptr);  // the old 300 ms would have expired it
  EXPECT_EQ(table.stats().expired, 1u);
}

TEST(FlowTable, UdpIdleTimeout) {
  FlowTable table(64, {.syn = 5'000, .established = 3'600'000, .closing = 10'000, .udp = 30'000}, 1,
                  1);
  const FlowTuple t = v4(0x0A000001, 5353, kUdp, 53);
  FlowTable::Entry* e = insert(table, t, FlowState::kUdp, 0);
  ASSERT_NE(e, nullptr);
  std::uint32_t now = 0;
  for (; now <= 300'000; now += 29'000) {  // a datagram every 29 s: five minutes alive
    ASSERT_EQ(find(table, t, now), e) << now;
    table.touch(*e, 0, now);
  }
  now -= 29'000;
  EXPECT_EQ(find(table, t, now + 30'000), e);
  EXPECT_EQ(table.sweep(now + 30'000, 1'000), 0u);
  EXPECT_EQ(table.sweep(now + 30'001, 1'000), 1u);
  EXPECT_EQ(find(table, t, now + 30'001), nullptr);
  EXPECT_EQ(table.stats().expired, 1u);
}

// live_in() follows insert, erase, expiry (found, swept, reclaimed) and eviction exactly.
TEST(FlowTable, PerBucketCountsFollowEveryChange) {
  // Capacity 8: one set of 16 ways, so eviction is easy to provoke.
  FlowTable table(8, kTimeouts, 2, 4);
  std::map<std::pair<std::uint16_t, std::uint32_t>, std::uint32_t> want;
  auto check = [&](const char* step) {
    std::uint64_t total = 0;
    for (std::uint16_t g = 0; g < 2; ++g) {
      for (std::uint32_t b = 0; b < 4; ++b) {
        EXPECT_EQ(table.live_in(g, b), (want[{g, b}])) << step << " group " << g << " bucket " << b;
        total += table.live_in(g, b);
      }
    }
    EXPECT_EQ(total, table.stats().live) << step;
    expect_invariant(table);
  };
  std::vector<FlowTuple> flows;
  std::vector<FlowTable::Entry*> entries;
  for (std::uint32_t i = 0; i < 16; ++i) {
    flows.push_back(v4(0x0A000000 + i, 1000));
    const auto g = static_cast<std::uint16_t>(i % 2);
    const std::uint32_t b = i % 4;
    // Flows 0..3 embryonic, 4..7 UDP, the rest established; all seen at time i.
    const FlowState s = i < 4 ? FlowState::kSyn : i < 8 ? FlowState::kUdp : FlowState::kEstablished;
    entries.push_back(insert(table, flows[i], s, i, g, b));
    ASSERT_NE(entries.back(), nullptr);
    ++want[{g, b}];
  }
  check("inserted");

  table.erase(*entries[8]);  // group 0 bucket 0
  --want[{0, 0}];
  check("erased");

  // Flow 0 (SYN, group 0 bucket 0) expires at 101 and is freed when found.
  EXPECT_EQ(find(table, flows[0], 101), nullptr);
  --want[{0, 0}];
  check("expired on find");

  // Flow 1 (SYN at 1, group 1 bucket 1) is swept at 102.
  EXPECT_EQ(table.sweep(102, 1), 1u);
  --want[{1, 1}];
  check("swept");

  // Full set again, then an expired entry is reclaimed by insert: flow 2 (SYN at 2, group 0
  // bucket 2) has expired at 103, before the embryonic flow 3 does.
  for (std::uint32_t i = 0; i < 3; ++i) {
    ASSERT_NE(insert(table, v4(0x0B0000F0 + i, 1), FlowState::kEstablished, 102, 1, 3), nullptr);
  }
  want[{1, 3}] += 3;
  check("refilled");
  ASSERT_NE(insert(table, v4(0x0B000002, 1), FlowState::kUdp, 103, 0, 1), nullptr);
  ++want[{0, 1}];
  --want[{0, 2}];
  check("reclaimed expired");
  EXPECT_EQ(table.stats().expired, 3u);

  // Evicting the oldest embryonic flow 3 (group 1 bucket 3) for another SYN.
  ASSERT_NE(insert(table, v4(0x0B000003, 1), FlowState::kSyn, 103, 1, 0), nullptr);
  ++want[{1, 0}];
  --want[{1, 3}];
  check("evicted embryonic");

  // No embryonic flow but the new one (seen at 103): a new UDP flow evicts it first, then
  // the least recently seen: flow 4 (UDP at 4, group 0 bucket 0).
  ASSERT_NE(insert(table, v4(0x0B000004, 1), FlowState::kUdp, 104, 0, 3), nullptr);
  ++want[{0, 3}];
  --want[{1, 0}];
  check("evicted embryonic for UDP");
  ASSERT_NE(insert(table, v4(0x0B000005, 1), FlowState::kUdp, 104, 0, 3), nullptr);
  ++want[{0, 3}];
  --want[{0, 0}];
  check("evicted least recently seen");
  EXPECT_EQ(find(table, flows[4], 104), nullptr);
  EXPECT_EQ(table.stats().evicted_embryonic, 2u);
  EXPECT_EQ(table.stats().evicted_established, 1u);

  // Out of range: not inserted, not counted, reads as 0.
  EXPECT_EQ(insert(table, v4(0x0C000000, 1), FlowState::kUdp, 104, 2, 0), nullptr);
  EXPECT_EQ(insert(table, v4(0x0C000000, 1), FlowState::kUdp, 104, 0, 4), nullptr);
  EXPECT_EQ(insert(table, v4(0x0C000000, 1), FlowState::kFree, 104, 0, 0), nullptr);
  EXPECT_EQ(table.live_in(2, 0), 0u);
  EXPECT_EQ(table.live_in(0, 4), 0u);
  check("out of range");
}

// One full set (capacity 8 = 16 ways): the policy's order, step by step.
TEST(FlowTable, EvictionOrderInAFullSet) {
  FlowTable table(8, kTimeouts, 1, 1);
  ASSERT_EQ(table.slots(), FlowTable::kWays);
  std::vector<FlowTuple> est;
  for (std::uint32_t i = 0; i < 16; ++i) {
    est.push_back(v4(0x0A000000 + i, 80));
    ASSERT_NE(insert(table, est[i], FlowState::kEstablished, i), nullptr);
  }
  // Full of established flows: a SYN is refused, whatever the time (within their timeout).
  EXPECT_EQ(insert(table, v4(0x0B000000, 1), FlowState::kSyn, 20), nullptr);
  EXPECT_EQ(table.stats().refused, 1u);
  // Flow 0 was seen last at 0 but flow 1 is touched at 21: flow 0 goes, then flow 2.
  touch_found(table, est[1], kAck, 21);
  const FlowTuple n1 = v4(0x0B000001, 1), n2 = v4(0x0B000002, 1);
  ASSERT_NE(insert(table, n1, FlowState::kEstablished, 22), nullptr);
  EXPECT_EQ(find(table, est[0], 22), nullptr);
  ASSERT_NE(insert(table, n2, FlowState::kEstablished, 22), nullptr);
  EXPECT_NE(find(table, est[1], 22), nullptr);
  EXPECT_EQ(find(table, est[2], 22), nullptr);
  EXPECT_EQ(table.stats().evicted_established, 2u);
  // A closing flow expires first (flow 3 closes at 23, expires at 74).
  touch_found(table, est[3], kFin, 23);
  EXPECT_EQ(insert(table, v4(0x0B000003, 1), FlowState::kSyn, 73), nullptr);
  ASSERT_NE(insert(table, v4(0x0B000003, 1), FlowState::kSyn, 74), nullptr);
  EXPECT_EQ(table.stats().expired, 1u);
  EXPECT_EQ(table.stats().refused, 2u);
  // Embryonic entries go before any established one, oldest first, even for a new SYN.
  ASSERT_NE(insert(table, v4(0x0B000004, 1), FlowState::kEstablished, 75), nullptr);
  EXPECT_EQ(find(table, v4(0x0B000003, 1), 75), nullptr);
  EXPECT_EQ(table.stats().evicted_embryonic, 1u);
  EXPECT_EQ(table.stats().evicted_established, 2u);
  for (std::uint32_t i = 4; i < 16; ++i) EXPECT_NE(find(table, est[i], 75), nullptr) << i;
  // Of two embryonic flows the least recently seen goes: a retransmitted SYN refreshes one.
  erase_found(table, est[4], 76);
  erase_found(table, est[5], 76);
  const FlowTuple a = v4(0x0C000001, 1), b = v4(0x0C000002, 1), c = v4(0x0C000003, 1);
  ASSERT_NE(insert(table, a, FlowState::kSyn, 80), nullptr);
  ASSERT_NE(insert(table, b, FlowState::kSyn, 90), nullptr);
  touch_found(table, a, kSynFlag, 95);
  ASSERT_NE(insert(table, c, FlowState::kSyn, 100), nullptr);
  EXPECT_NE(find(table, a, 100), nullptr);
  EXPECT_EQ(find(table, b, 100), nullptr);
  EXPECT_NE(find(table, c, 100), nullptr);
  EXPECT_EQ(table.stats().evicted_embryonic, 2u);
  EXPECT_EQ(table.stats().embryonic, 2u);
  expect_invariant(table);
}

// A table at capacity with established flows, then ten times as many SYNs from random
// sources: not one established flow is lost, and the flood holds only the free ways.
TEST(FlowTable, SynFloodNeverEvictsEstablished) {
  constexpr std::uint32_t kCapacity = 4096;
  FlowTable table(kCapacity, {}, 1, 64);
  std::mt19937_64 rng(5);
  std::vector<FlowTuple> established;
  for (std::uint32_t i = 0; i < kCapacity; ++i) {
    const FlowTuple t = random_tuple(rng);
    if (find(table, t, 0) != nullptr) continue;
    ASSERT_NE(insert(table, t, FlowState::kEstablished, 0, 0, i % 64), nullptr);
    established.push_back(t);
  }
  // At 50% load a few sets overflow: the newest established flows took the oldest's ways.
  std::vector<FlowTuple> kept;
  for (const FlowTuple& t : established) {
    if (find(table, t, 0) != nullptr) kept.push_back(t);
  }
  const FlowStats before = table.stats();
  EXPECT_EQ(kept.size(), established.size() - before.evicted_established);
  EXPECT_LT(before.evicted_established, kCapacity / 100);
  EXPECT_EQ(before.embryonic, 0u);

  std::uint64_t accepted = 0;
  for (std::uint32_t i = 0; i < 10 * kCapacity; ++i) {
    FlowTuple t = random_tuple(rng);
    t.tcp_flags = kSynFlag;
    const std::uint32_t now = i / 64;  // 40960 SYNs within 640 ms: none expires
    if (find(table, t, now) != nullptr) continue;
    accepted += insert(table, t, FlowState::kSyn, now, 0, i % 64) != nullptr;
  }
  const FlowStats after = table.stats();
  std::printf(
      "fill: %zu of %zu established flows kept (%llu evicted, LRU in overflowing sets)\n"
      "flood: %llu SYNs tracked, %llu refused, %llu evicted embryonic, %llu embryonic left\n",
      kept.size(), established.size(), static_cast<unsigned long long>(before.evicted_established),
      static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(after.refused),
      static_cast<unsigned long long>(after.evicted_embryonic),
      static_cast<unsigned long long>(after.embryonic));
  EXPECT_EQ(after.evicted_established, before.evicted_established);
  EXPECT_EQ(after.expired, 0u);
  EXPECT_EQ(accepted + after.refused, 10u * kCapacity);
  EXPECT_GT(after.refused, 0u);  // sets full of established flows turn SYNs away
  EXPECT_EQ(after.evicted_embryonic, accepted - after.embryonic);
  // Bounded: every way not held by an established flow, and not one more.
  EXPECT_EQ(after.embryonic, table.slots() - kept.size());
  EXPECT_EQ(after.live, table.slots());
  for (const FlowTuple& t : kept) {
    FlowTable::Entry* e = find(table, t, 640);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(table.state(*e), FlowState::kEstablished);
  }
  // Once the SYN timeout has passed, a sweep pass leaves only the established flows.
  EXPECT_EQ(table.sweep(640 + 5'001, table.slots() / FlowTable::kWays), after.embryonic);
  EXPECT_EQ(table.stats().embryonic, 0u);
  EXPECT_EQ(table.stats().live, kept.size());
  for (const FlowTuple& t : kept) EXPECT_NE(find(table, t, 640 + 5'001), nullptr);
  expect_invariant(table);
}

// A flow first seen mid-stream is one-way (unconfirmed) until its second packet; it expires
// after the SYN timeout meanwhile.
TEST(FlowTable, OneWayFlowsAreConfirmedByASecondPacket) {
  FlowTable table(64, kTimeouts, 1, 1);
  const FlowTuple tcp = v4(0x0A000001, 1000), fin = v4(0x0A000002, 1000);
  const FlowTuple udp = v4(0x0A000003, 53, kUdp), idle = v4(0x0A000004, 1000);
  for (const FlowTuple& t : {tcp, fin, udp, idle}) {
    ASSERT_NE(insert(table, t, FlowState::kOneWay, 0), nullptr);
  }
  touch_found(table, tcp, kAck, 10);
  touch_found(table, fin, kFin | kAck, 10);
  touch_found(table, udp, 0, 10);
  EXPECT_EQ(table.state(*find(table, tcp, 10)), FlowState::kEstablished);
  EXPECT_EQ(table.state(*find(table, fin, 10)), FlowState::kClosing);
  EXPECT_EQ(table.state(*find(table, udp, 10)), FlowState::kUdp);
  EXPECT_NE(find(table, idle, 100), nullptr);  // the SYN timeout (100 here), not 1000
  EXPECT_EQ(find(table, idle, 101), nullptr);
  EXPECT_NE(find(table, tcp, 101), nullptr);
  expect_invariant(table);
}

// A worker's table full of real flows (handshakes completed, datagrams seen twice), then ten
// times its capacity of spoofed ACKs and datagrams from random sources, through the handoff
// rule as the worker calls it: not one real flow is lost, a real SYN arriving during the
// flood in a bucket being taken is still tracked, and once the SYN timeout has passed the
// flood holds no slot (nor a given-up bucket).
TEST(FlowTable, SpoofedFloodNeverEvictsConfirmedFlows) {
  constexpr std::uint32_t kCapacity = 4096;
  FlowTable table(kCapacity, {}, 1, 64);
  HandoffCounters c;
  std::mt19937_64 rng(17);
  auto admit_at = [&](FlowTuple t, std::uint8_t flags, BucketMode mode, std::uint32_t now) {
    t.tcp_flags = flags;
    return admit(table, t, hash_tuple(t), mode, 0, static_cast<std::uint32_t>(t.client_port % 64),
                 now, c);
  };
  std::vector<FlowTuple> real;
  for (std::uint32_t i = 0; i < kCapacity; ++i) {
    FlowTuple t = random_tuple(rng);
    if (find(table, t, 0) != nullptr) continue;
    if (i % 4 == 3) {
      t.proto = kUdp;
      admit_at(t, 0, BucketMode::kOwned, 0);
      admit_at(t, 0, BucketMode::kOwned, 1);  // its second datagram
    } else {
      admit_at(t, kSynFlag, BucketMode::kOwned, 0);
      admit_at(t, kAck, BucketMode::kOwned, 1);  // the handshake's ACK
    }
    real.push_back(t);
  }
  std::vector<FlowTuple> kept;
  for (const FlowTuple& t : real) {
    const FlowTable::Entry* e = find(table, t, 1);
    if (e != nullptr && table.state(*e) != FlowState::kSyn &&
        table.state(*e) != FlowState::kOneWay) {
      kept.push_back(t);
    }
  }
  EXPECT_GT(kept.size(), real.size() * 99 / 100);  // at 50% load a few sets overflow
  const FlowStats before = table.stats();
  FlowTuple late = random_tuple(rng);
  late.client_port = 7;  // bucket 7
  bool late_tracked = false;
  for (std::uint32_t i = 0; i < 10 * kCapacity; ++i) {
    FlowTuple t = random_tuple(rng);
    if (i % 2 == 1) t.proto = kUdp;
    const std::uint32_t now = 2 + i / 64;  // 40960 packets within 640 ms
    admit_at(t, t.proto == kUdp ? 0 : kAck, BucketMode::kOwned, now);
    if (i == 5 * kCapacity) {
      EXPECT_TRUE(admit_at(late, kSynFlag, BucketMode::kTaking, now));
      late_tracked = find(table, late, now) != nullptr;
    }
  }
  const FlowStats after = table.stats();
  std::printf(
      "spoofed flood: %zu of %zu real flows confirmed before; %llu flood entries "
      "evicted, %llu refused\n",
      kept.size(), real.size(),
      static_cast<unsigned long long>(after.evicted_embryonic - before.evicted_embryonic),
      static_cast<unsigned long long>(after.refused - before.refused));
  EXPECT_EQ(after.evicted_established, before.evicted_established);
  EXPECT_TRUE(late_tracked) << "a real SYN in a bucket being taken was not tracked";
  for (const FlowTuple& t : kept) {
    const FlowTable::Entry* e = find(table, t, 642);
    ASSERT_NE(e, nullptr) << "a real flow was evicted by the flood";
    EXPECT_TRUE(table.state(*e) == FlowState::kEstablished || table.state(*e) == FlowState::kUdp);
  }
  // After the SYN timeout (5 s), one sweep pass frees every flood entry.
  table.sweep(642 + 5'001, table.slots() / FlowTable::kWays);
  EXPECT_EQ(table.stats().live, kept.size());
  std::uint64_t in_buckets = 0;
  for (std::uint32_t b = 0; b < 64; ++b) in_buckets += table.live_in(0, b);
  EXPECT_EQ(in_buckets, kept.size());
  expect_invariant(table);
}

// More established flows than the table holds: each set keeps its most recently seen flows
// (LRU within the set), and every eviction is counted.
TEST(FlowTable, OverfullEstablishedEvictsLeastRecentlySeen) {
  FlowTable table(1024, {}, 1, 1);
  const std::uint32_t sets = table.slots() / FlowTable::kWays;
  std::mt19937_64 rng(11);
  std::vector<FlowTuple> flows;
  std::vector<std::vector<std::size_t>> by_set(sets);
  for (std::uint32_t i = 0; i < 4 * table.slots(); ++i) {
    flows.push_back(random_tuple(rng));
    by_set[set_of(table, flows[i])].push_back(i);
    ASSERT_NE(insert(table, flows[i], FlowState::kEstablished, i), nullptr);
    // The first flow of every set is kept alive by traffic: LRU, not FIFO.
    const std::size_t first = by_set[set_of(table, flows[i])].front();
    if (first != i) touch_found(table, flows[first], kAck, i);
  }
  std::uint64_t evicted = 0;
  for (const auto& members : by_set) {
    // The set keeps its first flow and the 15 newest others.
    for (std::size_t k = 0; k < members.size(); ++k) {
      const bool kept = k == 0 || k + 15 >= members.size();
      EXPECT_EQ(find(table, flows[members[k]], 4 * table.slots()) != nullptr, kept)
          << "flow " << members[k];
    }
    evicted += members.size() > 16 ? members.size() - 16 : 0;
  }
  EXPECT_EQ(table.stats().evicted_established, evicted);
  EXPECT_EQ(table.stats().refused, 0u);
  expect_invariant(table);
}

// sweep() examines at most max_sets sets per call, in order from set 0, and a full pass
// frees every expired entry.
TEST(FlowTable, SweepIsIncrementalAndComplete) {
  FlowTable table(4096, kTimeouts, 1, 1);
  const std::uint32_t sets = table.slots() / FlowTable::kWays;
  std::mt19937_64 rng(3);
  std::vector<std::uint32_t> per_set(sets);
  std::uint32_t total = 0;
  for (std::uint32_t i = 0; i < 3000; ++i) {
    const FlowTuple t = random_tuple(rng);
    if (find(table, t, 0) != nullptr) continue;
    ASSERT_NE(insert(table, t, i % 2 == 0 ? FlowState::kUdp : FlowState::kClosing, 0), nullptr);
    ++per_set[set_of(table, t)];
    ++total;
  }
  EXPECT_EQ(table.sweep(kTimeouts.closing, sets), 0u);  // nothing has expired yet
  const std::uint32_t later = kTimeouts.udp + 1;
  std::uint32_t freed = 0;
  for (std::uint32_t call = 0; call < sets / 16; ++call) {
    const std::uint32_t n = table.sweep(later, 16);
    std::uint32_t want = 0;
    for (std::uint32_t s = call * 16; s < call * 16 + 16; ++s) want += per_set[s];
    ASSERT_EQ(n, want) << "call " << call;
    freed += n;
    EXPECT_EQ(table.stats().live, total - freed);
  }
  EXPECT_EQ(freed, total);
  EXPECT_EQ(table.stats().expired, total);
  EXPECT_EQ(table.stats().live, 0u);
  EXPECT_EQ(table.sweep(later, sets), 0u);
  expect_invariant(table);
}

// 200k random operations against a std::unordered_map with the same timeouts, the clock
// wrapping halfway. Load stays at or below 50% of capacity, so nothing is ever evicted.
TEST(FlowTable, MatchesAModelOver200kOperations) {
  constexpr std::uint32_t kCapacity = 4096;
  constexpr std::uint16_t kGroups = 3;
  constexpr std::uint32_t kBuckets = 16;
  FlowTable table(kCapacity, kTimeouts, kGroups, kBuckets);
  const std::uint32_t sets = table.slots() / FlowTable::kWays;
  std::mt19937_64 rng(2024);

  std::vector<FlowTuple> pool;
  for (std::uint32_t i = 0; i < kCapacity / 2; ++i) {
    FlowTuple t = random_tuple(rng);
    t.proto = std::array<std::uint8_t, 4>{kTcp, kTcp, kUdp, 1}[i % 4];
    pool.push_back(t);
  }
  struct Flow {
    FlowState state;
    std::uint32_t last_seen;
    std::uint16_t group;
    std::uint32_t bucket;
  };
  std::unordered_map<std::size_t, Flow> model;
  FlowStats want{};
  auto timeout = [](FlowState s) {
    switch (s) {
      case FlowState::kSyn:
        return kTimeouts.syn;
      case FlowState::kEstablished:
        return kTimeouts.established;
      case FlowState::kClosing:
        return kTimeouts.closing;
      default:
        return kTimeouts.udp;
    }
  };
  auto model_expired = [&](const Flow& f, std::uint32_t now) {
    return static_cast<std::int32_t>(now - f.last_seen) >
           static_cast<std::int32_t>(timeout(f.state));
  };
  auto model_free = [&](std::unordered_map<std::size_t, Flow>::iterator it) {
    want.embryonic -= it->second.state == FlowState::kSyn;
    --want.live;
    model.erase(it);
  };
  std::vector<std::vector<std::size_t>> keys_in_set(sets);
  for (std::size_t i = 0; i < pool.size(); ++i) keys_in_set[set_of(table, pool[i])].push_back(i);
  std::uint32_t cursor = 0;

  std::uint32_t now = 0xFFFFFFFFu - 150'000;  // 200k ops advance ~300k ms: wraps once
  for (std::uint32_t op = 0; op < 200'000; ++op) {
    const std::size_t k = rng() % pool.size();
    FlowTuple t = pool[k];
    const std::uint32_t dice = static_cast<std::uint32_t>(rng() % 100);
    auto it = model.find(k);
    if (it != model.end() && model_expired(it->second, now)) {
      model_free(it);
      it = model.end();
      ++want.expired;
    }
    FlowTable::Entry* e = table.find(t, hash_tuple(t), now);
    ASSERT_EQ(e != nullptr, it != model.end()) << "op " << op;
    if (e != nullptr) {
      ASSERT_EQ(table.state(*e), it->second.state) << "op " << op;
    }
    if (dice < 70) {  // a packet of the flow
      if (t.proto == kTcp) {
        t.tcp_flags = std::array<std::uint8_t, 6>{kSynFlag, kAck,        kAck | kPsh,
                                                  kAck,     kFin | kAck, kRst}[rng() % 6];
      }
      if (e != nullptr) {
        table.touch(*e, t.tcp_flags, now);
        Flow& f = it->second;
        f.last_seen = now;
        const bool tcp_open = f.state == FlowState::kSyn || f.state == FlowState::kEstablished;
        if (tcp_open && (t.tcp_flags & (kFin | kRst)) != 0) {
          want.embryonic -= f.state == FlowState::kSyn;
          f.state = FlowState::kClosing;
        } else if (f.state == FlowState::kSyn && (t.tcp_flags & (kSynFlag | kAck)) == kAck) {
          --want.embryonic;
          f.state = FlowState::kEstablished;
        }
      } else {
        const FlowState s = t.proto != kTcp             ? FlowState::kUdp
                            : t.tcp_flags == kSynFlag   ? FlowState::kSyn
                            : (t.tcp_flags & kFin) != 0 ? FlowState::kClosing
                                                        : FlowState::kEstablished;
        const auto group = static_cast<std::uint16_t>(k % kGroups);
        const auto bucket = static_cast<std::uint32_t>(k / kGroups % kBuckets);
        ASSERT_NE(table.insert(t, hash_tuple(t), s, group, bucket, now), nullptr) << "op " << op;
        model.emplace(k, Flow{s, now, group, bucket});
        ++want.inserted;
        ++want.live;
        want.embryonic += s == FlowState::kSyn;
      }
    } else if (dice < 80) {  // the caller ends the flow
      if (e != nullptr) {
        table.erase(*e);
        model_free(it);
        ++want.erased;
      }
    } else if (dice < 90) {  // an idle worker sweeps a few sets
      const auto max_sets = static_cast<std::uint32_t>(1 + rng() % 8);
      std::uint32_t freed = 0;
      for (std::uint32_t n = 0; n < max_sets; ++n, cursor = (cursor + 1) % sets) {
        for (const std::size_t key : keys_in_set[cursor]) {
          if (auto m = model.find(key); m != model.end() && model_expired(m->second, now)) {
            model_free(m);
            ++freed;
          }
        }
      }
      want.expired += freed;
      ASSERT_EQ(table.sweep(now, max_sets), freed) << "op " << op;
    }
    now += static_cast<std::uint32_t>(rng() % 4);

    if (op % 1000 == 0 || op == 199'999) {
      const FlowStats& s = table.stats();
      ASSERT_EQ(s.inserted, want.inserted) << "op " << op;
      ASSERT_EQ(s.expired, want.expired) << "op " << op;
      ASSERT_EQ(s.erased, want.erased) << "op " << op;
      ASSERT_EQ(s.live, want.live) << "op " << op;
      ASSERT_EQ(s.live, model.size()) << "op " << op;
      ASSERT_EQ(s.embryonic, want.embryonic) << "op " << op;
      std::vector<std::uint32_t> counts(kGroups * kBuckets);
      for (const auto& [key, f] : model) ++counts[f.group * kBuckets + f.bucket];
      for (std::uint16_t g = 0; g < kGroups; ++g) {
        for (std::uint32_t b = 0; b < kBuckets; ++b) {
          ASSERT_EQ(table.live_in(g, b), counts[g * kBuckets + b]) << "op " << op;
        }
      }
    }
  }
  EXPECT_LT(now, 0x80000000u);  // the clock did wrap
  EXPECT_EQ(table.stats().evicted_embryonic + table.stats().evicted_established, 0u);
  EXPECT_EQ(table.stats().refused, 0u);
  EXPECT_GT(want.expired, 1000u);
  EXPECT_GT(want.erased, 1000u);
  expect_invariant(table);
}

}  // namespace
}  // namespace vipfarm::flow
