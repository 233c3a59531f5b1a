// The data plane's own code (worker, exception path, snapshot publication, leases) on
// net_ring ports over rings this test owns: fixture frames pushed into the uplink's RX ring,
// verdicts, counters and what leaves by the uplink and the exception port (the TAP's stand-in)
// checked. EAL runs --no-huge --no-pci --in-memory, no root. EAL starts once per process, so
// every test shares one Dataplane and reads the counters' deltas.
#include <gtest/gtest.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vipfarm/config/config.hpp"
#include "vipfarm/dataplane/dataplane.hpp"
#include "vipfarm/packet/build.hpp"
#include "vipfarm/packet/classify.hpp"
#include "vipfarm/packet/reply.hpp"

namespace vipfarm {
namespace {

using namespace std::chrono_literals;
using packet::Verdict;
using Frame = std::vector<std::byte>;
using Counter = std::uint64_t dataplane::LcoreCounters::*;

// Node 1 of two; one flood VIP (TCP 80 and UDP 53 keyed on the client's address and port)
// and one directed VIP (keyed on the client's address). The uplink is the test's ring port.
constexpr const char* kConfig = R"(
[node]
id = 1
name = "n1"

[cluster]
name = "dptest"
buckets = 64
seed = 11

[[cluster.node]]
id = 1
name = "n1"
address = "192.0.2.1"

[[cluster.node]]
id = 2
name = "n2"
address = "192.0.2.2"
mac = "02:00:00:00:00:02"

[[vip]]
address = "198.51.100.10"

[[vip]]
address = "198.51.100.30"
l2_mode = "directed"

[[group]]
name = "web"

[[group.rule]]
vip = "198.51.100.10"
proto = "tcp"
ports = "80"
key = "on_port"

[[group.rule]]
vip = "198.51.100.10"
proto = "udp"
ports = "53"
key = "on_port"

[[group.rule]]
vip = "198.51.100.30"
proto = "tcp"
ports = "80"
key = "on_addr"

[flows]
capacity = 4096

[dataplane]
uplink = "net_ring_dptest"   # never created: the test hands its own ring ports over
workers = 1
poll = "adaptive"            # two CPUs, shared with the test's threads

[exception]
ring_size = 64
)";

const MacAddr kPeerMac = {0x02, 0, 0, 0, 0, 0x02};  // node 2's, from the config
const MacAddr kBroadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr unsigned kRxRing = 1024;
// What the exception port's TX ring (the kernel) and the uplink's TX ring (the wire) take
// before they are read: exact, so the ring-full tests know where the drops start.
constexpr unsigned kKernelCapacity = 256;
constexpr unsigned kWireCapacity = 256;
constexpr unsigned kToKernelCapacity = 63;  // [exception] ring_size 64: an rte_ring holds 63
constexpr unsigned kChunk = 32;             // below kToKernelCapacity: that ring never fills

IpAddr ip(const char* text) { return *IpAddr::parse(text); }

// This node's share in a snapshot: the buckets it serves, those of them it is taking in a
// flow handoff (new flows only), and for directed VIPs every bucket's owner.
struct Share {
  packet::Ownership owned;
  packet::Ownership taking;
  std::vector<NodeId> owners;  // flat: group * buckets + bucket; empty: no directed VIP
};

// A snapshot as the ownership ledger publishes it (ownership/ledger.cpp, commit()), for an
// ownership set by hand: built here only, so that the test follows Snapshot when it changes.
std::unique_ptr<ownership::Snapshot> make_snapshot(const config::Config& config,
                                                   std::uint64_t generation, const Share& share,
                                                   const MacAddr& own) {
  const packet::Ownership none(config.groups.size(), config.buckets);
  auto snapshot = std::make_unique<ownership::Snapshot>(ownership::Snapshot{
      .classifier = packet::Classifier(config),
      .ownership = share.owned,
      .generation = generation,
      .unmatched = config.unmatched,
      .taking = share.taking.empty() ? none : share.taking,
      .releasing = none,
      .track = config.flows.handoff,
      .releasing_any = false,
      .timeouts = ownership::flow_timeouts(config.flows),
      .owners = share.owners,
      .node_macs = {},
      .known_macs = {},
      .releasers = {},
  });
  snapshot->node_macs[1] = mac48(own);
  snapshot->node_macs[2] = mac48(kPeerMac);
  for (const std::uint64_t m : snapshot->node_macs) {
    if (m != 0) snapshot->known_macs.push_back(m);
  }
  return snapshot;
}

// The share where this node owns the buckets `mine` says it does (and node 2 the others).
Share share_where(const config::Config& config, const std::function<bool(BucketId)>& mine,
                  bool directed = false) {
  Share s{packet::Ownership(config.groups.size(), config.buckets), {}, {}};
  for (std::uint16_t g = 0; g < config.groups.size(); ++g) {
    for (BucketId b = 0; b < config.buckets; ++b) {
      s.owned.set(g, b, mine(b));
      if (directed) s.owners.push_back(mine(b) ? NodeId{1} : NodeId{2});
    }
  }
  return s;
}

bool even(BucketId b) { return b % 2 == 0; }
bool odd(BucketId b) { return b % 2 == 1; }

// The frames an EAL-less classifier files under bucket `bucket` of its group, for the
// expectations (the classifier's own correctness is the unit tests').
BucketId bucket_of(const packet::Classifier& classifier, const Frame& frame) {
  const packet::Result r = classifier.classify(frame, 0);
  EXPECT_EQ(r.verdict, Verdict::kFarm);
  return r.bucket;
}

// One process's EAL, data plane and ring ports, shared by every test.
class Harness {
 public:
  std::string start() {
    config::LoadResult loaded = config::parse(kConfig, "dptest.toml");
    if (!loaded.config) return loaded.errors.at(0).to_string();
    config = *loaded.config;
    // The main lcore and the worker on the first two CPUs this process may use (or both on
    // one): a runner restricted by taskset still works.
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    sched_getaffinity(0, sizeof(cpus), &cpus);
    std::vector<int> usable;
    for (int c = 0; c < CPU_SETSIZE && usable.size() < 2; ++c) {
      if (CPU_ISSET(c, &cpus)) usable.push_back(c);
    }
    if (usable.empty()) return "no usable CPU";
    const int second = usable.size() > 1 ? usable[1] : usable[0];
    const std::vector<std::string> eal = {
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-m",
        "256",
        "--log-level=5",
        "--lcores=0@" + std::to_string(usable[0]) + ",1@" + std::to_string(second)};
    const std::string error =
        dp.start(config, "dataplane_tests", eal, [this](auto& ports) { return make_ports(ports); });
    if (!error.empty()) return error;
    publish(share_where(config, even));
    runner = std::thread([this] { dp.run(stop, [this] { on_idle(); }); });
    return {};
  }

