// Metric families built at scrape time from the data plane's counters and the control
// state. Each counter is declared once in kCounters (name, help, field).
#include "vipfarm/metrics/metrics.hpp"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include <array>

namespace vipfarm::metrics {

namespace {

using dataplane::LcoreCounters;

struct CounterSpec {
  const char* name;
  const char* help;
  std::uint64_t LcoreCounters::*field;
};

constexpr std::array kCounters = std::to_array<CounterSpec>({
    {"vipfarm_rx_packets_total", "Frames received on the uplink.", &LcoreCounters::rx_packets},
    {"vipfarm_rx_bytes_total", "Bytes received on the uplink.", &LcoreCounters::rx_bytes},
    {"vipfarm_arp_replies_total", "ARP requests for a VIP answered with its virtual MAC.",
     &LcoreCounters::arp_replies},
    {"vipfarm_nd_replies_total", "Neighbour solicitations for a VIP answered.",
     &LcoreCounters::nd_replies},
    {"vipfarm_reply_failures_total", "ARP/ND requests that could not be answered.",
     &LcoreCounters::reply_failures},
    {"vipfarm_announcements_total", "Gratuitous ARP / unsolicited NA sent.",
     &LcoreCounters::announcements},
    {"vipfarm_exception_tx_packets_total", "Frames handed to the kernel through the TAP.",
     &LcoreCounters::exception_tx},
    {"vipfarm_exception_rx_packets_total", "Frames the kernel sent through the TAP.",
     &LcoreCounters::exception_rx},
    {"vipfarm_exception_ring_full_total",
     "Frames for the kernel dropped because it fell behind (bounded ring full).",
     &LcoreCounters::exception_ring_full},
    {"vipfarm_exception_tx_drops_total", "Frames the TAP did not take.",
     &LcoreCounters::exception_tx_drops},
    {"vipfarm_uplink_tx_packets_total", "Frames from the kernel sent on the uplink.",
     &LcoreCounters::uplink_tx_from_kernel},
    {"vipfarm_uplink_tx_drops_total", "Frames the uplink did not take.",
     &LcoreCounters::uplink_tx_drops},
    {"vipfarm_uplink_ring_full_total", "Frames from the kernel dropped before the uplink.",
     &LcoreCounters::to_uplink_ring_full},
    {"vipfarm_kernel_rewrites_total", "Kernel ARP/ND frames naming a VIP given the virtual MAC.",
     &LcoreCounters::kernel_rewrites},
    {"vipfarm_foreign_unicast_total",
     "Host-bound frames addressed to another host's MAC (flooded by the switch), dropped.",
     &LcoreCounters::foreign_unicast},
});

prometheus::ClientMetric value_metric(double value, bool counter,
                                      std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return m;
}

class Collector : public prometheus::Collectable {
 public:
  Collector(const control::Control& control, const dataplane::Dataplane& dataplane)
      : control_(control), dataplane_(dataplane) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    const dataplane::Totals totals = dataplane_.totals();
    const LcoreCounters& s = totals.sum;
    std::vector<prometheus::MetricFamily> out;
    for (const CounterSpec& spec : kCounters) {
      out.push_back({spec.name,
                     spec.help,
                     prometheus::MetricType::Counter,
                     {value_metric(static_cast<double>(s.*spec.field), true)}});
    }
    prometheus::MetricFamily verdicts{"vipfarm_packets_total",
                                      "Frames received, by verdict (rx = the sum).",
                                      prometheus::MetricType::Counter,
                                      {}};
    for (std::size_t v = 0; v < s.verdicts.size(); ++v) {
      if (v == static_cast<std::size_t>(packet::Verdict::kFarm)) continue;  // never final
      verdicts.metric.push_back(value_metric(
          static_cast<double>(s.verdicts[v]), true,
          {{"verdict", std::string(packet::to_string(static_cast<packet::Verdict>(v)))}}));
    }
    out.push_back(std::move(verdicts));
    prometheus::MetricFamily malformed{"vipfarm_malformed_total",
                                       "Malformed frames, by reason.",
                                       prometheus::MetricType::Counter,
                                       {}};
    for (std::size_t r = 1; r < s.malformed.size(); ++r) {
      malformed.metric.push_back(value_metric(
          static_cast<double>(s.malformed[r]), true,
          {{"reason", std::string(packet::to_string(static_cast<packet::Malformed>(r)))}}));
    }
    out.push_back(std::move(malformed));
    prometheus::MetricFamily owned{"vipfarm_owned_buckets",
                                   "Buckets this node owns, by group.",
                                   prometheus::MetricType::Gauge,
                                   {}};
    prometheus::MetricFamily buckets{
        "vipfarm_buckets", "Buckets per group.", prometheus::MetricType::Gauge, {}};
    for (const control::GroupShare& share : control_.shares()) {
      owned.metric.push_back(value_metric(share.owned, false, {{"group", share.name}}));
      buckets.metric.push_back(value_metric(share.buckets, false, {{"group", share.name}}));
    }
    out.push_back(std::move(owned));
    out.push_back(std::move(buckets));
    out.push_back({"vipfarm_snapshot_generation",
                   "Generation of the published ownership snapshot.",
                   prometheus::MetricType::Gauge,
                   {value_metric(static_cast<double>(control_.generation()), false)}});
    out.push_back({"vipfarm_applied_generation",
                   "Lowest snapshot generation any worker has used for a burst.",
                   prometheus::MetricType::Gauge,
                   {value_metric(static_cast<double>(totals.min_generation), false)}});
    out.push_back({"vipfarm_build_info",
                   "The vipfarmd version.",
                   prometheus::MetricType::Gauge,
                   {value_metric(1, false, {{"version", VIPFARM_VERSION}})}});
    return out;
  }

 private:
  const control::Control& control_;
  const dataplane::Dataplane& dataplane_;
};

}  // namespace

Exporter::Exporter() = default;
Exporter::~Exporter() = default;

std::string Exporter::start(const std::string& listen, const control::Control& control,
                            const dataplane::Dataplane& dataplane) {
  if (listen.empty()) return {};
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return "metrics endpoint " + listen + ": " + e.what();
  }
  collector_ = std::make_shared<Collector>(control, dataplane);
  exposer_->RegisterCollectable(collector_);
  return {};
}

}  // namespace vipfarm::metrics
