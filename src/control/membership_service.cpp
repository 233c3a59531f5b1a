// The membership protocol on the control thread (what and why in membership_service.hpp and
// docs/membership.md). Every handler runs on the io thread; the mutex is for the metrics
// exporter's threads, which read stats(). Nothing here is on the packet path.
#include "vipfarm/control/membership_service.hpp"
#include "vipfarm/membership/witness.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <algorithm>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/ip/unicast.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstring>
#include <deque>
#include <iostream>
#include <mutex>
#include <random>

namespace vipfarm::control {

namespace {

using boost::asio::ip::udp;
using membership::Nanos;
using membership::NodeState;
using membership::Reject;
using SystemClock = std::chrono::system_clock;

Nanos now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr std::uint64_t bit(unsigned id) noexcept { return std::uint64_t{1} << (id - 1); }

boost::asio::ip::address to_asio(const IpAddr& a) {
  if (a.is_v4()) return boost::asio::ip::address_v4(a.v4_value());
  boost::asio::ip::address_v6::bytes_type b;
  for (int i = 0; i < 8; ++i) {
    b[i] = static_cast<unsigned char>(a.hi >> (56 - 8 * i));
    b[8 + i] = static_cast<unsigned char>(a.lo >> (56 - 8 * i));
  }
  return boost::asio::ip::address_v6(b);
}

// Whether a datagram's source address is the peer's configured one (ports are not compared:
// the address is what the configuration names).
bool same_address(const udp::endpoint& peer, const sockaddr_storage& from) {
  if (from.ss_family == AF_INET && peer.address().is_v4()) {
    const auto& sin = reinterpret_cast<const sockaddr_in&>(from);
    return ntohl(sin.sin_addr.s_addr) == peer.address().to_v4().to_uint();
  }
  if (from.ss_family == AF_INET6 && peer.address().is_v6()) {
    const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(from);
    const auto bytes = peer.address().to_v6().to_bytes();
    return std::memcmp(sin6.sin6_addr.s6_addr, bytes.data(), bytes.size()) == 0;
  }
  return false;
}

std::vector<unsigned> ids_of(std::uint64_t members) {
  std::vector<unsigned> ids;
  for (unsigned id = 1; id <= kMaxNodes; ++id) {
    if ((members & bit(id)) != 0) ids.push_back(id);
  }
  return ids;
}

// "1,3,4": the members of a view, for the log.
std::string ids_text(std::uint64_t members) {
  std::string out;
  for (const unsigned id : ids_of(members)) out += (out.empty() ? "" : ",") + std::to_string(id);
  return out;
}

std::string iso_time(SystemClock::time_point t) {
  const std::time_t secs = SystemClock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()) % 1000;
  char out[40];
  std::snprintf(out, sizeof out, "%s.%03dZ", text, static_cast<int>(ms.count()));
  return out;
}

nlohmann::json error(const std::string& message) { return {{"ok", false}, {"error", message}}; }

// This node's configured weight in each group (0 where it is not a member).
std::vector<std::uint16_t> own_weights(const config::Config& config) {
  std::vector<std::uint16_t> out;
  for (const config::Group& group : config.groups) {
    std::uint16_t w = 0;
    for (const config::Member& member : group.members) {
      if (member.node == config.node_id) w = static_cast<std::uint16_t>(member.weight);
    }
    out.push_back(w);
  }
  return out;
}

membership::Settings settings_of(const config::Membership& mc) {
  membership::Settings s;
  s.interval = static_cast<Nanos>(mc.interval_ms) * membership::kMillis;
  s.dead_after = mc.dead_after;
  s.agreement_timeout = static_cast<Nanos>(mc.agreement_timeout_ms) * membership::kMillis;
  s.split_brain = mc.split_brain;
  s.flap_limit = mc.flap_limit == 0 ? UINT32_MAX : mc.flap_limit;
  s.flap_window = static_cast<Nanos>(mc.flap_window_s) * 1000 * membership::kMillis;
  s.hold_down = static_cast<Nanos>(mc.hold_down_s) * 1000 * membership::kMillis;
  s.lease = static_cast<Nanos>(mc.lease_ms) * membership::kMillis;
  return s;
}

struct HistoryRecord {
  std::uint64_t epoch;
  std::uint64_t members;
  SystemClock::time_point at;
  bool agreed;
  std::string cause;
  std::uint32_t moved;
  double convergence_s;
};

// The authenticated witness (witness_port != 0): membership::WitnessProber on a UDP socket,
// driven by start_witness()'s handlers. They hold it weakly: resetting it ends them.
struct WitnessClient {
  WitnessClient(boost::asio::io_context& io, std::uint64_t cluster, std::uint8_t node)
      : socket(io), timer(io), prober(cluster, node) {}
  void stop() {
    boost::system::error_code ec;
    timer.cancel();
    socket.close(ec);
  }
  udp::socket socket;
  boost::asio::steady_timer timer;
  udp::endpoint to, from;
  membership::WitnessProber prober;
  std::array<std::uint8_t, 512> buffer{};  // answers are kWitnessBytes; more is refused
  std::function<void()> tick, receive;
};

}  // namespace

