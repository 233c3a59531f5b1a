// The kernel settings vipfarmd reads and writes under /proc/sys/net: per interface (a TAP's
// redirects and router advertisements, an uplink's IPv6) and node-wide (forwarding). They
// apply to the network namespace vipfarmd runs in.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace vipfarm::host {

// net.<family>.conf.<iface>.<key> = value (family "ipv4" or "ipv6"). Returns an error naming
// the file, empty on success.
std::string set_interface_sysctl(std::string_view family, std::string_view iface,
                                 std::string_view key, std::string_view value);

// The integer in /proc/sys/<name> (e.g. "net/ipv4/ip_forward"); none when it cannot be read.
std::optional<long> read_sysctl(std::string_view name);

}  // namespace vipfarm::host
