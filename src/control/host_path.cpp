#include "vipfarm/control/host_path.hpp"

#include <pthread.h>

#include <boost/asio/post.hpp>
#include <condition_variable>
#include <iostream>
#include <thread>

#include "vipfarm/host/netlink.hpp"

namespace vipfarm::control {

struct HostPath::Impl : std::enable_shared_from_this<Impl> {
  Impl(boost::asio::io_context& io, const dataplane::Dataplane& dp) : io(io), timer(io), dp(dp) {}

  boost::asio::io_context& io;  // the control thread's
  boost::asio::steady_timer timer;
  const dataplane::Dataplane& dp;
  std::vector<Tap> taps;
  struct Pin {
    Peer peer;
    std::optional<MacAddr> written;  // what this node last made the kernel's entry
    std::string error;               // the last failure, logged once
  };
  std::string pin_tap;
  std::vector<Pin> pins;
  std::function<std::optional<MacAddr>(NodeId)> mac_of;
  std::function<void(const std::string&)> on_change, on_gone;
  bool running = false;      // the control thread's timer
  bool gone = false;         // the netlink thread's
  bool stalled = false;      // the exception path, as last reported
  std::thread netlink;       // "vf-hostpath": every request that may wait for rtnl_lock
  std::mutex netlink_mutex;  // with `wake`: stopping the netlink thread
  std::condition_variable wake;
  bool netlink_stop = false;
  mutable std::mutex mutex;
  Stats stats;  // under mutex

  void schedule() {
    timer.expires_after(kPeriod);
    timer.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || !self->running) return;
      self->check();
      self->schedule();
    });
  }

  void check() {
    const auto silence = dp.exception_silence();
    const bool now_stalled = silence >= dataplane::Dataplane::kExceptionStall;
    if (now_stalled != stalled) {  // membership hears the transitions only
      stalled = now_stalled;
      const std::string reason =
          stalled ? "the exception path (the data plane's main lcore) has not run for " +
                        std::to_string(silence.count() / 1'000'000) + " ms"
                  : std::string();
      std::cerr << "vipfarmd: "
                << (stalled ? reason + ": not serving" : "the exception path runs again") << "\n";
      {
        std::lock_guard lock(mutex);
        stats.stalls += stalled ? 1 : 0;
        stats.down = reason;
      }
      on_change(reason);
    }
  }

  // The TAPs and the neighbour entries, off the control thread: a netlink request waits for
  // the kernel's rtnl_lock, which any other process may hold, and the control thread sends
  // the heartbeats. (The failover lab's lease lapses came from a blocking clone() on that
  // thread, health/checkers.cpp's Spawner; a wait for rtnl_lock there would do the same.)
  void netlink_loop() {
    ::pthread_setname_np(::pthread_self(), "vf-hostpath");
    const auto period = kPeriod * kTapEvery;
    std::unique_lock lock(netlink_mutex);
    for (unsigned round = 1; !netlink_stop; ++round) {
      wake.wait_for(lock, period, [this] { return netlink_stop; });
      if (netlink_stop) break;
      lock.unlock();
      check_taps();
      if (!gone) check_neighbours(round % (kNeighbourVerifyEvery / kTapEvery) == 0);
      lock.lock();
      if (gone) break;
    }
  }

  // `verify`: read each entry back from the kernel, not only write new MACs.
  void check_neighbours(bool verify) {
    for (Pin& pin : pins) {
      const std::optional<MacAddr> mac = mac_of(pin.peer.node);
      if (!mac || (!verify && pin.written == mac)) continue;
      bool changed = false;
      const std::string err =
          host::netlink::pin_neighbour(pin_tap, pin.peer.address, *mac, &changed);
      if (!err.empty()) {
        if (err != pin.error) std::cerr << "vipfarmd: " << err << "\n";
        pin.error = err;
        continue;
      }
      pin.error.clear();
      if (changed && pin.written == mac) {
        std::cerr << "vipfarmd: node " << to_int(pin.peer.node) << "'s neighbour entry ("
                  << pin.peer.address.to_string() << " on " << pin_tap
                  << ") was removed or changed: put back\n";
        std::lock_guard lock(mutex);
        ++stats.neighbour_repairs;
      } else if (changed) {
        std::cerr << "vipfarmd: node " << to_int(pin.peer.node) << "'s address "
                  << pin.peer.address.to_string() << " pinned to " << to_string(*mac) << " on "
                  << pin_tap << "\n";
      }
      pin.written = mac;
    }
  }

  void check_taps() {
    for (const Tap& tap : taps) {
      const std::optional<bool> up = host::netlink::link_is_up(tap.name);
      if (!up) {
        gone = true;
        const std::string why = "the TAP " + tap.name + " is gone (deleted?)";
        std::cerr << "vipfarmd: " << why << ": stopping, to be restarted\n";
        {
          std::lock_guard lock(mutex);
          stats.down = why;
        }
        boost::asio::post(io, [self = shared_from_this(), why] {
          self->on_change(why);
          self->on_gone(why);
        });
        return;
      }
      if (!*up) {
        const std::string err = host::netlink::link_up(tap.name);
        std::cerr << "vipfarmd: the TAP " << tap.name
                  << " was down: " << (err.empty() ? "set up again" : err) << "\n";
        std::lock_guard lock(mutex);
        stats.link_repairs += err.empty() ? 1 : 0;
      }
      for (const Address& a : tap.addresses) {
        bool added = false;
        const std::string err =
            host::netlink::add_address(tap.name, a.address, a.prefix, a.no_dad, &added);
        if (!err.empty()) {
          std::cerr << "vipfarmd: " << err << "\n";
        } else if (added) {
          std::cerr << "vipfarmd: " << a.address.to_string() << "/" << a.prefix
                    << " was missing on " << tap.name << ": put back\n";
          std::lock_guard lock(mutex);
          ++stats.address_repairs;
        }
      }
    }
  }
};

HostPath::HostPath(boost::asio::io_context& io, const dataplane::Dataplane& dataplane)
    : impl_(std::make_shared<Impl>(io, dataplane)) {}

HostPath::~HostPath() { stop(); }

void HostPath::start(std::vector<Tap> taps, std::function<void(const std::string&)> on_change,
                     std::function<void(const std::string&)> on_gone) {
  impl_->taps = std::move(taps);
  impl_->on_change = std::move(on_change);
  impl_->on_gone = std::move(on_gone);
  impl_->running = true;
  impl_->schedule();
  impl_->netlink = std::thread([impl = impl_] { impl->netlink_loop(); });
}

void HostPath::pin_peers(std::string tap, std::vector<Peer> peers,
                         std::function<std::optional<MacAddr>(NodeId)> mac_of) {
  impl_->pin_tap = std::move(tap);
  impl_->pins.clear();
  for (const Peer& p : peers) impl_->pins.push_back({p, std::nullopt, {}});
  impl_->mac_of = std::move(mac_of);
}

void HostPath::stop() {
  impl_->running = false;
  impl_->timer.cancel();
  {
    std::lock_guard lock(impl_->netlink_mutex);
    impl_->netlink_stop = true;
  }
  impl_->wake.notify_all();
  if (impl_->netlink.joinable()) impl_->netlink.join();
}

HostPath::Stats HostPath::stats() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->stats;
}

}  // namespace vipfarm::control
