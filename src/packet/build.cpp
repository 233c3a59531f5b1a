// Frame construction with correct lengths (checksums are left 0: nothing here is sent).
#include "vipfarm/packet/build.hpp"

#include <algorithm>
#include <charconv>

namespace vipfarm::packet {

namespace {

void put16(std::vector<std::byte>& out, std::uint16_t v) {
  out.push_back(std::byte(v >> 8));
  out.push_back(std::byte(v & 0xff));
}
void put32(std::vector<std::byte>& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v >> 16));
  put16(out, static_cast<std::uint16_t>(v));
}
void put64(std::vector<std::byte>& out, std::uint64_t v) {
  put32(out, static_cast<std::uint32_t>(v >> 32));
  put32(out, static_cast<std::uint32_t>(v));
}
void set16(std::vector<std::byte>& out, std::size_t at, std::size_t v) {
  out[at] = std::byte((v >> 8) & 0xff);
  out[at + 1] = std::byte(v & 0xff);
}

struct Endpoint {
  IpAddr address;
  std::uint16_t port = 0;
};

// "addr", "addr:port", "[v6]", "[v6]:port"; `error` set on failure.
Endpoint parse_endpoint(std::string_view text, bool want_port, std::string& error) {
  std::string_view host = text;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || (close + 1 < text.size() && text[close + 1] != ':')) {
      error = "bad endpoint \"" + std::string(text) + "\"";
      return {};
    }
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) port = text.substr(close + 2);
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    host = text.substr(0, text.find(':'));
    port = text.substr(text.find(':') + 1);
  }
  const auto address = IpAddr::parse(host);
  if (!address) {
    error = "not an IP address: \"" + std::string(host) + "\"";
    return {};
  }
  Endpoint out{*address, 0};
  if (!want_port) return out;
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty()) {
    error = "\"" + std::string(text) + "\" needs a port";
  } else if (ec != std::errc{} || end != port.data() + port.size() || value > 65535) {
    error = "bad port in \"" + std::string(text) + "\"";
  } else {
    out.port = static_cast<std::uint16_t>(value);
  }
  return out;
}

}  // namespace

FlowQuery parse_flow_query(std::string_view proto, std::string_view client,
                           std::string_view server) {
  FlowQuery q;
  const bool ports = proto == "tcp" || proto == "udp";
  if (!ports && proto != "icmp") {
    q.error = "PROTO must be tcp, udp or icmp";
    return q;
  }
  const Endpoint from = parse_endpoint(client, ports, q.error);
  if (!q.error.empty()) return q;
  const Endpoint to = parse_endpoint(server, ports, q.error);
  if (!q.error.empty()) return q;
  if (from.address.is_v4() != to.address.is_v4()) {
    q.error = "CLIENT and SERVER must be of one address family";
    return q;
  }
  const bool v6 = !from.address.is_v4();
  q.spec.src = from.address;
  q.spec.dst = to.address;
  q.spec.src_port = from.port;
  q.spec.dst_port = to.port;
  q.spec.proto = proto == "tcp" ? 6 : proto == "udp" ? 17 : (v6 ? 58 : 1);
  q.spec.icmp_type = v6 ? 128 : 8;
  return q;
}

std::vector<std::byte> build_frame(const FrameSpec& spec) {
  std::vector<std::byte> out;
  const bool v6 = !spec.src.is_v4();
  for (const std::uint8_t b : spec.dst_mac) out.push_back(std::byte(b));
  for (int i = 0; i < 6; ++i) out.push_back(std::byte(0x02));
  for (std::size_t i = 0; i < spec.vlans.size(); ++i) {
    put16(out, i == 0 && spec.vlans.size() > 1 ? 0x88A8 : 0x8100);
    put16(out, spec.vlans[i]);
  }
  put16(out, v6 ? 0x86DD : 0x0800);
  const std::size_t l3 = out.size();
  const bool fragmented = spec.frag_offset != 0 || spec.more_fragments;
  const std::uint16_t frag_field =
      static_cast<std::uint16_t>(spec.frag_offset << 3 | (spec.more_fragments ? 1 : 0));
  if (v6) {
    put32(out, 0x60000000U | (spec.flow_label & 0xfffff));
    put16(out, 0);  // payload length, set below
    out.push_back(std::byte(fragmented ? 44 : spec.proto));
    // Neighbour discovery is sent with hop limit 255 (RFC 4861), everything else with 64.
    const bool nd = spec.proto == 58 && spec.icmp_type >= 133 && spec.icmp_type <= 137;
    out.push_back(std::byte(nd ? 255 : 64));
    put64(out, spec.src.hi);
    put64(out, spec.src.lo);
    put64(out, spec.dst.hi);
    put64(out, spec.dst.lo);
    if (fragmented) {
      out.push_back(std::byte(spec.proto));
      out.push_back(std::byte(0));
      put16(out, frag_field);
      put32(out, spec.frag_ident);
    }
  } else {
    out.push_back(std::byte(0x45));
    out.push_back(std::byte(0));
    put16(out, 0);  // total length, set below
    put16(out, spec.ip_id);
    put16(out, static_cast<std::uint16_t>((spec.more_fragments ? 0x2000 : 0) | spec.frag_offset));
    out.push_back(std::byte(64));
    out.push_back(std::byte(spec.proto));
    put16(out, 0);
    put32(out, spec.src.v4_value());
    put32(out, spec.dst.v4_value());
  }
  if (spec.frag_offset == 0) {
    if (spec.proto == 6) {
      put16(out, spec.src_port);
      put16(out, spec.dst_port);
      put32(out, 1);
      put32(out, 0);
      put16(out, 0x5002);  // data offset 5, SYN
      put16(out, 65535);
      put32(out, 0);
    } else if (spec.proto == 17) {
      put16(out, spec.src_port);
      put16(out, spec.dst_port);
      put16(out, static_cast<std::uint16_t>(8 + spec.payload.size()));
      put16(out, 0);
    } else if (spec.proto == 1 || spec.proto == 58) {
      out.push_back(std::byte(spec.icmp_type));
      out.push_back(std::byte(0));
      put16(out, 0);
      put32(out, 0);
    }
  }
  out.insert(out.end(), spec.payload.begin(), spec.payload.end());
  if (v6) {
    set16(out, l3 + 4, out.size() - l3 - 40);
  } else {
    set16(out, l3 + 2, out.size() - l3);
  }
  return out;
}

}  // namespace vipfarm::packet
