// The DPDK data plane: EAL, the uplinks and their TAPs, worker lcores running the classifier
// on bursts, the ARP/ND responder, the exception path, snapshot publication and per-lcore
// counters. It parses no TOML and does no I/O other than DPDK's.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "vipfarm/config/config.hpp"
#include "vipfarm/dataplane/counters.hpp"
#include "vipfarm/flow/flow_table.hpp"
#include "vipfarm/flow/handoff.hpp"
#include "vipfarm/ownership/snapshot.hpp"
#include "vipfarm/packet/classify.hpp"
#include "vipfarm/packet/reply.hpp"

namespace vipfarm::dataplane {

// Plain per-lcore counters, written by one lcore, summed by readers (relaxed reads of
// torn-free 64-bit fields are fine for monotonic counters on x86-64).
struct alignas(64) LcoreCounters {
#define VIPFARM_LCORE_FIELD(field, key, metric, help) std::uint64_t field = 0;
  VIPFARM_LCORE_COUNTERS(VIPFARM_LCORE_FIELD)
#undef VIPFARM_LCORE_FIELD
  std::array<std::uint64_t, packet::kVerdictCount> verdicts{};
  std::array<std::uint64_t, packet::kMalformedCount> malformed{};
  // Per dataplane port (config order): frames received on its uplink, and frames sent on it
  // (ARP/ND replies, forwarded frames, and the kernel's through its TAP).
  std::array<std::uint64_t, config::kMaxPorts> port_rx{};
  std::array<std::uint64_t, config::kMaxPorts> port_tx{};
  // Directed VIPs: frames sent on to each bucket's owner, by node id.
  std::array<std::uint64_t, kMaxNodes + 1> forwarded{};
  flow::HandoffCounters handoff;  // flow handoff outcomes (docs/handoff.md)
  std::uint64_t generation = 0;   // the snapshot generation this lcore last used
};

struct Totals {
  LcoreCounters sum;
  flow::FlowStats flows{};               // every worker's flow table
  std::uint64_t flows_capacity = 0;      // flows all the tables must hold ([flows] capacity each)
  std::uint64_t min_generation = 0;      // every worker has applied at least this one
  std::vector<std::uint64_t> worker_rx;  // frames each worker received (RSS / fanout spread)
  // By port: frames its uplink's driver or kernel dropped before a worker could take them
  // (rte_eth_stats imissed: a NIC's full receive ring; af_xdp's empty fill ring).
  std::vector<std::uint64_t> port_rx_missed;
};

// The ownership's snapshots reach the workers through it (ownership/snapshot.hpp).
class Dataplane final : public ownership::SnapshotSink {
 public:
  Dataplane();
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // Where accepted and host-bound frames go: the kernel through a TAP, or (pipeline
  // benchmarks only) a net_null port that discards them, so the data plane is measured
  // without the kernel.
  enum class ExceptionPort { kTap, kNull };

  // EAL, mempool, ports, ring; `extra_eal` comes from the command line. Returns an error
  // message, empty on success.
  std::string start(const config::Config& config, const std::string& program,
                    const std::vector<std::string>& extra_eal,
                    ExceptionPort exception = ExceptionPort::kTap);

  // The same with ports the caller makes once EAL is up, in place of the config's uplink
  // vdevs and the TAPs: tests/dataplane/ hands over net_ring ports over rings it owns, to
  // push fixture frames in and read what the workers and the exception path send. Called
  // after rte_eal_init, `make_ports` returns one (uplink, exception) pair of port ids per
  // config port, or an error message; start() configures, starts and finally closes them.
  struct PortIds {
    std::uint16_t uplink = 0;
    std::uint16_t exception = 0;
  };
  using MakePorts = std::function<std::string(std::vector<PortIds>& ports)>;
  std::string start(const config::Config& config, const std::string& program,
                    const std::vector<std::string>& extra_eal, const MakePorts& make_ports);

  // SnapshotSink. publish() swaps the workers' snapshot and returns; the previous one waits
  // on a retired list with an RCU token (rte_rcu_qsbr_start) and is freed by reclaim() once
  // every worker has passed a quiescent point since (rte_rcu_qsbr_check, never blocking).
  // The lease: without any renewal (no membership) it never lapses.
  void publish(std::unique_ptr<ownership::Snapshot> next) override;
  void renew_lease(std::chrono::nanoseconds duration) noexcept override;
  void revoke_lease() noexcept override;
  std::vector<std::uint64_t> flows_in(const std::vector<ownership::Bucket>& buckets) const override;
  bool leased() const noexcept;
  // Frees the retired snapshots no worker can still read; returns how many still wait.
  // publish() and the main lcore's loop (every ~100 ms) call it.
  std::size_t reclaim();

  // The exception path (the main lcore's loop in run()) watched by the workers: once it has
  // not run for kExceptionStall they accept no VIP traffic (nothing is queued for a kernel
  // that would answer it after the buckets moved), and when it runs again it drops what
  // waited in its rings. exception_silence() is how long ago it last ran (0 while run() is
  // not running): the control thread steps aside on it (membership_service.hpp).
  static constexpr std::chrono::milliseconds kExceptionStall{100};
  std::chrono::nanoseconds exception_silence() const noexcept;

  // Launches the workers, then runs the exception path on the calling (main) lcore until
  // `stop` becomes true; `on_idle` is called about every 100 ms from that loop.
  void run(const std::atomic<bool>& stop, const std::function<void()>& on_idle);

  // Queues gratuitous ARP / unsolicited NA for every flood VIP onto its port's uplink, and, for
  // directed VIPs, a unicast ARP reply (IPv6: neighbour advertisement) with this node's MAC
  // to every requester the workers have seen that `answers` (vip index, requester) says
  // this node is the ARP owner of
  // (docs/directed.md). Main lcore only.
  using AnswersRequester = std::function<bool(std::uint16_t vip, const IpAddr& requester)>;
  void announce(const AnswersRequester& answers = {});

  // Stops and closes the ports (the TAP interface goes away) and releases DPDK. The
  // counters stay readable until destruction. Idempotent; the destructor calls it.
  void shutdown();

  Totals totals() const;
  // The MAC of the first port's uplink: the node's identity (heartbeats, directed VIPs).
  MacAddr uplink_mac() const;
  // Every port's uplink MAC (its TAP has the same), in config order.
  MacAddr port_mac(std::size_t port) const;
  std::size_t port_count() const;
  std::string port_name(std::size_t port) const;  // config's (the one-port form's: "uplink")

  struct Impl;

 private:
  // Both start()s: the exception port is `exception` unless `make_ports` gives the ports.
  std::string bring_up(const config::Config& config, const std::string& program,
                       const std::vector<std::string>& extra_eal, ExceptionPort exception,
                       const MakePorts& make_ports);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vipfarm::dataplane
