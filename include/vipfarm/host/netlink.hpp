// Addresses, link state and neighbour entries of the daemon's TAP interface through raw rtnetlink
// (no libnl, no `ip`): the control path calls these at start-up and shutdown, in its own namespace.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "vipfarm/common/net.hpp"

namespace vipfarm::host::netlink {

// Every call opens its own NETLINK_ROUTE socket in the caller's network namespace, waits
// for the kernel's ack and returns "" on success, else a message naming the interface,
// the address and the kernel's reason.

// Sets IFF_UP. A missing interface is an error.
std::string link_up(const std::string& ifname);

// Sets IFF_NOARP: the kernel neither sends nor answers ARP on the interface.
std::string set_noarp(const std::string& ifname);

// Adds address/prefix_len (IFA_LOCAL and IFA_ADDRESS). no_dad applies to IPv6 only: the
// address is usable at once instead of tentative for a second, and the prefix route is
// still installed. An address that is already there counts as success; `added`, when
// given, says whether it was missing (the kernel created it).
std::string add_address(const std::string& ifname, const IpAddr& address, unsigned prefix_len,
                        bool no_dad, bool* added = nullptr);

// Whether the interface is up (IFF_UP); nullopt when there is no such interface.
std::optional<bool> link_is_up(const std::string& ifname);

// Removes address/prefix_len. An address or interface that is already gone counts as success,
// so shutdown can call it unconditionally.
std::string remove_address(const std::string& ifname, const IpAddr& address, unsigned prefix_len);

// Sets the link-layer address (IFLA_ADDRESS). TAP and dummy links accept this while up;
// other drivers may answer EBUSY unless it is called before link_up.
std::string set_mac(const std::string& ifname, const std::array<std::uint8_t, 6>& mac);

// Makes the kernel's neighbour entry (ARP or IPv6 ND) for `address` on the interface
// PERMANENT with `mac`: the kernel neither ages it nor lets an ARP or ND packet replace it,
// and sends to `mac` without resolving first. An entry already so is left alone; `changed`,
// when given, says whether the entry was missing or different (and was written).
std::string pin_neighbour(const std::string& ifname, const IpAddr& address, const MacAddr& mac,
                          bool* changed = nullptr);

}  // namespace vipfarm::host::netlink
