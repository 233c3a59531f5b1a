// vipfarmd: wires config, data plane and TAP addresses together, then runs until SIGTERM.
#include <signal.h>

#include <pthread.h>
#include <toml++/toml.h>
#include <algorithm>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/program_options.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <iostream>
#include <optional>
#include <set>
#include <thread>

#include "vipfarm/api/api_server.hpp"
#include "vipfarm/api/commands.hpp"
#include "vipfarm/config/config.hpp"
#include "vipfarm/control/control.hpp"
#include "vipfarm/control/host_path.hpp"
#include "vipfarm/control/membership_service.hpp"
#include "vipfarm/dataplane/dataplane.hpp"
#include "vipfarm/host/netlink.hpp"
#include "vipfarm/host/sysctl.hpp"
#include "vipfarm/membership/witness.hpp"
#include "vipfarm/metrics/metrics.hpp"
#include "vipfarm/ownership/ledger.hpp"

namespace po = boost::program_options;
using namespace vipfarm;

namespace {

std::atomic<bool> g_stop{false};
// 1 when the daemon stops on its own because it cannot go on (HostPath: its TAP is gone).
std::atomic<int> g_exit_status{0};
std::atomic<bool> g_reload{false};

extern "C" void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }
extern "C" void on_hup(int) { g_reload.store(true, std::memory_order_relaxed); }

// SIGHUP and `vipfarmctl reload`: validate the file again and apply it when every key that
// changed is reloadable (config::reload_refusal). Each schema row's Reload names what applies
// it: the ownership ledger (Ledger::set_farm) the farm's classification and ownership
// (unmatched/icmp_echo, groups' modes, members, weights and rules) and the flow window and
// timeouts; the MembershipService the heartbeat timers and policies, the witness, the cluster
// keys and the checkers. Otherwise it is refused, naming the keys, and nothing is applied: an
// invalid or partly applicable file never half-applies.
nlohmann::json reload(ownership::Ledger& ledger, control::MembershipService* membership) {
  const config::Config running = ledger.farm();  // the start-up file plus what reloads applied
  config::LoadResult loaded = config::load_file(running.source);
  auto refuse = [](const std::string& why) {
    std::cerr << "vipfarmd: reload refused: " << why << "; the running configuration stays\n";
    return nlohmann::json{
        {"ok", false}, {"error", "reload refused: " + why + "; the running configuration stays"}};
  };
  if (!loaded.config) {
    std::string errors;
    for (const config::Error& e : loaded.errors) errors += "\n" + e.to_string();
    return refuse("the file is invalid:" + errors);
  }
  config::Config& next = *loaded.config;
  if (std::string why = config::reload_refusal(running, next); !why.empty()) return refuse(why);
  // The key files are read again even when the file names did not change (a key replaced
  // in place, or its permissions): a bad one refuses the reload. Nothing after it fails.
  if (membership != nullptr) {
    if (std::string err = membership->reload_keys(next.membership); !err.empty()) {
      return refuse(err);
    }
  }
  const std::vector<std::string> changed = config::changed_keys(running, next);
  ledger.set_farm(next);
  if (membership != nullptr) {
    membership->apply(next);  // commits the ledger with its tick
  } else {
    // The static view: the new assignment at once.
    ledger.set_static_view(ledger.view(), std::chrono::steady_clock::now());
    ledger.commit();
  }
  std::string names;
  for (const std::string& key : changed) names += (names.empty() ? "" : ", ") + key;
  std::cerr << "vipfarmd: reload applied: " << (names.empty() ? "no change" : names) << "\n";
  return {{"ok", true}, {"applied", changed}};
}

using TapAddress = control::HostPath::Address;

