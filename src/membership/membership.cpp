// Failure detection and view agreement (the rules are in membership.hpp and
// docs/membership.md).
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

// The order in which views win over each other when a node must choose which side to leave:
// more members first, then the set holding the lowest id where they differ. Strict and total,
// so two nodes comparing their proposals never both step aside.
bool beats(std::uint64_t a, std::uint64_t b) noexcept {
  if (a == b) return false;
  const int pa = std::popcount(a), pb = std::popcount(b);
  if (pa != pb) return pa > pb;
  const std::uint64_t differ = a ^ b;
  return (a & (differ & (~differ + 1))) != 0;
}

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string ids(std::uint64_t members) {
  std::string out;
  for (unsigned id = 1; id <= 64; ++id) {
    if ((members & bit(id)) != 0) out += (out.empty() ? "" : ",") + std::to_string(id);
  }
  return "{" + out + "}";
}

}  // namespace

std::uint64_t Membership::first_sequence(std::uint64_t incarnation) noexcept {
  return (splitmix64(incarnation) >> 2) | 1;
}

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
      sequence_(first_sequence(incarnation) - 1),
      peers_(65) {
  set_settings(settings);
  history_.push_back({0, 0, 0, true, "start"});
}

void Membership::set_settings(const Settings& settings) {
  settings_ = settings;
  if (settings_.agreement_timeout == 0) settings_.agreement_timeout = 3 * settings_.interval;
  const Nanos detection = dead_after();
  if (settings_.ack_window == 0) settings_.ack_window = 3 * settings_.interval;
  settings_.ack_window = std::min(settings_.ack_window, detection / 2);
  // The lease must end before a peer can exclude this node: dead_after - ack_window at most.
  const Nanos longest = detection - settings_.ack_window;
  if (settings_.lease == 0 || settings_.lease > longest) settings_.lease = longest;
}

Heartbeat Membership::heartbeat(Nanos now) {
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
  hb.clear = clear_;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    Peer& p = peers_[id];
    if (!p.alive) continue;
    Heard h{static_cast<std::uint8_t>(id), 0, p.sequence};
    if (p.mutual) h.flags |= Heard::kMutual;
    // Support (a lease renewal) only while its acknowledgements are fresh: a node that stops
    // hearing us loses our support ack_window after, a lease before we may exclude it.
    p.supported_last = p.acked_at >= now - settings_.ack_window;
    if (p.supported_last) {
      h.flags |= Heard::kSupports;
      p.supported_sent = now;
    }
    if (p.held_until > now) h.flags |= Heard::kHolds;
    hb.heard.push_back(h);
  }
  sent_.push_back({hb.sequence, now});
  while (!sent_.empty() && now - sent_.front().at > dead_after() + settings_.interval) {
    sent_.pop_front();
  }
  changed_ = answer_ = false;
  last_sent_ = now;
  return hb;
}

void Membership::receive(const Heartbeat& hb, Nanos now) {
  if (hb.node == 0 || hb.node > 64 || hb.node == self_ || (configured_ & bit(hb.node)) == 0) return;
  Peer& p = peers_[hb.node];
  if (p.last_heard >= 0 && hb.incarnation != p.incarnation) {
    // A new boot: what it knew of us (acknowledgements, support) went with the old one.
    p.acked_at = p.lease_ack = kNever;
  }
  if (p.last_heard < 0 || hb.incarnation != p.incarnation || hb.weights != p.weights) {
    p.weights_seq = hb.sequence;
  }
  p.alive = true;
  p.last_heard = now;
  p.state = hb.state;
  p.incarnation = hb.incarnation;
  p.sequence = hb.sequence;
  p.fingerprint_ok = hb.fingerprint == fingerprint_;
  p.fingerprint = hb.fingerprint;
  p.weights = hb.weights;
  p.releasing = hb.releasing;
  p.mac = hb.mac;
  p.proposed = hb.proposed;
  p.installed = hb.installed;
  p.epoch = hb.epoch;
  p.clear = hb.clear;
  p.mutual_row = p.holds = 0;
  p.heard_seq.fill(0);
  p.hears_me = p.holds_me = false;
  // A heartbeat without support takes nothing back: an earlier one's support holds for its
  // lease (the peer counts its clearance from the last support it sent).
  bool supports_me = false;
  for (const Heard& h : hb.heard) {
    if (h.node == 0 || h.node > 64) continue;
    if ((h.flags & Heard::kMutual) != 0) p.mutual_row |= bit(h.node);
    if ((h.flags & Heard::kHolds) != 0) p.holds |= bit(h.node);
    p.heard_seq[h.node] = h.sequence;
    if (h.node != self_) continue;
    p.hears_me = true;
    p.holds_me = (h.flags & Heard::kHolds) != 0;
    // Sequences start at a per-boot value: an acknowledgement of another boot's heartbeat,
    // or of one older than we remember, finds nothing.
    const auto it = std::lower_bound(sent_.begin(), sent_.end(), h.sequence,
                                     [](const Sent& s, std::uint64_t q) { return s.sequence < q; });
    if (it == sent_.end() || it->sequence != h.sequence) continue;
    p.acked_at = std::max(p.acked_at, it->at);
    if ((h.flags & Heard::kSupports) != 0) {
      supports_me = true;
      p.lease_ack = std::max(p.lease_ack, it->at);
    }
  }
  answer(p, supports_me, now);
}

