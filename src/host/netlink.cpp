// rtnetlink requests for the TAP interface: one socket per call, one request per ack, and
// errors turned into messages that name the interface, the address and the kernel's reason.
#include "vipfarm/host/netlink.hpp"

#include <linux/if_addr.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

namespace vipfarm::host::netlink {

namespace {

// The kernel answers a request on the same call stack, so an ack that takes longer than
// this means the socket is wedged; reporting that beats hanging the control thread.
constexpr time_t kReceiveTimeoutSeconds = 2;
// Bounds the reads spent waiting for one ack; strays (other sequence numbers) are rare.
constexpr int kMaxReceives = 64;
// An ack carries at most the request echoed back plus a short extended-ack text.
constexpr std::size_t kReceiveBufferSize = 8192;

std::string errno_text(int err) {
  char buf[128];
  // GNU strerror_r (g++ always defines _GNU_SOURCE): thread-safe, may return a static string.
  return strerror_r(err, buf, sizeof buf);
}

std::string failure(const std::string& what, const std::string& reason) {
  return "netlink: " + what + ": " + reason;
}

// One request under construction: family header and attributes, each at a 4-byte boundary.
class Request {
 public:
  Request(std::uint16_t type, std::uint16_t flags) : type_(type), flags_(flags) {}

  template <class T>
  void put(const T& value) {
    append(&value, sizeof value);
  }

  void put_attr(std::uint16_t type, const void* data, std::size_t len) {
    rtattr attr{};
    attr.rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
    attr.rta_type = type;
    append(&attr, sizeof attr);
    append(data, len);
  }

  // The wire bytes: header with length, flags and `seq` filled in, then the payload.
  std::vector<unsigned char> bytes(std::uint32_t seq) const {
    nlmsghdr header{};
    header.nlmsg_len = static_cast<std::uint32_t>(NLMSG_HDRLEN + payload_.size());
    header.nlmsg_type = type_;
    // Every request asks for an ack so that success is confirmed, not assumed.
    header.nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags_);
    header.nlmsg_seq = seq;
    std::vector<unsigned char> out(NLMSG_HDRLEN);
    std::memcpy(out.data(), &header, sizeof header);
    out.insert(out.end(), payload_.begin(), payload_.end());
    return out;
  }

 private:
  void append(const void* data, std::size_t len) {
    payload_.resize(NLMSG_ALIGN(payload_.size()), 0);
    const auto* p = static_cast<const unsigned char*>(data);
    payload_.insert(payload_.end(), p, p + len);
  }

  std::uint16_t type_;
  std::uint16_t flags_;
  std::vector<unsigned char> payload_;
};

// The kernel's answer to one request: 0 or a positive errno, plus the extended-ack text
// when the kernel gave one (e.g. "Invalid prefix for given prefix length").
struct Ack {
  int error = 0;
  std::string kernel_message;