  void finish() {
    resume();
    stop.store(true);
    if (runner.joinable()) runner.join();
    // Closes the ring ports and cleans EAL up: the test's rings and pool go with its memory.
    dp.shutdown();
  }

  void publish(const Share& share) {
    dp.publish(make_snapshot(config, ++generation, share, dp.uplink_mac()));
  }

  // Each frame into the uplink's RX ring, as the wire would deliver it.
  ::testing::AssertionResult push(const std::vector<Frame>& frames) {
    return put(uplink_rx, frames);
  }
  // Each frame into the exception port's RX ring, as the kernel would send it.
  ::testing::AssertionResult push_from_kernel(const std::vector<Frame>& frames) {
    return put(kernel_tx, frames);
  }
  // What the kernel got so far (the exception port's TX ring), and what went on the wire.
  std::vector<Frame> to_kernel() { return take(kernel_rx); }
  std::vector<Frame> to_wire() { return take(uplink_tx); }
  unsigned to_kernel_count() const { return rte_ring_count(kernel_rx); }
  unsigned to_wire_count() const { return rte_ring_count(uplink_tx); }
  unsigned backlog() const { return rte_ring_count(uplink_rx); }  // not yet received

  // The exception path (the main lcore) stops in its next idle call until resume().
  void pause() {
    std::unique_lock lock(gate);
    pause_requested = true;
    changed.wait(lock, [this] { return paused; });
  }
  void resume() {
    std::unique_lock lock(gate);
    pause_requested = false;
    changed.notify_all();
    changed.wait(lock, [this] { return !paused; });
  }

  config::Config config;
  dataplane::Dataplane dp;
  std::uint64_t generation = 0;