struct MembershipService::Impl : std::enable_shared_from_this<Impl> {
  struct Network {
    std::string name;
    udp::socket socket;
    std::vector<std::pair<std::uint8_t, udp::endpoint>> peers;
    membership::Freshness freshness;  // per network: each heartbeat arrives once on each
  };

  Impl(boost::asio::io_context& io, const config::Config& config, ownership::Ledger& ledger,
       const MacAddr& mac)
      : io(io), config(config), ledger(ledger), mac(mac), timer(io) {}

  boost::asio::io_context& io;
  config::Config config;  // the start-up file, then what reloads applied (apply())
  ownership::Ledger& ledger;
  const MacAddr mac;  // this node's uplink MAC, in its heartbeats
  boost::asio::steady_timer timer;
  membership::Keyring keys;
  std::vector<std::uint8_t> send_key;
  std::uint8_t send_key_id = 0;
  std::uint64_t cluster = 0;
  std::uint64_t configured = 0;
  std::unique_ptr<membership::Membership> m;
  std::vector<std::unique_ptr<Network>> networks;
  std::unique_ptr<health::Checkers> checkers;
  std::unique_ptr<health::Checkers> witness;
  std::shared_ptr<WitnessClient> witness_client;  // instead of `witness` with witness_port
  std::function<void()> on_checker_change;
  Nanos next_tick = 0;
  Nanos next_heartbeat = 0;
  Nanos interval() const {
    return static_cast<Nanos>(config.membership.interval_ms) * membership::kMillis;
  }
  std::vector<std::uint16_t> own_weights;  // this node's weight per group (config, reload)
  bool admin_stopped = false;
  bool draining = false;  // vipfarmctl drain: DRAIN until its flows end or drain_deadline
  std::chrono::steady_clock::time_point drain_deadline{};
  bool running = false;
  Nanos pending_since = -1;       // this node first proposed a change it has not installed yet
  bool reported_pending = false;  // ... and said so after agreement_timeout
  std::deque<HistoryRecord> history;
  bool lease_was_ok = true;
  std::string aside_reported;
  mutable std::mutex mutex;
  MembershipStats counts;  // sent, received, rejected, convergence

  std::string open_network(const std::string& name, const IpAddr& local,
                           const std::vector<std::pair<NodeId, IpAddr>>& peers);
  void arm(Network& n);
  void drain(Network& n);
  void on_datagram(Network& n, std::span<const std::uint8_t> data, bool truncated, int ttl,
                   const sockaddr_storage& from, Nanos now);
  void schedule();
  void update_state();
  void step(Nanos now, bool periodic);
  void send(Nanos now);
  void installed(Nanos now);
  // One history entry (vipfarmctl history), the newest 64 kept.
  void record(std::uint64_t epoch, std::uint64_t members, bool agreed, std::string cause,
              std::uint32_t moved, double convergence_s) {
    history.push_back(
        {epoch, members, SystemClock::now(), agreed, std::move(cause), moved, convergence_s});
    while (history.size() > 64) history.pop_front();
  }
  config::ViewMask alive_mask() const;
  // What status, view and the metrics report as lease_ok: whether the workers hold the lease
  // (a member serving its buckets, or a node outside the view serving its handed-off flows).
  bool lease_holds() const { return m->view().epoch != 0 && m->lease_ok(now_ns()); }
  void start_witness();
  void manage_handoff();
  void finish_drain();
  // The installed view, its weights and who is alive: what ownership derives buckets from.
  ownership::ViewInput view_input() const;
  nlohmann::json nodes() const;
  nlohmann::json view() const;
  nlohmann::json history_json() const;
  nlohmann::json state_json() const;
};

std::string MembershipService::Impl::open_network(
    const std::string& name, const IpAddr& local,
    const std::vector<std::pair<NodeId, IpAddr>>& peers) {
  auto n = std::make_unique<Network>(Network{name, udp::socket(io), {}, membership::Freshness()});
  n->freshness.set_forget_after(interval() * config.membership.dead_after);
  const udp::endpoint ep(to_asio(local), config.membership.port);
  boost::system::error_code ec;
  n->socket.open(ep.protocol(), ec);
  const int fd = n->socket.native_handle();
  const int one = 1;
  // The node's address may still be tentative (IPv6 DAD) when the daemon starts.
  if (!ec && ::setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof one) != 0) {
    ec.assign(errno, boost::system::system_category());
  }
  if (!ec) {
    // Room for a burst of forgeries (rejected cheaply, but they arrive in the same queue as
    // the real heartbeats): 4 MiB, beyond rmem_max where the daemon may (CAP_NET_ADMIN).
    const int bytes = 4 << 20;
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    }
  }
  if (!ec) n->socket.bind(ep, ec);
  if (!ec) n->socket.set_option(boost::asio::ip::unicast::hops(255), ec);
  if (!ec) {
    const int rc = local.is_v4()
                       ? ::setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &one, sizeof one)
                       : ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof one);
    if (rc != 0) ec.assign(errno, boost::system::system_category());
  }
  if (!ec) n->socket.non_blocking(true, ec);
  if (ec) {
    return "heartbeat network " + name + ": " + local.to_string() + ":" +
           std::to_string(config.membership.port) + ": " + ec.message();
  }
  for (const auto& [id, address] : peers) {
    if (id == config.node_id) continue;
    if (address.is_v4() != local.is_v4()) {
      std::cerr << "vipfarmd: heartbeat network " << name << ": node " << to_int(id)
                << "'s address " << address.to_string()
                << " is not in the family of this node's; not sent there\n";
      continue;
    }
    n->peers.emplace_back(to_int(id), udp::endpoint(to_asio(address), config.membership.port));
  }
  networks.push_back(std::move(n));
  return {};
}