// Port `p`'s TAP: on the first port the node's own address with the lab/LAN prefix; the
// port's own addresses ([[dataplane.port]] address); the VIPs living on the port, IPv4 as
// /32, IPv6 on the first port with the IPv6 prefix so the kernel has an on-link route to
// IPv6 clients (elsewhere /128: the port's addresses give the routes). DAD is off for VIPs
// (every node holds them, and the data plane answers for them) and for the port's
// addresses, which the configuration gives this node alone.
std::vector<TapAddress> tap_addresses(const config::Config& config, std::size_t p,
                                      const MacAddr& mac) {
  std::vector<TapAddress> out;
  if (p == 0) {
    const config::ClusterNode* self = config.find_node(config.node_id);
    out.push_back({self->address,
                   self->address.is_v4() ? config.exception.prefix : config.exception.prefix6,
                   false});
  }
  for (const Prefix& a : config.dataplane.ports[p].addresses) {
    out.push_back({a.address, a.length, true});
  }
  for (const config::Vip& vip : config.vips) {
    if (vip.port != p) continue;
    const unsigned v6_prefix = p == 0 ? config.exception.prefix6 : 128;
    out.push_back({vip.address, vip.address.is_v4() ? 32u : v6_prefix, true});
  }
  // Directed IPv6 VIPs: the node's link-local address, the source the data plane gives
  // the kernel's neighbour solicitations from a VIP (docs/directed.md).
  if (p == 0 && std::any_of(config.vips.begin(), config.vips.end(), [](const config::Vip& v) {
        return v.l2_mode == config::L2Mode::kDirected && !v.address.is_v4();
      })) {
    out.push_back({link_local_of(mac), 64, true});
  }
  return out;
}

// Gateway VIPs (docs/gateway.md): the kernel routes what this node accepts, so it must
// forward; a one-armed gateway's kernel would tell clients to bypass it (ICMP redirects).
void prepare_gateway_kernel(const config::Config& config) {
  bool v4 = false, v6 = false;
  std::set<std::size_t> ports;
  for (const config::Vip& vip : config.vips) {
    if (!vip.gateway) continue;
    (vip.address.is_v4() ? v4 : v6) = true;
    ports.insert(vip.port);
  }
  for (const std::size_t p : ports) {
    const std::string err = host::set_interface_sysctl("ipv4", config.dataplane.ports[p].exception,
                                                       "send_redirects", "0");
    if (!err.empty()) std::cerr << "vipfarmd: warning: " << err << "\n";
  }
  auto forwarding = [](std::string_view name) { return host::read_sysctl(name).value_or(0) != 0; };
  if (v4 && !forwarding("net/ipv4/ip_forward")) {
    std::cerr << "vipfarmd: warning: an IPv4 gateway VIP, but net.ipv4.ip_forward is 0: this "
                 "node takes its share of the connections and routes none of them\n";
  }
  if (v6 && !forwarding("net/ipv6/conf/all/forwarding")) {
    std::cerr << "vipfarmd: warning: an IPv6 gateway VIP, but net.ipv6.conf.all.forwarding is 0: "
                 "this node takes its share of the connections and routes none of them\n";
  }
}

// With net_af_xdp, net_af_packet or net_pcap the uplink is a kernel interface the kernel also
// listens on (a net_pcap uplink reading a file, rx_pcap=, has none): its name, empty when none, or
// an error for a net_pcap uplink without phy_mac=1.
std::string kernel_interface(const std::string& uplink, std::string& iface) {
  iface.clear();
  if (!uplink.starts_with("net_af_xdp") && !uplink.starts_with("net_af_packet") &&
      !uplink.starts_with("net_pcap")) {
    return {};
  }
  const auto at = uplink.find("iface=");
  if (at == std::string::npos) return {};
  iface = uplink.substr(at + 6, uplink.find(',', at) - at - 6);
  if (uplink.starts_with("net_pcap") && uplink.find("phy_mac=1") == std::string::npos) {
    // Without it every node's port has net_pcap's fixed MAC 02:70:63:61:70:00.
    return "uplink: a net_pcap uplink on an interface needs phy_mac=1 (\"" + uplink +
           ",phy_mac=1\"), so the port takes " + iface + "'s MAC";
  }
  return {};
}

