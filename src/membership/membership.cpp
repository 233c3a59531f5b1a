// Failure detection and view agreement (the rules are in membership.hpp).
#include "vipfarm/membership/membership.hpp"

#include <algorithm>
#include <bit>

namespace vipfarm::membership {

namespace {

constexpr std::uint64_t bit(unsigned id) noexcept { return std::uint64_t{1} << (id - 1); }

std::string describe_change(std::uint64_t before, std::uint64_t after) {
  std::string out;
  for (unsigned id = 1; id <= 64; ++id) {
    const bool was = (before & bit(id)) != 0, is = (after & bit(id)) != 0;
    if (was == is) continue;
    if (!out.empty()) out += ", ";
    out += "node " + std::to_string(id) + (is ? " joined" : " left");
  }
  return out.empty() ? "no change" : out;
}

}  // namespace

Membership::Membership(const Settings& settings, std::uint8_t self, std::uint64_t configured,
                       std::uint64_t cluster, std::uint64_t incarnation,
                       const Fingerprint& fingerprint, std::vector<std::uint16_t> weights)
    : settings_(settings),
      self_(self),
      configured_(configured),
      cluster_(cluster),
      incarnation_(incarnation),
      fingerprint_(fingerprint),
      weights_(std::move(weights)),
      peers_(65) {
  set_settings(settings);
  history_.push_back({0, 0, 0, true, "start"});
}

void Membership::set_settings(const Settings& settings) {
  settings_ = settings;
  if (settings_.agreement_timeout == 0) settings_.agreement_timeout = 3 * settings_.interval;
  if (settings_.lease == 0) settings_.lease = settings_.interval * settings_.dead_after;
}

Heartbeat Membership::heartbeat(Nanos) {
  Heartbeat hb;
  hb.state = state_;
  hb.cluster = cluster_;
  hb.node = self_;
  hb.incarnation = incarnation_;
  hb.sequence = ++sequence_;
  hb.fingerprint = fingerprint_;
  hb.epoch = view().epoch;
  hb.installed = view().members;
  hb.proposed = proposal_;
  hb.weights = weights_;
  hb.releasing = releasing_;
  hb.mac = mac_;
  proposal_changed_ = false;
  return hb;
}

void Membership::receive(const Heartbeat& hb, Nanos now) {
  if (hb.node == 0 || hb.node > 64 || hb.node == self_ || (configured_ & bit(hb.node)) == 0) return;
  Peer& p = peers_[hb.node];
  p.alive = true;
  p.last_heard = now;
  p.state = hb.state;
  p.incarnation = hb.incarnation;
  p.fingerprint_ok = hb.fingerprint == fingerprint_;
  p.fingerprint = hb.fingerprint;
  p.weights = hb.weights;
  p.releasing = hb.releasing;
  p.mac = hb.mac;
  p.proposed = hb.proposed;
  p.installed = hb.installed;
  p.epoch = hb.epoch;
}

std::uint64_t Membership::propose(Nanos now) {
  std::uint64_t members = state_ == NodeState::kUp ? bit(self_) : 0;
  unsigned reachable = 1;  // this node
  unsigned same_config = 1, other_config = 0;
  const Nanos dead_after = settings_.interval * settings_.dead_after;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    Peer& p = peers_[id];
    if (p.alive && now - p.last_heard > dead_after) {
      p.alive = false;
      p.deaths.push_back(now);
      while (!p.deaths.empty() && now - p.deaths.front() > settings_.flap_window) {
        p.deaths.pop_front();
      }
      if (p.deaths.size() >= settings_.flap_limit) p.held_until = now + settings_.hold_down;
    }
    p.held_down = p.held_until > now;
    if (!p.alive) continue;
    ++reachable;
    (p.fingerprint_ok ? same_config : other_config) += 1;
    if (p.state == NodeState::kUp && p.fingerprint_ok && !p.held_down) members |= bit(id);
  }
  // A node that runs a config most of the live farm does not serves nothing (a rolling
  // config change: nodes move to the new config's side one by one, docs/handoff.md). An
  // exact tie between two configs goes to the larger fingerprint, so the halves never both
  // serve.
  if (other_config > same_config ||
      (other_config == same_config && other_config != 0 && larger_config_elsewhere())) {
    return 0;
  }
  const auto configured = static_cast<unsigned>(std::popcount(configured_));
  if (settings_.split_brain == SplitBrain::kMajority &&
      (2 * reachable < configured || (2 * reachable == configured && !witness_))) {
    return 0;  // a minority partition serves nothing; a half only with the witness
  }
  return members;
}

