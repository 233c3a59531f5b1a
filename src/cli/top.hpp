// vipfarmctl top: a live per-node view of a farm (state, view epoch, share of the buckets,
// packet and heartbeat-reject rates, tracked flows), read from every node's Prometheus
// endpoint, so it shows the whole farm from any machine that reaches the nodes.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "vipfarm/config/config.hpp"

namespace vipfarm::cli {

struct TopOptions {
  double interval_s = 1.0;  // between frames
  unsigned count = 0;       // frames to show; 0: until interrupted
  bool json = false;        // one JSON object per frame instead of the table
};

// Scrapes every node of `farm` (its address, [metrics] listen's port) each interval.
// Returns the exit status: 0, or 1 when the config has no metrics endpoint or no node
// ever answered.
int run_top(const config::Config& farm, const TopOptions& options);

// One sample of the Prometheus text format (comments and malformed lines are skipped).
struct MetricSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};
std::vector<MetricSample> parse_metrics_text(std::string_view text);

}  // namespace vipfarm::cli