  std::string reason() const {
    std::string text = errno_text(error);
    if (!kernel_message.empty()) text += " (" + kernel_message + ")";
    return text;
  }
};

// Extended-ack TLVs follow the nlmsgerr; where they start depends on whether the kernel
// echoed the whole request (uncapped) or only its header.
std::string extended_ack_message(const unsigned char* msg, std::size_t len, std::uint16_t flags,
                                 const nlmsgerr& err) {
  if (!(flags & NLM_F_ACK_TLVS)) return {};
  std::size_t offset = NLMSG_HDRLEN;
  offset += (flags & NLM_F_CAPPED) ? NLMSG_ALIGN(sizeof err)
                                   : NLMSG_ALIGN(sizeof err.error + err.msg.nlmsg_len);
  while (offset + sizeof(nlattr) <= len) {
    nlattr attr;
    std::memcpy(&attr, msg + offset, sizeof attr);
    if (attr.nla_len < sizeof attr || offset + attr.nla_len > len) break;
    if ((attr.nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      const char* text = reinterpret_cast<const char*>(msg + offset + NLA_HDRLEN);
      return std::string(text, strnlen(text, attr.nla_len - NLA_HDRLEN));
    }
    offset += NLA_ALIGN(attr.nla_len);
  }
  return {};
}

// Owns one NETLINK_ROUTE socket; requests on it are numbered so an ack is matched to its
// request and never to a stray answer.
class Socket {
 public:
  Socket() = default;
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // 0 or a positive errno.
  int open() {
    fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0) return errno;
    const timeval timeout{kReceiveTimeoutSeconds, 0};
    if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) != 0) return errno;
    // Both are optional refinements (kernel reason text, short acks); older kernels that
    // lack them still give the errno, so failures here are ignored.
    const int one = 1;
    ::setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    ::setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) return errno;
    return 0;
  }

  // `reply`, when given, receives the kernel's answer to a GET request (the first message
  // with the request's sequence number that is not the ack), or stays empty.
  Ack transact(const Request& request, std::vector<unsigned char>* reply = nullptr) {
    const std::uint32_t seq = next_seq_++;
    const std::vector<unsigned char> wire = request.bytes(seq);
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(fd_, wire.data(), wire.size(), 0, reinterpret_cast<const sockaddr*>(&kernel),
                 sizeof kernel) < 0) {
      return {errno, {}};
    }
    alignas(nlmsghdr) unsigned char buf[kReceiveBufferSize];
    for (int i = 0; i < kMaxReceives; ++i) {
      sockaddr_nl from{};
      socklen_t from_len = sizeof from;
      const ssize_t n =
          ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return {ETIMEDOUT, "no ack from the kernel"};
        return {errno, {}};
      }
      if (from.nl_pid != 0) continue;  // only the kernel's answers count
      if (auto ack = find_ack(buf, static_cast<std::size_t>(n), seq, reply)) return *ack;
    }
    return {ETIMEDOUT, "no ack among the kernel's answers"};
  }

 private:
  static std::optional<Ack> find_ack(const unsigned char* buf, std::size_t len, std::uint32_t seq,
                                     std::vector<unsigned char>* reply) {
    std::size_t offset = 0;
    while (offset + NLMSG_HDRLEN <= len) {
      nlmsghdr header;
      std::memcpy(&header, buf + offset, sizeof header);
      if (header.nlmsg_len < NLMSG_HDRLEN || offset + header.nlmsg_len > len) break;
      if (header.nlmsg_seq == seq && header.nlmsg_type == NLMSG_ERROR) {
        if (header.nlmsg_len < NLMSG_HDRLEN + sizeof(nlmsgerr)) return Ack{EBADMSG, {}};
        nlmsgerr err;
        std::memcpy(&err, buf + offset + NLMSG_HDRLEN, sizeof err);
        if (err.error == 0) return Ack{};
        return Ack{-err.error,
                   extended_ack_message(buf + offset, header.nlmsg_len, header.nlmsg_flags, err)};
      }
      if (header.nlmsg_seq == seq && reply != nullptr && reply->empty()) {
        reply->assign(buf + offset, buf + offset + header.nlmsg_len);
      }
      offset += NLMSG_ALIGN(header.nlmsg_len);
    }
    return std::nullopt;
  }

  int fd_ = -1;
  std::uint32_t next_seq_ = 1;
};

// Opens a socket, sends one request and returns its ack (and the kernel's answer to a GET).
Ack send_request(const Request& request, std::vector<unsigned char>* reply = nullptr) {
  Socket socket;
  if (const int err = socket.open(); err != 0) return {err, "cannot open rtnetlink socket"};
  return socket.transact(request, reply);
}

std::string address_text(const IpAddr& address, unsigned prefix_len) {
  return address.to_string() + "/" + std::to_string(prefix_len);
}

// Family and raw network-order bytes of an address, as ifaddrmsg and IFA_* want them.
struct WireAddress {
  unsigned char family;
  std::size_t len;
  unsigned char bytes[16];
};

