// libFuzzer target: arbitrary bytes as a pcap file through read_pcap. Every frame it hands
// out lies inside the input, right after its record header, with the length that header
// gives; and it fails exactly when an independent walk of the records says the file is
// unusable, after handing out the records before the bad one.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vipfarm/packet/pcap.hpp"

namespace {

// What a walk of the records finds: where each frame starts, how long it is, and whether
// the file is usable.
struct Walk {
  std::vector<std::size_t> offsets;
  std::vector<std::size_t> lengths;
  bool usable = false;
};

std::uint32_t field(const std::uint8_t* p, bool little_endian) {
  return little_endian ? (std::uint32_t{p[3]} << 24 | std::uint32_t{p[2]} << 16 |
                          std::uint32_t{p[1]} << 8 | p[0])
                       : (std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 |
                          std::uint32_t{p[2]} << 8 | p[3]);
}

Walk walk(const std::uint8_t* data, std::size_t size) {
  Walk w;
  if (size < 24) return w;
  bool little_endian;
  const std::uint32_t le_magic = field(data, true);
  const std::uint32_t be_magic = field(data, false);
  if (le_magic == 0xa1b2c3d4 || le_magic == 0xa1b23c4d) {
    little_endian = true;
  } else if (be_magic == 0xa1b2c3d4 || be_magic == 0xa1b23c4d) {
    little_endian = false;
  } else {
    return w;
  }
  // The top four bits of the link type are FCS flags, not the type.
  if ((field(data + 20, little_endian) & 0x0fffffff) != 1) return w;
  std::size_t header = 24;
  while (header != size) {
    if (size - header < 16) return w;
    const std::size_t length = field(data + header + 8, little_endian);
    if (length > 262144 || size - header - 16 < length) return w;
    w.offsets.push_back(header + 16);
    w.lengths.push_back(length);
    header += 16 + length;
  }
  w.usable = true;
  return w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* begin = reinterpret_cast<const std::byte*>(data);
  std::vector<std::span<const std::byte>> frames;
  const std::string error = vipfarm::packet::read_pcap(
      std::span<const std::byte>(begin, size),
      [&frames](std::span<const std::byte> frame) { frames.push_back(frame); });

  const Walk expected = walk(data, size);
  if (error.empty() != expected.usable) __builtin_trap();
  if (frames.size() != expected.offsets.size()) __builtin_trap();
  std::size_t sum = 0;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const std::span<const std::byte> frame = frames[i];
    // Compared as integers: pointers into different objects are not comparable.
    const auto at = reinterpret_cast<std::uintptr_t>(frame.data());
    const auto base = reinterpret_cast<std::uintptr_t>(begin);
    if (frame.size() != expected.lengths[i]) __builtin_trap();
    if (at < base || at - base != expected.offsets[i]) __builtin_trap();
    if (at - base + frame.size() > size) __builtin_trap();
    sum += 16 + frame.size();
  }
  // A usable file is its header and its records, nothing left over.
  if (error.empty() && (size < 24 || sum != size - 24)) __builtin_trap();
  return 0;
}