// Renewals in one round trip: a peer that does not support us yet gets an acknowledgement
// at once, and a peer whose fresh acknowledgement earns our support hears it at once,
// instead of at the next intervals (a link that is whole only briefly, a flapping one,
// would otherwise renew nobody's lease). Only missing support triggers it: nothing more is
// sent while every lease is renewed.
void Membership::answer(const Peer& p, bool supports_me, Nanos now) noexcept {
  if (!supports_me || (!p.supported_last && p.acked_at >= now - settings_.ack_window)) {
    answer_ = true;
  }
}

bool Membership::wants_heartbeat(Nanos now) const noexcept {
  // Answers are rate-limited to one per quarter interval: two nodes that cannot support
  // each other (a peer refusing our new incarnation) never ping-pong.
  return changed_ || (answer_ && now - last_sent_ >= settings_.interval / 4);
}

void Membership::update_peers(Nanos now) {
  mutual_ = 0;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    Peer& p = peers_[id];
    // A broken path of our own silences every peer: that silence is ours, not their death.
    if (p.alive && path_down_.empty() && now - p.last_heard > dead_after()) {
      p.alive = false;
      p.deaths.push_back(now);
      while (!p.deaths.empty() && now - p.deaths.front() > settings_.flap_window) {
        p.deaths.pop_front();
      }
      if (p.deaths.size() >= settings_.flap_limit) p.held_until = now + settings_.hold_down;
    }
    p.mutual = p.alive && p.acked_at >= now - dead_after();
    if (p.mutual) mutual_ |= bit(id);
  }
  // Hold-down is farm-wide: a peer held down by this node or by a mutual peer is out, so
  // every node leaves the same flapping node out (and it steps aside, seeing itself held).
  // The holds of a peer this node holds down do not count: the flapping node saw everyone
  // else die as often as they saw it.
  std::uint64_t holders = mutual_;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    Peer& p = peers_[id];
    p.held_down = p.held_until > now;
    if (p.held_down) holders &= ~bit(id);
  }
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    Peer& p = peers_[id];
    for (unsigned q = 1; q <= 64 && !p.held_down; ++q) {
      p.held_down = q != id && (holders & bit(q)) != 0 && (peers_[q].holds & bit(id)) != 0;
    }
  }
}

