// Benchmark of assign(): the control thread runs it on every view change, so its cost
// bounds how fast a new ownership table reaches the workers.
#include "vipfarm/assignment/assignment.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>

namespace vipfarm::assignment {
namespace {

// Arguments: buckets, members, members down. Weights 1..4 so the capacities are uneven;
// the members down are the first ones by id.
void BM_Assign(benchmark::State& state) {
  Input input;
  input.buckets = static_cast<std::uint32_t>(state.range(0));
  input.seed = 0x5EED;
  const auto members = static_cast<unsigned>(state.range(1));
  const auto down = static_cast<unsigned>(state.range(2));
  for (unsigned id = 1; id <= members; ++id) {
    input.members.push_back(Member{NodeId(id), 1 + id % 4, 0, id > down});
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(assign(input));
  }
  state.SetItemsProcessed(state.iterations() * input.buckets);
}

BENCHMARK(BM_Assign)
    ->ArgNames({"buckets", "members", "down"})
    ->Args({256, 3, 0})
    ->Args({256, 3, 2})
    ->Args({4096, 16, 0})
    ->Args({4096, 16, 2})
    ->Args({65536, 64, 0})
    ->Args({65536, 64, 2})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace vipfarm::assignment

BENCHMARK_MAIN();