 private:
  std::string make_ports(std::vector<dataplane::Dataplane::PortIds>& ports) {
    auto ring = [](const char* name, unsigned size) {
      return rte_ring_create(name, size, SOCKET_ID_ANY, RING_F_EXACT_SZ);
    };
    uplink_rx = ring("dptest_uplink_rx", kRxRing);
    uplink_tx = ring("dptest_uplink_tx", kWireCapacity);
    kernel_tx = ring("dptest_kernel_tx", kRxRing);
    kernel_rx = ring("dptest_kernel_rx", kKernelCapacity);
    pool = rte_pktmbuf_pool_create("dptest_mbufs", 4096, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                   SOCKET_ID_ANY);
    if (uplink_rx == nullptr || uplink_tx == nullptr || kernel_tx == nullptr ||
        kernel_rx == nullptr || pool == nullptr) {
      return std::string("test rings or pool: ") + rte_strerror(rte_errno);
    }
    const int uplink = rte_eth_from_rings("dptest_uplink", &uplink_rx, 1, &uplink_tx, 1, 0);
    const int exception = rte_eth_from_rings("dptest_kernel", &kernel_tx, 1, &kernel_rx, 1, 0);
    if (uplink < 0 || exception < 0) return std::string("ring ports: ") + rte_strerror(rte_errno);
    ports.push_back({static_cast<std::uint16_t>(uplink), static_cast<std::uint16_t>(exception)});
    return {};
  }

  void on_idle() {
    std::unique_lock lock(gate);
    if (!pause_requested) return;
    paused = true;
    changed.notify_all();
    changed.wait(lock, [this] { return !pause_requested; });
    paused = false;
    changed.notify_all();
  }

  ::testing::AssertionResult put(rte_ring* ring, const std::vector<Frame>& frames) {
    for (const Frame& f : frames) {
      rte_mbuf* m = rte_pktmbuf_alloc(pool);
      if (m == nullptr) return ::testing::AssertionFailure() << "test mbuf pool empty";
      std::memcpy(rte_pktmbuf_append(m, static_cast<std::uint16_t>(f.size())), f.data(), f.size());
      if (rte_ring_enqueue(ring, m) != 0) {
        rte_pktmbuf_free(m);
        return ::testing::AssertionFailure() << "test ring full";
      }
    }
    return ::testing::AssertionSuccess();
  }

  static std::vector<Frame> take(rte_ring* ring) {
    std::vector<Frame> out;
    void* item = nullptr;
    while (rte_ring_dequeue(ring, &item) == 0) {
      auto* m = static_cast<rte_mbuf*>(item);
      const auto* data = rte_pktmbuf_mtod(m, const std::byte*);
      out.emplace_back(data, data + rte_pktmbuf_data_len(m));
      rte_pktmbuf_free(m);
    }
    return out;
  }

  rte_ring* uplink_rx = nullptr;  // the wire → the worker
  rte_ring* uplink_tx = nullptr;  // the worker → the wire
  rte_ring* kernel_tx = nullptr;  // the kernel → the exception path
  rte_ring* kernel_rx = nullptr;  // the exception path → the kernel
  rte_mempool* pool = nullptr;    // the test's frames
  std::atomic<bool> stop{false};
  std::thread runner;
  std::mutex gate;
  std::condition_variable changed;
  bool pause_requested = false;
  bool paused = false;
};

Harness* harness = nullptr;

class Environment : public ::testing::Environment {
 public:
  void SetUp() override {
    auto h = std::make_unique<Harness>();
    const std::string error = h->start();
    if (!error.empty()) {
      h->finish();
      FAIL() << "data plane did not start: " << error;
    }
    harness = h.release();
  }
  void TearDown() override {
    if (harness == nullptr) return;
    harness->finish();
  }
};

// Waits until `done` holds, for at most `limit`.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(200us);
  }
  return true;
}

// Frames the workers sent towards the kernel: accepted ones, and host traffic but for copies
// of other hosts' unicast (with unmatched VIP traffic dropped, as configured here).
std::uint64_t kernel_bound(const dataplane::LcoreCounters& c) {
  return c.verdicts[static_cast<std::size_t>(Verdict::kAccept)] +
         c.verdicts[static_cast<std::size_t>(Verdict::kPass)] - c.foreign_unicast;
}
// What became of them: delivered to the kernel, or dropped and counted.
std::uint64_t kernel_handled(const dataplane::LcoreCounters& c) {
  return c.exception_tx + c.exception_tx_drops + c.exception_ring_full + c.exception_stale;
}

std::uint64_t verdict_sum(const dataplane::LcoreCounters& c) {
  std::uint64_t sum = 0;
  for (const std::uint64_t v : c.verdicts) sum += v;
  return sum;
}

class DataplaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(harness, nullptr) << "no data plane (see the environment's failure)";
    h = harness;
    h->resume();
    h->dp.renew_lease(std::chrono::hours(1));
    h->publish(share_where(h->config, even));
    ASSERT_TRUE(settled());
    h->to_kernel();
    h->to_wire();
    before = h->dp.totals();
    // Clients no earlier test used: the flow tables keep what they tracked.
    ++client_net;
  }

  // Every test, at its end: each frame the worker received got exactly one verdict
  // (rx = the sum of the verdicts), once it has taken all there was.
  void TearDown() override {
    if (h == nullptr) return;
    EXPECT_TRUE(settled()) << "rx " << h->dp.totals().sum.rx_packets << ", verdicts "
                           << verdict_sum(h->dp.totals().sum);
  }

  // The worker has received every frame pushed (rx = all pushed since the start) and given
  // each its verdict; unless `worker_only`, the exception path has also handled every frame
  // bound for the kernel: delivered, or counted as dropped.
  bool settled(bool worker_only = false) {
    return eventually([this, worker_only] {
      const dataplane::Totals t = h->dp.totals();
      return t.sum.rx_packets == pushed && verdict_sum(t.sum) == t.sum.rx_packets &&
             (worker_only || kernel_handled(t.sum) == kernel_bound(t.sum));
    });
  }

  void push(const std::vector<Frame>& frames) {
    ASSERT_TRUE(h->push(frames));
    pushed += frames.size();
  }

  // `frames`, kChunk at a time, each chunk given its verdicts and every frame accepted
  // handled by the exception path before the next: the workers' ring to it never fills.
  void push_paced(const std::vector<Frame>& frames) {
    for (std::size_t at = 0; at < frames.size(); at += kChunk) {
      const auto first = frames.begin() + static_cast<std::ptrdiff_t>(at);
      push({first, first + static_cast<std::ptrdiff_t>(
                               std::min<std::size_t>(kChunk, frames.size() - at))});
      ASSERT_TRUE(settled()) << kernel_handled(h->dp.totals().sum)
                             << " frames handled for the kernel, "
                             << kernel_bound(h->dp.totals().sum) << " sent to it";
    }
  }
  // The counters' deltas start again from here.
  void rebase() { before = h->dp.totals(); }

  std::uint64_t since(Counter field) const { return h->dp.totals().sum.*field - before.sum.*field; }
  std::uint64_t since(Verdict v) const {
    const auto i = static_cast<std::size_t>(v);
    return h->dp.totals().sum.verdicts[i] - before.sum.verdicts[i];
  }
  // A TCP SYN (or, `ack`, a bare ACK) from client `n` of this test's network to `vip`.
  packet::FrameSpec client(unsigned n, const char* vip, std::uint8_t proto = 6,
                           std::uint16_t port = 80) const {
    packet::FrameSpec s;
    s.dst_mac = vip_mac(vip);
    s.src = IpAddr::v4(0x0a000000U | client_net << 16 | (n / 200) << 8 | (n % 200 + 1));
    s.dst = ip(vip);
    s.proto = proto;
    s.src_port = static_cast<std::uint16_t>(10000 + n);
    s.dst_port = port;
    return s;
  }
  MacAddr vip_mac(const char* vip) const {
    for (const config::Vip& v : h->config.vips) {
      if (v.address == ip(vip)) return v.l2_mode == config::L2Mode::kDirected ? own() : v.mac;
    }
    return kBroadcast;
  }
  MacAddr own() const { return h->dp.uplink_mac(); }
  static Frame ack_of(Frame syn) {
    syn.at(14 + 20 + 13) = std::byte{0x10};  // untagged IPv4 without options: TCP flags
    return syn;
  }

  // `count` SYNs to the flood VIP, split by whether this node owns their bucket under `mine`.
  struct Split {
    std::vector<Frame> all, owned, other;
  };
  Split syns(unsigned count, const std::function<bool(BucketId)>& mine, std::uint8_t proto = 6,
             std::uint16_t port = 80, unsigned first = 0) const {
    const packet::Classifier classifier(h->config);
    Split s;
    for (unsigned n = first; n < first + count; ++n) {
      Frame f = packet::build_frame(client(n, "198.51.100.10", proto, port));
      (mine(bucket_of(classifier, f)) ? s.owned : s.other).push_back(f);
      s.all.push_back(std::move(f));
    }
    return s;
  }

  static inline unsigned client_net = 0;
  static inline std::uint64_t pushed = 0;
  Harness* h = nullptr;
  dataplane::Totals before;
};

