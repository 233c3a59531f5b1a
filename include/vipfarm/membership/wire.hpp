// The heartbeat wire format (version 3): fixed header, a bounded list of group weights, the
// bounded map of buckets the sender still releases, the list of peers the sender hears, then
// an HMAC-SHA256 over everything before it. Every field has explicit bounds; decoding never
// trusts a field before the MAC over it has been checked.
//
//   off  size  field
//     0     4  magic "VFHB"
//     4     1  version (3; version 2 had no heard list, version 1 no release map)
//     5     1  state (NodeState)
//     6     2  key id (which cluster key signed it)
//     8     8  cluster id (first 8 bytes of SHA-256 of the cluster name)
//    16     1  node id (1..64)
//    17     1  flags: bit 0 "clear": the sender's installed view is clear (membership.hpp)
//    18     1  number of group weights W (0..kMaxWireGroups)
//    19     1  number of heard peers N (0..kMaxHeard)
//    20     8  incarnation (random per boot)
//    28     8  sequence (per incarnation, strictly increasing, from a start derived from the
//              incarnation: an acknowledgement of a previous boot's heartbeat matches nothing)
//    36    32  config fingerprint (SHA-256, config::fingerprint)
//    68     8  installed view epoch
//    76     8  installed view (bit id-1 per member)
//    84     8  proposed view
//    92     6  the sender's uplink MAC (the farm's nodes learn each other's from it)
//    98     2  reserved (0)
//   100   2*W  weight of this node in each group (config order)
// 100+2W    2  R: bytes of the release map (0..kMaxReleaseBytes; 0: releasing nothing)
// 102+2W    R  release map: bit i (byte i/8, bit i%8) set while the sender still serves
//              flows in a bucket it gave up whose release_bit() is i (flow handoff)
// 102+2W+R 10N heard list, ascending node ids: node id (1), flags (1: bit 0 mutual, bit 1
//              supports the peer's lease, bit 2 holds the peer down), the sequence of the
//              newest heartbeat heard from that peer (8)
// ...      32  HMAC-SHA256 of everything before it under the key named by the key id
// All integers big-endian.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct evp_mac_ctx_st;  // OpenSSL's EVP_MAC_CTX

namespace vipfarm::membership {

enum class NodeState : std::uint8_t { kStop, kWait, kUp, kDrain };
inline constexpr std::size_t kNodeStateCount = 4;
std::string_view to_string(NodeState state) noexcept;

inline constexpr std::size_t kMaxWireGroups = 64;
inline constexpr std::size_t kHeaderBytes = 100;
inline constexpr std::size_t kMacBytes = 32;
inline constexpr std::size_t kReleaseBits = 2048;
inline constexpr std::size_t kMaxReleaseBytes = kReleaseBits / 8;
inline constexpr std::size_t kMaxHeard = 63;
inline constexpr std::size_t kHeardBytes = 10;  // one heard-list entry
inline constexpr std::size_t kMinHeartbeatBytes = kHeaderBytes + 2 + kMacBytes;
inline constexpr std::size_t kMaxHeartbeatBytes =
    kHeaderBytes + 2 * kMaxWireGroups + 2 + kMaxReleaseBytes + kHeardBytes * kMaxHeard + kMacBytes;
inline constexpr std::size_t kMinKeyBytes = 32;

// The release map's bit for a bucket: buckets numbered group after group, folded onto
// kReleaseBits bits. Up to 2048 buckets over all groups each has its own bit; beyond, a set
// bit stands for every bucket folded onto it, so a new owner may wait longer, never less.
std::size_t release_bit(std::size_t group, std::uint32_t bucket, std::uint32_t buckets) noexcept;
// The map for these (group, bucket) pairs; empty when there are none. Its size is what the
// farm's groups x buckets need, at most kMaxReleaseBytes.
std::vector<std::uint8_t> release_map(std::span<const std::pair<std::uint16_t, std::uint32_t>> held,
                                      std::size_t groups, std::uint32_t buckets);
// Whether `map` (a peer's) says it still releases (group, bucket).
bool releases(std::span<const std::uint8_t> map, std::size_t group, std::uint32_t bucket,
              std::uint32_t buckets) noexcept;

using Fingerprint = std::array<std::uint8_t, 32>;

// One entry of a heartbeat's heard list: what the sender knows of one peer.
struct Heard {
  static constexpr std::uint8_t kMutual = 1;    // hears it, and is heard by it
  static constexpr std::uint8_t kSupports = 2;  // this heartbeat renews that peer's lease
  static constexpr std::uint8_t kHolds = 4;     // holds it down (flap damping)
  static constexpr std::uint8_t kAllFlags = 7;
  std::uint8_t node = 0;
  std::uint8_t flags = 0;
  std::uint64_t sequence = 0;  // of the newest heartbeat heard from it
  friend bool operator==(const Heard&, const Heard&) = default;
};

struct Heartbeat {
  NodeState state = NodeState::kWait;
  std::uint16_t key_id = 0;
  std::uint64_t cluster = 0;
  std::uint8_t node = 0;
  std::uint64_t incarnation = 0;
  std::uint64_t sequence = 0;
  Fingerprint fingerprint{};
  std::uint64_t epoch = 0;
  std::uint64_t installed = 0;
  std::uint64_t proposed = 0;
  std::array<std::uint8_t, 6> mac{};  // the sender's uplink MAC
  std::vector<std::uint16_t> weights;
  std::vector<std::uint8_t> releasing;  // the release map; empty: nothing released
  bool clear = false;                   // the installed view is clear at the sender
  std::vector<Heard> heard;             // ascending node ids, at most kMaxHeard

