// The authenticated witness of split_brain = "majority" (docs/membership.md): a node probes
// `vipfarmd --witness` over UDP with a fresh random nonce, and the witness answers with the
// nonce echoed, both signed with a cluster key. An ICMP echo reply can be forged by anyone
// on the path; an answer here cannot without the key, nor replayed (one outstanding nonce).
//
//   off  size  field (probe and answer alike; all integers big-endian)
//     0     4  magic "VFWP" (probe) or "VFWA" (answer)
//     4     1  version (1)
//     5     1  node id of the prober (1..64)
//     6     2  key id (the answer is signed with the probe's key)
//     8     8  cluster id (membership::cluster_id)
//    16    16  nonce (random per probe; the answer echoes it)
//    32     1  verdict: 0 in a probe, kWitnessReachable in an answer
//    33    32  HMAC-SHA256 of everything before it under the key named by the key id
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vipfarm/membership/wire.hpp"

namespace vipfarm::membership {

inline constexpr std::size_t kWitnessNonceBytes = 16;
inline constexpr std::size_t kWitnessBytes = 33 + kMacBytes;  // probes and answers alike
inline constexpr std::uint8_t kWitnessReachable = 1;          // the only verdict an answer has

using WitnessNonce = std::array<std::uint8_t, kWitnessNonceBytes>;

struct WitnessMessage {
  bool answer = false;  // VFWA, else VFWP
  std::uint8_t node = 0;
  std::uint16_t key_id = 0;
  std::uint64_t cluster = 0;
  WitnessNonce nonce{};
  std::uint8_t verdict = 0;

  friend bool operator==(const WitnessMessage&, const WitnessMessage&) = default;
};

// Signed with key `msg.key_id`; empty when the keyring has no such key or OpenSSL fails.
std::vector<std::uint8_t> encode_witness(const WitnessMessage& msg, const Keyring& keys);

struct WitnessDecoded {
  std::optional<WitnessMessage> message;  // set exactly when accepted
  Reject reason = Reject::kMalformed;
};

// Accepts only a datagram of the expected kind (`answer`), exact size, known magic, version,
// node id and verdict, a known key whose MAC verifies, and this `cluster`.
WitnessDecoded decode_witness(std::span<const std::uint8_t> datagram, const Keyring& keys,
                              std::uint64_t cluster, bool answer);

// The witness side: the signed answer to a valid probe of `cluster`, or why it was refused.
struct WitnessReply {
  std::vector<std::uint8_t> answer;  // non-empty exactly when the probe was valid
  Reject reason = Reject::kMalformed;
};
WitnessReply answer_witness_probe(std::span<const std::uint8_t> probe, const Keyring& keys,
                                  std::uint64_t cluster);

// A random nonce from OpenSSL's CSPRNG; nullopt when it fails (then send nothing).
std::optional<WitnessNonce> random_witness_nonce();

// The prober's state machine, clocked by the caller (monotonic nanoseconds). One probe is
// outstanding at a time: a new probe forgets the previous nonce, so an answer to an older
// probe (a replay, or one that took longer than a period) matches nothing. The witness is
// reachable after one authentic answer and unreachable after `fall` probes in a row that
// got none within `timeout`. It starts unreachable.
class WitnessProber {
 public:
  WitnessProber(std::uint64_t cluster, std::uint8_t node, std::int64_t timeout_ns = 400'000'000,
                unsigned fall = 2) noexcept
      : cluster_(cluster), node_(node), timeout_(timeout_ns), fall_(fall == 0 ? 1 : fall) {}

  // The next probe, signed with `key_id` and carrying `nonce`; an unanswered outstanding
  // probe counts as a miss first. Empty (and nothing outstanding) when signing fails.
  std::vector<std::uint8_t> probe(std::int64_t now, const Keyring& keys, std::uint16_t key_id,
                                  const WitnessNonce& nonce);
  // A datagram from the witness: nullopt when it is the authentic answer to the outstanding
  // probe, in time (the witness is then reachable); else why not (kReplay: not the nonce
  // outstanding, or late).
  std::optional<Reject> receive(std::span<const std::uint8_t> datagram, const Keyring& keys,
                                std::int64_t now);
  // Counts the outstanding probe as missed once its timeout has passed.
  void tick(std::int64_t now) noexcept;

  bool reachable() const noexcept { return reachable_; }

 private:
  void miss() noexcept;

  std::uint64_t cluster_;
  std::uint8_t node_;
  std::int64_t timeout_;
  unsigned fall_;
  bool outstanding_ = false;
  WitnessNonce nonce_{};
  std::int64_t sent_at_ = 0;
  unsigned misses_ = 0;
  bool reachable_ = false;
};

}  // namespace vipfarm::membership