// What the kernel gets of an accepted frame: the frame, sent to the uplink's MAC.
Frame as_delivered(Frame f, const MacAddr& own) {
  std::memcpy(f.data(), own.data(), 6);
  return f;
}

// The same frames, in any order (a failure says how many, not every byte).
::testing::AssertionResult same_frames(std::vector<Frame> got, std::vector<Frame> want) {
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  if (got == want) return ::testing::AssertionSuccess();
  std::size_t common = 0;
  for (const Frame& f : got) common += std::binary_search(want.begin(), want.end(), f) ? 1 : 0;
  return ::testing::AssertionFailure() << got.size() << " frames, " << want.size() << " expected, "
                                       << common << " of them among those";
}

// One burst of every kind of frame: each gets the verdict its row names, the counters say
// so, and rx = the sum of the verdicts.
TEST_F(DataplaneTest, FixtureBurstGetsOneVerdictEach) {
  const Split farm = syns(40, even);
  ASSERT_FALSE(farm.owned.empty());
  ASSERT_FALSE(farm.other.empty());
  struct Row {
    const char* description;
    Frame frame;
    Verdict verdict;
  };
  std::vector<Row> rows;
  for (const Frame& f : farm.owned) rows.push_back({"owned bucket", f, Verdict::kAccept});
  for (const Frame& f : farm.other) rows.push_back({"node 2's bucket", f, Verdict::kNotOwner});
  packet::FrameSpec host = client(0, "192.0.2.1", 17, 5000);
  host.dst_mac = own();
  rows.push_back({"host traffic to this node", packet::build_frame(host), Verdict::kPass});
  host.dst_mac = kPeerMac;
  rows.push_back({"another host's unicast", packet::build_frame(host), Verdict::kPass});
  rows.push_back({"VIP, no rule (TCP 22)", packet::build_frame(client(0, "198.51.100.10", 6, 22)),
                  Verdict::kNoRule});
  Frame runt = packet::build_frame(client(1, "198.51.100.10"));
  runt.resize(24);
  rows.push_back({"IPv4 cut short", runt, Verdict::kMalformed});
  Frame arp(60);
  ASSERT_EQ(packet::build_arp(arp, 1, kBroadcast, {0x02, 2, 2, 2, 2, 2}, 0x0a000001, MacAddr{},
                              ip("198.51.100.10").v4_value()),
            60U);
  rows.push_back({"ARP request for the VIP", arp, Verdict::kArpVip});

  std::vector<Frame> burst;
  std::array<std::uint64_t, packet::kVerdictCount> expected{};
  for (const Row& r : rows) {
    burst.push_back(r.frame);
    ++expected[static_cast<std::size_t>(r.verdict)];
  }
  push(burst);
  ASSERT_TRUE(settled());
  for (std::size_t v = 0; v < expected.size(); ++v) {
    EXPECT_EQ(since(static_cast<Verdict>(v)), expected[v])
        << packet::to_string(static_cast<Verdict>(v));
  }
  EXPECT_EQ(since(&dataplane::LcoreCounters::rx_packets), rows.size());
  EXPECT_EQ(since(&dataplane::LcoreCounters::foreign_unicast), 1U);
  // The ARP request answered on the wire with the VIP's virtual MAC.
  const std::vector<Frame> wire = h->to_wire();
  ASSERT_EQ(wire.size(), 1U);
  ASSERT_EQ(wire[0].size(), 60U);
  EXPECT_EQ(wire[0][21], std::byte{2});  // ARP reply
  const MacAddr vip = h->config.vips[0].mac;
  EXPECT_TRUE(
      std::equal(vip.begin(), vip.end(), reinterpret_cast<const std::uint8_t*>(&wire[0][22])));
}

// Frames of owned buckets reach the kernel as sent (to the uplink's MAC), the others are
// dropped; nothing goes back on the wire.
TEST_F(DataplaneTest, OwnedBucketsReachTheKernelOthersAreDropped) {
  const Split s = syns(200, even);
  push_paced(s.all);
  EXPECT_EQ(since(Verdict::kAccept), s.owned.size());
  EXPECT_EQ(since(Verdict::kNotOwner), s.other.size());
  EXPECT_EQ(since(&dataplane::LcoreCounters::exception_tx), s.owned.size());
  std::vector<Frame> expected;
  for (const Frame& f : s.owned) expected.push_back(as_delivered(f, own()));
  EXPECT_TRUE(same_frames(h->to_kernel(), expected));
  EXPECT_EQ(h->to_wire_count(), 0U);
}