void MembershipService::Impl::arm(Network& n) {
  n.socket.async_wait(udp::socket::wait_read,
                      [self = shared_from_this(), &n](const boost::system::error_code& ec) {
                        if (ec || !self->running) return;
                        self->drain(n);
                        self->arm(n);
                      });
}

// Reads every queued datagram (bounded), then runs the protocol once.
void MembershipService::Impl::drain(Network& n) {
  std::array<std::uint8_t, membership::kMaxHeartbeatBytes + 1> buffer;
  alignas(cmsghdr) char control_data[2 * CMSG_SPACE(sizeof(int))];
  std::lock_guard lock(mutex);
  const Nanos now = now_ns();
  for (int i = 0; i < 4096; ++i) {
    iovec iov{buffer.data(), buffer.size()};
    sockaddr_storage from{};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control_data;
    msg.msg_controllen = sizeof control_data;
    const ssize_t got = ::recvmsg(n.socket.native_handle(), &msg, MSG_DONTWAIT);
    if (got < 0) break;
    int ttl = -1;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) ||
          (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT)) {
        std::memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
      }
    }
    on_datagram(n, {buffer.data(), static_cast<std::size_t>(got)}, (msg.msg_flags & MSG_TRUNC) != 0,
                ttl, from, now);
  }
  step(now, false);
}

void MembershipService::Impl::on_datagram(Network& n, std::span<const std::uint8_t> data,
                                          bool truncated, int ttl, const sockaddr_storage& from,
                                          Nanos now) {
  auto reject = [&](Reject reason) { ++counts.rejected[static_cast<std::size_t>(reason)]; };
  if (truncated) return reject(Reject::kMalformed);
  // Only a neighbour's datagram arrives with 255: anything routed or forged from afar
  // is refused before any cryptography.
  if (ttl != 255) return reject(Reject::kBadTtl);
  // Before any cryptography, what the datagram claims must be possible: this cluster, a
  // configured peer, from that peer's address on this network, a fresh sequence not too
  // far ahead, within the peer's budget of verifications. A forgery that fails any of
  // these costs a few comparisons, not an HMAC (wire.hpp, Freshness::admit).
  const std::optional<membership::Claim> claim = membership::peek(data);
  if (!claim) return reject(Reject::kMalformed);
  if (claim->cluster != cluster) return reject(Reject::kWrongCluster);
  const auto peer = std::find_if(n.peers.begin(), n.peers.end(),
                                 [&](const auto& p) { return p.first == claim->node; });
  if (peer == n.peers.end()) return reject(Reject::kUnknownNode);
  if (!same_address(peer->second, from)) return reject(Reject::kWrongSource);
  if (const auto refused = n.freshness.admit(*claim, now)) return reject(*refused);
  const membership::Decoded d =
      membership::decode(data, keys, cluster, to_int(config.node_id), configured);
  if (!d.heartbeat) return reject(d.reason);
  const membership::Heartbeat& hb = *d.heartbeat;
  if (const auto stale = n.freshness.check(hb.node, hb.incarnation, hb.sequence, now)) {
    return reject(*stale);
  }
  ++counts.received;
  const bool was_ok = m->peer(hb.node).fingerprint_ok;
  const auto mac_before = m->peer(hb.node).mac;
  m->receive(hb, now);
  if (m->peer(hb.node).mac != mac_before) {
    ledger.set_node_mac(NodeId{hb.node}, hb.mac);
    ledger.commit();
  }
  if (was_ok && !m->peer(hb.node).fingerprint_ok) {
    std::cerr << "vipfarmd: node " << unsigned{hb.node}
              << " runs a different farm configuration (fingerprint mismatch): not merged\n";
  }
}

// The timer runs kTicksPerInterval times per heartbeat interval: a peer's death is then
// noticed within a quarter interval of its deadline, not up to a whole interval late (and
// two survivors notice it within that of each other, so they agree sooner).
void MembershipService::Impl::schedule() {
  constexpr Nanos kTicksPerInterval = 4;
  const Nanos interval = static_cast<Nanos>(config.membership.interval_ms) * membership::kMillis;
  next_tick += interval / kTicksPerInterval;
  const Nanos now = now_ns();
  if (next_tick <= now) next_tick = now + interval / kTicksPerInterval;  // no catch-up burst
  timer.expires_at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(next_tick)));
  timer.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || !self->running) return;
    {
      std::lock_guard lock(self->mutex);
      self->update_state();
      const Nanos t = now_ns();
      const bool beat = t >= self->next_heartbeat;
      if (beat) self->next_heartbeat = std::max(self->next_heartbeat + self->interval(), t);
      self->step(t, beat);
    }
    self->schedule();
  });
}

