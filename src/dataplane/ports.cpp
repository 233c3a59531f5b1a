// The ports: EAL, the mbuf pool, each uplink and its exception port (TAP, or net_null in the
// pipeline benchmarks) with their rings; start and shutdown. Control side: may allocate, log
// and fail with a message.
#include "impl.hpp"

#include <rte_mbuf_pool_ops.h>

#include <algorithm>
#include <cstring>
#include <random>

namespace vipfarm::dataplane {

namespace {

// Every place an mbuf can wait at once, so that a full exception ring (the kernel behind)
// never starves an uplink's receive path of buffers: each port queue's descriptors, both
// rings of each port, and each lcore's mempool cache (which may hold 1.5 times its size).
unsigned mbuf_count(std::uint32_t workers, std::uint32_t ring_size, std::size_t ports) {
  const unsigned per_queue = kRxDescriptors + kTxDescriptors;
  const auto p = static_cast<unsigned>(ports);
  return p * ((workers + 1) * per_queue + 2 * ring_size + kHeartbeatRing) +
         (workers + 1) * (kMbufCache * 3 / 2) + kMbufHeadroom;
}

// The mbuf pool, as rte_pktmbuf_pool_create() makes it, but `packed` for an af_xdp uplink:
// that driver registers the pool's memory as its UMEM, sized populated objects x object
// size from the first object, so every mbuf must lie within that span. A default pool
// keeps each object within one page, and on 4 KiB pages (EAL --no-huge) that leaves a gap
// after every 2.3 KiB mbuf: the pool spanned 91 MB, the UMEM 53 MB, and each mbuf beyond
// it that the driver put on the fill ring was dropped there by the kernel (an invalid
// address), until the fill ring ran dry and the uplink received nothing more, for good
// (issue 16: a 10^5/s flood did it within a second). Packed (no IOVA-contiguity per
// object, which only DMA needs, and af_xdp does none of its own) and in one chunk, the
// pool is exactly the span the driver registers.
std::string create_mbuf_pool(unsigned count, bool packed, rte_mempool*& pool) {
  const unsigned element = sizeof(rte_mbuf) + RTE_MBUF_DEFAULT_BUF_SIZE;
  pool = rte_mempool_create_empty(
      "vipfarm_mbufs", count, element, kMbufCache, sizeof(rte_pktmbuf_pool_private),
      static_cast<int>(rte_socket_id()), packed ? RTE_MEMPOOL_F_NO_IOVA_CONTIG : 0);
  if (pool == nullptr) return eal_error("mbuf pool");
  if (rte_mempool_set_ops_byname(pool, rte_mbuf_best_mempool_ops(), nullptr) != 0) {
    return eal_error("mbuf pool handler");
  }
  rte_pktmbuf_pool_private room{};
  room.mbuf_data_room_size = RTE_MBUF_DEFAULT_BUF_SIZE;
  rte_pktmbuf_pool_init(pool, &room);
  if (rte_mempool_populate_default(pool) < 0) return eal_error("mbuf pool memory");
  rte_mempool_obj_iter(pool, rte_pktmbuf_init, nullptr);
  if (packed && pool->nb_mem_chunks != 1) {
    return "an af_xdp uplink needs the mbuf pool in one contiguous area, and EAL gave it " +
           std::to_string(pool->nb_mem_chunks) +
           " (its memory is fragmented: give EAL more with -m, or use hugepages)";
  }
  return {};
}

// Several RX queues on a device with RSS: spread flows with a symmetric Toeplitz key (the
// 0x6d5a pattern: a flow's two directions get one hash), the same on every port, so both
// directions of a gateway's connection reach one worker and its flow table (docs/gateway.md,
// "Workers"). Vdevs without RSS (af_packet spreads by the kernel's flow hash, which is
// symmetric too) keep their own distribution.
std::string setup_port(std::uint16_t port, std::uint16_t rxq, std::uint16_t txq,
                       rte_mempool* pool) {
  rte_eth_conf conf{};
  rte_eth_dev_info info{};
  std::vector<std::uint8_t> key;
  if (int rc = rte_eth_dev_info_get(port, &info); rc != 0) {
    return port_error("device info of port " + std::to_string(port), rc);
  }
  const std::uint64_t hash =
      (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
  if (rxq > 1 && hash != 0) {
    key.resize(info.hash_key_size != 0 ? info.hash_key_size : 40);
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = i % 2 == 0 ? 0x6d : 0x5a;
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_key = key.data();
    conf.rx_adv_conf.rss_conf.rss_key_len = static_cast<std::uint8_t>(key.size());
    conf.rx_adv_conf.rss_conf.rss_hf = hash;
  }
  int rc = rte_eth_dev_configure(port, rxq, txq, &conf);
  if (rc < 0) return port_error("configure port " + std::to_string(port), rc);
  std::uint16_t rxd = kRxDescriptors, txd = kTxDescriptors;
  rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
  const int socket = rte_eth_dev_socket_id(port);
  for (std::uint16_t q = 0; q < rxq; ++q) {
    rc = rte_eth_rx_queue_setup(port, q, rxd, static_cast<unsigned>(socket), nullptr, pool);
    if (rc < 0)
      return port_error("rx queue " + std::to_string(q) + " of port " + std::to_string(port), rc);
  }
  for (std::uint16_t q = 0; q < txq; ++q) {
    rc = rte_eth_tx_queue_setup(port, q, txd, static_cast<unsigned>(socket), nullptr);
    if (rc < 0)
      return port_error("tx queue " + std::to_string(q) + " of port " + std::to_string(port), rc);
  }
  return {};
}

}  // namespace

Dataplane::Dataplane() : impl_(std::make_unique<Impl>()) {}

Dataplane::~Dataplane() { shutdown(); }

void Dataplane::shutdown() {
  if (impl_->eal_up) {
    impl_->eal_up = false;
    for (Impl::Port& port : impl_->ports) {
      rte_eth_dev_stop(port.uplink);
      rte_eth_dev_stop(port.tap);
      rte_eth_dev_close(port.tap);  // removes the TAP interface from the kernel
      rte_eth_dev_close(port.uplink);
      rte_ring_free(port.to_kernel);
      rte_ring_free(port.heartbeats);
      rte_ring_free(port.to_uplink);
    }
    delete impl_->current.exchange(nullptr);
    impl_->retired.clear();  // the workers have stopped
    rte_free(impl_->qsbr);
    rte_mempool_free(impl_->pool);
    rte_eal_cleanup();
  }
}

std::string Dataplane::start(const config::Config& config, const std::string& program,
                             const std::vector<std::string>& extra_eal, ExceptionPort exception) {
  return bring_up(config, program, extra_eal, exception, {});
}

std::string Dataplane::start(const config::Config& config, const std::string& program,
                             const std::vector<std::string>& extra_eal,
                             const MakePorts& make_ports) {
  return bring_up(config, program, extra_eal, ExceptionPort::kNull, make_ports);
}

std::string Dataplane::bring_up(const config::Config& config, const std::string& program,
                                const std::vector<std::string>& extra_eal, ExceptionPort exception,
                                const MakePorts& make_ports) {
  Impl& d = *impl_;
  d.config = config;
  d.self_bit = std::uint64_t{1} << (to_int(config.node_id) - 1);
  d.workers = config.dataplane.workers;
  d.burst = config.dataplane.burst;
  d.adaptive = config.dataplane.poll == config::Poll::kAdaptive;
  const std::vector<config::Port>& ports = config.dataplane.ports;
  if (ports.empty()) return "no [dataplane] port";
  d.flood_vips.resize(ports.size());
  for (const config::Vip& v : config.vips) {
    const bool directed = v.l2_mode == config::L2Mode::kDirected;
    d.vips.push_back({v.address, v.mac});
    d.vip_directed.push_back(directed ? 1 : 0);
    if (directed && !v.address.is_v4()) d.directed_v6.push_back(v.address);
    if (directed) continue;  // no virtual MAC: each node answers with its own
    d.flood_vips[v.port].push_back({v.address, v.mac});
    d.virtual_macs.push_back(mac48(v.mac.data()));
  }

  std::vector<std::string> args = {program};
  args.insert(args.end(), config.dataplane.eal_args.begin(), config.dataplane.eal_args.end());
  args.insert(args.end(), extra_eal.begin(), extra_eal.end());
  const bool has_lcores = std::any_of(args.begin(), args.end(), [](const std::string& a) {
    return a == "-l" || a == "-c" || a.starts_with("--lcores");
  });
  if (!has_lcores) {
    args.push_back("-l");
    args.push_back("0-" + std::to_string(d.workers));
  }
  const bool tap = exception == ExceptionPort::kTap && !make_ports;
  std::vector<std::string> uplink_names, exception_names;
  for (std::size_t p = 0; p < ports.size() && !make_ports; ++p) {
    std::string uplink = ports[p].uplink;
    const bool vdev = uplink.starts_with("net_");
    // af_packet: one queue pair (one socket in a fanout group) per worker.
    if (uplink.starts_with("net_af_packet") && uplink.find("qpairs=") == std::string::npos) {
      uplink += ",qpairs=" + std::to_string(d.workers);
    }
    // af_xdp: one XDP socket per worker, on the interface's queues 0..workers-1 (the kernel
    // interface needs that many, and spreads flows over them by its own hash).
    if (uplink.starts_with("net_af_xdp") && uplink.find("queue_count=") == std::string::npos) {
      uplink += ",queue_count=" + std::to_string(d.workers);
    }
    args.push_back(vdev ? "--vdev=" + uplink : "-a");
    if (!vdev) args.push_back(uplink);
    uplink_names.push_back(vdev ? uplink.substr(0, uplink.find(',')) : uplink);
    // net_null's no-rx: a null port would otherwise produce packets whenever it is polled.
    exception_names.push_back((tap ? "net_tap_vipfarm" : "net_null_vipfarm") + std::to_string(p));
    args.push_back("--vdev=" + exception_names.back() +
                   (tap ? ",iface=" + ports[p].exception : std::string(",no-rx=1")));
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0) return eal_error("EAL init");
  d.eal_up = true;
  if (rte_lcore_count() < d.workers + 1) {
    return "EAL gave " + std::to_string(rte_lcore_count()) + " lcores; need " +
           std::to_string(d.workers + 1) + " (main + workers)";
  }
  std::vector<PortIds> given;
  if (make_ports) {
    if (std::string error = make_ports(given); !error.empty()) return error;
    if (given.size() != ports.size()) {
      return "the caller made " + std::to_string(given.size()) + " port pairs for " +
             std::to_string(ports.size()) + " [dataplane] ports";
    }
  }

  const bool af_xdp = std::any_of(ports.begin(), ports.end(), [](const config::Port& port) {
    return port.uplink.starts_with("net_af_xdp");
  });
  if (std::string error = create_mbuf_pool(
          mbuf_count(d.workers, config.exception.ring_size, ports.size()), af_xdp, d.pool);
      !error.empty()) {
    return error;
  }
  const std::size_t qsbr_size = rte_rcu_qsbr_get_memsize(d.workers);
  d.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("vipfarm_qsbr", qsbr_size, RTE_CACHE_LINE_SIZE));
  if (d.qsbr == nullptr || rte_rcu_qsbr_init(d.qsbr, d.workers) != 0) return "RCU state";