// The largest clique of the candidates under mutual connectivity (this node's own row and
// each peer's, from its heartbeats), greedily: drop the member with the most missing edges
// until every pair hears each other. Nodes that share the rows compute the same set.
std::uint64_t Membership::prune(std::uint64_t candidates) const noexcept {
  std::array<std::uint64_t, 65> row{};
  for (unsigned id = 1; id <= 64; ++id) {
    if ((candidates & bit(id)) != 0) row[id] = id == self_ ? mutual_ : peers_[id].mutual_row;
  }
  std::array<std::uint64_t, 65> adjacent{};
  for (unsigned a = 1; a <= 64; ++a) {
    if ((candidates & bit(a)) == 0) continue;
    for (unsigned b = 1; b <= 64; ++b) {
      if (b != a && (candidates & bit(b)) != 0 && (row[a] & bit(b)) && (row[b] & bit(a))) {
        adjacent[a] |= bit(b);
      }
    }
  }
  std::uint64_t set = candidates;
  // On a tie, a node not heard for two intervals goes first (a dying node's row is the stale
  // one: its peers drop it at slightly different times), then a node outside the installed
  // view (a node joining or returning, not yet mutual with every member: dropping an
  // incumbent instead would make it step aside, its buckets unserved, until the newcomer's
  // links are whole), then the higher id: the same choice on every node while the rows and
  // the installed view agree.
  const Nanos now = last_tick_;
  const std::uint64_t installed = view().members;
  auto keep = [&](unsigned id) {
    const int heard = id != self_ && now - peers_[id].last_heard > 2 * settings_.interval ? 0 : 1;
    return std::pair(heard, (installed & bit(id)) != 0 ? 1 : 0);
  };
  for (;;) {
    unsigned worst = 0;
    int worst_missing = 0;
    for (unsigned a = 1; a <= 64; ++a) {
      if ((set & bit(a)) == 0) continue;
      const int missing = std::popcount(set & ~bit(a) & ~adjacent[a]);
      if (missing == 0 || missing < worst_missing) continue;
      if (missing > worst_missing || worst == 0 || keep(a) <= keep(worst)) {
        worst = a;
        worst_missing = missing;
      }
    }
    if (worst == 0) return set;
    set &= ~bit(worst);
  }
}

std::uint64_t Membership::propose(Nanos now) {
  update_peers(now);
  aside_.clear();
  // A broken host path that lasts a lease: the peers may exclude this node before it is
  // whole again, so it steps aside rather than serve its old view beside theirs. (Shorter,
  // nothing changes: the workers refused VIP traffic meanwhile, the view stands.)
  if (!path_down_.empty() && now - path_down_since_ >= settings_.lease) {
    aside_ = path_down_;
    return 0;
  }
  std::uint64_t candidates = state_ == NodeState::kUp ? bit(self_) : 0;
  unsigned reachable = 1;  // this node and its mutual peers
  unsigned same_config = 1, other_config = 0;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    const Peer& p = peers_[id];
    if (!p.alive) continue;
    (p.fingerprint_ok ? same_config : other_config) += 1;
    if (!p.mutual) continue;
    ++reachable;
    if (p.state == NodeState::kUp && p.fingerprint_ok && !p.held_down) candidates |= bit(id);
  }
  const bool up = state_ == NodeState::kUp;
  // A node that runs a config most of the live farm does not serves nothing (a rolling
  // config change: nodes move to the new config's side one by one, docs/handoff.md). An
  // exact tie between two configs goes to the larger fingerprint, so the halves never both
  // serve.
  if (other_config > same_config ||
      (other_config == same_config && other_config != 0 && larger_config_elsewhere())) {
    if (up) aside_ = "most live nodes run another farm config";
    return 0;
  }
  const auto configured = static_cast<unsigned>(std::popcount(configured_));
  if (settings_.split_brain == SplitBrain::kMajority &&
      (2 * reachable < configured || (2 * reachable == configured && !witness_))) {
    if (up)
      aside_ = "no majority: " + std::to_string(reachable) + " of " + std::to_string(configured) +
               " nodes mutually connected";
    return 0;  // a minority partition serves nothing; a half only with the witness
  }
  const std::uint64_t proposal = prune(candidates);
  if (!up) return proposal;
  // Back from a broken path (or starting) with nothing installed: propose nothing until
  // every peer is mutual or dead_after has passed. A lone proposal from a node that has not
  // heard its peers yet would beat theirs and make them step aside.
  if ((view().members & bit(self_)) == 0 && guarded(now)) {
    aside_ = "waiting to hear every peer (start, or back from a broken path)";
    return 0;
  }
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    const Peer& p = peers_[id];
    if (!p.alive) continue;
    // Held down by a peer that is not itself held down (the flapping node holds its
    // peers down too: its holds do not count).
    if (p.holds_me && !p.held_down) {
      aside_ = "held down by node " + std::to_string(id) + " (flap damping)";
      return 0;
    }
    // A mutual peer serves a view without us that wins over the one we serve (two sides of
    // a healed partition, a lone view formed while cut off): leave it at once rather than
    // serve its buckets until a new view is agreed.
    const std::uint64_t mine = view().members;
    if (p.mutual && (mine & bit(self_)) != 0 && (p.installed & bit(id)) != 0 &&
        (p.installed & bit(self_)) == 0 && beats(p.installed, mine)) {
      aside_ = "node " + std::to_string(id) + " serves " + ids(p.installed) + " without it";
      return 0;
    }
    // A peer we hear proposes a view without us that wins over ours because it does not hear
    // us, or because some member of it is not mutually connected with us (it pruned us):
    // forming a view of our own beside it would serve its buckets. A peer that hears us but
    // does not count us mutual yet (our answer is on its way: a resumed or returning node),
    // or that pruned us on rows older than ours, is waited for instead.
    bool cut_from_it = false;
    for (unsigned q = 1; q <= 64 && !cut_from_it; ++q) {
      if (q == self_ || q == id || (p.proposed & bit(q)) == 0) continue;
      cut_from_it = !peers_[q].mutual || (peers_[q].mutual_row & bit(self_)) == 0;
    }
    if (p.proposed != 0 && (p.proposed & bit(self_)) == 0 && (!p.hears_me || cut_from_it) &&
        beats(p.proposed, proposal)) {
      aside_ = "node " + std::to_string(id) + " proposes " + ids(p.proposed) + " without it";
      return 0;
    }
  }
  return proposal;
}

