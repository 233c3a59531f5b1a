// The requesters of directed VIPs one worker has seen (docs/directed.md, "Moving clients"):
// who asked for a VIP by ARP / ND, so that their new ARP owner can send them its MAC after a
// view change. Bounded, and built so that a LAN flood of spoofed requests cannot push the
// real clients out.
//
// Threat. Anyone on the LAN can send ARP requests and neighbour solicitations with any sender
// address and MAC, as many as the link carries; every node sees them all (broadcast). A real
// client asks, then sends traffic to the node that answered (its ARP owner) and to no other:
// only that node can tell it from a forger, and after it dies the node that must move the
// client (the new ARP owner) has seen nothing of it but its request.
//
// Standing of a requester, lowest first (the first displaced):
//   - excess: arrived while new requesters came faster than the admission rate (a burst of
//     `burst`, then `rate_per_s` a second, per table): a flood's share. Expires after
//     `excess_ttl_ms` without a request (then neither kept nor announced). It becomes
//     admitted if it asks again while the rate allows.
//   - admitted: arrived within the admission rate. What every node knows of a real client
//     it does not serve; kept until a newer admitted requester needs its slot.
//   - confirmed: traffic to the VIP from that very address and MAC (a TCP SYN or a datagram)
//     reached this node since it asked, within `confirmed_for_ms` (after which it counts as
//     admitted). Any worker confirms (RSS spreads a client's traffic and its requests over
//     different workers); a forger can confirm only where it also sends traffic, one frame
//     per requester and node.
// Displacement, only when the requester's set (by its MAC) has no free slot: an excess entry
// (least recently seen first) by anyone; an admitted one (least recently seen) only by an
// admitted newcomer; a confirmed one never by a newcomer (refused instead).
// So a flood at any rate, from any addresses, displaces only the free slots and its own
// excess entries once its first `burst` requests are spent, whatever was known before it
// stays, and the admitted flood requests can displace admitted entries only at
// `rate_per_s`. Cap per MAC: one sender MAC holds at most `per_mac` entries (a host with a
// few addresses, each asking for a few VIPs); past it, a new requester from that MAC takes
// the slot of that MAC's least recently seen entry, at its standing (never a confirmed one),
// without spending the rate: a one-MAC flood ends up rotating through `per_mac` slots of one
// set (its first requests take free slots, or displace as any newcomer would). Sets are
// chosen by a keyed hash of the MAC, the key random per node, so a forger cannot aim its MACs
// at a victim's set.
//
// Layout: 128 sets of 8 ways (1024 requesters), arrays by field so that a lookup reads one
// cache line of keys first. Per packet: one hash and a scan of 8 keys; no allocation, no lock.
//
// Threading: one owner (the worker that sees the requests) calls remember(); confirm() may
// run on any thread at once (a compare-and-swap on the entry's confirmation word, tagged with
// the slot's sequence number, so a confirmation never lands on the slot's next requester);
// entries() reads a consistent copy of each slot (sequence lock) from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "vipfarm/common/net.hpp"

namespace vipfarm::flow {

struct RequesterKey {
  IpAddr address;
  std::uint64_t mac48 = 0;  // the requester's Ethernet source (48 bits, never 0)
  std::uint16_t vip = 0;    // index of the VIP it asked for
  friend bool operator==(const RequesterKey&, const RequesterKey&) = default;
};

enum class Standing : std::uint8_t { kExcess, kAdmitted, kConfirmed };

struct RequesterLimits {
  std::uint32_t per_mac = 4;
  std::uint32_t burst = 64;
  std::uint32_t rate_per_s = 4;
  std::uint64_t excess_ttl_ms = 60'000;
  std::uint64_t confirmed_for_ms = 3'600'000;
};

// What remember() did with one request. A new requester is exactly one of admitted, excess,
// capped or refused.
enum class Admission : std::uint8_t {
  kKnown,     // already remembered: its entry refreshed (and admitted if it was excess and the
              // rate allows)
  kAdmitted,  // new, within the admission rate: remembered as admitted
  kExcess,    // new, past the rate: remembered as excess
  kCapped,    // new from a MAC at its cap: in the slot of that MAC's least recently seen
  kRefused,   // new, not remembered: no slot it may take
};
struct Remembered {
  Admission admission = Admission::kRefused;
  bool displaced = false;               // admitted or excess: in the slot of another requester,
  Standing victim = Standing::kExcess;  // ... which had this standing
};

class RequesterTable {
 public:
  static constexpr std::size_t kWays = 8;
  static constexpr std::size_t kSets = 128;
  static constexpr std::size_t kCapacity = kWays * kSets;

  // `seed`: the set hash's key, the same for every table of a node (confirm() looks in each).
  explicit RequesterTable(std::uint64_t seed, RequesterLimits limits = {});

  // Owner only: an ARP request / neighbour solicitation from `key` at `now_ms` (a monotonic
  // millisecond clock). A key with a zero MAC is ignored.
  Remembered remember(const RequesterKey& key, std::uint64_t now_ms) noexcept;

  // Any thread: traffic from `key` reached this node. True when it confirmed the entry (at
  // most once a second per entry); false when `key` is not remembered here or was confirmed
  // within the second.
  bool confirm(const RequesterKey& key, std::uint64_t now_ms) noexcept;

  struct Entry {
    RequesterKey key;
    Standing standing;
    std::uint64_t seen_ms;  // its last request
  };
  // Any thread (allocates): the requesters remembered at `now_ms`, confirmed first, then
  // admitted, then excess, each most recently seen first (the order to announce them in).
  std::vector<Entry> entries(std::uint64_t now_ms) const;

  // The set `mac48` falls in (tests build colliding requesters with it).
  std::size_t set_of(std::uint64_t mac48) const noexcept;
  const RequesterLimits& limits() const noexcept { return limits_; }

 private:
  // Per way. key: MAC << 16 | VIP (0: free). seq: even when stable, odd while the owner
  // writes the slot; bumped only when the slot gets another requester. confirm: seq << 32 |
  // (second of the last confirmation + 1; 0: never).
  struct alignas(64) Set {
    std::array<std::atomic<std::uint64_t>, kWays> key;
    std::array<std::atomic<std::uint64_t>, kWays> hi, lo;
    std::array<std::atomic<std::uint64_t>, kWays> seen;
    std::array<std::atomic<std::uint64_t>, kWays> confirm;
    std::array<std::atomic<std::uint32_t>, kWays> seq;
    std::array<std::atomic<std::uint8_t>, kWays> standing;  // kExcess or kAdmitted as stored
  };

  Standing effective(const Set& s, std::size_t way, std::uint32_t seq,
                     std::uint64_t now_ms) const noexcept;
  bool expired(Standing standing, std::uint64_t seen, std::uint64_t now_ms) const noexcept;
  bool admissible(std::uint64_t now_ms) noexcept;  // refills; true when one admission is left
  void install(Set& s, std::size_t way, const RequesterKey& key, Standing standing,
               std::uint64_t now_ms) noexcept;

  std::uint64_t seed_;
  RequesterLimits limits_;
  std::unique_ptr<Set[]> sets_;
  // The admission rate (owner only): thousandths of an admission, refilled by elapsed time.
  std::uint64_t tokens_;
  std::uint64_t refilled_ms_ = 0;
  bool started_ = false;
};

}  // namespace vipfarm::flow
