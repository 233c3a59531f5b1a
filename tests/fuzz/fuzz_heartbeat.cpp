// libFuzzer target: arbitrary bytes as a heartbeat datagram through decode and the replay
// guard (I6). Plain inputs are forgeries: the fuzzer cannot produce a valid HMAC, so
// accepting one is a bug. Inputs starting with 'K' are the signed part of a datagram: the
// target appends the right HMAC, so the checks behind the MAC (layout, cluster, node,
// freshness) are reached too, and whatever decodes must re-encode to the same bytes.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "vipfarm/membership/wire.hpp"

namespace {

using namespace vipfarm::membership;

const std::vector<std::uint8_t> kKey(32, 0x5a);

const Keyring& ring() {
  static const Keyring keys = [] {
    Keyring k;
    if (!k.add(1, kKey).empty()) std::abort();
    return k;
  }();
  return keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Freshness freshness;
  const bool signed_input = size > 0 && data[0] == 'K';
  std::vector<std::uint8_t> datagram;
  if (signed_input) {
    datagram.assign(data + 1, data + size);
    std::uint8_t mac[kMacBytes];
    unsigned mac_size = 0;
    HMAC(EVP_sha256(), kKey.data(), static_cast<int>(kKey.size()), datagram.data(), datagram.size(),
         mac, &mac_size);
    datagram.insert(datagram.end(), mac, mac + mac_size);
  } else {
    datagram.assign(data, data + size);
  }
  const Decoded r = decode(datagram, ring(), cluster_id("fuzz"), 1, ~std::uint64_t{0});
  if (!r.heartbeat) return 0;
  if (!signed_input) std::abort();  // accepted without the key: a forgery got through
  if (encode(*r.heartbeat, kKey) != datagram) std::abort();
  (void)freshness.check(r.heartbeat->node, r.heartbeat->incarnation, r.heartbeat->sequence, 0);
  return 0;
}