// The node's state and weights from the operator and the checkers.
void MembershipService::Impl::update_state() {
  NodeState state = NodeState::kUp;
  if (draining) {
    state = NodeState::kDrain;
  } else if (admin_stopped) {
    state = NodeState::kStop;
  } else if (checkers && !checkers->node_healthy()) {
    state = NodeState::kWait;
  }
  m->set_state(state);
  std::vector<std::uint16_t> weights;
  for (std::size_t g = 0; g < config.groups.size(); ++g) {
    std::uint16_t w = own_weights[g];
    if (checkers && !checkers->group_healthy(g)) w = 0;  // a group-bound checker failed
    weights.push_back(w);
  }
  m->set_weights(std::move(weights));
}

void MembershipService::Impl::step(Nanos now, bool periodic) {
  const bool installed_now = m->tick(now);
  if (installed_now) installed(now);
  if (m->proposal() != m->view().members) {
    if (pending_since < 0) {
      pending_since = now;
      reported_pending = false;
    }
    if (!reported_pending && now - pending_since >= m->settings().agreement_timeout) {
      // Nothing is forced (a view a live member has not agreed to is never installed); say
      // who disagrees, so an operator sees a link that is one-way or a node that lags.
      reported_pending = true;
      std::string disagree;
      for (const unsigned id : ids_of(m->proposal() | m->view().members)) {
        if (id == to_int(config.node_id)) continue;
        const membership::PeerStatus& p = m->peer(static_cast<std::uint8_t>(id));
        if (p.alive && p.mutual) continue;
        disagree += (disagree.empty() ? "" : ", ") + std::string("node ") + std::to_string(id) +
                    (p.alive ? " does not hear this node" : " is not heard");
      }
      std::cerr << "vipfarmd: proposed view {" << ids_text(m->proposal()) << "} not agreed after "
                << (now - pending_since) / membership::kMillis << " ms"
                << (disagree.empty() ? std::string() : ": " + disagree) << "\n";
    }
  } else {
    pending_since = -1;
  }
  // Weights travel in heartbeats, outside the agreed member set: a change re-derives the
  // assignment for the same members (a group-bound checker, issue 5's weight changes). A
  // settled view lets this node serve the buckets it gained.
  if (m->view().epoch != 0 && !installed_now) {
    const ownership::Change c = ledger.follow(view_input(), std::chrono::steady_clock::now());
    if (c.reweighted) {
      record(m->view().epoch, m->view().members, true, "weights changed", c.moved, 0);
      std::cerr << "vipfarmd: weights changed in view epoch " << m->view().epoch << ", " << c.moved
                << " buckets moved\n";
    }
  }
  if (!installed_now && !history.empty() && history.back().members == m->view().members &&
      history.back().epoch != m->view().epoch) {
    // Installs raced (or this node was stopped meanwhile): same members, the larger epoch.
    record(m->view().epoch, m->view().members, true, "aligned on the peers' epoch", 0, 0);
  }
  const bool in_view = (m->view().members & bit(to_int(config.node_id))) != 0;
  const bool lease_ok = m->lease_ok(now);
  if (in_view && lease_ok != lease_was_ok) {
    lease_was_ok = lease_ok;
    std::cerr << (lease_was_ok ? std::string("vipfarmd: ownership lease renewed: the view's "
                                             "members acknowledge this node again\n")
                               : "vipfarmd: ownership lease lapsed (no member of the view "
                                 "acknowledges this node): not serving VIP traffic; " +
                                     m->lease_detail(now) + "\n");
  }
  if (m->aside() != aside_reported) {
    aside_reported = m->aside();
    if (!aside_reported.empty())
      std::cerr << "vipfarmd: stepping aside: " << aside_reported << "\n";
  }
  if (config.flows.handoff) manage_handoff();
  if (draining) finish_drain();
  // One snapshot for everything this tick changed, before the heartbeat tells the peers.
  ledger.commit();
  if (periodic || m->wants_heartbeat(now)) send(now);
  if (lease_ok && m->view().epoch != 0) {
    ledger.set_lease(std::chrono::nanoseconds(std::min(m->lease_until() - now, m->lease())));
  } else {
    ledger.set_lease(std::nullopt);
  }
}

config::ViewMask MembershipService::Impl::alive_mask() const {
  config::ViewMask alive = config::view_bit(config.node_id);
  for (const config::ClusterNode& node : config.nodes) {
    if (node.id != config.node_id && m->peer(to_int(node.id)).alive)
      alive |= config::view_bit(node.id);
  }
  return alive;
}

