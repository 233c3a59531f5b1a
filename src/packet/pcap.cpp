// Classic pcap: a 24-byte global header, then 16-byte record headers, either byte order,
// microsecond or nanosecond magic.
#include "vipfarm/packet/pcap.hpp"

#include <cstdint>
#include <cstring>

namespace vipfarm::packet {

namespace {

std::uint32_t load32(const std::byte* p, bool swap) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return swap ? __builtin_bswap32(v) : v;
}

constexpr std::uint32_t kMagicMicro = 0xa1b2c3d4;
constexpr std::uint32_t kMagicNano = 0xa1b23c4d;
constexpr std::uint32_t kLinkEthernet = 1;
constexpr std::uint32_t kMaxRecord = 262144;

}  // namespace

std::string read_pcap(std::span<const std::byte> file,
                      const std::function<void(std::span<const std::byte>)>& on_frame) {
  if (file.size() < 24) return "too short for a pcap header";
  const std::uint32_t magic = load32(file.data(), false);
  bool swap;
  if (magic == kMagicMicro || magic == kMagicNano) {
    swap = false;
  } else if (magic == __builtin_bswap32(kMagicMicro) || magic == __builtin_bswap32(kMagicNano)) {
    swap = true;
  } else {
    return "not a pcap file (pcapng is not supported)";
  }
  const std::uint32_t link = load32(file.data() + 20, swap) & 0x0fffffff;
  if (link != kLinkEthernet) return "link type " + std::to_string(link) + " is not Ethernet";
  std::size_t off = 24;
  while (off < file.size()) {
    if (off + 16 > file.size()) return "truncated record header at byte " + std::to_string(off);
    const std::uint32_t caplen = load32(file.data() + off + 8, swap);
    if (caplen > kMaxRecord) return "record at byte " + std::to_string(off) + " is too large";
    off += 16;
    if (off + caplen > file.size()) return "truncated record at byte " + std::to_string(off);
    on_frame(file.subspan(off, caplen));
    off += caplen;
  }
  return {};
}

}  // namespace vipfarm::packet
