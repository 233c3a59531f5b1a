// Address value types shared by config and packet: plain values, no sockets.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace vipfarm {

// An IP address as 128 bits; IPv4 a.b.c.d is held as ::ffff:a.b.c.d so one key layout
// serves both families (docs/classifier.md §5).
struct IpAddr {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;

  static constexpr std::uint64_t kV4MappedTag = 0x0000ffff00000000ULL;

  static constexpr IpAddr v4(std::uint32_t addr) noexcept { return {0, kV4MappedTag | addr}; }
  constexpr bool is_v4() const noexcept { return hi == 0 && (lo >> 32) == 0xffff; }
  constexpr std::uint32_t v4_value() const noexcept { return static_cast<std::uint32_t>(lo); }
  friend constexpr bool operator==(const IpAddr&, const IpAddr&) = default;
  friend constexpr auto operator<=>(const IpAddr&, const IpAddr&) = default;

  // Keeps the first `bits` bits of the address within its family (32 for IPv4).
  IpAddr masked(unsigned bits) const noexcept;
  static std::optional<IpAddr> parse(std::string_view text);
  std::string to_string() const;
};

// An address and a port: "192.0.2.1:80" or "[2001:db8::1]:80".
struct Endpoint {
  IpAddr address;
  std::uint16_t port = 0;
};
std::optional<Endpoint> parse_endpoint(std::string_view text);
// "192.0.2.1:9469", "[2001:db8::1]:9469": what parse_endpoint reads.
std::string endpoint_text(const IpAddr& address, std::uint16_t port);

// An address and a prefix length within its family (at most 32 for IPv4, 128 for IPv6).
struct Prefix {
  IpAddr address;
  std::uint8_t length = 0;
  friend constexpr bool operator==(const Prefix&, const Prefix&) = default;
  // Same family and the first `length` bits equal.
  bool contains(const IpAddr& other) const noexcept {
    return other.is_v4() == address.is_v4() && other.masked(length) == address.masked(length);
  }
  bool host_bits_clear() const noexcept { return address.masked(length) == address; }
  std::string to_string() const;  // "10.0.0.0/8"
};
// "10.0.0.0/8", "2001:db8::/32", "192.0.2.7/24"; a bare address is a host prefix (/32, /128).
std::optional<Prefix> parse_prefix(std::string_view text);

using MacAddr = std::array<std::uint8_t, 6>;

std::optional<MacAddr> parse_mac(std::string_view text);
// A MAC as one 48-bit integer (one compare on the packet path), and back. Two loads of
// exactly its 6 bytes (the byte loop compiled to 36 instructions; a gateway's MAC test runs
// it for every IP frame).
inline std::uint64_t mac48(const std::uint8_t* p) noexcept {
  std::uint32_t high;
  std::uint16_t low;
  std::memcpy(&high, p, 4);
  std::memcpy(&low, p + 4, 2);
  if constexpr (std::endian::native == std::endian::little) {
    high = __builtin_bswap32(high);
    low = __builtin_bswap16(low);
  }
  return std::uint64_t{high} << 16 | low;
}
inline std::uint64_t mac48(const MacAddr& mac) noexcept { return mac48(mac.data()); }
inline void put_mac48(std::uint8_t* p, std::uint64_t v) noexcept {
  for (int i = 0; i < 6; ++i) p[i] = static_cast<std::uint8_t>(v >> (40 - 8 * i));
}
inline MacAddr mac_from48(std::uint64_t v) noexcept {
  MacAddr mac;
  put_mac48(mac.data(), v);
  return mac;
}
std::string to_string(const MacAddr& mac);
// The IPv6 link-local address of an interface with this MAC (modified EUI-64, RFC 4291).
IpAddr link_local_of(const MacAddr& mac) noexcept;

}  // namespace vipfarm