// majority mode's witness: pinged like a checker (every 500 ms, failed after 2 misses), or
// with witness_port asked by `vipfarmd --witness` with signed probes (membership/witness.hpp,
// same period and misses), so a forged echo reply cannot make a half serve. Replaces the
// running one (a reload); none when the config names none.
void MembershipService::Impl::start_witness() {
  if (witness) witness->stop();
  witness.reset();
  if (witness_client) witness_client->stop();
  witness_client.reset();
  m->set_witness(false);
  if (!config.membership.witness) return;
  std::weak_ptr<Impl> weak = shared_from_this();
  if (config.membership.witness_port != 0) {
    auto c = std::make_shared<WitnessClient>(io, cluster,
                                             static_cast<std::uint8_t>(to_int(config.node_id)));
    c->to = udp::endpoint(to_asio(*config.membership.witness), config.membership.witness_port);
    const IpAddr& own = config.find_node(config.node_id)->address;
    boost::system::error_code ec;
    c->socket.open(c->to.protocol(), ec);
    if (!ec) c->socket.non_blocking(true, ec);
    if (!ec && own.is_v4() == config.membership.witness->is_v4())
      c->socket.bind(udp::endpoint(to_asio(own), 0), ec);  // probes from the node's address
    if (ec) {
      std::cerr << "vipfarmd: witness " << c->to << ": " << ec.message() << " (unreachable)\n";
      return;
    }
    std::weak_ptr<WitnessClient> wc = c;
    // Every 500 ms under the mutex (keys, m): a new probe, which counts a missed one.
    c->tick = [weak, wc] {
      auto self = weak.lock();
      auto c = wc.lock();
      if (!self || !c) return;
      if (!self->running) return c->stop();
      {
        std::lock_guard lock(self->mutex);
        const auto nonce = membership::random_witness_nonce();
        const std::vector<std::uint8_t> probe =
            nonce ? c->prober.probe(now_ns(), self->keys, self->send_key_id, *nonce)
                  : std::vector<std::uint8_t>{};
        boost::system::error_code ignored;  // not sent: a miss, like a lost one
        if (!probe.empty()) c->socket.send_to(boost::asio::buffer(probe), c->to, 0, ignored);
        self->m->set_witness(c->prober.reachable());
      }
      c->timer.expires_after(std::chrono::milliseconds(500));
      c->timer.async_wait([wc](boost::system::error_code ec) {
        if (auto c = wc.lock(); c && !ec) c->tick();
      });
    };
    c->receive = [weak, wc] {
      auto c = wc.lock();
      if (!c || !c->socket.is_open()) return;
      c->socket.async_receive_from(
          boost::asio::buffer(c->buffer), c->from,
          [weak, wc](boost::system::error_code ec, std::size_t size) {
            auto self = weak.lock();
            auto c = wc.lock();
            if (!self || !c || ec == boost::asio::error::operation_aborted) return;
            if (!ec && c->from == c->to) {
              std::lock_guard lock(self->mutex);
              if (!c->prober.receive(std::span(c->buffer.data(), size), self->keys, now_ns()))
                self->m->set_witness(true);
            }
            c->receive();
          });
    };
    witness_client = c;
    if (running) {
      c->receive();
      // Posted: a reload calls this under the mutex, which tick() takes.
      boost::asio::post(io, [wc] {
        if (auto c = wc.lock()) c->tick();
      });
    }
    return;
  }
  config::Checker ping;
  ping.name = "witness";
  ping.kind = config::CheckerKind::kPing;
  ping.target = config.membership.witness->to_string();
  ping.interval_ms = 500;
  ping.timeout_ms = 400;
  ping.rise = 1;
  ping.fall = 2;
  witness = std::make_unique<health::Checkers>(io, std::vector{ping}, [weak] {
    if (auto self = weak.lock(); self && self->running) {
      std::lock_guard lock(self->mutex);
      self->m->set_witness(self->witness->node_healthy());
    }
  });
  if (running) witness->start();
}

// Flow handoff (docs/handoff.md): the ledger releases and takes buckets from what the
// peers' heartbeats say; the buckets this node still releases go into its own.
void MembershipService::Impl::manage_handoff() {
  std::vector<ownership::PeerHandoff> peers;
  for (const config::ClusterNode& node : config.nodes) {
    if (node.id == config.node_id) continue;
    const membership::PeerStatus& p = m->peer(to_int(node.id));
    peers.push_back(
        {node.id, p.alive, m->peer_epoch(to_int(node.id)) >= m->view().epoch, p.releasing});
  }
  const ownership::HandoffProgress p =
      ledger.progress_handoff(peers, std::chrono::steady_clock::now());
  m->set_releasing(p.release_map);
  if (p.released != 0) {
    std::cerr << "vipfarmd: handoff: " << p.released << " buckets given up released ("
              << (p.cut == 0 ? "their flows ended"
                             : std::to_string(p.cut) + " flows cut: the window passed")
              << "), " << p.held << " still serving flows\n";
  }
  if (p.whole != 0) {
    std::cerr << "vipfarmd: handoff: " << p.whole << " buckets taken whole ("
              << (p.expired ? "the window passed" : "their previous owners released them") << "), "
              << p.waiting << " still waiting\n";
  }
}

// A draining node stops once it is out of the view and its flows are gone, or at the
// drain's deadline (the flows left are cut).
void MembershipService::Impl::finish_drain() {
  const bool out = (m->view().members & config::view_bit(config.node_id)) == 0;
  const bool timed_out = std::chrono::steady_clock::now() >= drain_deadline;
  if (!timed_out && !(out && ledger.handoff().releasing.empty())) return;
  const std::uint64_t cut = ledger.release_all();
  m->set_releasing({});
  draining = false;
  admin_stopped = true;
  update_state();
  std::cerr << "vipfarmd: drained: "
            << (timed_out ? "timeout, " + std::to_string(cut) + " flows cut" : "every flow ended")
            << "; state STOP\n";
}

