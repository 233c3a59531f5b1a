// classify + hash + bucket + ownership on the fixture frames, one packet at a time and in
// bursts of 32 (the dataplane's unit of work). Reports ns/packet.
#include <benchmark/benchmark.h>

#include "fixtures/frames.hpp"

namespace vipfarm::packet {
namespace {

struct Setup {
  config::Config config = fixtures::load_fixture_config();
  Classifier classifier{config};
  Ownership ownership = Ownership::compute(config, NodeId{1}, config::all_nodes(config));
};

const Setup& setup() {
  static const Setup s;
  return s;
}

// A gateway farm (docs/gateway.md) with a service VIP beside it: IPv4 inside on_addr,
// outside on_dst_addr with two dst prefixes (the second matches), IPv6 symmetric_port.
constexpr const char* kGatewayConfig = R"(
[node]
id = 1
[cluster]
name = "bench"
seed = 7
[[cluster.node]]
id = 1
name = "n1"
address = "10.10.0.11"
[[cluster.node]]
id = 2
name = "n2"
address = "10.10.0.12"
[[cluster.node]]
id = 3
name = "n3"
address = "10.10.0.13"
[[vip]]
address = "10.10.0.1"
gateway = true
mac = "5A:FE:00:00:00:01"
[[vip]]
address = "192.0.2.1"
gateway = true
mac = "5A:FE:00:00:00:02"
[[vip]]
address = "fd10::1"
gateway = true
mac = "5A:FE:00:00:00:03"
[[vip]]
address = "198.51.100.10"
[[group]]
name = "fw"
[[group.rule]]
vip = "10.10.0.1"
key = "on_addr"
[[group.rule]]
vip = "192.0.2.1"
dst = "172.16.0.0/12, 10.10.0.0/16"
key = "on_dst_addr"
[[group.rule]]
vip = "fd10::1"
key = "symmetric_port"
[[group]]
name = "web"
[[group.rule]]
vip = "198.51.100.10"
proto = "tcp"
ports = "80,443"
key = "on_port"
)";

const Setup& gateway_setup() {
  static const Setup s = [] {
    config::LoadResult loaded = config::parse(kGatewayConfig, "bench.toml");
    if (!loaded.config) throw std::runtime_error(loaded.errors.front().to_string());
    return Setup{*loaded.config, Classifier(*loaded.config),
                 Ownership::compute(*loaded.config, NodeId{1}, config::all_nodes(*loaded.config))};
  }();
  return s;
}

// 1024 frames of one shape with varied clients, so buckets and branches are not constant.
// With `to`, every frame is sent to that virtual MAC (a gateway's); `vary_dst`: the
// destination varies instead of the source (traffic coming back through the outside).
std::vector<std::vector<std::byte>> varied(const fixtures::FrameSpec& shape,
                                           const char* to = nullptr, bool vary_dst = false) {
  std::vector<std::vector<std::byte>> frames;
  for (std::uint32_t i = 0; i < 1024; ++i) {
    fixtures::FrameSpec s = shape;
    if (to != nullptr) s.dst_mac = *parse_mac(to);
    if (vary_dst) {
      s.dst = IpAddr::v4(0x0a0a0000 + (i * 2654435761U >> 16));
      s.dst_port = static_cast<std::uint16_t>(1024 + i * 37);
      frames.push_back(fixtures::frame(s));
      continue;
    }
    if (s.src.is_v4()) {
      s.src = IpAddr::v4(0xcb007100 + (i * 2654435761U >> 24));
    } else {
      s.src.lo += i * 0x9e3779b9U;
    }
    s.src_port = static_cast<std::uint16_t>(1024 + i * 37);
    frames.push_back(fixtures::frame(s));
  }
  return frames;
}

// burst 1: classify() per packet; burst > 1: classify_burst(), as the dataplane does.
void run(benchmark::State& state, const std::vector<std::vector<std::byte>>& frames,
         std::size_t burst, const Setup& s = setup()) {
  std::vector<std::span<const std::byte>> spans(frames.begin(), frames.end());
  std::array<Result, Classifier::kMaxBurst> results;
  std::size_t next = 0;
  std::uint64_t accepted = 0;
  for (auto _ : state) {
    if (burst == 1) {
      Result r = s.classifier.classify(spans[next]);
      s.ownership.apply(r);
      accepted += r.verdict == Verdict::kAccept;
    } else {
      s.classifier.classify_burst(&spans[next], burst, results.data());
      for (std::size_t i = 0; i < burst; ++i) {
        s.ownership.apply(results[i]);
        accepted += results[i].verdict == Verdict::kAccept;
      }
    }
    next = (next + burst) & (frames.size() - 1);
  }
  benchmark::DoNotOptimize(accepted);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * burst));
  state.counters["ns_per_packet"] =
      benchmark::Counter(static_cast<double>(state.iterations() * burst),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_Ipv4TcpOnPort(benchmark::State& state) {
  static const auto frames = varied(fixtures::tcp("203.0.113.7", 40000, "198.51.100.10", 80));
  run(state, frames, static_cast<std::size_t>(state.range(0)));
}
BENCHMARK(BM_Ipv4TcpOnPort)->Arg(1)->Arg(32);

void BM_Ipv4TcpFiveTuple(benchmark::State& state) {
  static const auto frames = varied(fixtures::tcp("203.0.113.7", 40000, "198.51.100.10", 8080));
  run(state, frames, static_cast<std::size_t>(state.range(0)));
}
BENCHMARK(BM_Ipv4TcpFiveTuple)->Arg(1)->Arg(32);

void BM_Ipv6TcpOnPort(benchmark::State& state) {
  static const auto frames = varied(fixtures::tcp("2001:db8:1::7", 40000, "2001:db8::10", 443));
  run(state, frames, static_cast<std::size_t>(state.range(0)));
}
BENCHMARK(BM_Ipv6TcpOnPort)->Arg(1)->Arg(32);

void BM_PassNotVip(benchmark::State& state) {
  static const auto frames = varied(fixtures::tcp("203.0.113.7", 40000, "192.0.2.1", 22));
  run(state, frames, static_cast<std::size_t>(state.range(0)));
}
BENCHMARK(BM_PassNotVip)->Arg(32);

// Gateway VIPs: the virtual MAC test before the address lookup, dst prefixes, the keys
// that read the destination or both endpoints.
void BM_GatewayIpv4Inside(benchmark::State& state) {
  static const auto frames =
      varied(fixtures::tcp("10.10.3.4", 40000, "203.0.113.80", 443), "5A:FE:00:00:00:01");
  run(state, frames, static_cast<std::size_t>(state.range(0)), gateway_setup());
}
BENCHMARK(BM_GatewayIpv4Inside)->Arg(32);

void BM_GatewayIpv4OutsideDst(benchmark::State& state) {
  static const auto frames =
      varied(fixtures::tcp("203.0.113.80", 443, "10.10.3.4", 40000), "5A:FE:00:00:00:02", true);
  run(state, frames, static_cast<std::size_t>(state.range(0)), gateway_setup());
}
BENCHMARK(BM_GatewayIpv4OutsideDst)->Arg(32);

void BM_GatewayIpv6Symmetric(benchmark::State& state) {
  static const auto frames =
      varied(fixtures::tcp("fd10::3:4", 40000, "2001:db8:80::80", 443), "5A:FE:00:00:00:03");
  run(state, frames, static_cast<std::size_t>(state.range(0)), gateway_setup());
}
BENCHMARK(BM_GatewayIpv6Symmetric)->Arg(32);

// A service VIP's frames in a farm that also has gateways: what the MAC test costs them.
void BM_ServiceBesideGateways(benchmark::State& state) {
  static const auto frames = varied(fixtures::tcp("203.0.113.7", 40000, "198.51.100.10", 80));
  run(state, frames, static_cast<std::size_t>(state.range(0)), gateway_setup());
}
BENCHMARK(BM_ServiceBesideGateways)->Arg(32);

// Every fixture of the unit-test table in turn (malformed, ICMP errors, IPv6 chains ...).
void BM_FixtureMix(benchmark::State& state) {
  static const auto frames = [] {
    std::vector<std::vector<std::byte>> all;
    const auto cases = fixtures::cases();
    while (all.size() < 1024) all.push_back(cases[all.size() % cases.size()].frame);
    return all;
  }();
  run(state, frames, static_cast<std::size_t>(state.range(0)));
}
BENCHMARK(BM_FixtureMix)->Arg(32);

}  // namespace
}  // namespace vipfarm::packet

BENCHMARK_MAIN();
