// libFuzzer target: arbitrary bytes as TOML through config::parse, then everything a
// loaded config feeds (fingerprint, summary, Classifier, Ownership) must run cleanly.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vipfarm/config/config.hpp"
#include "vipfarm/packet/build.hpp"
#include "vipfarm/packet/classify.hpp"

namespace {

using vipfarm::packet::Classifier;
using vipfarm::packet::Ownership;
using vipfarm::packet::Result;
using vipfarm::packet::Verdict;

// IPv4/TCP 192.0.2.99:40000 → 198.51.100.10:80, SYN: the VIP most seeds use, so the
// fixed frame walks the rule lookup rather than stopping at "not a VIP".
constexpr std::uint8_t kFixedFrame[] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00,  // eth
    0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,              // ipv4
    0xc0, 0x00, 0x02, 0x63, 0xc6, 0x33, 0x64, 0x0a,                                      // addrs
    0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,              // tcp
    0x50, 0x02, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
};

void check(const vipfarm::config::Config& config, const Classifier& classifier, const Result& r) {
  if (static_cast<std::size_t>(r.verdict) >= vipfarm::packet::kVerdictCount) __builtin_trap();
  if ((r.reason == vipfarm::packet::Malformed::kNone) != (r.verdict != Verdict::kMalformed)) {
    __builtin_trap();
  }
  if (r.verdict == Verdict::kFarm || r.verdict == Verdict::kAccept ||
      r.verdict == Verdict::kNotOwner) {
    if (r.group >= config.groups.size() || r.bucket >= classifier.buckets()) __builtin_trap();
  }
}

void classify(const vipfarm::config::Config& config, const Classifier& classifier,
              const Ownership& ownership, std::span<const std::byte> frame) {
  Result result = classifier.classify(frame);
  check(config, classifier, result);
  ownership.apply(result);
  check(config, classifier, result);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const vipfarm::config::LoadResult loaded = vipfarm::config::parse(text, "fuzz.toml");

  // The LoadResult contract: a config exactly when there is no error.
  if (loaded.config.has_value() == !loaded.errors.empty()) __builtin_trap();
  for (const vipfarm::config::Error& error : loaded.errors) {
    if (error.key.empty() || error.message.empty() || error.file != "fuzz.toml") {
      __builtin_trap();
    }
    (void)error.to_string();
  }
  if (!loaded.config) return 0;

  const vipfarm::config::Config& config = *loaded.config;
  // The schema requires at least one VIP and one group; the code below relies on it.
  if (config.vips.empty() || config.groups.empty()) __builtin_trap();
  // SHA-256 in hex, whatever the config holds.
  if (vipfarm::config::fingerprint(config).size() != 64) __builtin_trap();
  (void)vipfarm::config::summary(config);

  const Classifier classifier(config);
  if (classifier.vip_count() != config.vips.size()) __builtin_trap();
  if (classifier.buckets() != config.buckets) __builtin_trap();
  // A validated config names its node among the cluster's, so computing what it owns
  // must work for any accepted input (odd weights, failover priorities, 65536 buckets).
  const Ownership ownership =
      Ownership::compute(config, config.node_id, vipfarm::config::all_nodes(config));

  classify(config, classifier, ownership,
           std::as_bytes(std::span<const std::uint8_t>(kFixedFrame)));

  // The fixed frame only reaches the rule lookup when the fuzzed config happens to have
  // 198.51.100.10; also aim one at its own first VIP, TCP to port 80, same family.
  vipfarm::packet::FrameSpec spec;
  spec.dst = config.vips.front().address;
  spec.src = spec.dst.is_v4() ? vipfarm::IpAddr::v4(0xc0000263)  // 192.0.2.99
                              : vipfarm::IpAddr{0x20010db800000000ULL, 0x99};
  spec.src_port = 40000;
  spec.dst_port = 80;
  const std::vector<std::byte> frame = vipfarm::packet::build_frame(spec);
  classify(config, classifier, ownership, frame);
  return 0;
}