void MembershipService::Impl::send(Nanos now) {
  membership::Heartbeat hb = m->heartbeat(now);
  hb.key_id = send_key_id;
  const std::vector<std::uint8_t> datagram = membership::encode(hb, send_key);
  for (const auto& n : networks) {
    for (const auto& [id, endpoint] : n->peers) {
      boost::system::error_code ec;
      n->socket.send_to(boost::asio::buffer(datagram), endpoint, 0, ec);
      ++(ec ? counts.send_errors : counts.sent);
    }
  }
}

ownership::ViewInput MembershipService::Impl::view_input() const {
  ownership::ViewInput in;
  in.members = m->view().members;
  in.weights.resize(kMaxNodes + 1);
  for (unsigned id = 1; id <= kMaxNodes; ++id) {
    if ((in.members & bit(id)) == 0) continue;
    const auto& w = id == to_int(config.node_id) ? m->weights()
                                                 : m->peer(static_cast<std::uint8_t>(id)).weights;
    if (w.size() == config.groups.size()) in.weights[id] = w;
  }
  in.settled = m->settled();
  in.alive = alive_mask();
  in.weights_acknowledged = m->weights_acknowledged();
  return in;
}

void MembershipService::Impl::installed(Nanos now) {
  const membership::InstalledView& v = m->view();
  const std::uint64_t before = history.empty() ? 0 : history.back().members;
  for (const unsigned id : ids_of(before & ~v.members)) {
    const membership::PeerStatus& p = m->peer(static_cast<std::uint8_t>(id));
    const bool died = !p.alive && p.state != NodeState::kStop && p.state != NodeState::kDrain;
    if (died && p.last_heard >= 0) {
      counts.failover.observe(static_cast<double>(now - p.last_heard) / 1e9);
    }
  }
  const std::uint32_t moved = ledger.install(view_input(), std::chrono::steady_clock::now()).moved;
  const double convergence =
      pending_since >= 0 ? static_cast<double>(now - pending_since) / 1e9 : 0;
  pending_since = -1;
  ++counts.views_installed;
  counts.convergence.observe(convergence);
  record(v.epoch, v.members, v.agreed, v.cause, moved, convergence);
  std::cerr << "vipfarmd: view epoch " << v.epoch << " {" << ids_text(v.members) << "} " << v.cause
            << " (" << (v.agreed ? "agreed" : "given up: not a member") << ", " << moved
            << " buckets moved, " << static_cast<int>(convergence * 1000) << " ms)\n";
}

MembershipService::MembershipService(boost::asio::io_context& io, const config::Config& config,
                                     ownership::Ledger& ledger, const MacAddr& mac)
    : impl_(std::make_shared<Impl>(io, config, ledger, mac)) {}

MembershipService::~MembershipService() { stop(); }

std::string MembershipService::start() {
  Impl& d = *impl_;
  const config::Config& config = d.config;
  const config::Membership& mc = config.membership;
  for (const config::ClusterKey& key : mc.keys) {
    std::vector<std::uint8_t> bytes;
    if (std::string err = membership::read_key_file(key.file, bytes); !err.empty()) return err;
    if (std::string err = d.keys.add(key.id, bytes); !err.empty()) return err;
    if (key.id == mc.send_key) d.send_key = bytes;
  }
  d.send_key_id = mc.send_key;
  const auto fingerprint = membership::fingerprint_from_hex(config::fingerprint(config));
  d.cluster = membership::cluster_id(config.cluster_name);
  d.configured = config::all_nodes(config);
  const membership::Settings s = settings_of(mc);
  // A restart must be told apart from a replay of the previous run: the incarnation is
  // random (getrandom through random_device), not the wall clock, so a clock stepped back
  // (an RTC before NTP, a restored VM snapshot) cannot make it look older. The peers forget
  // the previous boot's replay state once it has been silent for dead_after (wire.hpp).
  std::random_device random;
  const std::uint64_t incarnation = (std::uint64_t{random()} << 32) | random();
  d.m = std::make_unique<membership::Membership>(s, to_int(config.node_id), d.configured, d.cluster,
                                                 incarnation, *fingerprint,
                                                 std::vector<std::uint16_t>{});
  d.m->set_mac(d.mac);
  std::vector<std::pair<NodeId, IpAddr>> main;
  for (const config::ClusterNode& node : config.nodes) main.emplace_back(node.id, node.address);
  if (std::string err = d.open_network("main", config.find_node(config.node_id)->address, main);
      !err.empty()) {
    return err;
  }
  for (const config::HeartbeatLan& lan : mc.lans) {
    if (std::string err = d.open_network(lan.name, *lan.find(config.node_id), lan.addresses);
        !err.empty()) {
      return err;
    }
  }
  std::weak_ptr<Impl> weak = impl_;
  d.on_checker_change = [weak] {
    if (auto self = weak.lock(); self && self->running) {
      std::lock_guard lock(self->mutex);
      self->update_state();
      self->step(now_ns(), false);
    }
  };
  if (!config.checkers.empty()) {
    d.checkers = std::make_unique<health::Checkers>(d.io, config.checkers, d.on_checker_change);
  }
  d.own_weights = own_weights(config);
  d.running = true;
  {
    std::lock_guard lock(d.mutex);
    d.update_state();
  }
  if (d.checkers) d.checkers->start();
  d.start_witness();
  for (const auto& n : d.networks) d.arm(*n);
  d.next_tick = d.next_heartbeat = now_ns();
  d.schedule();
  return {};
}

