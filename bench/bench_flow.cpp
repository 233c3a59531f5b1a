// The flow table on one core: lookup + touch per packet at 1M tracked flows (in bursts of 32
// as the worker does them, and one packet at a time without prefetch), at 64k flows (cache
// resident), and new flows per second. Reports ns/packet (ns/flow for inserts) and the table's
// bytes per flow of capacity.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <random>
#include <vector>

#include "vipfarm/flow/flow_table.hpp"

namespace vipfarm::flow {
namespace {

constexpr std::size_t kBurst = 32;
constexpr std::uint32_t kNow = 1000;
constexpr std::uint16_t kGroups = 4;
constexpr std::uint32_t kBuckets = 256;

// A client of the VIP from a random word: IPv4 or IPv6 by its low bit.
FlowTuple client_flow(std::uint64_t r) {
  FlowTuple t;
  if ((r & 1) != 0) {
    t.client = IpAddr::v4(static_cast<std::uint32_t>(r >> 8));
    t.server = IpAddr::v4(0xC6336401);
  } else {
    t.client = {0x20010db800010000ULL, r};
    t.server = {0x20010db800000000ULL, 0x10};
  }
  t.client_port = static_cast<std::uint16_t>(r >> 40);
  t.server_port = 443;
  t.proto = 6;
  t.tcp_flags = 0x10;
  return t;
}

// A table of `capacity` holding `flows` established flows, and the packet stream over them:
// every tracked flow once, in random order, one packet after the other as the classifier
// hands them to the worker.
struct Population {
  FlowTable table;
  std::vector<FlowTuple> packets;

  Population(std::uint32_t capacity, std::uint32_t flows) : table(capacity, {}, kGroups, kBuckets) {
    std::mt19937_64 rng(42);
    std::vector<FlowTuple> inserted;
    for (std::uint32_t i = 0; i < flows; ++i) {
      const FlowTuple t = client_flow(rng());
      const std::uint64_t h = hash_tuple(t);
      if (table.find(t, h, 0) != nullptr) continue;
      table.insert(t, h, FlowState::kEstablished, i % kGroups, i % kBuckets, 0);
      inserted.push_back(t);
    }
    // The few that overflowing sets evicted while filling (LRU) are not in the stream.
    for (const FlowTuple& t : inserted) {
      if (table.find(t, hash_tuple(t), 0) != nullptr) packets.push_back(t);
    }
    std::shuffle(packets.begin(), packets.end(), rng);
    packets.resize(packets.size() / kBurst * kBurst);
  }
};

Population& population(std::int64_t flows) {
  static Population million(1 << 20, 1 << 20);
  static Population small(1 << 16, 1 << 16);
  return flows == (1 << 20) ? million : small;
}

void report(benchmark::State& state, const FlowTable& table, std::uint64_t items,
            std::uint64_t misses) {
  state.SetItemsProcessed(static_cast<std::int64_t>(items));
  state.counters["ns_per_packet"] = benchmark::Counter(
      static_cast<double>(items), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["bytes_per_flow"] =
      static_cast<double>(table.memory_bytes()) / static_cast<double>(table.capacity());
  state.counters["misses"] = static_cast<double>(misses);
}

// The worker's way: hash the burst and prefetch every set, then find + touch each packet.
void BM_LookupTouchBurst(benchmark::State& state) {
  Population& pop = population(state.range(0));
  std::array<std::uint64_t, kBurst> hashes;
  std::size_t next = 0;
  std::uint64_t misses = 0;
  for (auto _ : state) {
    const FlowTuple* burst = &pop.packets[next];
    for (std::size_t i = 0; i < kBurst; ++i) {
      hashes[i] = hash_tuple(burst[i]);
      pop.table.prefetch(hashes[i]);
    }
    for (std::size_t i = 0; i < kBurst; ++i) {
      if (FlowTable::Entry* e = pop.table.find(burst[i], hashes[i], kNow)) {
        pop.table.touch(*e, burst[i].tcp_flags, kNow);
      } else {
        ++misses;
      }
    }
    next += kBurst;
    if (next == pop.packets.size()) next = 0;
  }
  report(state, pop.table, state.iterations() * kBurst, misses);
}
BENCHMARK(BM_LookupTouchBurst)->Arg(1 << 20)->Arg(1 << 16);

// One packet at a time, no prefetch.
void BM_LookupTouchSingle(benchmark::State& state) {
  Population& pop = population(state.range(0));
  std::size_t next = 0;
  std::uint64_t misses = 0;
  for (auto _ : state) {
    const FlowTuple& t = pop.packets[next];
    if (FlowTable::Entry* e = pop.table.find(t, hash_tuple(t), kNow)) {
      pop.table.touch(*e, t.tcp_flags, kNow);
    } else {
      ++misses;
    }
    if (++next == pop.packets.size()) next = 0;
  }
  report(state, pop.table, state.iterations(), misses);
}
BENCHMARK(BM_LookupTouchSingle)->Arg(1 << 20);

// New flows in bursts of 32, the worker's way (hash, prefetch, find misses, insert), into a
// 1M table that holds 256k established flows: each round adds 512k (from 12.5% to 37.5% of
// the slots); erasing them again between rounds is not timed.
void BM_InsertNew(benchmark::State& state) {
  constexpr std::uint32_t kRound = 1 << 19;
  static Population base(1 << 20, 1 << 18);
  FlowTable& table = base.table;
  static const std::vector<FlowTuple> fresh = [] {
    std::mt19937_64 rng(7);  // another seed: none of these is tracked yet
    std::vector<FlowTuple> flows(kRound);
    for (FlowTuple& t : flows) t = client_flow(rng());
    return flows;
  }();
  std::array<std::uint64_t, kBurst> hashes;
  std::size_t next = 0;
  std::uint64_t refused = 0;
  for (auto _ : state) {
    if (next == fresh.size()) {
      state.PauseTiming();
      for (const FlowTuple& t : fresh) {
        if (FlowTable::Entry* e = table.find(t, hash_tuple(t), kNow)) table.erase(*e);
      }
      next = 0;
      state.ResumeTiming();
    }
    const FlowTuple* burst = &fresh[next];
    for (std::size_t i = 0; i < kBurst; ++i) {
      hashes[i] = hash_tuple(burst[i]);
      table.prefetch(hashes[i]);
    }
    for (std::size_t i = 0; i < kBurst; ++i) {
      if (table.find(burst[i], hashes[i], kNow) != nullptr) continue;
      refused += table.insert(burst[i], hashes[i], FlowState::kSyn, i % kGroups,
                              hashes[i] % kBuckets, kNow) == nullptr;
    }
    next += kBurst;
  }
  report(state, table, state.iterations() * kBurst, refused);
}
BENCHMARK(BM_InsertNew);

}  // namespace
}  // namespace vipfarm::flow

BENCHMARK_MAIN();
