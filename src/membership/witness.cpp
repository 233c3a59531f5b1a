// The authenticated witness protocol (docs in witness.hpp).
#include "vipfarm/membership/witness.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>

namespace vipfarm::membership {

namespace {

constexpr std::uint8_t kProbeMagic[4] = {'V', 'F', 'W', 'P'};
constexpr std::uint8_t kAnswerMagic[4] = {'V', 'F', 'W', 'A'};
constexpr std::uint8_t kVersion = 1;
constexpr std::size_t kSignedBytes = kWitnessBytes - kMacBytes;

}  // namespace

std::vector<std::uint8_t> encode_witness(const WitnessMessage& msg, const Keyring& keys) {
  std::vector<std::uint8_t> out;
  out.reserve(kWitnessBytes);
  const std::uint8_t* magic = msg.answer ? kAnswerMagic : kProbeMagic;
  out.insert(out.end(), magic, magic + 4);
  out.push_back(kVersion);
  out.push_back(msg.node);
  out.push_back(static_cast<std::uint8_t>(msg.key_id >> 8));
  out.push_back(static_cast<std::uint8_t>(msg.key_id));
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(msg.cluster >> shift));
  out.insert(out.end(), msg.nonce.begin(), msg.nonce.end());
  out.push_back(msg.verdict);
  std::array<std::uint8_t, kMacBytes> mac{};
  if (!keys.mac(msg.key_id, out, mac)) return {};
  out.insert(out.end(), mac.begin(), mac.end());
  return out;
}

WitnessDecoded decode_witness(std::span<const std::uint8_t> d, const Keyring& keys,
                              std::uint64_t cluster, bool answer) {
  WitnessDecoded out;
  if (d.size() != kWitnessBytes) return out;
  const std::uint8_t* magic = answer ? kAnswerMagic : kProbeMagic;
  const std::uint8_t verdict = answer ? kWitnessReachable : 0;
  if (!std::equal(magic, magic + 4, d.begin()) || d[4] != kVersion || d[5] == 0 || d[5] > 64 ||
      d[32] != verdict) {
    return out;
  }
  const auto key_id = static_cast<std::uint16_t>(d[6] << 8 | d[7]);
  if (keys.find(key_id) == nullptr) {
    out.reason = Reject::kUnknownKey;
    return out;
  }
  std::array<std::uint8_t, kMacBytes> mac{};
  if (!keys.mac(key_id, d.first(kSignedBytes), mac) ||
      CRYPTO_memcmp(mac.data(), d.data() + kSignedBytes, kMacBytes) != 0) {
    out.reason = Reject::kBadMac;
    return out;
  }
  // Authentic from here on.
  std::uint64_t id = 0;
  for (std::size_t i = 8; i < 16; ++i) id = id << 8 | d[i];
  if (id != cluster) {
    out.reason = Reject::kWrongCluster;
    return out;
  }
  WitnessMessage msg{answer, d[5], key_id, id, {}, d[32]};
  std::copy_n(d.data() + 16, kWitnessNonceBytes, msg.nonce.begin());
  out.message = msg;
  return out;
}

WitnessReply answer_witness_probe(std::span<const std::uint8_t> probe, const Keyring& keys,
                                  std::uint64_t cluster) {
  WitnessReply out;
  WitnessDecoded decoded = decode_witness(probe, keys, cluster, false);
  out.reason = decoded.reason;
  if (!decoded.message) return out;
  WitnessMessage answer = *decoded.message;
  answer.answer = true;
  answer.verdict = kWitnessReachable;
  out.answer = encode_witness(answer, keys);
  return out;
}

std::optional<WitnessNonce> random_witness_nonce() {
  WitnessNonce nonce{};
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) return std::nullopt;
  return nonce;
}

std::vector<std::uint8_t> WitnessProber::probe(std::int64_t now, const Keyring& keys,
                                               std::uint16_t key_id, const WitnessNonce& nonce) {
  if (outstanding_) miss();
  outstanding_ = false;
  std::vector<std::uint8_t> out = encode_witness({false, node_, key_id, cluster_, nonce, 0}, keys);
  if (out.empty()) {
    miss();  // nothing sent can be answered: as good as a miss
    return out;
  }
  outstanding_ = true;
  nonce_ = nonce;
  sent_at_ = now;
  return out;
}

std::optional<Reject> WitnessProber::receive(std::span<const std::uint8_t> datagram,
                                             const Keyring& keys, std::int64_t now) {
  const WitnessDecoded decoded = decode_witness(datagram, keys, cluster_, true);
  if (!decoded.message) return decoded.reason;
  const WitnessMessage& m = *decoded.message;
  if (m.node != node_) return Reject::kUnknownNode;
  // The nonce compared in constant time, though it is not secret once sent: habit.
  if (!outstanding_ || now - sent_at_ >= timeout_ ||
      CRYPTO_memcmp(m.nonce.data(), nonce_.data(), nonce_.size()) != 0) {
    return Reject::kReplay;
  }
  outstanding_ = false;
  misses_ = 0;
  reachable_ = true;
  return std::nullopt;
}

void WitnessProber::tick(std::int64_t now) noexcept {
  if (outstanding_ && now - sent_at_ >= timeout_) {
    outstanding_ = false;
    miss();
  }
}

void WitnessProber::miss() noexcept {
  if (++misses_ >= fall_) {
    misses_ = fall_;
    reachable_ = false;
  }
}

}  // namespace vipfarm::membership