WireAddress to_wire(const IpAddr& address) {
  WireAddress out{};
  if (address.is_v4()) {
    out.family = AF_INET;
    out.len = 4;
    const std::uint32_t v = address.v4_value();
    for (int i = 0; i < 4; ++i) out.bytes[i] = static_cast<unsigned char>(v >> (24 - 8 * i));
  } else {
    out.family = AF_INET6;
    out.len = 16;
    for (int i = 0; i < 8; ++i) {
      out.bytes[i] = static_cast<unsigned char>(address.hi >> (56 - 8 * i));
      out.bytes[8 + i] = static_cast<unsigned char>(address.lo >> (56 - 8 * i));
    }
  }
  return out;
}

bool prefix_fits(const IpAddr& address, unsigned prefix_len) {
  return prefix_len <= (address.is_v4() ? 32U : 128U);
}

// An RTM_NEWADDR/RTM_DELADDR request for address/prefix_len on interface `index`.
Request address_request(std::uint16_t type, std::uint16_t nl_flags, unsigned index,
                        const IpAddr& address, unsigned prefix_len, unsigned char ifa_flags) {
  const WireAddress wire = to_wire(address);
  ifaddrmsg ifa{};
  ifa.ifa_family = wire.family;
  ifa.ifa_prefixlen = static_cast<unsigned char>(prefix_len);
  ifa.ifa_flags = ifa_flags;
  ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  ifa.ifa_index = index;
  Request request(type, nl_flags);
  request.put(ifa);
  request.put_attr(IFA_LOCAL, wire.bytes, wire.len);
  request.put_attr(IFA_ADDRESS, wire.bytes, wire.len);
  return request;
}

}  // namespace

namespace {

// RTM_NEWLINK changing only the flags in `mask` (ifi_change): every other flag stays.
std::string change_flags(const std::string& ifname, const std::string& what, unsigned flags,
                         unsigned mask) {
  const unsigned index = ::if_nametoindex(ifname.c_str());
  if (index == 0) return failure(what, errno_text(errno));
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = static_cast<int>(index);
  ifi.ifi_flags = flags;
  ifi.ifi_change = mask;
  Request request(RTM_NEWLINK, 0);
  request.put(ifi);
  const Ack ack = send_request(request);
  return ack.error == 0 ? std::string() : failure(what, ack.reason());
}

}  // namespace

std::string link_up(const std::string& ifname) {
  return change_flags(ifname, "bring up " + ifname, IFF_UP, IFF_UP);
}

std::string set_noarp(const std::string& ifname) {
  return change_flags(ifname, "turn ARP off on " + ifname, IFF_NOARP, IFF_NOARP);
}

std::string add_address(const std::string& ifname, const IpAddr& address, unsigned prefix_len,
                        bool no_dad, bool* added) {
  if (added != nullptr) *added = false;
  const std::string what = "add " + address_text(address, prefix_len) + " to " + ifname;
  if (!prefix_fits(address, prefix_len)) return failure(what, "prefix length out of range");
  const unsigned index = ::if_nametoindex(ifname.c_str());
  if (index == 0) return failure(what, errno_text(errno));
  // NODAD: the TAP may have no carrier when the address goes on, and a tentative address
  // cannot be bound. The prefix route stays (IFA_F_NOPREFIXROUTE is deliberately unset).
  const unsigned char flags = (!address.is_v4() && no_dad) ? IFA_F_NODAD : 0;
  const Ack ack = send_request(
      address_request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, index, address, prefix_len, flags));
  // EEXIST: a restart finds the address a previous run left; that is the state we want.
  if (added != nullptr) *added = ack.error == 0;
  if (ack.error == 0 || ack.error == EEXIST) return {};
  return failure(what, ack.reason());
}

std::optional<bool> link_is_up(const std::string& ifname) {
  ifreq request{};
  if (ifname.size() >= sizeof request.ifr_name) return std::nullopt;
  std::memcpy(request.ifr_name, ifname.data(), ifname.size());
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  const int rc = ::ioctl(fd, SIOCGIFFLAGS, &request);
  ::close(fd);
  if (rc != 0) return std::nullopt;
  return (request.ifr_flags & IFF_UP) != 0;
}