void MembershipService::stop() {
  Impl& d = *impl_;
  if (!d.running) return;
  {
    // A clean leave: one last heartbeat saying STOP lets the others take the buckets now
    // rather than after dead_after intervals.
    // The workers stop first; the tick then installs the view without this node, so the
    // heartbeat shows it serves nothing and the others need not wait for its lease.
    std::lock_guard lock(d.mutex);
    d.m->set_state(NodeState::kStop);
    d.ledger.set_lease(std::nullopt);
    const Nanos now = now_ns();
    d.m->tick(now);
    d.send(now);
    d.running = false;
  }
  if (d.checkers) d.checkers->stop();
  if (d.witness) d.witness->stop();
  d.timer.cancel();
  for (const auto& n : d.networks) {
    boost::system::error_code ec;
    n->socket.close(ec);
  }
}

void MembershipService::set_path_down(const std::string& reason) {
  Impl& d = *impl_;
  if (!d.running) return;
  std::lock_guard lock(d.mutex);
  const Nanos now = now_ns();
  d.m->set_path_down(reason, now);
  d.step(now, false);  // step aside (or start rejoining) now, not at the next tick
}

nlohmann::json MembershipService::Impl::state_json() const {
  const NodeState s = m->state();
  return {{"ok", true},
          {"state", std::string(membership::to_string(s))},
          {"code", static_cast<unsigned>(s)}};
}

nlohmann::json MembershipService::Impl::nodes() const {
  const Nanos now = now_ns();
  const std::uint64_t members = m->view().members;
  nlohmann::json out = nlohmann::json::array();
  for (const config::ClusterNode& node : config.nodes) {
    const unsigned id = to_int(node.id);
    const bool self = node.id == config.node_id;
    const membership::PeerStatus& p = m->peer(static_cast<std::uint8_t>(id));
    const bool alive = self || p.alive;
    nlohmann::json entry = {
        {"id", id},
        {"name", node.name},
        {"self", self},
        {"alive", alive},
        {"state", alive ? std::string(membership::to_string(self ? m->state() : p.state))
                        : std::string("DOWN")},
        {"in_view", (members & bit(id)) != 0},
        {"weights", self ? m->weights() : p.weights},
        {"share", ledger.owned_by(node.id)},
        {"fingerprint_ok", self || p.fingerprint_ok},
        {"held_down", !self && p.held_down},
    };
    entry["last_heard_s"] = self ? nlohmann::json(0.0)
                            : p.last_heard < 0
                                ? nlohmann::json(nullptr)
                                : nlohmann::json(static_cast<double>(now - p.last_heard) / 1e9);
    entry["incarnation"] = self ? m->incarnation() : p.incarnation;
    // The uplink MAC it advertises (null before its first heartbeat).
    entry["mac"] = self               ? nlohmann::json(to_string(mac))
                   : p.last_heard < 0 ? nlohmann::json(nullptr)
                                      : nlohmann::json(to_string(p.mac));
    out.push_back(std::move(entry));
  }
  nlohmann::json groups = nlohmann::json::array();
  for (const config::Group& g : config.groups) groups.push_back(g.name);
  return {{"ok", true}, {"groups", groups}, {"buckets", config.buckets}, {"nodes", out}};
}

nlohmann::json MembershipService::Impl::view() const {
  const membership::InstalledView& v = m->view();
  return {{"ok", true},
          {"epoch", v.epoch},
          {"members", ids_of(v.members)},
          {"agreed", v.agreed},
          {"cause", v.cause},
          {"installed_s_ago", v.epoch == 0 ? 0.0 : static_cast<double>(now_ns() - v.at) / 1e9},
          {"proposal", ids_of(m->proposal())},
          {"settled", ids_of(m->settled())},
          {"lease_ok", lease_holds()},
          {"clear", m->clear()},
          {"aside", m->aside()},
          {"witness", witness_client ? nlohmann::json(witness_client->prober.reachable())
                      : witness      ? nlohmann::json(witness->node_healthy())
                                     : nlohmann::json(nullptr)},
          {"generation", ledger.generation()}};
}

nlohmann::json MembershipService::Impl::history_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const HistoryRecord& r : history) {
    out.push_back({{"epoch", r.epoch},
                   {"members", ids_of(r.members)},
                   {"time", iso_time(r.at)},
                   {"agreed", r.agreed},
                   {"cause", r.cause},
                   {"moved", r.moved},
                   {"convergence_ms", r.convergence_s * 1000}});
  }
  return {{"ok", true}, {"history", out}};
}

nlohmann::json MembershipService::nodes() const {
  const Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  if (!d.running) return error("membership is not running");
  return d.nodes();
}

nlohmann::json MembershipService::view(const nlohmann::json& request) const {
  const Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  if (!d.running) return error("membership is not running");
  if (request.contains("set")) {
    return error("view set: the view is agreed by membership; use stop/start on a node");
  }
  return d.view();
}

nlohmann::json MembershipService::history() const {
  const Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  if (!d.running) return error("membership is not running");
  return d.history_json();
}

