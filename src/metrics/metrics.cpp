// Metric families built at scrape time from the data plane's counters and the control
// state. Each data plane counter is declared once, in vipfarm/dataplane/counters.hpp.
#include "vipfarm/metrics/metrics.hpp"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <pthread.h>

#include <array>
#include <bit>
#include <boost/asio/io_context.hpp>
#include <iostream>
#include <limits>
#include <optional>
#include <thread>

#include "vipfarm/api/api_server.hpp"
#include "vipfarm/common/net.hpp"

namespace vipfarm::metrics {

namespace {

using dataplane::LcoreCounters;

struct CounterSpec {
  const char* name;
  const char* help;
  std::uint64_t LcoreCounters::*field;
};

// Every scalar data plane counter, from its one declaration (vipfarm/dataplane/counters.hpp).
constexpr std::array kCounters = std::to_array<CounterSpec>({
#define VIPFARM_SPEC(field, key, metric, help) {metric, help, &LcoreCounters::field},
    VIPFARM_LCORE_COUNTERS(VIPFARM_SPEC)
#undef VIPFARM_SPEC
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

prometheus::MetricFamily family(const char* name, const char* help, prometheus::MetricType type,
                                std::vector<prometheus::ClientMetric> metrics = {}) {
  return {name, help, type, std::move(metrics)};
}

// Membership, peers and checkers (absent without [membership]).
void collect_membership(const control::MembershipStats& s,
                        std::vector<prometheus::MetricFamily>& out) {
  using membership::NodeState;
  using prometheus::MetricType;
  auto state =
      family("vipfarm_node_state", "This node's state (1 for the current one).", MetricType::Gauge);
  for (std::size_t i = 0; i < membership::kNodeStateCount; ++i) {
    const auto st = static_cast<NodeState>(i);
    state.metric.push_back(value_metric(st == s.state ? 1 : 0, false,
                                        {{"state", std::string(membership::to_string(st))}}));
  }
  out.push_back(std::move(state));
  out.push_back(family("vipfarm_view_epoch", "Epoch of the installed view.", MetricType::Gauge,
                       {value_metric(static_cast<double>(s.epoch), false)}));
  out.push_back(family("vipfarm_view_members", "Members (UP nodes) of the installed view.",
                       MetricType::Gauge, {value_metric(std::popcount(s.members), false)}));
  out.push_back(family(
      "vipfarm_lease_ok",
      "1 while the workers hold a valid ownership lease (0: VIP traffic refused: no view yet, "
      "or a stall of the control thread).",
      MetricType::Gauge, {value_metric(s.lease_ok ? 1 : 0, false)}));
  out.push_back(family("vipfarm_views_installed_total", "Views this node installed.",
                       MetricType::Counter,
                       {value_metric(static_cast<double>(s.views_installed), true)}));
  out.push_back(family("vipfarm_heartbeats_sent_total", "Heartbeat datagrams sent.",
                       MetricType::Counter, {value_metric(static_cast<double>(s.sent), true)}));
  out.push_back(family("vipfarm_heartbeat_send_errors_total",
                       "Heartbeat datagrams the kernel refused to send.", MetricType::Counter,
                       {value_metric(static_cast<double>(s.send_errors), true)}));
  out.push_back(family("vipfarm_heartbeats_received_total",
                       "Heartbeats accepted (authentic, fresh, from a configured peer).",
                       MetricType::Counter, {value_metric(static_cast<double>(s.received), true)}));
  auto rejected = family("vipfarm_heartbeats_rejected_total",
                         "Heartbeat datagrams rejected, by reason; they never change state.",
                         MetricType::Counter);
  for (std::size_t r = 0; r < membership::kRejectCount; ++r) {
    rejected.metric.push_back(value_metric(
        static_cast<double>(s.rejected[r]), true,
        {{"reason", std::string(membership::to_string(static_cast<membership::Reject>(r)))}}));
  }
  out.push_back(std::move(rejected));
  auto up = family("vipfarm_peer_up", "1 while a peer is heard (alive).", MetricType::Gauge);
  auto heard = family("vipfarm_peer_last_heard_seconds",
                      "Seconds since a peer's last accepted heartbeat (absent: never heard).",
                      MetricType::Gauge);
  auto mismatch =
      family("vipfarm_peer_fingerprint_mismatch",
             "1 when a peer runs a different farm configuration (not merged).", MetricType::Gauge);
  auto held = family("vipfarm_peer_held_down", "1 while a flapping peer is held out of the view.",
                     MetricType::Gauge);
  for (const auto& p : s.peers) {
    const std::vector<prometheus::ClientMetric::Label> labels = {{"node", std::to_string(p.id)},
                                                                 {"name", p.name}};
    up.metric.push_back(value_metric(p.alive ? 1 : 0, false, labels));
    if (p.last_heard_age_s >= 0)
      heard.metric.push_back(value_metric(p.last_heard_age_s, false, labels));
    mismatch.metric.push_back(value_metric(p.fingerprint_ok ? 0 : 1, false, labels));
    held.metric.push_back(value_metric(p.held_down ? 1 : 0, false, labels));
  }
  out.push_back(std::move(up));
  out.push_back(std::move(heard));
  out.push_back(std::move(mismatch));
  out.push_back(std::move(held));
  auto histogram = [&](const char* name, const char* help,
                       const control::MembershipStats::Histogram& h) {
    prometheus::ClientMetric metric;
    for (std::size_t b = 0; b < h.bounds.size(); ++b) {
      metric.histogram.bucket.push_back({h.buckets[b], h.bounds[b]});
    }
    metric.histogram.bucket.push_back({h.count, std::numeric_limits<double>::infinity()});
    metric.histogram.sample_count = h.count;
    metric.histogram.sample_sum = h.sum_s;
    out.push_back(family(name, help, MetricType::Histogram, {metric}));
  };
  histogram("vipfarm_convergence_seconds",
            "From this node first proposing a view change to installing it.", s.convergence);
  histogram("vipfarm_failover_seconds",
            "From the last heartbeat of a peer that died to this node installing the view "
            "without it (detection and agreement).",
            s.failover);
  auto healthy =
      family("vipfarm_checker_healthy", "1 while a checker is healthy.", MetricType::Gauge);
  auto checks = family("vipfarm_checker_checks_total", "Checks run.", MetricType::Counter);
  auto failures =
      family("vipfarm_checker_failures_total", "Checks that failed.", MetricType::Counter);
  for (const auto& c : s.checkers) {
    const std::vector<prometheus::ClientMetric::Label> labels = {
        {"checker", c.name}, {"kind", std::string(config::to_string(c.kind))}};
    healthy.metric.push_back(value_metric(c.healthy ? 1 : 0, false, labels));
    checks.metric.push_back(value_metric(static_cast<double>(c.checks), true, labels));
    failures.metric.push_back(value_metric(static_cast<double>(c.failures), true, labels));
  }
  out.push_back(std::move(healthy));
  out.push_back(std::move(checks));
  out.push_back(std::move(failures));
}

// The path to the kernel (control/host_path.hpp).
void collect_host_path(const control::HostPath::Stats& s,
                       std::vector<prometheus::MetricFamily>& out) {
  using prometheus::MetricType;
  out.push_back(family("vipfarm_host_path_down",
                       "1 while this node's path to its kernel is broken (the exception path "
                       "stalled, the TAP gone): it serves nothing meanwhile.",
                       MetricType::Gauge, {value_metric(s.down.empty() ? 0 : 1, false)}));
  out.push_back(family("vipfarm_exception_stalls_total",
                       "Times the exception path (the main lcore) stopped for 100 ms or more.",
                       MetricType::Counter, {value_metric(static_cast<double>(s.stalls), true)}));
  out.push_back(family(
      "vipfarm_host_path_repairs_total",
      "What vipfarmd put back on its TAP after someone removed or changed it: an address, the "
      "link's up flag, a peer's pinned neighbour entry.",
      MetricType::Counter,
      {value_metric(static_cast<double>(s.address_repairs), true, {{"what", "address"}}),
       value_metric(static_cast<double>(s.link_repairs), true, {{"what", "link"}}),
       value_metric(static_cast<double>(s.neighbour_repairs), true, {{"what", "neighbour"}})}));
}

class Collector : public prometheus::Collectable {
 public:
  Collector(const control::Control& control, const dataplane::Dataplane& dataplane,
            const control::MembershipService* membership, const control::HostPath* host_path)
      : control_(control), dataplane_(dataplane), membership_(membership), host_path_(host_path) {}

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
    prometheus::MetricFamily forwarded{
        "vipfarm_forwarded_total",
        "Directed VIPs: frames forwarded to the bucket's owner, by that node.",
        prometheus::MetricType::Counter,
        {}};
    const unsigned self = control_.identity().node;
    for (const unsigned n : control_.node_ids()) {  // every peer, 0 until a frame goes there
      if (n == self || n >= s.forwarded.size()) continue;
      forwarded.metric.push_back(
          value_metric(static_cast<double>(s.forwarded[n]), true, {{"peer", std::to_string(n)}}));
    }
    out.push_back(std::move(forwarded));
    prometheus::MetricFamily port_rx{
        "vipfarm_port_rx_packets_total",
        "Frames received on each dataplane port's uplink (a gateway's inside and outside).",
        prometheus::MetricType::Counter,
        {}};
    prometheus::MetricFamily port_tx{
        "vipfarm_port_tx_packets_total",
        "Frames sent on each dataplane port's uplink (the kernel's, ARP/ND replies, forwarded).",
        prometheus::MetricType::Counter,
        {}};
    prometheus::MetricFamily port_missed{
        "vipfarm_port_rx_missed_total",
        "Frames each dataplane port's uplink dropped before a worker took them, as its driver "
        "reports them (a NIC: a full receive ring; af_xdp: no fill-ring buffer, while a full "
        "receive ring shows only in the interface's own counters).",
        prometheus::MetricType::Counter,
        {}};
    for (std::size_t p = 0; p < dataplane_.port_count() && p < s.port_rx.size(); ++p) {
      const std::vector<prometheus::ClientMetric::Label> port = {{"port", dataplane_.port_name(p)}};
      port_rx.metric.push_back(value_metric(static_cast<double>(s.port_rx[p]), true, port));
      port_tx.metric.push_back(value_metric(static_cast<double>(s.port_tx[p]), true, port));
      if (p < totals.port_rx_missed.size()) {
        port_missed.metric.push_back(
            value_metric(static_cast<double>(totals.port_rx_missed[p]), true, port));
      }
    }
    out.push_back(std::move(port_rx));
    out.push_back(std::move(port_tx));
    out.push_back(std::move(port_missed));
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
    for (const ownership::GroupShare& share : control_.ledger().shares()) {
      owned.metric.push_back(value_metric(share.owned, false, {{"group", share.name}}));
      buckets.metric.push_back(value_metric(share.buckets, false, {{"group", share.name}}));
    }
    out.push_back(std::move(owned));
    out.push_back(std::move(buckets));
    out.push_back({"vipfarm_snapshot_generation",
                   "Generation of the published ownership snapshot.",
                   prometheus::MetricType::Gauge,
                   {value_metric(static_cast<double>(control_.ledger().generation()), false)}});
    out.push_back({"vipfarm_applied_generation",
                   "Lowest snapshot generation any worker has used for a burst.",
                   prometheus::MetricType::Gauge,
                   {value_metric(static_cast<double>(totals.min_generation), false)}});
    const flow::FlowStats& f = totals.flows;
    const flow::HandoffCounters& h = s.handoff;
    auto counter = [&](const char* name, const char* help, std::uint64_t value) {
      out.push_back({name,
                     help,
                     prometheus::MetricType::Counter,
                     {value_metric(static_cast<double>(value), true)}});
    };
    auto gauge = [&](const char* name, const char* help, double value) {
      out.push_back({name, help, prometheus::MetricType::Gauge, {value_metric(value, false)}});
    };
    gauge("vipfarm_flows_tracked", "Flows the workers track (flow handoff).",
          static_cast<double>(f.live));
    gauge("vipfarm_flows_capacity",
          "Flows the workers' tables hold at most ([flows] capacity per worker; 0 without "
          "handoff).",
          static_cast<double>(totals.flows_capacity));
    gauge("vipfarm_flows_embryonic", "Tracked TCP flows that have not completed a handshake.",
          static_cast<double>(f.embryonic));
    counter("vipfarm_flows_inserted_total", "Flows the workers started tracking.", f.inserted);
    counter("vipfarm_flows_refused_total",
            "New flows not tracked: their set was full of flows that may not be evicted.",
            f.refused);
    counter("vipfarm_flows_evicted_total",
            "Tracked flows evicted for a new one (unconfirmed only: embryonic or one-way).",
            f.evicted_embryonic + f.evicted_established);
    counter("vipfarm_flows_expired_total", "Tracked flows forgotten after their timeout.",
            f.expired);
#define VIPFARM_HANDOFF_METRIC(field, key, metric, help) counter(metric, help, h.field);
    VIPFARM_HANDOFF_COUNTERS(VIPFARM_HANDOFF_METRIC)
#undef VIPFARM_HANDOFF_METRIC
    const ownership::Ledger::Handoff handoff = control_.ledger().handoff();
    gauge("vipfarm_handoff_taking_buckets",
          "Buckets gained in a planned change: new connections only, until released.",
          static_cast<double>(handoff.taking.size()));
    gauge("vipfarm_handoff_releasing_buckets",
          "Buckets given up whose tracked flows this node still serves.",
          static_cast<double>(handoff.releasing.size()));
    const control::Control::Identity id = control_.identity();
    out.push_back({"vipfarm_build_info",
                   "The vipfarmd version, and which node of which farm this is.",
                   prometheus::MetricType::Gauge,
                   {value_metric(1, false,
                                 {{"version", VIPFARM_VERSION},
                                  {"cluster", id.cluster},
                                  {"node", std::to_string(id.node)},
                                  {"name", id.name}})}});
    if (membership_ != nullptr) collect_membership(membership_->stats(), out);
    if (host_path_ != nullptr) collect_host_path(host_path_->stats(), out);
    return out;
  }

 private:
  const control::Control& control_;
  const dataplane::Dataplane& dataplane_;
  const control::MembershipService* membership_;
  const control::HostPath* host_path_;
};

// What the endpoint turned away: bad input is counted, like everywhere else.
void collect_http(const api::HttpStats& s, std::vector<prometheus::MetricFamily>& out) {
  auto refused = family("vipfarm_metrics_http_refused_total",
                        "HTTP requests and connections to /metrics turned away, by reason: "
                        "malformed (400), too_large (431), not_found (404), bad_method (405), "
                        "timed_out (a request or reply not done in 10 s), evicted (closed for "
                        "a newer connection when 64 were open).",
                        prometheus::MetricType::Counter);
  const std::pair<const char*, std::uint64_t> reasons[] = {
      {"malformed", s.malformed},   {"too_large", s.too_large}, {"not_found", s.not_found},
      {"bad_method", s.bad_method}, {"timed_out", s.timed_out}, {"evicted", s.evicted}};
  for (const auto& [reason, count] : reasons) {
    refused.metric.push_back(value_metric(static_cast<double>(count), true, {{"reason", reason}}));
  }
  out.push_back(std::move(refused));
}

}  // namespace

struct Exporter::Server {
  Server(const control::Control& control, const dataplane::Dataplane& dataplane,
         const control::MembershipService* membership, const control::HostPath* host_path)
      : collector(control, dataplane, membership, host_path) {}
  ~Server() {
    io.stop();
    if (thread.joinable()) thread.join();
  }

