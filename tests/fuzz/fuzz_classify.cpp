// libFuzzer target: arbitrary bytes as an Ethernet frame through Classifier::classify and
// Ownership::apply, trapping on any broken Result invariant (docs/classifier.md §6).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#include "vipfarm/config/config.hpp"
#include "vipfarm/packet/classify.hpp"

namespace {

using vipfarm::packet::Classifier;
using vipfarm::packet::Malformed;
using vipfarm::packet::Ownership;
using vipfarm::packet::Result;
using vipfarm::packet::Verdict;

// Both families, every key, proto and mode, port lists with singles and ranges, a "*"
// rule, the echo fallback and gateway VIPs with dst prefixes, so every branch of the rule
// lookup is reachable from bytes alone. 1024 buckets make the ownership bitmap span
// several words per group.
constexpr std::string_view kConfig = R"toml(
[node]
id = 1

[cluster]
name = "fuzz"
buckets = 1024
seed = 104111893539789
icmp_echo = "one"
unmatched = "drop"

[[cluster.node]]
id = 1
name = "n1"
address = "192.0.2.1"

[[cluster.node]]
id = 2
name = "n2"
address = "192.0.2.2"

[[cluster.node]]
id = 3
name = "n3"
address = "2001:db8:ffff::3"

[[vip]]
address = "198.51.100.10"

[[vip]]
address = "198.51.100.20"
mac = "02:00:00:00:00:20"

[[vip]]
address = "2001:db8::10"

[[vip]]
address = "2001:db8::20"

# Gateway VIPs (docs/gateway.md), with simple virtual MACs the mutations find: frames to
# them are farm traffic whatever their destination.
[[vip]]
address = "203.0.113.1"
gateway = true
mac = "02:00:00:00:00:01"

[[vip]]
address = "2001:db8:ff::1"
gateway = true
mac = "02:00:00:00:00:06"

[[group]]
name = "fw"

[[group.rule]]
vip = "203.0.113.1"
proto = "tcp"
dst = "10.0.0.0/8, 192.0.2.0/24"
key = "on_dst_port"

[[group.rule]]
vip = "203.0.113.1"
key = "symmetric"

[[group.rule]]
vip = "2001:db8:ff::1"
dst = ["2001:db8::/32", "::/0"]
key = "symmetric_port"

[[group]]
name = "web"
mode = "balance"

[[group.member]]
node = 1
weight = 1

[[group.member]]
node = 2
weight = 1

[[group.member]]
node = 3
weight = 2

[[group.rule]]
vip = "198.51.100.10"
proto = "tcp"
ports = "80,443,8000-8099"
key = "on_port"

[[group.rule]]
vip = "198.51.100.10"
proto = "udp"
ports = "53"
key = "five_tuple"

[[group]]
name = "dns"

[[group.member]]
node = 1

[[group.member]]
node = 2

[[group.rule]]
vip = "*"
proto = "udp"
ports = "5353,6000-6010"
key = "on_ipid"

[[group.rule]]
vip = "198.51.100.20"
proto = "icmp"
key = "client_net"
prefix = 16

[[group]]
name = "standby"
mode = "failover"

[[group.member]]
node = 1
priority = 10

[[group.member]]
node = 2
priority = 20

[[group.member]]
node = 3
priority = 5
weight = 0

[[group.rule]]
vip = "198.51.100.20"
proto = "tcp"
ports = "*"
key = "client_net"
prefix = 0

[[group.rule]]
vip = "198.51.100.20"
ports = "22"

[[group.rule]]
vip = "198.51.100.10"
proto = "any"
ports = "9000-9010,9999"
key = "five_tuple"

[[group]]
name = "v6"

[[group.member]]
node = 1
weight = 3

[[group.member]]
node = 3
weight = 1

[[group.rule]]
vip = "2001:db8::10"
proto = "tcp"
ports = "80,443"
key = "client_net"
prefix = 20
prefix6 = 48

[[group.rule]]
vip = "2001:db8::10"
proto = "udp"
key = "on_addr"

[[group.rule]]
vip = "2001:db8::10"
proto = "any"
ports = "7000,7100-7199,65535"
key = "on_ipid"

[[group.rule]]
vip = "2001:db8::20"
proto = "icmp"
key = "client_net"
prefix6 = 128
)toml";

