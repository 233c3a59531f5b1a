// Reading classic pcap files (Ethernet link type) from a byte buffer: for the offline
// owner tool and tests. No libpcap: the format is two fixed headers.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string>

namespace vipfarm::packet {

// Calls `on_frame` with the captured bytes of every record. Returns an empty string on
// success, else why the file is unusable (bad magic, link type, truncated record).
std::string read_pcap(std::span<const std::byte> file,
                      const std::function<void(std::span<const std::byte>)>& on_frame);

}  // namespace vipfarm::packet
