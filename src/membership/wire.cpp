// Heartbeat encoding and authenticated decoding (docs in wire.hpp).
#include "vipfarm/membership/wire.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include <algorithm>

namespace vipfarm::membership {

namespace {

constexpr std::uint8_t kMagic[4] = {'V', 'F', 'H', 'B'};
constexpr std::uint8_t kVersion = 3;

void put16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

void put64(std::vector<std::uint8_t>& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

std::uint16_t get16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}

std::uint64_t get64(const std::uint8_t* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

// nullopt when OpenSSL fails: the caller then refuses (decode) or sends nothing (encode),
// never compares against an all-zero MAC.
std::optional<std::array<std::uint8_t, kMacBytes>> mac_of(std::span<const std::uint8_t> key,
                                                          std::span<const std::uint8_t> data) {
  std::array<std::uint8_t, kMacBytes> out{};
  unsigned size = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(),
           out.data(), &size) == nullptr ||
      size != kMacBytes) {
    return std::nullopt;
  }
  return out;
}

}  // namespace

std::string_view to_string(NodeState state) noexcept {
  static constexpr std::string_view kNames[] = {"STOP", "WAIT", "UP", "DRAIN"};
  return kNames[static_cast<std::size_t>(state)];
}

std::string_view to_string(Reject reason) noexcept {
  static constexpr std::string_view kNames[] = {
      "malformed", "unknown_key", "bad_mac",      "wrong_cluster", "unknown_node", "stale",
      "replay",    "bad_ttl",     "wrong_source", "ahead",         "over_budget"};
  return kNames[static_cast<std::size_t>(reason)];
}

std::string read_key_file(const std::string& path, std::vector<std::uint8_t>& key) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return "key file " + path + ": " + std::strerror(errno);
  struct stat st {};
  std::string error;
  if (::fstat(fd, &st) != 0) {
    error = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    error = "not a regular file";
  } else if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    // Another user owns it: that user could change the key, or read it with chmod.
    error = "owned by uid " + std::to_string(st.st_uid) + "; a cluster key must belong to root" +
            (::geteuid() == 0 ? std::string() : " or uid " + std::to_string(::geteuid())) +
            " (chown root:root)";
  } else if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    error = std::string("mode ") + mode +
            " gives group or others access; a cluster key must be private (chmod 600)";
  } else {
    key.resize(static_cast<std::size_t>(st.st_size));
    const ssize_t got = ::read(fd, key.data(), key.size());
    if (got != static_cast<ssize_t>(key.size())) {
      error = "short read";
    } else if (key.size() < kMinKeyBytes) {
      error = "holds " + std::to_string(key.size()) + " bytes; a cluster key needs at least " +
              std::to_string(kMinKeyBytes) + " (head -c 32 /dev/urandom)";
    }
  }
  ::close(fd);
  if (!error.empty()) {
    key.clear();
    return "key file " + path + ": " + error;
  }
  return {};
}

std::string Keyring::add(std::uint16_t id, std::span<const std::uint8_t> key) {
  if (key.size() < kMinKeyBytes) {
    return "key " + std::to_string(id) + " has " + std::to_string(key.size()) +
           " bytes; at least " + std::to_string(kMinKeyBytes) + " are needed";
  }
  if (find(id) != nullptr) return "key id " + std::to_string(id) + " is given twice";
  static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  std::shared_ptr<EVP_MAC_CTX> context(hmac == nullptr ? nullptr : EVP_MAC_CTX_new(hmac),
                                       EVP_MAC_CTX_free);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                               OSSL_PARAM_construct_end()};
  if (!context || EVP_MAC_init(context.get(), key.data(), key.size(), params) != 1) {
    return "key " + std::to_string(id) + ": OpenSSL cannot set up HMAC-SHA256";
  }
  keys_.push_back({id, std::vector<std::uint8_t>(key.begin(), key.end()), std::move(context)});
  return {};
}

const std::vector<std::uint8_t>* Keyring::find(std::uint16_t id) const noexcept {
  for (const Entry& e : keys_) {
    if (e.id == id) return &e.key;
  }
  return nullptr;
}

bool Keyring::mac(std::uint16_t id, std::span<const std::uint8_t> data,
                  std::array<std::uint8_t, 32>& out) const noexcept {
  for (const Entry& e : keys_) {
    if (e.id != id) continue;
    std::size_t size = 0;
    // A null key re-initialises the context with the key it holds (OpenSSL 3's HMAC).
    return EVP_MAC_init(e.context.get(), nullptr, 0, nullptr) == 1 &&
           EVP_MAC_update(e.context.get(), data.data(), data.size()) == 1 &&
           EVP_MAC_final(e.context.get(), out.data(), &size, out.size()) == 1 && size == out.size();
  }
  return false;
}

