// Lab test for host::netlink and host/sysctl against the real kernel, inside a private
// network namespace
// (unshare) with a dummy link (or a TAP where the kernel lacks dummy), so the host's
// interfaces are never touched. Needs root.
#include "vipfarm/host/netlink.hpp"
#include "vipfarm/host/sysctl.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_tun.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace nl = vipfarm::host::netlink;
using vipfarm::IpAddr;

namespace {

int g_passed = 0;
int g_failed = 0;

void check(bool ok, const std::string& what, const std::string& detail = {}) {
  if (ok) {
    ++g_passed;
    return;
  }
  ++g_failed;
  std::printf("FAIL %s%s%s\n", what.c_str(), detail.empty() ? "" : ": ", detail.c_str());
}

// The library call returned "" (success); otherwise its message is the detail.
void check_ok(const std::string& result, const std::string& what) {
  check(result.empty(), what, result);
}

// The library call failed with a message that names every one of `needles`.
void check_error(const std::string& result, const std::string& what,
                 const std::vector<std::string>& needles) {
  bool ok = !result.empty();
  for (const auto& needle : needles) ok = ok && result.find(needle) != std::string::npos;
  check(ok, what, result.empty() ? "succeeded" : result);
  if (ok) std::printf("  (message: %s)\n", result.c_str());
}

// A request builder and ack/dump reader written apart from the library's, so the test
// does not check the library against itself.
class Rtnl {
 public:
  Rtnl() : fd_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)) {}
  ~Rtnl() {
    if (fd_ >= 0) ::close(fd_);
  }
  Rtnl(const Rtnl&) = delete;
  Rtnl& operator=(const Rtnl&) = delete;

  void start(std::uint16_t type, std::uint16_t flags) {
    buf_.assign(NLMSG_HDRLEN, 0);
    auto* h = header();
    h->nlmsg_type = type;
    h->nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | flags);
    h->nlmsg_seq = ++seq_;
  }
  template <class T>
  void put(const T& v) {
    append(&v, sizeof v);
  }
  void attr(std::uint16_t type, const void* data, std::size_t len) {
    rtattr a{static_cast<unsigned short>(RTA_LENGTH(len)), type};
    append(&a, sizeof a);
    append(data, len);
  }
  std::size_t begin_nest(std::uint16_t type) {
    const std::size_t at = NLMSG_ALIGN(buf_.size());
    attr(type, nullptr, 0);
    return at;
  }
  void end_nest(std::size_t at) {
    auto* a = reinterpret_cast<rtattr*>(buf_.data() + at);
    a->rta_len = static_cast<unsigned short>(buf_.size() - at);
  }

  // Sends the request; collects every message of the answer until the ack or NLMSG_DONE.
  // Returns 0 or a positive errno.
  int exchange(std::vector<std::vector<unsigned char>>* replies = nullptr) {
    header()->nlmsg_len = static_cast<std::uint32_t>(buf_.size());
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(fd_, buf_.data(), buf_.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                 sizeof kernel) < 0) {
      return errno;
    }
    alignas(nlmsghdr) unsigned char in[32768];
    for (int reads = 0; reads < 1000; ++reads) {
      const ssize_t n = ::recv(fd_, in, sizeof in, 0);
      if (n < 0) return errno;
      std::size_t off = 0;
      while (off + NLMSG_HDRLEN <= static_cast<std::size_t>(n)) {
        const auto* h = reinterpret_cast<const nlmsghdr*>(in + off);
        if (h->nlmsg_len < NLMSG_HDRLEN || off + h->nlmsg_len > static_cast<std::size_t>(n)) {
          return EBADMSG;
        }
        if (h->nlmsg_seq == seq_) {
          if (h->nlmsg_type == NLMSG_DONE) return 0;
          if (h->nlmsg_type == NLMSG_ERROR) {
            return -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
          }
          if (replies) replies->emplace_back(in + off, in + off + h->nlmsg_len);
        }
        off += NLMSG_ALIGN(h->nlmsg_len);
      }
    }
    return ETIMEDOUT;
  }

  bool ok() const { return fd_ >= 0; }

 private:
  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  void append(const void* data, std::size_t len) {
    buf_.resize(NLMSG_ALIGN(buf_.size()), 0);
    const auto* p = static_cast<const unsigned char*>(data);
    if (len) buf_.insert(buf_.end(), p, p + len);
  }

  int fd_;
  std::uint32_t seq_ = 100;
  std::vector<unsigned char> buf_;
};

