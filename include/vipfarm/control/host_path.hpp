// The node's own path to its kernel, watched from the control thread: the data plane's
// exception path (the main lcore, Dataplane::exception_silence) and each port's TAP — there,
// up, and holding the addresses vipfarmd gave it. What can be repaired is, at once, counted
// and logged: an address someone removed is put back, a link set down is set up again.
// What cannot is reported through `on_change` with a reason ("" once whole again), so that
// membership steps aside meanwhile (Membership::set_path_down): a stalled exception path.
// The peers' neighbour entries on the main TAP are pinned (PERMANENT) to the MAC their
// heartbeats carry (the configured `mac` until the first one), so the heartbeat path never waits
// for ARP or ND: after a cut in both directions the dynamic entries have failed, and resolving them
// again would take up to a second after the heal, during which the two sides go on serving beside
// each other. An entry someone removed or changed is put back. A TAP that is gone cannot come back
// without a restart: `on_gone` is called once, and vipfarmd exits with status 1 for its service
// manager to restart it (a clean stop: the peers take its buckets at once).
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "vipfarm/common/net.hpp"
#include "vipfarm/common/types.hpp"
#include "vipfarm/dataplane/dataplane.hpp"

namespace vipfarm::control {

class HostPath {
 public:
  struct Address {
    IpAddr address;
    unsigned prefix = 0;
    bool no_dad = false;
  };
  struct Tap {
    std::string name;
    std::vector<Address> addresses;
  };
  struct Stats {
    std::string down;  // why the path is broken now ("" while whole)
    std::uint64_t address_repairs = 0;
    std::uint64_t link_repairs = 0;
    std::uint64_t neighbour_repairs = 0;
    std::uint64_t stalls = 0;  // exception path stalls seen
  };
  // How often the exception path is looked at (on the control thread), and the TAPs
  // (netlink requests, on a thread of their own: they may wait for the kernel's rtnl_lock,
  // and the control thread sends the heartbeats).
  static constexpr std::chrono::milliseconds kPeriod{20};
  static constexpr unsigned kTapEvery = 10;  // every 200 ms
  // A peer's pinned entry is rewritten within kTapEvery of a new MAC, and read back from the
  // kernel (a removed or changed entry put back) every kNeighbourVerifyEvery.
  static constexpr unsigned kNeighbourVerifyEvery = 50;  // every second

  struct Peer {
    NodeId node;
    IpAddr address;  // its address on the main heartbeat network
  };

  HostPath(boost::asio::io_context& io, const dataplane::Dataplane& dataplane);
  ~HostPath();
  HostPath(const HostPath&) = delete;
  HostPath& operator=(const HostPath&) = delete;

  // Starts watching (on the io thread or before it runs); `on_change` and `on_gone` are
  // called on the io thread. `taps` with their addresses as
  // vipfarmd set them; none with a net_null exception port.
  void start(std::vector<Tap> taps, std::function<void(const std::string&)> on_change,
             std::function<void(const std::string&)> on_gone);
  // Before start(): pin `peers` on `tap` to the MAC `mac_of` gives (nullopt: not known yet,
  // the kernel resolves it meanwhile).
  void pin_peers(std::string tap, std::vector<Peer> peers,
                 std::function<std::optional<MacAddr>(NodeId)> mac_of);
  void stop();
  Stats stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace vipfarm::control
