// The data plane as ownership's SnapshotSink (ownership/snapshot.hpp): snapshots published
// with deferred reclamation, the lease, the flows each bucket still holds.
#include "impl.hpp"

namespace vipfarm::dataplane {

std::vector<std::uint64_t> Dataplane::flows_in(
    const std::vector<ownership::Bucket>& buckets) const {
  std::vector<std::uint64_t> out(buckets.size(), 0);
  for (const auto& table : impl_->flows) {
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      out[i] += table->live_in(buckets[i].first, buckets[i].second);
    }
  }
  return out;
}

void Dataplane::renew_lease(std::chrono::nanoseconds duration) noexcept {
  const auto cycles = static_cast<std::uint64_t>(static_cast<double>(duration.count()) *
                                                 static_cast<double>(rte_get_tsc_hz()) / 1e9);
  impl_->lease_until.store(rte_rdtsc() + cycles, std::memory_order_relaxed);
}

void Dataplane::revoke_lease() noexcept { impl_->lease_until.store(0, std::memory_order_relaxed); }

bool Dataplane::leased() const noexcept {
  return rte_rdtsc() < impl_->lease_until.load(std::memory_order_relaxed);
}

void Dataplane::publish(std::unique_ptr<Snapshot> next) {
  std::unique_ptr<const Snapshot> old(
      impl_->current.exchange(next.release(), std::memory_order_acq_rel));
  if (old != nullptr) {
    std::lock_guard lock(impl_->retired_mutex);
    impl_->retired.push_back({std::move(old), rte_rcu_qsbr_start(impl_->qsbr)});
  }
  reclaim();
}

std::size_t Dataplane::reclaim() {
  Impl& d = *impl_;
  std::lock_guard lock(d.retired_mutex);
  // Every worker passes a quiescent point after each burst (and each empty poll): a token
  // is usually reached within a burst's time, and never waited for here.
  std::erase_if(d.retired, [&d](const Impl::Retired& r) {
    return rte_rcu_qsbr_check(d.qsbr, r.token, false) == 1;
  });
  return d.retired.size();
}

}  // namespace vipfarm::dataplane