struct Fixture {
  vipfarm::config::Config config;
  Classifier classifier;
  Ownership ownership;
};

// A fixture that fails to load would make every run a silent no-op: abort loudly instead.
vipfarm::config::Config load_fixture() {
  vipfarm::config::LoadResult loaded = vipfarm::config::parse(kConfig, "fuzz.toml");
  if (!loaded.config) {
    for (const auto& error : loaded.errors) std::fprintf(stderr, "%s\n", error.to_string().c_str());
    std::abort();
  }
  return std::move(*loaded.config);
}

const Fixture& fixture() {
  static const Fixture f = [] {
    vipfarm::config::Config config = load_fixture();
    Classifier classifier(config);
    Ownership ownership =
        Ownership::compute(config, vipfarm::NodeId{1}, vipfarm::config::all_nodes(config));
    return Fixture{std::move(config), std::move(classifier), std::move(ownership)};
  }();
  return f;
}

bool has_vip(Verdict v) {
  return v == Verdict::kFarm || v == Verdict::kAccept || v == Verdict::kNotOwner ||
         v == Verdict::kNoRule || v == Verdict::kArpVip || v == Verdict::kNdVip;
}

bool has_bucket(Verdict v) {
  return v == Verdict::kFarm || v == Verdict::kAccept || v == Verdict::kNotOwner;
}

void check(const Fixture& f, const Result& r) {
  if (static_cast<std::size_t>(r.verdict) >= vipfarm::packet::kVerdictCount) __builtin_trap();
  if (static_cast<std::size_t>(r.reason) >= vipfarm::packet::kMalformedCount) __builtin_trap();
  if ((r.reason == Malformed::kNone) != (r.verdict != Verdict::kMalformed)) __builtin_trap();
  if (has_bucket(r.verdict)) {
    if (r.group >= f.config.groups.size()) __builtin_trap();
    if (r.bucket >= f.classifier.buckets()) __builtin_trap();
  }
  if (has_vip(r.verdict) && r.vip >= f.classifier.vip_count()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Fixture& f = fixture();
  const std::span<const std::byte> frame(reinterpret_cast<const std::byte*>(data), size);

  Result result = f.classifier.classify(frame);
  check(f, result);
  // Ownership is applied by the caller: classify alone never decides accept/not_owner.
  if (result.verdict == Verdict::kAccept || result.verdict == Verdict::kNotOwner) {
    __builtin_trap();
  }

  // classify is a pure function: a second call must agree field for field, or some
  // state leaked between packets (or an uninitialised read decided the verdict).
  const Result again = f.classifier.classify(frame);
  if (again.verdict != result.verdict || again.reason != result.reason ||
      again.group != result.group || again.vip != result.vip || again.bucket != result.bucket) {
    __builtin_trap();
  }

  // The daemon's per-port lookup (VIPs of port 0: every VIP of this port-less config)
  // gives the same answer.
  const Result port0 = f.classifier.classify(frame, 0);
  if (port0.verdict != result.verdict || port0.bucket != result.bucket || port0.vip != result.vip) {
    __builtin_trap();
  }

  // Only kFarm may change, and only into accept/not_owner for the same group and bucket.
  const Verdict before = result.verdict;
  f.ownership.apply(result);
  check(f, result);
  if (before == Verdict::kFarm) {
    if (result.verdict != Verdict::kAccept && result.verdict != Verdict::kNotOwner) {
      __builtin_trap();
    }
  } else if (result.verdict != before) {
    __builtin_trap();
  }
  return 0;
}