// A new ownership published while frames flow: none is lost or judged twice in the swap, and
// once every worker runs the new generation the same flows follow the new ownership (even
// the ones accepted and tracked under the old one).
TEST_F(DataplaneTest, SnapshotSwapUnderTraffic) {
  const Split flows = syns(64, even, 17, 53);
  std::atomic<bool> feeding{true};
  std::atomic<std::uint64_t> fed{0};
  std::thread feeder([&] {
    while (feeding.load()) {
      if (!h->push(flows.all)) break;
      fed += flows.all.size();
      // A bounded backlog: the test's pool is not the data plane's.
      eventually([&] { return h->backlog() < flows.all.size(); }, 1s);
      h->to_kernel();
    }
  });
  ASSERT_TRUE(eventually([&] { return fed.load() >= 4 * flows.all.size(); }));
  h->publish(share_where(h->config, odd));
  const std::uint64_t swapped = h->generation;
  EXPECT_TRUE(eventually([&] { return h->dp.totals().min_generation >= swapped; }));
  const std::uint64_t fed_at_swap = fed.load();
  ASSERT_TRUE(eventually([&] { return fed.load() >= fed_at_swap + 4 * flows.all.size(); }));
  feeding.store(false);
  feeder.join();
  pushed += fed.load();
  ASSERT_TRUE(settled());
  EXPECT_EQ(since(Verdict::kAccept) + since(Verdict::kNotOwner), fed.load());
  h->to_kernel();

  rebase();
  push_paced(flows.all);
  const Split now = syns(64, odd, 17, 53);
  EXPECT_EQ(since(Verdict::kAccept), now.owned.size());
  EXPECT_EQ(since(Verdict::kNotOwner), now.other.size());
  std::vector<Frame> expected;
  for (const Frame& f : now.owned) expected.push_back(as_delivered(f, own()));
  EXPECT_TRUE(same_frames(h->to_kernel(), expected));
}

// Once the ownership lease lapses (or is revoked) no VIP frame reaches the kernel, counted
// as lease_expired, while the host's own traffic still does; a renewal serves again.
TEST_F(DataplaneTest, LapsedLeaseAcceptsNoVipTraffic) {
  packet::FrameSpec host_spec = client(0, "192.0.2.1", 17, 5000);
  host_spec.dst_mac = own();
  const Frame host = packet::build_frame(host_spec);
  h->dp.renew_lease(1ms);
  ASSERT_TRUE(eventually([this] { return !h->dp.leased(); }));
  const Split lapsed = syns(40, even, 6, 80, 0);
  ASSERT_FALSE(lapsed.owned.empty());
  std::vector<Frame> burst = lapsed.all;
  burst.push_back(host);
  push(burst);
  ASSERT_TRUE(settled());
  EXPECT_EQ(since(Verdict::kAccept), 0U);
  EXPECT_EQ(since(Verdict::kNotOwner), lapsed.all.size());
  EXPECT_EQ(since(Verdict::kPass), 1U);
  // Every farm frame is counted today, not only those of owned buckets (as its help says).
  EXPECT_GE(since(&dataplane::LcoreCounters::lease_expired), lapsed.owned.size())
      << "every farm frame counts while the lease has lapsed, the owned ones included";
  EXPECT_TRUE(same_frames(h->to_kernel(), {host}));

  rebase();
  h->dp.renew_lease(std::chrono::hours(1));
  h->dp.revoke_lease();
  EXPECT_FALSE(h->dp.leased());
  const Split revoked = syns(40, even, 6, 80, 100);
  push(revoked.all);
  ASSERT_TRUE(settled());
  EXPECT_EQ(since(Verdict::kAccept), 0U);
  EXPECT_EQ(since(Verdict::kNotOwner), revoked.all.size());

  rebase();
  h->dp.renew_lease(std::chrono::hours(1));
  const Split renewed = syns(40, even, 6, 80, 200);
  push_paced(renewed.all);
  EXPECT_EQ(since(Verdict::kAccept), renewed.owned.size());
  EXPECT_EQ(h->to_kernel().size(), renewed.owned.size());
}