std::uint64_t cluster_id(std::string_view cluster_name) {
  std::array<std::uint8_t, EVP_MAX_MD_SIZE> digest{};
  unsigned size = 0;
  EVP_Digest(cluster_name.data(), cluster_name.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return get64(digest.data());
}

std::optional<Fingerprint> fingerprint_from_hex(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Fingerprint out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::size_t release_bit(std::size_t group, std::uint32_t bucket, std::uint32_t buckets) noexcept {
  return (group * buckets + bucket) % kReleaseBits;
}

std::vector<std::uint8_t> release_map(std::span<const std::pair<std::uint16_t, std::uint32_t>> held,
                                      std::size_t groups, std::uint32_t buckets) {
  if (held.empty()) return {};
  const std::size_t bits = std::min(groups * buckets, kReleaseBits);
  std::vector<std::uint8_t> map((bits + 7) / 8, 0);
  for (const auto& [group, bucket] : held) {
    const std::size_t i = release_bit(group, bucket, buckets);
    if (i / 8 < map.size()) map[i / 8] = static_cast<std::uint8_t>(map[i / 8] | 1U << (i % 8));
  }
  return map;
}

bool releases(std::span<const std::uint8_t> map, std::size_t group, std::uint32_t bucket,
              std::uint32_t buckets) noexcept {
  const std::size_t i = release_bit(group, bucket, buckets);
  return i / 8 < map.size() && ((map[i / 8] >> (i % 8)) & 1) != 0;
}

std::vector<std::uint8_t> encode(const Heartbeat& hb, std::span<const std::uint8_t> key) {
  const std::size_t groups = std::min(hb.weights.size(), kMaxWireGroups);
  const std::size_t released = std::min(hb.releasing.size(), kMaxReleaseBytes);
  const std::size_t heard = std::min(hb.heard.size(), kMaxHeard);
  std::vector<std::uint8_t> out;
  out.reserve(kHeaderBytes + 2 * groups + 2 + released + kHeardBytes * heard + kMacBytes);
  out.insert(out.end(), std::begin(kMagic), std::end(kMagic));
  out.push_back(kVersion);
  out.push_back(static_cast<std::uint8_t>(hb.state));
  put16(out, hb.key_id);
  put64(out, hb.cluster);
  out.push_back(hb.node);
  out.push_back(hb.clear ? 1 : 0);  // flags
  out.push_back(static_cast<std::uint8_t>(groups));
  out.push_back(static_cast<std::uint8_t>(heard));
  put64(out, hb.incarnation);
  put64(out, hb.sequence);
  out.insert(out.end(), hb.fingerprint.begin(), hb.fingerprint.end());
  put64(out, hb.epoch);
  put64(out, hb.installed);
  put64(out, hb.proposed);
  out.insert(out.end(), hb.mac.begin(), hb.mac.end());
  put16(out, 0);  // reserved
  for (std::size_t g = 0; g < groups; ++g) put16(out, hb.weights[g]);
  put16(out, static_cast<std::uint16_t>(released));
  out.insert(out.end(), hb.releasing.begin(),
             hb.releasing.begin() + static_cast<std::ptrdiff_t>(released));
  for (std::size_t i = 0; i < heard; ++i) {
    out.push_back(hb.heard[i].node);
    out.push_back(hb.heard[i].flags);
    put64(out, hb.heard[i].sequence);
  }
  const auto mac = mac_of(key, out);
  if (!mac) return {};
  out.insert(out.end(), mac->begin(), mac->end());
  return out;
}

Decoded decode(std::span<const std::uint8_t> d, const Keyring& keys, std::uint64_t cluster,
               std::uint8_t self, std::uint64_t peers) {
  Decoded out;
  if (d.size() < kMinHeartbeatBytes || d.size() > kMaxHeartbeatBytes) return out;
  if (!std::equal(std::begin(kMagic), std::end(kMagic), d.begin()) || d[4] != kVersion) return out;
  const std::size_t groups = d[18];
  if (groups > kMaxWireGroups || d.size() < kHeaderBytes + 2 * groups + 2 + kMacBytes) return out;
  const std::size_t map_at = kHeaderBytes + 2 * groups + 2;
  const std::size_t released = get16(d.data() + map_at - 2);
  const std::size_t heard = d[19];
  const std::size_t heard_at = map_at + released;
  if (released > kMaxReleaseBytes || heard > kMaxHeard ||
      d.size() != heard_at + kHeardBytes * heard + kMacBytes) {
    return out;
  }
  if (d[5] >= kNodeStateCount || d[17] > 1 || get16(d.data() + 98) != 0) return out;
  for (std::size_t i = 0; i < heard; ++i) {  // ascending ids 1..64, known flags only
    const std::uint8_t* e = d.data() + heard_at + kHeardBytes * i;
    if (e[0] == 0 || e[0] > 64 || (i > 0 && e[0] <= e[-static_cast<std::ptrdiff_t>(kHeardBytes)]) ||
        (e[1] & ~Heard::kAllFlags) != 0) {
      return out;
    }
  }
  const std::uint16_t key_id = get16(d.data() + 6);
  if (keys.find(key_id) == nullptr) {
    out.reason = Reject::kUnknownKey;
    return out;
  }
  const std::size_t signed_bytes = d.size() - kMacBytes;
  std::array<std::uint8_t, kMacBytes> mac{};
  if (!keys.mac(key_id, d.first(signed_bytes), mac) ||
      CRYPTO_memcmp(mac.data(), d.data() + signed_bytes, kMacBytes) != 0) {
    out.reason = Reject::kBadMac;
    return out;
  }
  // Authentic from here on.
  if (get64(d.data() + 8) != cluster) {
    out.reason = Reject::kWrongCluster;
    return out;
  }
  const std::uint8_t node = d[16];
  if (node == 0 || node > 64 || node == self || ((peers >> (node - 1)) & 1) == 0) {
    out.reason = Reject::kUnknownNode;
    return out;
  }
  Heartbeat hb;
  hb.state = static_cast<NodeState>(d[5]);
  hb.key_id = get16(d.data() + 6);
  hb.cluster = get64(d.data() + 8);
  hb.node = node;
  hb.incarnation = get64(d.data() + 20);
  hb.sequence = get64(d.data() + 28);
  std::copy_n(d.data() + 36, hb.fingerprint.size(), hb.fingerprint.begin());
  hb.epoch = get64(d.data() + 68);
  hb.installed = get64(d.data() + 76);
  hb.proposed = get64(d.data() + 84);
  std::copy_n(d.data() + 92, hb.mac.size(), hb.mac.begin());
  for (std::size_t g = 0; g < groups; ++g)
    hb.weights.push_back(get16(d.data() + kHeaderBytes + 2 * g));
  hb.releasing.assign(d.data() + map_at, d.data() + map_at + released);
  hb.clear = d[17] == 1;
  for (std::size_t i = 0; i < heard; ++i) {
    const std::uint8_t* e = d.data() + heard_at + kHeardBytes * i;
    hb.heard.push_back({e[0], e[1], get64(e + 2)});
  }
  out.heartbeat = std::move(hb);
  return out;
}

std::optional<Reject> Freshness::check(std::uint8_t node, std::uint64_t incarnation,
                                       std::uint64_t sequence, std::int64_t now) noexcept {
  if (node == 0 || node >= seen_.size()) return Reject::kUnknownNode;
  Seen& s = seen_[node];
  if (s.any && incarnation != s.incarnation && now - s.at < forget_after_) return Reject::kStale;
  if (s.any && incarnation == s.incarnation && sequence <= s.sequence) return Reject::kReplay;
  s.any = true;
  s.incarnation = incarnation;
  s.sequence = sequence;
  s.at = now;
  return std::nullopt;
}

std::optional<Reject> Freshness::admit(const Claim& claim, std::int64_t now) noexcept {
  if (claim.node == 0 || claim.node >= seen_.size()) return Reject::kUnknownNode;
  Seen& s = seen_[claim.node];
  const bool heard = s.any && now - s.at < forget_after_;
  if (heard && claim.incarnation != s.incarnation) return Reject::kStale;
  if (s.any && claim.incarnation == s.incarnation) {
    if (claim.sequence <= s.sequence) return Reject::kReplay;
    if (heard && claim.sequence - s.sequence > kWindow) return Reject::kAhead;
  }
  constexpr std::int64_t kToken = 1'000'000'000;  // budget units per token
  constexpr std::int64_t kFull = kBudgetBurst * kToken;
  const std::int64_t elapsed = std::max<std::int64_t>(now - s.refilled, 0);
  // elapsed ns x tokens/s = token units; capped first so the product cannot overflow.
  const std::int64_t added = std::min(elapsed, kFull / kBudgetPerSecond) * kBudgetPerSecond;
  s.budget = std::min(kFull, s.budget + added);
  s.refilled = now;
  if (s.budget < kToken) return Reject::kOverBudget;
  s.budget -= kToken;
  return std::nullopt;
}

std::optional<Claim> peek(std::span<const std::uint8_t> d) noexcept {
  if (d.size() < kMinHeartbeatBytes || d.size() > kMaxHeartbeatBytes) return std::nullopt;
  if (!std::equal(std::begin(kMagic), std::end(kMagic), d.begin()) || d[4] != kVersion) {
    return std::nullopt;
  }
  return Claim{get64(d.data() + 8), d[16], get64(d.data() + 20), get64(d.data() + 28)};
}

void Freshness::forget(std::uint8_t node) noexcept {
  if (node < seen_.size()) seen_[node] = {};
}

}  // namespace vipfarm::membership