std::string remove_address(const std::string& ifname, const IpAddr& address, unsigned prefix_len) {
  const std::string what = "remove " + address_text(address, prefix_len) + " from " + ifname;
  if (!prefix_fits(address, prefix_len)) return failure(what, "prefix length out of range");
  const unsigned index = ::if_nametoindex(ifname.c_str());
  if (index == 0) {
    const int err = errno;
    // The interface is gone (DPDK closed the TAP first), and its addresses with it.
    if (err == ENODEV) return {};
    return failure(what, errno_text(err));
  }
  const Ack ack = send_request(address_request(RTM_DELADDR, 0, index, address, prefix_len, 0));
  if (ack.error == 0 || ack.error == EADDRNOTAVAIL || ack.error == ENODEV) return {};
  return failure(what, ack.reason());
}

std::string set_mac(const std::string& ifname, const std::array<std::uint8_t, 6>& mac) {
  const std::string what = "set MAC " + to_string(mac) + " on " + ifname;
  const unsigned index = ::if_nametoindex(ifname.c_str());
  if (index == 0) return failure(what, errno_text(errno));
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = static_cast<int>(index);
  Request request(RTM_NEWLINK, 0);
  request.put(ifi);
  request.put_attr(IFLA_ADDRESS, mac.data(), mac.size());
  const Ack ack = send_request(request);
  return ack.error == 0 ? std::string() : failure(what, ack.reason());
}

namespace {

// An RTM_*NEIGH request for `address` on interface `index`.
Request neighbour_request(std::uint16_t type, std::uint16_t nl_flags, unsigned index,
                          const IpAddr& address, std::uint16_t state) {
  const WireAddress wire = to_wire(address);
  ndmsg ndm{};
  ndm.ndm_family = wire.family;
  ndm.ndm_ifindex = static_cast<int>(index);
  ndm.ndm_state = state;
  Request request(type, nl_flags);
  request.put(ndm);
  request.put_attr(NDA_DST, wire.bytes, wire.len);
  return request;
}

// Whether an RTM_NEWNEIGH message says PERMANENT with `mac`.
bool permanent_with(const std::vector<unsigned char>& msg, const MacAddr& mac) {
  if (msg.size() < NLMSG_HDRLEN + sizeof(ndmsg)) return false;
  nlmsghdr header;
  std::memcpy(&header, msg.data(), sizeof header);
  if (header.nlmsg_type != RTM_NEWNEIGH) return false;
  ndmsg ndm;
  std::memcpy(&ndm, msg.data() + NLMSG_HDRLEN, sizeof ndm);
  if ((ndm.ndm_state & NUD_PERMANENT) == 0) return false;
  std::size_t offset = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof ndm);
  while (offset + sizeof(rtattr) <= msg.size()) {
    rtattr attr;
    std::memcpy(&attr, msg.data() + offset, sizeof attr);
    if (attr.rta_len < sizeof attr || offset + attr.rta_len > msg.size()) break;
    if (attr.rta_type == NDA_LLADDR) {
      return attr.rta_len == RTA_LENGTH(mac.size()) &&
             std::memcmp(msg.data() + offset + RTA_LENGTH(0), mac.data(), mac.size()) == 0;
    }
    offset += RTA_ALIGN(attr.rta_len);
  }
  return false;
}

}  // namespace

std::string pin_neighbour(const std::string& ifname, const IpAddr& address, const MacAddr& mac,
                          bool* changed) {
  if (changed != nullptr) *changed = false;
  const std::string what = "pin " + address.to_string() + " to " + to_string(mac) + " on " + ifname;
  const unsigned index = ::if_nametoindex(ifname.c_str());
  if (index == 0) return failure(what, errno_text(errno));
  std::vector<unsigned char> entry;
  const Ack found = send_request(neighbour_request(RTM_GETNEIGH, 0, index, address, 0), &entry);
  if (found.error == 0 && permanent_with(entry, mac)) return {};
  if (found.error != 0 && found.error != ENOENT) return failure(what, found.reason());
  Request request =
      neighbour_request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, index, address, NUD_PERMANENT);
  request.put_attr(NDA_LLADDR, mac.data(), mac.size());
  const Ack ack = send_request(request);
  if (ack.error != 0) return failure(what, ack.reason());
  if (changed != nullptr) *changed = true;
  return {};
}

}  // namespace vipfarm::host::netlink