bool Membership::confirmed() const noexcept {
  const InstalledView& v = view();
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (v.members & bit(id)) == 0) continue;
    const Peer& p = peers_[id];
    if (!p.alive || p.last_heard <= lapsed_at_ + settings_.interval || p.installed != v.members ||
        p.epoch != v.epoch) {
      return false;
    }
  }
  return true;
}

bool Membership::larger_config_elsewhere() const noexcept {
  for (unsigned id = 1; id <= 64; ++id) {
    const Peer& p = peers_[id];
    if (id != self_ && p.alive && !p.fingerprint_ok && p.fingerprint > fingerprint_) return true;
  }
  return false;
}

// Every live peer running this config has installed the current view: members, and also
// nodes that just left it (stopped, draining, waiting), which may still serve its buckets.
bool Membership::installed_by_all() const noexcept {
  const std::uint64_t members = view().members;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    const Peer& p = peers_[id];
    if ((members & bit(id)) != 0 && !p.alive) return false;
    if (p.alive && p.fingerprint_ok && p.installed != members) return false;
  }
  return true;
}

bool Membership::tick(Nanos now) {
  const bool installed = decide(now);
  if (settled_ != view().members &&
      (installed_by_all() || now - view().at >= settings_.agreement_timeout)) {
    settled_ = view().members;
  }
  return installed;
}

bool Membership::decide(Nanos now) {
  if (last_tick_ >= 0 && now - last_tick_ > settings_.lease) {
    // A stall: the workers' lease ran out. The peers' silence was ours: give each a fresh
    // dead_after window rather than declaring everyone dead and serving alone.
    lapsed_ = true;
    lapsed_at_ = now;
    for (Peer& p : peers_) {
      if (p.alive) p.last_heard = now;
    }
    proposed_since_ = now;
  }
  if (last_tick_ < 0) started_ = now;
  last_tick_ = now;
  if (lapsed_ && confirmed()) lapsed_ = false;
  const std::uint64_t proposal = propose(now);
  if (proposal != proposal_) {
    proposal_ = proposal;
    proposed_since_ = now;
    proposal_changed_ = true;
  }
  if (proposal_ == view().members) {
    // Members that installed this same view under a larger epoch (their installs raced
    // ours) win: align on it. The members, and so the buckets, do not change.
    InstalledView& v = history_.back();
    for (unsigned id = 1; id <= 64; ++id) {
      if (id == self_ || (v.members & bit(id)) == 0) continue;
      const Peer& p = peers_[id];
      if (p.alive && p.installed == v.members && p.epoch > v.epoch) v.epoch = p.epoch;
    }
    return false;
  }
  if (now - started_ < settings_.interval * settings_.dead_after) {
    // Starting: a node that would install a view before hearing its running peers would
    // serve their buckets too. Wait until every configured peer was heard, or until a
    // silent one could have been declared dead anyway.
    for (unsigned id = 1; id <= 64; ++id) {
      if (id != self_ && (configured_ & bit(id)) != 0 && peers_[id].last_heard < 0) return false;
    }
  }
  bool agreed = true;
  for (unsigned id = 1; id <= 64 && agreed; ++id) {
    if (id == self_ || (proposal_ & bit(id)) == 0) continue;
    agreed = peers_[id].alive && peers_[id].proposed == proposal_;
  }
  if (!agreed && now - proposed_since_ < settings_.agreement_timeout) return false;
  install(proposal_, agreed, now);
  return true;
}

void Membership::install(std::uint64_t members, bool agreed, Nanos now) {
  // Agreeing nodes compute the same epoch: one more than the newest any of them had, or
  // the epoch a member already installed this same view under.
  const std::uint64_t current = view().epoch;
  std::uint64_t adopted = 0, newest = current;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (members & bit(id)) == 0) continue;
    const Peer& p = peers_[id];
    if (p.installed == members && p.epoch > current) adopted = std::max(adopted, p.epoch);
    newest = std::max(newest, p.epoch);
  }
  const std::uint64_t epoch = adopted != 0 ? adopted : newest + 1;
  history_.push_back({epoch, members, now, agreed, describe_change(view().members, members)});
  lapsed_ = false;
  proposal_changed_ = true;  // announce the install: it confirms the view to the others
  while (history_.size() > settings_.history) history_.pop_front();
}

}  // namespace vipfarm::membership