  for (std::size_t p = 0; p < ports.size(); ++p) {
    Impl::Port port;
    port.name = ports[p].name;
    const std::string what = ports.size() > 1 ? " of port " + port.name : std::string();
    if (make_ports) {
      port.uplink = given[p].uplink;
      port.tap = given[p].exception;
    } else if (rte_eth_dev_get_port_by_name(uplink_names[p].c_str(), &port.uplink) != 0) {
      return "uplink \"" + uplink_names[p] + "\"" + what + " not found";
    } else if (rte_eth_dev_get_port_by_name(exception_names[p].c_str(), &port.tap) != 0) {
      return "exception port " + exception_names[p] + " not created";
    }
    const std::string suffix = std::to_string(p);
    port.to_kernel =
        rte_ring_create(("vipfarm_to_kernel" + suffix).c_str(), config.exception.ring_size,
                        static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
    if (port.to_kernel == nullptr) return eal_error("exception ring" + what);
    port.heartbeats = rte_ring_create(("vipfarm_heartbeats" + suffix).c_str(), kHeartbeatRing,
                                      static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
    if (port.heartbeats == nullptr) {
      rte_ring_free(port.to_kernel);
      return eal_error("heartbeat ring" + what);
    }
    port.to_uplink =
        rte_ring_create(("vipfarm_to_uplink" + suffix).c_str(), config.exception.ring_size,
                        static_cast<int>(rte_socket_id()), RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (port.to_uplink == nullptr) {
      rte_ring_free(port.to_kernel);
      rte_ring_free(port.heartbeats);
      return eal_error("uplink ring" + what);
    }
    d.ports.push_back(port);  // from here on shutdown() stops and frees it
    Impl::Port& added = d.ports.back();
    std::string err = setup_port(added.uplink, static_cast<std::uint16_t>(d.workers),
                                 static_cast<std::uint16_t>(d.workers), d.pool);
    if (!err.empty()) return err + what;
    err = setup_port(added.tap, 1, 1, d.pool);
    if (!err.empty()) return err + what;
    rte_ether_addr mac;
    if (rte_eth_macaddr_get(added.uplink, &mac) != 0) return "uplink MAC address" + what;
    std::memcpy(added.mac.data(), mac.addr_bytes, 6);
    added.own48 = mac48(added.mac.data());
    // The kernel's frames leave with the port's own MAC: give the TAP the uplink's address.
    if (int rc = tap ? rte_eth_dev_default_mac_addr_set(added.tap, &mac) : 0; rc != 0) {
      return port_error("TAP MAC address" + what, rc);
    }
    if (int rc = rte_eth_promiscuous_enable(added.uplink); rc != 0) {
      return port_error(
          "promiscuous mode on the uplink" + what + " (the virtual MAC's frames need it)", rc);
    }
    if (int rc = rte_eth_dev_start(added.uplink); rc < 0) {
      return port_error("start uplink" + what, rc);
    }
    if (int rc = rte_eth_dev_start(added.tap); rc < 0) return port_error("start TAP" + what, rc);
  }
  d.link_local = link_local_of(d.ports[0].mac);
  d.counters.assign(d.workers + 1, LcoreCounters{});
  if (std::find(d.vip_directed.begin(), d.vip_directed.end(), 1) != d.vip_directed.end()) {
    // One key per node for every table's set hash: a forger cannot aim at a client's set.
    std::random_device random;
    const std::uint64_t seed = std::uint64_t{random()} << 32 | random();
    for (std::uint32_t w = 0; w < d.workers; ++w) {
      d.requesters.push_back(std::make_unique<flow::RequesterTable>(seed));
    }
  }
  d.cycles_per_ms = std::max<std::uint64_t>(1, rte_get_tsc_hz() / 1000);
  d.stall_cycles = d.cycles_per_ms * static_cast<std::uint64_t>(kExceptionStall.count());
  d.heartbeat_port = config.membership.port;
  if (config.flows.handoff) {
    const flow::FlowTimeouts timeouts = flow_timeouts(config.flows);
    for (std::uint32_t w = 0; w < d.workers; ++w) {
      d.flows.push_back(std::make_unique<flow::FlowTable>(
          config.flows.capacity, timeouts, static_cast<std::uint16_t>(config.groups.size()),
          config.buckets));
    }
  }
  return {};
}

MacAddr Dataplane::uplink_mac() const { return port_mac(0); }

MacAddr Dataplane::port_mac(std::size_t port) const {
  return port < impl_->ports.size() ? impl_->ports[port].mac : MacAddr{};
}

std::size_t Dataplane::port_count() const { return impl_->ports.size(); }

std::string Dataplane::port_name(std::size_t port) const {
  return port < impl_->ports.size() ? impl_->ports[port].name : std::string();
}

}  // namespace vipfarm::dataplane