// Before the EAL brings the TAPs up: the kernel interface behind each uplink loses ARP and
// IPv6, so the kernel neither answers ARP/ND for the VIPs on it with its own MAC nor holds
// the link-local address the TAP is about to take (the TAP gets the same MAC: with IPv6 left
// on the uplink, as a user's fresh veth has it, the TAP's link-local failed duplicate address
// detection and IPv6 neighbour discovery through the TAP stopped, issue 16).
std::string silence_kernel_interfaces(const config::Config& config) {
  for (const config::Port& port : config.dataplane.ports) {
    std::string iface;
    if (std::string err = kernel_interface(port.uplink, iface); !err.empty()) return err;
    if (iface.empty()) continue;
    if (std::string err = host::netlink::set_noarp(iface); !err.empty()) return err;
    if (std::string err = host::set_interface_sysctl("ipv6", iface, "disable_ipv6", "1");
        !err.empty()) {
      return err + " (IPv6 off on the uplink's kernel interface)";
    }
  }
  return {};
}

// After the EAL started the ports: the TAP takes over the kernel interface's MAC (the node's
// identity), so the kernel interface gets another one; otherwise the kernel would take frames
// for the node's MAC twice (there and through the TAP). `iface` gets the kernel interface's
// name (empty: none), so that a clean exit gives it its MAC back.
std::string hand_over_kernel_interface(const std::string& uplink, const MacAddr& mac,
                                       std::string& iface) {
  if (std::string err = kernel_interface(uplink, iface); !err.empty() || iface.empty()) return err;
  // Locally administered, unicast, and never the node's MAC: after a crash the port reads
  // the interface's aside MAC as its own, and the next aside must differ from it again, or
  // the kernel would take the node's frames beside the data plane.
  MacAddr aside = mac;
  aside[0] = mac[0] == 0xAE ? 0xAA : 0xAE;
  return host::netlink::set_mac(iface, aside);
}

// The exit log line: every counter that is not zero, by its key in `vipfarmctl counters`
// (generated from their one declaration), then the verdicts.
void print_totals(const dataplane::Totals& t) {
  const auto& s = t.sum;
  std::cerr << "vipfarmd: counters:";
#define VIPFARM_PRINT(field, key, metric, help) \
  if (s.field != 0) std::cerr << " " << std::string_view(key).substr(1) << " " << s.field;
  VIPFARM_LCORE_COUNTERS(VIPFARM_PRINT)
#undef VIPFARM_PRINT
#define VIPFARM_PRINT_HANDOFF(field, key, metric, help) \
  if (s.handoff.field != 0)                             \
    std::cerr << " " << std::string_view(key).substr(1) << " " << s.handoff.field;
  VIPFARM_HANDOFF_COUNTERS(VIPFARM_PRINT_HANDOFF)
#undef VIPFARM_PRINT_HANDOFF
  if (t.worker_rx.size() > 1) {
    std::cerr << "; rx by worker:";
    for (const std::uint64_t n : t.worker_rx) std::cerr << " " << n;
  }
  std::cerr << "; verdicts:";
  for (std::size_t v = 0; v < s.verdicts.size(); ++v) {
    if (s.verdicts[v] != 0) {
      std::cerr << " " << packet::to_string(static_cast<packet::Verdict>(v)) << " "
                << s.verdicts[v];
    }
  }
  std::cerr << "\n";
}