int create_dummy(const std::string& name) {
  Rtnl rtnl;
  if (!rtnl.ok()) return errno;
  rtnl.start(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  rtnl.put(ifinfomsg{});
  rtnl.attr(IFLA_IFNAME, name.c_str(), name.size() + 1);
  const std::size_t info = rtnl.begin_nest(IFLA_LINKINFO);
  rtnl.attr(IFLA_INFO_KIND, "dummy", 6);
  rtnl.end_nest(info);
  return rtnl.exchange();
}

// Fallback for kernels built without the dummy driver: a TAP, which is also what the daemon
// configures in production. The descriptor stays open for the process's life so the link has
// a carrier. Returns 0 or a positive errno.
int create_tap(const std::string& name) {
  const int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno;
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name.c_str());
  if (::ioctl(fd, TUNSETIFF, &ifr) != 0) {
    const int err = errno;
    ::close(fd);
    return err;
  }
  return 0;
}

// dummy links are IFF_NOARP, which skips DAD altogether; a TAP is not. Turning ARP on makes
// DAD run here too, so the "not tentative" check can tell no_dad from its absence.
int enable_arp(const std::string& name) {
  Rtnl rtnl;
  rtnl.start(RTM_NEWLINK, NLM_F_ACK);
  ifinfomsg ifi{};
  ifi.ifi_index = static_cast<int>(if_nametoindex(name.c_str()));
  ifi.ifi_flags = 0;
  ifi.ifi_change = IFF_NOARP;
  rtnl.put(ifi);
  return rtnl.exchange();
}

struct AddrRecord {
  IpAddr address;
  unsigned prefix_len = 0;
  std::uint32_t flags = 0;
};

std::vector<AddrRecord> dump_addresses(const std::string& ifname) {
  std::vector<AddrRecord> out;
  const unsigned index = if_nametoindex(ifname.c_str());
  Rtnl rtnl;
  rtnl.start(RTM_GETADDR, NLM_F_DUMP);
  rtnl.put(ifaddrmsg{});
  std::vector<std::vector<unsigned char>> replies;
  if (rtnl.exchange(&replies) != 0) return out;
  for (const auto& msg : replies) {
    const auto* h = reinterpret_cast<const nlmsghdr*>(msg.data());
    if (h->nlmsg_type != RTM_NEWADDR) continue;
    const auto* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(h));
    if (ifa->ifa_index != index) continue;
    AddrRecord rec;
    rec.prefix_len = ifa->ifa_prefixlen;
    rec.flags = ifa->ifa_flags;
    const void* local = nullptr;
    const void* address = nullptr;
    int len = static_cast<int>(IFA_PAYLOAD(h));
    for (const rtattr* a = IFA_RTA(ifa); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      if (a->rta_type == IFA_LOCAL) local = RTA_DATA(a);
      if (a->rta_type == IFA_ADDRESS) address = RTA_DATA(a);
      if (a->rta_type == IFA_FLAGS) std::memcpy(&rec.flags, RTA_DATA(a), sizeof rec.flags);
    }
    const void* raw = local ? local : address;
    if (!raw) continue;
    char text[INET6_ADDRSTRLEN];
    inet_ntop(ifa->ifa_family, raw, text, sizeof text);
    rec.address = *IpAddr::parse(text);
    out.push_back(rec);
  }
  return out;
}

std::optional<AddrRecord> find_address(const std::string& ifname, const IpAddr& address,
                                       unsigned prefix_len) {
  for (const auto& rec : dump_addresses(ifname)) {
    if (rec.address == address && rec.prefix_len == prefix_len) return rec;
  }
  return std::nullopt;
}