  friend bool operator==(const Heartbeat&, const Heartbeat&) = default;
};

// Why a datagram was not taken. Decoding finds the first four; the receiver's per-peer
// state finds stale and replay.
enum class Reject : std::uint8_t {
  kMalformed,     // size, magic, version, reserved bits, bounds
  kUnknownKey,    // no key with that id
  kBadMac,        // the MAC does not verify
  kWrongCluster,  // authentic, but for another cluster
  kUnknownNode,   // authentic, but not a configured peer (or our own id)
  kStale,         // another incarnation of that peer while the current one is still heard
  kReplay,        // a sequence number already seen from that incarnation
  kBadTtl,        // arrived with a TTL / hop limit other than 255: not from a neighbour
  kWrongSource,   // claims a configured peer but comes from another address (checked
                  // before any cryptography)
  kAhead,         // a sequence number further ahead of the peer's heard one than the peer
                  // can have sent meanwhile (checked before any cryptography)
  kOverBudget,    // the peer's budget of HMAC verifications per second is spent
};
inline constexpr std::size_t kRejectCount = 11;
std::string_view to_string(Reject reason) noexcept;

// Cluster keys by id. A key shorter than kMinKeyBytes is refused when added.
// Each key keeps one HMAC context with its key schedule computed once: verifying a
// datagram re-initialises it with the same key (two SHA-256 blocks saved per datagram, no
// allocation), which bounds what a flood of forgeries costs. Not thread-safe: one control
// thread uses it.
class Keyring {
 public:
  // Returns an error message, empty on success.
  std::string add(std::uint16_t id, std::span<const std::uint8_t> key);
  const std::vector<std::uint8_t>* find(std::uint16_t id) const noexcept;
  // HMAC-SHA256 of `data` under key `id` into `out`; false when there is no such key or
  // OpenSSL fails.
  bool mac(std::uint16_t id, std::span<const std::uint8_t> data,
           std::array<std::uint8_t, 32>& out) const noexcept;