int run_daemon(const config::Config& config, const std::string& program,
               const std::vector<std::string>& extra_eal,
               dataplane::Dataplane::ExceptionPort exception) {
  if (!config.dataplane.present) {
    std::cerr << config.source << ": [dataplane] is required to run vipfarmd (uplink = ...)\n";
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  struct sigaction hup {};
  hup.sa_handler = on_hup;
  sigaction(SIGHUP, &hup, nullptr);

  if (const std::string err = silence_kernel_interfaces(config); !err.empty()) {
    std::cerr << "vipfarmd: " << err << "\n";
    return 1;
  }
  dataplane::Dataplane dp;
  if (const std::string err = dp.start(config, program, extra_eal, exception); !err.empty()) {
    std::cerr << "vipfarmd: " << err << "\n";
    return 1;
  }
  ownership::Ledger ledger(config, dp, dp.uplink_mac());
  control::Control control(ledger, dp);
  // With [membership] the node owns nothing until it has agreed a view with its peers;
  // without it the view is every configured node, and the admin API can change it.
  ledger.set_static_view(config.membership.present ? 0 : config::all_nodes(config),
                         std::chrono::steady_clock::now());
  ledger.commit();
  // The control thread: the admin API, membership and checkers on one Asio loop.
  boost::asio::io_context io;
  std::optional<control::MembershipService> membership;
  if (config.membership.present) membership.emplace(io, config, ledger, dp.uplink_mac());
  // Without membership no peer reports its handoff: every 100 ms the buckets given up by a
  // `view set` are released once their flows end. A bucket left "releasing" would send every
  // farm frame through the flow table for good.
  boost::asio::steady_timer static_handoff(io);
  std::function<void()> progress_static_handoff = [&] {
    ledger.progress_handoff({}, std::chrono::steady_clock::now());
    ledger.commit();
    static_handoff.expires_after(std::chrono::milliseconds(100));
    static_handoff.async_wait([&](boost::system::error_code ec) {
      if (!ec) progress_static_handoff();
    });
  };
  if (!config.membership.present && config.flows.handoff) {
    boost::asio::post(io, progress_static_handoff);
  }
  control::HostPath host_path(io, dp);
  std::optional<api::ApiServer> api;
  // Every admin command declared in api/commands.hpp, answered by the part that owns it.
  api::Dispatcher commands;
  commands.on("status", [&](const nlohmann::json&) {
    nlohmann::json reply = control.status();
    if (membership) membership->annotate_status(reply);
    return reply;
  });
  commands.on("counters", [&](const nlohmann::json&) { return control.counters(); });
  commands.on("buckets", [&](const nlohmann::json&) { return control.buckets(); });
  commands.on("owner", [&](const nlohmann::json& r) { return control.owner(r); });
  commands.on("reload", [&](const nlohmann::json&) {
    return reload(ledger, membership ? &*membership : nullptr);
  });
  if (membership) {
    control::MembershipService& m = *membership;
    commands.on("view", [&m](const nlohmann::json& r) { return m.view(r); });
    commands.on("nodes", [&m](const nlohmann::json&) { return m.nodes(); });
    commands.on("history", [&m](const nlohmann::json&) { return m.history(); });
    commands.on("state", [&m](const nlohmann::json&) { return m.state(); });
    commands.on("stop", [&m](const nlohmann::json&) { return m.set_stopped(true); });
    commands.on("start", [&m](const nlohmann::json&) { return m.set_stopped(false); });
    commands.on("resume", [&m](const nlohmann::json&) { return m.set_stopped(false); });
    commands.on("drain", [&m](const nlohmann::json& r) { return m.drain(r); });
  } else {
    commands.on("view", [&](const nlohmann::json& r) { return control.view(r); });
  }
  api.emplace(io, config.api.socket,
              [&commands](const nlohmann::json& request) { return commands.handle(request); });
  if (const std::string err = api->start(); !err.empty()) {
    std::cerr << "vipfarmd: " << err << "\n";
    return 1;
  }
  auto work = boost::asio::make_work_guard(io);
  std::thread control_thread([&io] {
    // An exception out of a handler must not end the daemon and its data plane: logged,
    // and the loop goes on (Asio's documented way to recover from a handler's throw).
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {
        std::cerr << "vipfarmd: control thread: unexpected exception, carrying on: " << e.what()
                  << "\n";
      }
    }
  });
  // Named, so that `top -H` and the lab tell it from the EAL main thread ("vipfarmd").
  ::pthread_setname_np(control_thread.native_handle(), "vf-control");
  struct StopControl {
    boost::asio::io_context& io;
    std::thread& thread;
    ~StopControl() {  // on the early-error paths
      io.stop();
      if (thread.joinable()) thread.join();
    }
  } stop_control{io, control_thread};
  // Every port: its kernel interface handed over, its TAP addressed and up.
  const bool has_tap = exception == dataplane::Dataplane::ExceptionPort::kTap;
  const std::vector<config::Port>& ports = config.dataplane.ports;
  std::vector<std::string> kernel_ifaces(ports.size());
  std::vector<std::vector<TapAddress>> addresses(ports.size());
  auto remove_addresses = [&] {
    for (std::size_t p = 0; p < ports.size(); ++p) {
      for (const TapAddress& a : addresses[p]) {
        if (const std::string err =
                host::netlink::remove_address(ports[p].exception, a.address, a.prefix);
            !err.empty()) {
          std::cerr << "vipfarmd: " << err << "\n";
        }
      }
    }
  };
  // Directed VIPs (docs/directed.md): the kernel's own ARP requests take this node's
  // address as their sender, never a VIP (arp_announce 2, as in LVS direct routing), or
  // every host this node asks would re-point the VIP at it, past its ARP owner.
  const bool directed = std::any_of(config.vips.begin(), config.vips.end(), [](const auto& v) {
    return v.l2_mode == config::L2Mode::kDirected;
  });
  const std::string& first_tap = ports[0].exception;
  // A setting vipfarmd could not make is said; the farm still serves without it.
  auto set_or_warn = [](std::string_view family, const std::string& iface, std::string_view key,
                        std::string_view value) {
    const std::string err = host::set_interface_sysctl(family, iface, key, value);
    if (!err.empty()) std::cerr << "vipfarmd: warning: " << err << "\n";
  };
  if (has_tap && directed) set_or_warn("ipv4", first_tap, "arp_announce", "2");
  // Directed IPv6 VIPs: the kernel's solicitations from a VIP leave with the node's
  // link-local address as their source (the data plane rewrites them, so the answers come
  // back here): the TAP gets exactly that address, and no other generated one.
  if (has_tap && std::any_of(config.vips.begin(), config.vips.end(), [](const auto& v) {
        return v.l2_mode == config::L2Mode::kDirected && !v.address.is_v4();
      })) {
    set_or_warn("ipv6", first_tap, "addr_gen_mode", "1");
  }
  if (has_tap) prepare_gateway_kernel(config);
  // The TAP's kernel takes no router advertisement (no address, route or hop limit from a
  // stranger on the farm's LAN) and no ICMP redirect (no host route around the farm).
  for (std::size_t p = 0; p < ports.size() && has_tap; ++p) {
    const std::string& tap = ports[p].exception;
    set_or_warn("ipv6", tap, "accept_ra", "0");
    set_or_warn("ipv6", tap, "accept_redirects", "0");
    set_or_warn("ipv4", tap, "accept_redirects", "0");
  }
  for (std::size_t p = 0; p < ports.size(); ++p) {
    const MacAddr mac = dp.port_mac(p);
    if (const std::string err = hand_over_kernel_interface(ports[p].uplink, mac, kernel_ifaces[p]);
        !err.empty()) {
      std::cerr << "vipfarmd: " << err << "\n";
      remove_addresses();
      return 1;
    }
    if (!has_tap) continue;
    addresses[p] = tap_addresses(config, p, mac);
    for (const TapAddress& a : addresses[p]) {
      // The kernel gave the TAP its link-local address when the EAL brought it up, with
      // duplicate address detection still to run: replaced by ours, which needs none.
      if (a.address == link_local_of(mac)) {
        if (const std::string err =
                host::netlink::remove_address(ports[p].exception, a.address, a.prefix);
            !err.empty()) {
          std::cerr << "vipfarmd: " << err << "\n";
        }
      }
      if (const std::string err =
              host::netlink::add_address(ports[p].exception, a.address, a.prefix, a.no_dad);
          !err.empty()) {
        std::cerr << "vipfarmd: " << err << "\n";
        remove_addresses();
        return 1;
      }
    }
    if (const std::string err = host::netlink::link_up(ports[p].exception); !err.empty()) {
      std::cerr << "vipfarmd: " << err << "\n";
      remove_addresses();
      return 1;
    }
  }

  // /metrics once the node's addresses exist (its default is the node's own address).
  if (const auto at = parse_endpoint(config.metrics.listen);
      at && (at->address.is_v4() ? at->address.v4_value() == 0
                                 : at->address.hi == 0 && at->address.lo == 0)) {
    std::cerr << "vipfarmd: warning: metrics.listen " << config.metrics.listen
              << " answers on every address, the VIPs too: whoever reaches a VIP can read "
                 "/metrics (the farm's topology and views); the default is this node's own "
                 "address\n";
  }
  metrics::Exporter exporter;
  if (const std::string err = exporter.start(config.metrics.listen, control, dp,
                                             membership ? &*membership : nullptr, &host_path);
      !err.empty()) {
    std::cerr << "vipfarmd: " << err << "\n";
    remove_addresses();
    return 1;
  }
  if (membership) {
    // On the io thread: the loop is already running the admin API.
    std::promise<std::string> started;
    boost::asio::post(io, [&] { started.set_value(membership->start()); });
    if (const std::string err = started.get_future().get(); !err.empty()) {
      std::cerr << "vipfarmd: " << err << "\n";
      remove_addresses();
      return 1;
    }
  }
  // The path to the kernel watched from here on: the exception lcore, the TAPs (host_path.hpp).
  std::vector<control::HostPath::Tap> taps;
  for (std::size_t p = 0; p < ports.size() && has_tap; ++p) {
    taps.push_back({ports[p].exception, addresses[p]});
    // The kernel's own link-local address (EUI-64 from the TAP's MAC, which IPv6 neighbour
    // discovery needs) is put back too, were someone to flush it with the rest.
    const TapAddress link_local{link_local_of(dp.port_mac(p)), 64, true};
    if (std::none_of(addresses[p].begin(), addresses[p].end(),
                     [&](const TapAddress& a) { return a.address == link_local.address; })) {
      taps.back().addresses.push_back(link_local);
    }
  }
  if (has_tap) {
    // The main heartbeat network's peers (membership_service.cpp sends to those of this
    // node's family only), pinned to the MACs of their heartbeats (host_path.hpp).
    const IpAddr& own = config.find_node(config.node_id)->address;
    std::vector<control::HostPath::Peer> peers;
    for (const config::ClusterNode& node : config.nodes) {
      if (node.id != config.node_id && node.address.is_v4() == own.is_v4()) {
        peers.push_back({node.id, node.address});
      }
    }
    host_path.pin_peers(ports[0].exception, std::move(peers),
                        [&ledger](NodeId node) { return ledger.node_mac(node); });
  }
  boost::asio::post(io, [&, taps = std::move(taps)]() mutable {
    host_path.start(
        std::move(taps),
        [&](const std::string& reason) {
          if (membership) membership->set_path_down(reason);
        },
        [](const std::string&) {
          g_exit_status.store(1, std::memory_order_relaxed);
          g_stop.store(true, std::memory_order_relaxed);
        });
  });
  std::cerr << "vipfarmd: ready: node " << to_int(config.node_id) << " (" << config.node_name
            << ")";
  for (std::size_t p = 0; p < ports.size(); ++p) {
    std::cerr << (ports.size() > 1 ? ", port " + ports[p].name + ": " : ", ")
              << (has_tap ? "TAP " + ports[p].exception : "no TAP (net_null exception port)")
              << ", uplink MAC " << to_string(dp.port_mac(p));
  }
  std::cerr << "\n";

  using Clock = std::chrono::steady_clock;
  auto started_announcing = Clock::now();
  const auto interval = std::chrono::seconds(config.dataplane.garp_interval_s);
  const auto duration = std::chrono::seconds(config.dataplane.garp_duration_s);
  auto next_announcement = started_announcing;
  const dataplane::Dataplane::AnswersRequester answers = [&ledger](std::uint16_t vip,
                                                                   const IpAddr& requester) {
    return ledger.answers_requester(vip, requester);
  };
  dp.run(g_stop, [&] {
    const auto now = Clock::now();
    if (g_reload.exchange(false, std::memory_order_relaxed)) {
      boost::asio::post(io, [&] { reload(ledger, membership ? &*membership : nullptr); });
    }
    if (ledger.announce_requested.exchange(false, std::memory_order_acq_rel)) {
      dp.announce(answers);  // an ownership change: tell the switches and clients again
      started_announcing = now;
      next_announcement = now + interval;
    } else if (now >= next_announcement && now - started_announcing <= duration) {
      dp.announce(answers);
      next_announcement = now + interval;
    }
  });

  {
    std::promise<void> stopped;
    boost::asio::post(io, [&] {
      host_path.stop();
      if (membership) membership->stop();
      stopped.set_value();
    });
    stopped.get_future().wait_for(std::chrono::seconds(1));
  }
  remove_addresses();
  print_totals(dp.totals());
  // A bounded exit (SIGTERM to exit well under 2 s): stop the control thread, unlink the
  // API socket, close the ports (which removes the TAP) and leave. The metrics endpoint is
  // not stopped in order: nothing it holds needs an orderly close; the counters it may still
  // read stay allocated.
  io.stop();
  control_thread.join();
  api.reset();
  std::vector<MacAddr> macs;
  for (std::size_t p = 0; p < ports.size(); ++p) macs.push_back(dp.port_mac(p));
  dp.shutdown();
  for (std::size_t p = 0; p < ports.size(); ++p) {
    if (kernel_ifaces[p].empty()) continue;
    // The kernel interface's own MAC back: the next start reads it as the node's again.
    if (const std::string err = host::netlink::set_mac(kernel_ifaces[p], macs[p]); !err.empty()) {
      std::cerr << "vipfarmd: " << err << "\n";
    }
  }
  std::cerr << std::flush;
  std::_Exit(g_exit_status.load(std::memory_order_relaxed));
}

}  // namespace

