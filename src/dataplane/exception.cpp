// The exception path on the main lcore: accepted and host traffic into the kernel through
// each port's TAP, the kernel's frames back to the uplink through worker 0; its liveness,
// which the workers watch.
#include "impl.hpp"

#include <chrono>

namespace vipfarm::dataplane {

void Dataplane::Impl::drain_to_uplink(std::size_t p, LcoreCounters& c) noexcept {
  const Port& port = ports[p];
  std::array<rte_mbuf*, kExceptionBurst> out;
  const unsigned n = rte_ring_sc_dequeue_burst(port.to_uplink, reinterpret_cast<void**>(out.data()),
                                               kExceptionBurst, nullptr);
  if (n == 0) return;
  const std::uint16_t sent =
      rte_eth_tx_burst(port.uplink, 0, out.data(), static_cast<std::uint16_t>(n));
  c.uplink_tx_from_kernel += sent;
  c.port_tx[p] += sent;
  if (sent < n) {
    c.uplink_tx_drops += n - sent;
    rte_pktmbuf_free_bulk(out.data() + sent, n - sent);
  }
}

// One pass of the exception path of port `p`: accepted and host traffic into the kernel,
// and what the kernel sends handed to worker 0 for the uplink.
void Dataplane::Impl::exception_poll(std::size_t p, LcoreCounters& c) noexcept {
  const Port& port = ports[p];
  std::array<rte_mbuf*, kExceptionBurst> burst_buf;
  // The heartbeats first: a burst of VIP traffic delays them by one TAP write at most.
  for (rte_ring* ring : {port.heartbeats, port.to_kernel}) {
    const unsigned n = rte_ring_dequeue_burst(ring, reinterpret_cast<void**>(burst_buf.data()),
                                              kExceptionBurst, nullptr);
    if (n == 0) continue;
    // The workers filled these on another core: start every header's and then every
    // frame's cache misses now, rather than one by one inside the port's TX (the TAP's
    // copy into the kernel reads every byte).
    for (unsigned i = 0; i < n; ++i) rte_prefetch0(burst_buf[i]);
    for (unsigned i = 0; i < n; ++i) {
      const auto* data = rte_pktmbuf_mtod(burst_buf[i], const char*);
      const unsigned len = rte_pktmbuf_data_len(burst_buf[i]);
      for (unsigned at = 0; at < len; at += RTE_CACHE_LINE_SIZE) rte_prefetch1(data + at);
    }
    const std::uint16_t sent =
        rte_eth_tx_burst(port.tap, 0, burst_buf.data(), static_cast<std::uint16_t>(n));
    c.exception_tx += sent;
    if (sent < n) {
      c.exception_tx_drops += n - sent;
      rte_pktmbuf_free_bulk(burst_buf.data() + sent, n - sent);
    }
  }
  const std::uint16_t m = rte_eth_rx_burst(port.tap, 0, burst_buf.data(), kExceptionBurst);
  if (m != 0) {
    c.exception_rx += m;
    for (std::uint16_t i = 0; i < m; ++i) {
      rte_mbuf* f = burst_buf[i];
      const std::span<std::byte> frame{rte_pktmbuf_mtod(f, std::byte*), rte_pktmbuf_data_len(f)};
      if (packet::rewrite_outgoing(frame, flood_vips[p]) ||
          (p == 0 && packet::rewrite_directed_ns(frame, directed_v6, link_local))) {
        ++c.kernel_rewrites;
      }
    }
    const unsigned queued = rte_ring_sp_enqueue_burst(
        port.to_uplink, reinterpret_cast<void**>(burst_buf.data()), m, nullptr);
    if (queued < m) {
      c.to_uplink_ring_full += m - queued;
      rte_pktmbuf_free_bulk(burst_buf.data() + queued, m - queued);
    }
  }
}

void Dataplane::Impl::discard_stale(LcoreCounters& c) noexcept {
  std::array<rte_mbuf*, kExceptionBurst> burst_buf;
  for (const Port& port : ports) {
    for (rte_ring* ring : {port.heartbeats, port.to_kernel}) {
      unsigned n = 0;
      while ((n = rte_ring_dequeue_burst(ring, reinterpret_cast<void**>(burst_buf.data()),
                                         kExceptionBurst, nullptr)) != 0) {
        c.exception_stale += n;
        rte_pktmbuf_free_bulk(burst_buf.data(), n);
      }
    }
  }
}

void Dataplane::run(const std::atomic<bool>& stop, const std::function<void()>& on_idle) {
  Impl& d = *impl_;
  d.stop = &stop;
  d.worker_args.clear();
  for (std::uint32_t q = 0; q < d.workers; ++q)
    d.worker_args.push_back({&d, static_cast<std::uint16_t>(q)});
  d.exception_alive.store(rte_rdtsc(), std::memory_order_relaxed);
  unsigned q = 0;
  unsigned lcore;
  RTE_LCORE_FOREACH_WORKER(lcore) {
    if (q == d.workers) break;
    rte_eal_remote_launch(&Impl::worker_main, &d.worker_args[q++], lcore);
  }
  const std::uint64_t tick = rte_get_timer_hz() / 10;
  std::uint64_t next_tick = rte_get_timer_cycles() + tick;
  unsigned idle = 0;
  LcoreCounters& c = d.counters[0];
  while (!stop.load(std::memory_order_relaxed)) {
    // Stopped longer than kExceptionStall (the workers have queued no VIP traffic since):
    // what waited meanwhile is stale, and dropped before the workers queue again.
    const std::uint64_t now = rte_rdtsc();
    if (now >= d.exception_alive.load(std::memory_order_relaxed) + d.stall_cycles) {
      d.discard_stale(c);
    }
    d.exception_alive.store(now, std::memory_order_relaxed);
    const std::uint64_t before = c.exception_tx + c.exception_rx + c.exception_tx_drops;
    for (std::size_t p = 0; p < d.ports.size(); ++p) d.exception_poll(p, c);
    if (rte_get_timer_cycles() >= next_tick) {
      next_tick += tick;
      reclaim();
      on_idle();
    }
    if (c.exception_tx + c.exception_rx + c.exception_tx_drops == before) {
      if (d.adaptive) idle_backoff(idle);
    } else {
      idle = 0;
    }
  }
  rte_eal_mp_wait_lcore();
  d.exception_alive.store(0, std::memory_order_relaxed);
}

std::chrono::nanoseconds Dataplane::exception_silence() const noexcept {
  const std::uint64_t alive = impl_->exception_alive.load(std::memory_order_relaxed);
  const std::uint64_t now = rte_rdtsc();
  if (alive == 0 || now <= alive) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(static_cast<std::int64_t>(static_cast<double>(now - alive) * 1e9 /
                                                            static_cast<double>(rte_get_tsc_hz())));
}

}  // namespace vipfarm::dataplane