 private:
  struct Entry {
    std::uint16_t id;
    std::vector<std::uint8_t> key;
    std::shared_ptr<evp_mac_ctx_st> context;
  };
  std::vector<Entry> keys_;
};

// Reads a cluster key file: its whole content is the key. Refused (error text naming the
// file and the reason) when the file is not a regular file, belongs to another user than
// root or the reader, grants any permission to group or others (chmod 600), or holds
// fewer than kMinKeyBytes bytes.
std::string read_key_file(const std::string& path, std::vector<std::uint8_t>& key);

// The cluster id carried in every heartbeat.
std::uint64_t cluster_id(std::string_view cluster_name);
// A fingerprint from config::fingerprint's hex form; nullopt if it is not 64 hex digits.
std::optional<Fingerprint> fingerprint_from_hex(std::string_view hex);

// Encodes `hb` signed with `key` (hb.key_id names it). At most kMaxWireGroups weights and
// kMaxHeard heard entries (in ascending node order) are sent.
std::vector<std::uint8_t> encode(const Heartbeat& hb, std::span<const std::uint8_t> key);

struct Decoded {
  std::optional<Heartbeat> heartbeat;  // set exactly when accepted
  Reject reason = Reject::kMalformed;
};

// Checks size, layout, key, MAC, cluster and that the sender is a configured peer other
// than `self` (bit id-1 of `peers`).
Decoded decode(std::span<const std::uint8_t> datagram, const Keyring& keys, std::uint64_t cluster,
               std::uint8_t self, std::uint64_t peers);

// What a datagram claims to be, read from its header before anything in it is verified:
// set when size, magic and version are those of a heartbeat. It only lets a receiver refuse
// forgeries before any cryptography; nothing in it is trusted.
struct Claim {
  std::uint64_t cluster = 0;
  std::uint8_t node = 0;
  std::uint64_t incarnation = 0;
  std::uint64_t sequence = 0;
};
std::optional<Claim> peek(std::span<const std::uint8_t> datagram) noexcept;

// Replay protection per peer. Incarnations are random, not ordered: a heartbeat is fresh if
// it comes from the incarnation last accepted with a larger sequence number, or from another
// incarnation once the last accepted one has been silent for `forget_after` (the peer is
// dead by then: its replay state is forgotten, as BFD resets its session). A restarted node
// is so heard again after its previous boot was declared dead, whatever its clock says; a
// replayed datagram of a previous boot is refused while the current boot is heard. Only
// authenticated heartbeats reach it, so a forger cannot advance it.
class Freshness {
 public:
  explicit Freshness(std::int64_t forget_after_ns = 800'000'000) : forget_after_(forget_after_ns) {}
  void set_forget_after(std::int64_t ns) noexcept { forget_after_ = ns; }
  // nullopt: fresh, and now the newest seen from `node`; else kStale or kReplay. `now` is a
  // monotonic time in nanoseconds.
  std::optional<Reject> check(std::uint8_t node, std::uint64_t incarnation, std::uint64_t sequence,
                              std::int64_t now) noexcept;
  // Before any cryptography, for a datagram's unverified claim: what check() would refuse
  // (stale, replay), a sequence more than kWindow ahead of the current incarnation's while
  // it is heard (ahead: a live peer sends far fewer in forget_after), and the peer's budget
  // of verifications (over_budget: kBudgetPerSecond, bursts of kBudgetBurst), which it
  // spends. A flood that does not know a peer's live sequence so costs no HMAC; one that
  // does (it sees the farm's heartbeats) costs at most the budget, and may crowd the peer's
  // own heartbeats out of it, as such an attacker could drop them.
  static constexpr std::uint64_t kWindow = 1 << 16;
  static constexpr std::int64_t kBudgetPerSecond = 2000;
  static constexpr std::int64_t kBudgetBurst = 256;
  std::optional<Reject> admit(const Claim& claim, std::int64_t now) noexcept;
  // Forgets a peer (its configuration entry went away).
  void forget(std::uint8_t node) noexcept;

 private:
  struct Seen {
    bool any = false;
    std::uint64_t incarnation = 0;
    std::uint64_t sequence = 0;
    std::int64_t at = 0;  // when it was accepted
    // The verification budget: tokens (scaled by 1e9 per token) as of `refilled`.
    std::int64_t budget = kBudgetBurst * 1'000'000'000;
    std::int64_t refilled = 0;
  };
  std::int64_t forget_after_;
  std::array<Seen, 65> seen_{};  // by node id 1..64
};

}  // namespace vipfarm::membership