// vipfarmd --witness ADDR:PORT: majority mode's authenticated witness (membership/witness.hpp).
// It reads only cluster.name and the [[membership.key]] files of the config, answers every
// valid probe of that cluster with a signed answer and ignores (counts) everything else; one
// thread, no DPDK. SIGTERM or SIGINT prints the counts and ends it.
int run_witness(const std::string& listen, const std::string& path) {
  const std::optional<Endpoint> at = parse_endpoint(listen);
  if (!at || at->port == 0) {
    std::cerr << "vipfarmd: --witness: expected ADDR:PORT ([v6]:PORT), got \"" << listen << "\"\n";
    return 2;
  }
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::cerr << path << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
              << e.description() << "\n";
    return 1;
  }
  const std::optional<std::string> name = root["cluster"]["name"].value<std::string>();
  if (!name || name->empty()) {
    std::cerr << path << ": cluster.name: required, a non-empty string\n";
    return 1;
  }
  membership::Keyring keys;
  const toml::array* list = root["membership"]["key"].as_array();
  if (list == nullptr || list->empty()) {
    std::cerr << path << ": membership.key: at least one [[membership.key]] is required\n";
    return 1;
  }
  for (const toml::node& entry : *list) {
    const toml::table* t = entry.as_table();
    const auto id = t != nullptr ? (*t)["id"].value<std::int64_t>() : std::nullopt;
    const auto file = t != nullptr ? (*t)["file"].value<std::string>() : std::nullopt;
    std::vector<std::uint8_t> bytes;
    std::string err;
    if (!id || *id < 1 || *id > 255 || !file) {
      err = "membership.key: needs id (1-255) and file";
    } else if (err = membership::read_key_file(*file, bytes); err.empty()) {
      err = keys.add(static_cast<std::uint16_t>(*id), bytes);
    }
    if (!err.empty()) {
      std::cerr << path << ":" << entry.source().begin.line << ": " << err << "\n";
      return 1;
    }
  }
  const std::uint64_t cluster = membership::cluster_id(*name);

  using boost::asio::ip::udp;
  boost::asio::io_context io;
  boost::system::error_code ec;
  const udp::endpoint local(boost::asio::ip::make_address(at->address.to_string(), ec), at->port);
  udp::socket socket(io);
  if (!ec) socket.open(local.protocol(), ec);
  if (!ec) socket.bind(local, ec);
  if (!ec) socket.non_blocking(true, ec);  // an answer that does not fit is dropped, not waited for
  if (ec) {
    std::cerr << "vipfarmd: --witness " << listen << ": " << ec.message() << "\n";
    return 1;
  }
  std::uint64_t answered = 0, unsent = 0;
  std::array<std::uint64_t, membership::kRejectCount> ignored{};
  std::array<std::uint8_t, 2048> buffer{};
  udp::endpoint from;
  std::function<void()> receive = [&] {
    socket.async_receive_from(
        boost::asio::buffer(buffer), from, [&](boost::system::error_code rec, std::size_t size) {
          if (rec == boost::asio::error::operation_aborted) return;
          if (!rec) {
            const membership::WitnessReply reply =
                membership::answer_witness_probe(std::span(buffer.data(), size), keys, cluster);
            boost::system::error_code sent;
            if (reply.answer.empty()) {
              ++ignored[static_cast<std::size_t>(reply.reason)];
            } else if (socket.send_to(boost::asio::buffer(reply.answer), from, 0, sent); sent) {
              ++unsent;
            } else {
              ++answered;
            }
          }
          receive();
        });
  };
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code, int) {
    std::cerr << "vipfarmd: witness: answered " << answered << ", not sent " << unsent;
    for (std::size_t r = 0; r < ignored.size(); ++r) {
      if (ignored[r] != 0) {
        std::cerr << ", " << membership::to_string(static_cast<membership::Reject>(r)) << " "
                  << ignored[r];
      }
    }
    std::cerr << "\n";
    io.stop();
  });
  receive();
  std::cerr << "vipfarmd: witness for cluster \"" << *name << "\" on " << listen << ", "
            << list->size() << " keys\n";
  io.run();
  return 0;
}