// The kernel (the exception port) takes no more: what it refuses is counted as
// exception_tx_drops and freed, and it takes frames again once it has room.
TEST_F(DataplaneTest, FullExceptionPortIsACountedDrop) {
  const Split s = syns(800, even);
  ASSERT_GE(s.owned.size(), kKernelCapacity + 50);
  const std::vector<Frame> over(s.owned.begin(), s.owned.begin() + kKernelCapacity + 40);
  push_paced(over);
  EXPECT_EQ(since(Verdict::kAccept), over.size());
  EXPECT_EQ(since(&dataplane::LcoreCounters::exception_tx), kKernelCapacity);
  EXPECT_EQ(since(&dataplane::LcoreCounters::exception_tx_drops), 40U);
  EXPECT_EQ(since(&dataplane::LcoreCounters::exception_ring_full), 0U);
  EXPECT_EQ(h->to_kernel().size(), kKernelCapacity);

  rebase();
  const std::vector<Frame> more(s.owned.begin() + kKernelCapacity + 40,
                                s.owned.begin() + kKernelCapacity + 50);
  push_paced(more);
  EXPECT_EQ(since(&dataplane::LcoreCounters::exception_tx), more.size());
  EXPECT_EQ(h->to_kernel().size(), more.size());
}

// The wire (the uplink's TX) takes no more of the kernel's frames: the rest is counted as
// uplink_tx_drops; what it took leaves unchanged.
TEST_F(DataplaneTest, FullUplinkIsACountedDrop) {
  std::vector<Frame> replies;
  for (unsigned n = 0; n < kWireCapacity + 40; ++n) {
    packet::FrameSpec r;
    r.dst_mac = {0x02, 2, 2, 2, 2, 2};
    r.src = ip("192.0.2.1");
    r.dst = IpAddr::v4(0x0a000001U + n);
    r.proto = 17;
    r.src_port = 5000;
    r.dst_port = 40000;
    Frame f = packet::build_frame(r);
    std::memcpy(f.data() + 6, own().data(), 6);
    replies.push_back(std::move(f));
  }
  auto sent_on = [this] {
    return since(&dataplane::LcoreCounters::uplink_tx_from_kernel) +
           since(&dataplane::LcoreCounters::uplink_tx_drops) +
           since(&dataplane::LcoreCounters::to_uplink_ring_full);
  };
  for (std::size_t at = 0; at < replies.size(); at += kChunk) {
    const std::size_t end = std::min<std::size_t>(at + kChunk, replies.size());
    ASSERT_TRUE(h->push_from_kernel({replies.begin() + static_cast<std::ptrdiff_t>(at),
                                     replies.begin() + static_cast<std::ptrdiff_t>(end)}));
    ASSERT_TRUE(eventually([&] { return sent_on() == end; })) << sent_on() << " of " << end;
  }
  EXPECT_EQ(since(&dataplane::LcoreCounters::exception_rx), replies.size());
  EXPECT_EQ(since(&dataplane::LcoreCounters::uplink_tx_from_kernel), kWireCapacity);
  EXPECT_EQ(since(&dataplane::LcoreCounters::uplink_tx_drops), 40U);
  EXPECT_EQ(since(&dataplane::LcoreCounters::to_uplink_ring_full), 0U);
  EXPECT_TRUE(h->to_wire() == std::vector<Frame>(replies.begin(), replies.begin() + kWireCapacity));
}

// The exception path (the main lcore) stalls: the workers' ring to it fills and overflows
// (exception_ring_full); past kExceptionStall they accept no VIP traffic (exception_stalled);
// when it runs again, what waited is stale and dropped (exception_stale), never delivered.
TEST_F(DataplaneTest, StalledExceptionPathFillsItsRingThenRefuses) {
  const Split s = syns(400, even);
  ASSERT_GE(s.owned.size(), 130U);
  const std::vector<Frame> first(s.owned.begin(), s.owned.begin() + 100);
  const std::vector<Frame> late(s.owned.begin() + 100, s.owned.begin() + 120);
  const std::vector<Frame> after(s.owned.begin() + 120, s.owned.begin() + 130);
  h->pause();
  const auto paused_at = std::chrono::steady_clock::now();
  push(first);
  ASSERT_TRUE(settled(true));
  ASSERT_LT(std::chrono::steady_clock::now() - paused_at, dataplane::Dataplane::kExceptionStall)
      << "the worker took longer than the stall limit: this machine is too loaded";
  EXPECT_EQ(since(Verdict::kAccept), first.size());
  EXPECT_EQ(since(&dataplane::LcoreCounters::exception_ring_full),
            first.size() - kToKernelCapacity);

  ASSERT_TRUE(eventually(
      [this] { return h->dp.exception_silence() > dataplane::Dataplane::kExceptionStall; }));
  push(late);
  ASSERT_TRUE(settled(true));
  EXPECT_EQ(since(Verdict::kAccept), first.size());
  EXPECT_EQ(since(&dataplane::LcoreCounters::exception_stalled), late.size());

  h->resume();
  EXPECT_TRUE(eventually([this] {
    return since(&dataplane::LcoreCounters::exception_stale) == kToKernelCapacity;
  })) << since(&dataplane::LcoreCounters::exception_stale);
  EXPECT_EQ(h->to_kernel_count(), 0U);

  rebase();
  push_paced(after);
  EXPECT_EQ(since(Verdict::kAccept), after.size());
  EXPECT_EQ(h->to_kernel().size(), after.size());
}

