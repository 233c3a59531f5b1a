// Parsing and formatting of address value types.
#include "vipfarm/common/net.hpp"

#include <charconv>

#include <arpa/inet.h>

#include <cstdio>

namespace vipfarm {

namespace {

std::uint64_t load_be64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

std::uint64_t keep_high_bits(std::uint64_t word, unsigned bits) {
  if (bits >= 64) return word;
  if (bits == 0) return 0;
  return word & ~((std::uint64_t{1} << (64 - bits)) - 1);
}

}  // namespace

IpAddr IpAddr::masked(unsigned bits) const noexcept {
  if (is_v4()) {
    const std::uint32_t mask = bits >= 32  ? 0xffffffffU
                               : bits == 0 ? 0
                                           : ~((1U << (32 - bits)) - 1);
    return v4(v4_value() & mask);
  }
  return {keep_high_bits(hi, bits), keep_high_bits(lo, bits > 64 ? bits - 64 : 0)};
}

std::optional<IpAddr> IpAddr::parse(std::string_view text) {
  const std::string s(text);
  unsigned char buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) {
    return v4(std::uint32_t{buf[0]} << 24 | std::uint32_t{buf[1]} << 16 |
              std::uint32_t{buf[2]} << 8 | buf[3]);
  }
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    return IpAddr{load_be64(buf), load_be64(buf + 8)};
  }
  return std::nullopt;
}

std::string IpAddr::to_string() const {
  char out[INET6_ADDRSTRLEN];
  unsigned char buf[16];
  if (is_v4()) {
    const std::uint32_t v = v4_value();
    for (int i = 0; i < 4; ++i) buf[i] = static_cast<unsigned char>(v >> (24 - 8 * i));
    inet_ntop(AF_INET, buf, out, sizeof out);
  } else {
    for (int i = 0; i < 8; ++i) {
      buf[i] = static_cast<unsigned char>(hi >> (56 - 8 * i));
      buf[8 + i] = static_cast<unsigned char>(lo >> (56 - 8 * i));
    }
    inet_ntop(AF_INET6, buf, out, sizeof out);
  }
  return out;
}

std::string endpoint_text(const IpAddr& address, std::uint16_t port) {
  return (address.is_v4() ? address.to_string() : "[" + address.to_string() + "]") + ":" +
         std::to_string(port);
}

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (host.starts_with('[') && host.ends_with(']')) {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return std::nullopt;  // IPv6 needs brackets
  }
  const auto address = IpAddr::parse(host);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (!address || ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    return std::nullopt;
  }
  return Endpoint{*address, static_cast<std::uint16_t>(port)};
}

std::optional<Prefix> parse_prefix(std::string_view text) {
  const auto slash = text.find('/');
  const auto address = IpAddr::parse(text.substr(0, slash));
  if (!address) return std::nullopt;
  const unsigned family_bits = address->is_v4() ? 32 : 128;
  if (slash == std::string_view::npos)
    return Prefix{*address, static_cast<std::uint8_t>(family_bits)};
  const std::string_view digits = text.substr(slash + 1);
  unsigned length = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), length);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
      length > family_bits) {
    return std::nullopt;
  }
  return Prefix{*address, static_cast<std::uint8_t>(length)};
}

std::string Prefix::to_string() const { return address.to_string() + "/" + std::to_string(length); }

std::optional<MacAddr> parse_mac(std::string_view text) {
  MacAddr mac{};
  if (text.size() != 17) return std::nullopt;
  for (std::size_t i = 0; i < 6; ++i) {
    unsigned value = 0;
    for (std::size_t j = 0; j < 2; ++j) {
      const char c = text[i * 3 + j];
      unsigned digit;
      if (c >= '0' && c <= '9') {
        digit = static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        digit = static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        digit = static_cast<unsigned>(c - 'A' + 10);
      } else {
        return std::nullopt;
      }
      value = value * 16 + digit;
    }
    if (i < 5 && text[i * 3 + 2] != ':') return std::nullopt;
    mac[i] = static_cast<std::uint8_t>(value);
  }
  return mac;
}

std::string to_string(const MacAddr& mac) {
  char out[18];
  std::snprintf(out, sizeof out, "%02X:%02X:%02X:%02X:%02X:%02X", mac[0], mac[1], mac[2], mac[3],
                mac[4], mac[5]);
  return out;
}

IpAddr link_local_of(const MacAddr& mac) noexcept {
  const std::uint64_t iid = std::uint64_t{static_cast<std::uint8_t>(mac[0] ^ 0x02)} << 56 |
                            std::uint64_t{mac[1]} << 48 | std::uint64_t{mac[2]} << 40 |
                            std::uint64_t{0xff} << 32 | std::uint64_t{0xfe} << 24 |
                            std::uint64_t{mac[3]} << 16 | std::uint64_t{mac[4]} << 8 | mac[5];
  return {0xfe80000000000000ULL, iid};
}

}  // namespace vipfarm