int main(int argc, char** argv) {
  std::string config_path, check_path, witness_listen;
  po::options_description options("vipfarmd [options] [-- EAL arguments]");
  options.add_options()("help,h", "this help")("version", "print the version")(
      "config", po::value(&config_path), "the node's TOML configuration")(
      "check-config", po::value(&check_path), "validate a configuration and exit (0 valid, 1 not)")(
      "witness", po::value(&witness_listen),
      "ADDR:PORT: run as majority mode's authenticated witness (membership.witness_port), "
      "with the cluster name and keys of --config; no data plane")(
      "bench-null-exception",
      "pipeline benchmarks only: accepted and host-bound frames go to a net_null port that "
      "discards them, instead of the TAP (no kernel, no addresses)");
  std::vector<std::string> ours, extra_eal;
  bool after_dashes = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (!after_dashes && arg == "--") {
      after_dashes = true;
    } else {
      (after_dashes ? extra_eal : ours).push_back(arg);
    }
  }
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(ours).options(options).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "vipfarmd: " << e.what() << "\n" << options;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << options;
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "vipfarmd " << VIPFARM_VERSION << "\n";
    return 0;
  }
  const std::string path = !check_path.empty() ? check_path : config_path;
  if (path.empty()) {
    std::cerr << "vipfarmd: --config FILE is required\n" << options;
    return 2;
  }
  if (!witness_listen.empty()) return run_witness(witness_listen, config_path);
  config::LoadResult loaded = config::load_file(path);
  for (const config::Error& e : loaded.errors) std::cerr << e.to_string() << "\n";
  if (!loaded.config) return 1;
  for (const std::string& w : config::warnings(*loaded.config)) {
    std::cerr << "vipfarmd: warning: " << path << ": " << w << "\n";
  }
  if (!check_path.empty()) {
    std::cout << path << ": OK\n" << config::summary(*loaded.config);
    return 0;
  }
  return run_daemon(*loaded.config, argv[0], extra_eal,
                    vm.count("bench-null-exception") != 0
                        ? dataplane::Dataplane::ExceptionPort::kNull
                        : dataplane::Dataplane::ExceptionPort::kTap);
}