struct NeighRecord {
  std::uint16_t state = 0;
  std::vector<unsigned char> lladdr;
};

// The kernel's neighbour entry for `address` on `ifname`, read with a dump (not the GET
// that pin_neighbour itself uses).
std::optional<NeighRecord> find_neighbour(const std::string& ifname, const IpAddr& address) {
  const unsigned index = if_nametoindex(ifname.c_str());
  Rtnl rtnl;
  rtnl.start(RTM_GETNEIGH, NLM_F_DUMP);
  ndmsg ndm{};
  ndm.ndm_family = AF_UNSPEC;
  rtnl.put(ndm);
  std::vector<std::vector<unsigned char>> replies;
  if (rtnl.exchange(&replies) != 0) return std::nullopt;
  for (const auto& msg : replies) {
    const auto* h = reinterpret_cast<const nlmsghdr*>(msg.data());
    if (h->nlmsg_type != RTM_NEWNEIGH) continue;
    const auto* nd = static_cast<const ndmsg*>(NLMSG_DATA(h));
    if (nd->ndm_ifindex != static_cast<int>(index)) continue;
    NeighRecord rec;
    rec.state = nd->ndm_state;
    std::optional<IpAddr> dst;
    int len = static_cast<int>(RTM_PAYLOAD(h));
    for (const rtattr* a = reinterpret_cast<const rtattr*>(
             reinterpret_cast<const unsigned char*>(nd) + NLMSG_ALIGN(sizeof(ndmsg)));
         RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      if (a->rta_type == NDA_DST) {
        char text[INET6_ADDRSTRLEN];
        inet_ntop(nd->ndm_family, RTA_DATA(a), text, sizeof text);
        dst = IpAddr::parse(text);
      }
      if (a->rta_type == NDA_LLADDR) {
        const auto* p = static_cast<const unsigned char*>(RTA_DATA(a));
        rec.lladdr.assign(p, p + RTA_PAYLOAD(a));
      }
    }
    if (dst && *dst == address) return rec;
  }
  return std::nullopt;
}

// A dynamic (STALE) entry, as ARP would leave it.
int add_stale_neighbour(const std::string& ifname, const IpAddr& address,
                        const vipfarm::MacAddr& mac) {
  Rtnl rtnl;
  rtnl.start(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
  ndmsg ndm{};
  ndm.ndm_family = address.is_v4() ? AF_INET : AF_INET6;
  ndm.ndm_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  ndm.ndm_state = NUD_STALE;
  rtnl.put(ndm);
  unsigned char raw[16];
  inet_pton(ndm.ndm_family, address.to_string().c_str(), raw);
  rtnl.attr(NDA_DST, raw, address.is_v4() ? 4 : 16);
  rtnl.attr(NDA_LLADDR, mac.data(), mac.size());
  return rtnl.exchange();
}

bool pinned_to(const std::string& ifname, const IpAddr& address, const vipfarm::MacAddr& mac) {
  const auto rec = find_neighbour(ifname, address);
  return rec && rec->state == NUD_PERMANENT &&
         rec->lladdr == std::vector<unsigned char>(mac.begin(), mac.end());
}

std::optional<ifreq> query_link(const std::string& ifname, unsigned long request) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname.c_str());
  const int rc = ::ioctl(fd, request, &ifr);
  ::close(fd);
  if (rc != 0) return std::nullopt;
  return ifr;
}

bool write_text(const std::string& path, const char* text) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  const bool ok = std::fputs(text, f) >= 0;
  return std::fclose(f) == 0 && ok;
}

IpAddr addr(const char* text) { return *IpAddr::parse(text); }

}  // namespace