  boost::asio::io_context io;
  Collector collector;
  // Used on `thread` only, or while it does not run.
  std::optional<api::HttpServer> http;
  std::thread thread;
};

Exporter::Exporter() = default;
Exporter::~Exporter() = default;

std::string Exporter::start(const std::string& listen, const control::Control& control,
                            const dataplane::Dataplane& dataplane,
                            const control::MembershipService* membership,
                            const control::HostPath* host_path) {
  if (listen.empty()) return {};
  const std::optional<Endpoint> at = parse_endpoint(listen);
  if (!at) return "metrics endpoint " + listen + ": expected ADDR:PORT ([v6]:PORT)";
  auto server = std::make_unique<Server>(control, dataplane, membership, host_path);
  Server& s = *server;
  s.http.emplace(s.io, api::HttpServer::Resource{
                           "/metrics", "text/plain; version=0.0.4; charset=utf-8", [&s] {
                             std::vector<prometheus::MetricFamily> families = s.collector.Collect();
                             collect_http(s.http->stats(), families);
                             return prometheus::TextSerializer().Serialize(families);
                           }});
  if (std::string err = s.http->start(at->address.to_string(), at->port); !err.empty()) {
    return "metrics endpoint " + listen + ": " + err;
  }
  s.thread = std::thread([&io = s.io] {
    // As on the control thread: an exception out of a handler is logged, the loop goes on.
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {
        std::cerr << "vipfarmd: metrics thread: unexpected exception, carrying on: " << e.what()
                  << "\n";
      }
    }
  });
  ::pthread_setname_np(s.thread.native_handle(), "vf-metrics");
  server_ = std::move(server);
  return {};
}

}  // namespace vipfarm::metrics
