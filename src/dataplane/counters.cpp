// The counters, summed over the lcores at scrape time (dataplane/counters.hpp declares them).
#include "impl.hpp"

#include <algorithm>

namespace vipfarm::dataplane {

Totals Dataplane::totals() const {
  Totals t;
  bool first_worker = true;
  for (std::size_t i = 0; i < impl_->counters.size(); ++i) {
    const LcoreCounters& c = impl_->counters[i];
    LcoreCounters& s = t.sum;
#define VIPFARM_SUM(field, key, metric, help) s.field += c.field;
    VIPFARM_LCORE_COUNTERS(VIPFARM_SUM)
#undef VIPFARM_SUM
#define VIPFARM_SUM_HANDOFF(field, key, metric, help) s.handoff.field += c.handoff.field;
    VIPFARM_HANDOFF_COUNTERS(VIPFARM_SUM_HANDOFF)
#undef VIPFARM_SUM_HANDOFF
    for (std::size_t v = 0; v < s.verdicts.size(); ++v) s.verdicts[v] += c.verdicts[v];
    for (std::size_t r = 0; r < s.malformed.size(); ++r) s.malformed[r] += c.malformed[r];
    for (std::size_t p = 0; p < c.port_rx.size(); ++p) {
      s.port_rx[p] += c.port_rx[p];
      s.port_tx[p] += c.port_tx[p];
    }
    for (std::size_t n = 0; n < c.forwarded.size(); ++n) s.forwarded[n] += c.forwarded[n];
    if (i > 0) {
      t.worker_rx.push_back(c.rx_packets);
      t.min_generation = first_worker ? c.generation : std::min(t.min_generation, c.generation);
      first_worker = false;
    }
  }
  // Read while the workers write: monotonic counters and gauges, a scrape-time view.
  for (const auto& table : impl_->flows) {
    const flow::FlowStats& f = table->stats();
    t.flows.inserted += f.inserted;
    t.flows.refused += f.refused;
    t.flows.evicted_embryonic += f.evicted_embryonic;
    t.flows.evicted_established += f.evicted_established;
    t.flows.expired += f.expired;
    t.flows.erased += f.erased;
    t.flows.live += f.live;
    t.flows.embryonic += f.embryonic;
    t.flows_capacity += table->capacity();
  }
  for (const Impl::Port& port : impl_->ports) {
    rte_eth_stats stats{};
    t.port_rx_missed.push_back(rte_eth_stats_get(port.uplink, &stats) == 0 ? stats.imissed : 0);
  }
  return t;
}

}  // namespace vipfarm::dataplane