// A live peer outside our proposal lets us install it: it serves nothing, or it proposes a
// view without us that ours beats (a deaf node's lone view, a node that will step aside).
bool Membership::concedes(unsigned id, std::uint64_t proposal) const noexcept {
  const Peer& q = peers_[id];
  if ((q.installed & bit(id)) == 0) return true;
  return (q.proposed & bit(self_)) == 0 && beats(proposal, q.proposed);
}

bool Membership::weights_acknowledged() const noexcept {
  const std::uint64_t members = view().members;
  for (unsigned m = 1; m <= 64; ++m) {
    if (m == self_ || (members & bit(m)) == 0 || !peers_[m].alive) continue;
    for (unsigned x = 1; x <= 64; ++x) {
      if (x == m || (members & bit(x)) == 0) continue;
      const std::uint64_t since = x == self_ ? weights_seq_ : peers_[x].weights_seq;
      if (peers_[m].heard_seq[x] < since) return false;
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

unsigned Membership::quorum() const noexcept {
  const auto configured = static_cast<unsigned>(std::popcount(configured_));
  if (settings_.split_brain != SplitBrain::kMajority) return 1;
  return configured % 2 == 0 && witness_ ? configured / 2 : configured / 2 + 1;
}

void Membership::set_path_down(const std::string& reason, Nanos now) {
  if (reason == path_down_) return;
  if (reason.empty()) {  // whole again: resume as from a stall (decide())
    guard_since_ = now;
    for (Peer& p : peers_) {
      if (p.alive) p.last_heard = now;
    }
    proposed_since_ = now;
  }
  if (path_down_.empty()) path_down_since_ = now;
  path_down_ = reason;
  changed_ = true;
}

bool Membership::guarded(Nanos now) const noexcept {
  if (now - guard_since_ >= dead_after()) return false;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id != self_ && (configured_ & bit(id)) != 0 && !peers_[id].mutual) return true;
  }
  return false;
}

bool Membership::tick(Nanos now) {
  const bool installed = decide(now);
  settle(now);
  compute_lease(now);
  return installed;
}

bool Membership::decide(Nanos now) {
  if (last_tick_ < 0 || now - last_tick_ > settings_.lease) {
    // Starting, or resuming from a stall (SIGSTOP, a hung control thread): the peers'
    // silence during the stall was ours. Give each a fresh dead_after window rather than
    // declaring everyone dead and serving alone, and install no view with this node until
    // each has answered (the guard).
    guard_since_ = now;
    if (last_tick_ >= 0) {
      for (Peer& p : peers_) {
        if (p.alive) p.last_heard = now;
      }
    }
    proposed_since_ = now;
  }
  last_tick_ = now;
  const std::uint64_t proposal = propose(now);
  if (proposal != proposal_) {
    proposal_ = proposal;
    proposed_since_ = now;
    changed_ = true;
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
  if ((proposal_ & bit(self_)) == 0) {
    install(proposal_, false, now);  // giving up needs nobody's consent
    return true;
  }
  if (guarded(now)) return false;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    const Peer& p = peers_[id];
    if (p.mutual && (p.mutual_row & bit(self_)) == 0) return false;  // its rows lag ours
    if ((proposal_ & bit(id)) != 0) {
      if (!p.mutual || p.proposed != proposal_) return false;  // not agreed (yet)
    } else if (p.alive && !concedes(id, proposal_)) {
      return false;
    }
  }
  install(proposal_, true, now);
  return true;
}

// Nobody can still serve, on this node's word, a bucket the installed view moved: every peer
// has installed it or serves nothing, or has gone a whole lease without our support, or we
// installed it a lease ago (our heartbeats since confirm only this view).
bool Membership::is_clear(Nanos now) const noexcept {
  const InstalledView& v = view();
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    const Peer& q = peers_[id];
    if (q.last_heard < 0 || q.installed == v.members || (q.installed & bit(id)) == 0) continue;
    if (now - q.supported_sent >= settings_.lease) continue;
    return false;
  }
  return true;
}