// A directed VIP: frames of this node's buckets go to its kernel; the others go on to their
// owner's MAC out of the uplink (from this node's MAC), once: a frame another node
// forwarded already is refused; a copy of another host's unicast is foreign.
TEST_F(DataplaneTest, DirectedVipForwardsToTheOwner) {
  h->publish(share_where(h->config, even, true));
  const packet::Classifier classifier(h->config);
  std::vector<Frame> all, mine, theirs;
  for (unsigned n = 0; n < 60; ++n) {
    Frame f = packet::build_frame(client(n, "198.51.100.30"));
    (even(bucket_of(classifier, f)) ? mine : theirs).push_back(f);
    all.push_back(std::move(f));
  }
  ASSERT_FALSE(mine.empty());
  ASSERT_FALSE(theirs.empty());
  push_paced(all);
  EXPECT_EQ(since(Verdict::kAccept), mine.size());
  EXPECT_EQ(since(Verdict::kNotOwner), theirs.size());
  EXPECT_EQ(h->dp.totals().sum.forwarded[2] - before.sum.forwarded[2], theirs.size());
  EXPECT_TRUE(same_frames(h->to_kernel(), mine));
  std::vector<Frame> forwarded;
  for (Frame f : theirs) {
    std::memcpy(f.data(), kPeerMac.data(), 6);
    std::memcpy(f.data() + 6, own().data(), 6);
    forwarded.push_back(std::move(f));
  }
  EXPECT_TRUE(same_frames(h->to_wire(), forwarded));

  rebase();
  Frame again = theirs.front();
  std::memcpy(again.data() + 6, kPeerMac.data(), 6);
  Frame foreign = theirs.front();
  std::memcpy(foreign.data(), kPeerMac.data(), 6);
  push({again, foreign});
  ASSERT_TRUE(settled());
  EXPECT_EQ(since(&dataplane::LcoreCounters::forward_refused), 1U);
  EXPECT_EQ(since(&dataplane::LcoreCounters::foreign_unicast), 1U);
  EXPECT_EQ(h->to_wire_count(), 0U);
  EXPECT_EQ(h->to_kernel_count(), 0U);
}

// Flow handoff: in a bucket this node is taking, a segment of a flow it does not track is
// the old owner's and is dropped; a SYN is a new flow, accepted and tracked, and its next
// segments are then accepted; a datagram stays with the old owner.
TEST_F(DataplaneTest, TakingBucketAdmitsNewFlowsOnly) {
  Share share = share_where(h->config, even);
  share.taking = share.owned;
  h->publish(share);
  const Split syn = syns(60, even);
  ASSERT_FALSE(syn.owned.empty());
  std::vector<Frame> acks;
  for (const Frame& f : syn.owned) acks.push_back(ack_of(f));

  push_paced(acks);
  EXPECT_EQ(since(Verdict::kAccept), 0U);
  EXPECT_EQ(since(Verdict::kNotOwner), acks.size());

  rebase();
  push_paced(syn.owned);
  EXPECT_EQ(since(Verdict::kAccept), syn.owned.size());

  rebase();
  push_paced(acks);
  EXPECT_EQ(since(Verdict::kAccept), acks.size());
  h->to_kernel();

  rebase();
  const Split datagrams = syns(60, even, 17, 53, 500);
  push_paced(datagrams.owned);
  EXPECT_EQ(since(Verdict::kAccept), 0U);
  EXPECT_EQ(since(Verdict::kNotOwner), datagrams.owned.size());
}

}  // namespace
}  // namespace vipfarm

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new vipfarm::Environment);
  return RUN_ALL_TESTS();
}