int main() {
  if (::unshare(CLONE_NEWNET) != 0) {
    std::printf("netlink: cannot unshare(CLONE_NEWNET): %s (run as root); skipped\n",
                std::strerror(errno));
    return 77;  // meson's "skipped"
  }
  const std::string dev = "vf0";
  const std::string missing = "nosuch0";
  if (const int err = create_dummy(dev); err != 0) {
    std::printf("create dummy %s: %s; using a TAP instead\n", dev.c_str(), std::strerror(err));
    if (const int tap_err = create_tap(dev); tap_err != 0) {
      std::printf("FAIL create TAP %s: %s\n", dev.c_str(), std::strerror(tap_err));
      std::printf("netlink: 0 passed, 1 failed\n");
      return 1;
    }
  }
  check(enable_arp(dev) == 0, "clear IFF_NOARP on " + dev);

  // Link state and MAC.
  const vipfarm::MacAddr mac{0x02, 0x00, 0x5e, 0x10, 0x20, 0x30};
  check_ok(nl::set_mac(dev, mac), "set_mac " + dev);
  const auto hw = query_link(dev, SIOCGIFHWADDR);
  check(hw && std::memcmp(hw->ifr_hwaddr.sa_data, mac.data(), mac.size()) == 0, "MAC reads back");
  check_error(nl::set_mac(dev, {0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}),
              "set_mac multicast MAC is rejected by the kernel",
              {dev, "01:00:5E:00:00:01", std::strerror(EADDRNOTAVAIL)});
  check_error(nl::set_mac(missing, mac), "set_mac missing link", {missing});

  check_ok(nl::link_up(dev), "link_up " + dev);
  const auto flags = query_link(dev, SIOCGIFFLAGS);
  check(flags && (flags->ifr_flags & IFF_UP), "IFF_UP reads back");
  check_ok(nl::link_up(dev), "link_up twice");
  check_error(nl::link_up(missing), "link_up missing link", {missing});
  check(nl::link_is_up(dev) == std::optional<bool>(true), "link_is_up: up");
  check(!nl::link_is_up(missing).has_value(), "link_is_up: a missing link has no state");

  // Addresses.
  struct Case {
    const char* text;
    unsigned prefix_len;
  };
  const Case cases[] = {{"10.1.2.3", 32}, {"10.9.0.1", 16}, {"fd00:1::10", 64}};
  for (const auto& c : cases) {
    const std::string name = std::string(c.text) + "/" + std::to_string(c.prefix_len);
    bool added = false;
    check_ok(nl::add_address(dev, addr(c.text), c.prefix_len, true, &added), "add " + name);
    check(added, "add says it added " + name);
    check_ok(nl::add_address(dev, addr(c.text), c.prefix_len, true, &added), "add again " + name);
    check(!added, "add again says it was there " + name);
    const auto rec = find_address(dev, addr(c.text), c.prefix_len);
    check(rec.has_value(), "visible " + name);
    if (rec && !addr(c.text).is_v4()) {
      check(!(rec->flags & IFA_F_TENTATIVE), "not tentative " + name);
      check(!(rec->flags & IFA_F_NOPREFIXROUTE), "keeps its prefix route " + name);
    }
  }
  // Without no_dad the same kind of address is tentative: the check above can fail.
  check_ok(nl::add_address(dev, addr("fd00:1::20"), 64, false), "add fd00:1::20/64 with DAD");
  const auto dad = find_address(dev, addr("fd00:1::20"), 64);
  check(dad && (dad->flags & IFA_F_TENTATIVE), "control address is tentative under DAD");

  check_error(nl::add_address(missing, addr("10.1.2.3"), 32, true), "add to missing link",
              {missing, "10.1.2.3/32"});
  check_error(nl::add_address(dev, addr("10.1.2.3"), 33, true), "add with prefix 33",
              {dev, "10.1.2.3/33"});
  check_error(nl::add_address(dev, addr("fd00::1"), 129, true), "add with prefix 129",
              {dev, "fd00::1/129"});

  // Neighbour entries pinned (the peers', host_path.hpp): written, left alone when already
  // so, rewritten for a new MAC, and a dynamic entry replaced.
  const vipfarm::MacAddr peer_mac{0x02, 0x77, 0x00, 0x00, 0x00, 0x07};
  const vipfarm::MacAddr new_mac{0x02, 0x77, 0x00, 0x00, 0x01, 0x07};
  for (const char* text : {"10.9.0.7", "fd00:1::7"}) {
    const std::string name = text;
    bool changed = false;
    check_ok(nl::pin_neighbour(dev, addr(text), peer_mac, &changed), "pin " + name);
    check(changed, "pin says it wrote " + name);
    check(pinned_to(dev, addr(text), peer_mac), "PERMANENT with its MAC " + name);
    check_ok(nl::pin_neighbour(dev, addr(text), peer_mac, &changed), "pin again " + name);
    check(!changed, "pin again says it was so " + name);
    check_ok(nl::pin_neighbour(dev, addr(text), new_mac, &changed), "pin a new MAC " + name);
    check(changed && pinned_to(dev, addr(text), new_mac), "the new MAC reads back " + name);
    check(add_stale_neighbour(dev, addr(text), peer_mac) == 0, "made dynamic " + name);
    check(!pinned_to(dev, addr(text), new_mac), "control: the dynamic entry is not pinned " + name);
    check_ok(nl::pin_neighbour(dev, addr(text), new_mac, &changed), "pin over dynamic " + name);
    check(changed && pinned_to(dev, addr(text), new_mac), "pinned again " + name);
  }
  check_error(nl::pin_neighbour(missing, addr("10.9.0.7"), peer_mac), "pin on a missing link",
              {missing, "10.9.0.7"});

  for (const auto& c : cases) {
    const std::string name = std::string(c.text) + "/" + std::to_string(c.prefix_len);
    check_ok(nl::remove_address(dev, addr(c.text), c.prefix_len), "remove " + name);
    check(!find_address(dev, addr(c.text), c.prefix_len), "gone " + name);
    check_ok(nl::remove_address(dev, addr(c.text), c.prefix_len), "remove again " + name);
  }
  check_ok(nl::remove_address(dev, addr("fd00:1::20"), 64), "remove fd00:1::20/64");
  std::string leftovers;
  for (const auto& rec : dump_addresses(dev)) {
    if ((rec.address.hi >> 54) != (0xfe80ULL >> 6)) leftovers += rec.address.to_string() + " ";
  }
  check(leftovers.empty(), "no address but the link-local one is left", leftovers);
  check_ok(nl::remove_address(missing, addr("10.1.2.3"), 32), "remove from missing link");

  // /proc/sys/net (host/sysctl.hpp), this namespace's; read back apart from the library.
  const std::string redirects = "/proc/sys/net/ipv4/conf/" + dev + "/accept_redirects";
  auto read_back = [](const std::string& path) {
    std::ifstream in(path);
    std::string text;
    std::getline(in, text);
    return text;
  };
  for (const char* value : {"0", "1"}) {
    check_ok(vipfarm::host::set_interface_sysctl("ipv4", dev, "accept_redirects", value),
             std::string("sysctl: accept_redirects ") + value);
    check(read_back(redirects) == value, std::string("sysctl: ") + value + " reads back",
          read_back(redirects));
    check(vipfarm::host::read_sysctl("net/ipv4/conf/" + dev + "/accept_redirects") ==
              std::optional<long>(std::stol(value)),
          std::string("sysctl: read_sysctl says ") + value);
  }
  check_error(vipfarm::host::set_interface_sysctl("ipv4", missing, "accept_redirects", "0"),
              "sysctl on a missing link", {missing, "accept_redirects"});
  check(!vipfarm::host::read_sysctl("net/ipv4/conf/" + missing + "/accept_redirects"),
        "sysctl: a missing link's setting reads nothing");

  // A refusal from the kernel itself (not from if_nametoindex): IPv6 switched off on the link.
  if (write_text("/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6", "1")) {
    check_error(nl::add_address(dev, addr("fd00:2::1"), 64, true), "add with IPv6 disabled",
                {dev, "fd00:2::1/64"});
  } else {
    std::printf("skip add with IPv6 disabled: /proc/sys/net not writable\n");
  }

  std::printf("netlink: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