void Membership::settle(Nanos now) {
  const bool clear = is_clear(now);
  if (clear != clear_) {
    clear_ = clear;
    changed_ = true;  // announce it: the members wait for it to take their gains
  }
  const InstalledView& v = view();
  if (settled_ == v.members) return;
  if ((v.members & bit(self_)) == 0) {  // serving nothing: no gain to wait for
    settled_ = v.members;
    return;
  }
  if (!clear_) return;
  unsigned clear_at = 1;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    const Peer& p = peers_[id];
    const bool confirms = p.alive && p.installed == v.members && p.clear;
    if ((v.members & bit(id)) != 0 && !confirms) return;
    clear_at += confirms ? 1 : 0;
  }
  if (clear_at < quorum()) return;
  settled_ = v.members;
}

void Membership::compute_lease(Nanos now) {
  const InstalledView& v = view();
  if ((v.members & bit(self_)) == 0) {
    // Outside the view the node owns no bucket: what its workers still accept are the
    // connections it keeps through flow handoff (drain, a config change, stepping aside),
    // which no other node takes. Their lease only stops a stalled node: it runs out a lease
    // after the last tick, as the control thread would have renewed it.
    lease_until_ = now + settings_.lease;
    return;
  }
  const std::uint64_t others = v.members & ~bit(self_);
  Nanos until = others == 0 ? kForever : kNever;
  std::array<Nanos, 64> acks{};
  std::size_t count = 0;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (configured_ & bit(id)) == 0) continue;
    // A support holds whatever view the peer had installed then: the peer clears a view that
    // moves our buckets only once we gave them up or a lease after its last support to us
    // (is_clear), so its support is the promise the lease needs.
    const Nanos ack = peers_[id].lease_ack;
    if ((others & bit(id)) != 0 && ack != kNever) until = std::max(until, ack + settings_.lease);
    if (ack != kNever) acks[count++] = ack;
  }
  const unsigned need = quorum() - 1;  // besides this node
  if (need > 0) {
    std::sort(acks.begin(), acks.begin() + static_cast<std::ptrdiff_t>(count), std::greater<>());
    until = std::min(until, count >= need ? acks[need - 1] + settings_.lease : kNever);
  }
  // Alone after a start or a stall: serve once the guard has passed (another node may have
  // formed a view meanwhile that we have not heard of yet).
  if (others == 0 && need == 0 && now - guard_since_ < dead_after()) until = kNever;
  lease_until_ = until;
}

std::string Membership::lease_detail(Nanos now) const {
  std::string out;
  for (unsigned id = 1; id <= 64; ++id) {
    if (id == self_ || (view().members & bit(id)) == 0) continue;
    const Peer& p = peers_[id];
    out += (out.empty() ? "" : "; ") + std::string("node ") + std::to_string(id) + ": ";
    if (p.lease_ack == kNever) {
      out += "no support";
      continue;
    }
    out += std::to_string((now - p.lease_ack) / kMillis) + " ms ago, heard " +
           std::to_string((now - p.last_heard) / kMillis) + " ms ago, acked " +
           std::to_string((now - p.acked_at) / kMillis) + " ms ago";
  }
  return out + "; settled " + ids(settled_);
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
  std::string cause = describe_change(view().members, members);
  if (!agreed && !aside_.empty()) cause += " (" + aside_ + ")";
  history_.push_back({epoch, members, now, agreed, std::move(cause)});
  clear_ = false;
  changed_ = true;  // announce the install: it confirms the view to the others
  while (history_.size() > settings_.history) history_.pop_front();
}

}  // namespace vipfarm::membership