nlohmann::json MembershipService::state() const {
  const Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  if (!d.running) return error("membership is not running");
  return d.state_json();
}

nlohmann::json MembershipService::set_stopped(bool stopped) {
  Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  if (!d.running) return error("membership is not running");
  d.admin_stopped = stopped;
  d.draining = false;
  d.update_state();
  d.step(now_ns(), false);
  return d.state_json();
}

nlohmann::json MembershipService::drain(const nlohmann::json& request) {
  Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  if (!d.running) return error("membership is not running");
  const auto timeout = request.value("timeout_s", static_cast<double>(d.config.flows.window_s));
  if (!(timeout > 0 && timeout <= 86400)) return error("drain: timeout_s must be in (0, 86400]");
  d.draining = true;
  d.drain_deadline = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<std::int64_t>(timeout * 1000));
  d.update_state();
  d.step(now_ns(), false);
  return d.state_json();
}

void MembershipService::apply(const config::Config& next) {
  Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  const config::Config before = d.config;
  d.config = next;
  const config::Membership &was = before.membership, &is = next.membership;
  const membership::Settings settings = settings_of(is);
  if (settings_of(was) != settings) {
    d.m->set_settings(settings);
    for (const auto& n : d.networks) n->freshness.set_forget_after(d.interval() * is.dead_after);
    std::cerr << "vipfarmd: reload: membership timers: heartbeat every " << is.interval_ms
              << " ms, dead after " << is.dead_after << ", lease " << d.m->lease() / 1'000'000
              << " ms, split brain "
              << (is.split_brain == membership::SplitBrain::kMajority ? "majority" : "serve")
              << "\n";
  }
  if (was.witness != is.witness) {
    d.start_witness();
    std::cerr << "vipfarmd: reload: witness " << (is.witness ? is.witness->to_string() : "none")
              << "\n";
  }
  if (before.checkers != next.checkers) {
    // Checkers keep their health by name; new ones start healthy (health::Checkers).
    std::vector<health::Checkers::Status> previous;
    if (d.checkers) {
      previous = d.checkers->status();
      d.checkers->stop();
    }
    d.checkers.reset();
    if (!next.checkers.empty()) {
      d.checkers =
          std::make_unique<health::Checkers>(d.io, next.checkers, d.on_checker_change, &previous);
      d.checkers->start();
    }
    std::cerr << "vipfarmd: reload: " << next.checkers.size() << " checkers\n";
  }
  const std::string fingerprint = config::fingerprint(next);
  if (fingerprint != config::fingerprint(before)) {
    d.m->set_fingerprint(*membership::fingerprint_from_hex(fingerprint));
    // With live peers the fingerprint change itself changes the view (docs/handoff.md); a
    // node alone re-derives its assignment now.
    if (d.alive_mask() == config::view_bit(next.node_id)) d.ledger.reassign();
    std::cerr << "vipfarmd: reload: farm configuration changed (fingerprint " << fingerprint
              << ")\n";
  }
  d.own_weights = own_weights(next);
  d.update_state();
  d.step(now_ns(), false);  // advertised at once; every node moves the buckets by handoff
}

std::string MembershipService::reload_keys(const config::Membership& mc) {
  Impl& d = *impl_;
  membership::Keyring keys;
  std::vector<std::uint8_t> send_key;
  std::string ids;
  for (const config::ClusterKey& key : mc.keys) {
    std::vector<std::uint8_t> bytes;
    if (std::string err = membership::read_key_file(key.file, bytes); !err.empty()) return err;
    if (std::string err = keys.add(key.id, bytes); !err.empty()) return err;
    if (key.id == mc.send_key) send_key = bytes;
    ids += (ids.empty() ? "" : ", ") + std::to_string(key.id);
  }
  std::lock_guard lock(d.mutex);
  d.keys = std::move(keys);
  d.send_key = std::move(send_key);
  d.send_key_id = mc.send_key;
  std::cerr << "vipfarmd: cluster keys reloaded: accepting " << ids << ", signing with "
            << unsigned{mc.send_key} << "\n";
  return {};
}

void MembershipService::annotate_status(nlohmann::json& status) const {
  const Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  if (!d.m) return;
  status["state"] = std::string(membership::to_string(d.m->state()));
  status["epoch"] = d.m->view().epoch;
  status["lease_ok"] = d.lease_holds();
}

MembershipStats MembershipService::stats() const {
  const Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  MembershipStats s = d.counts;
  if (!d.m) return s;
  s.state = d.m->state();
  s.epoch = d.m->view().epoch;
  s.members = d.m->view().members;
  s.lease_ok = d.lease_holds();
  const Nanos now = now_ns();
  for (const config::ClusterNode& node : d.config.nodes) {
    if (node.id == d.config.node_id) continue;
    const membership::PeerStatus& p = d.m->peer(to_int(node.id));
    s.peers.push_back({to_int(node.id), node.name, p.alive, p.state,
                       p.last_heard < 0 ? -1.0 : static_cast<double>(now - p.last_heard) / 1e9,
                       p.fingerprint_ok, p.held_down, p.incarnation});
  }
  if (d.checkers) s.checkers = d.checkers->status();
  return s;
}

}  // namespace vipfarm::control
