// Kernel settings under /proc/sys/net (sysctl.hpp).
#include "vipfarm/host/sysctl.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>

namespace vipfarm::host {

std::string set_interface_sysctl(std::string_view family, std::string_view iface,
                                 std::string_view key, std::string_view value) {
  std::string path = "/proc/sys/net/";
  path.append(family).append("/conf/").append(iface).append("/").append(key);
  std::ofstream out(path);
  if (out) {
    out << value << "\n";
    out.flush();
  }
  if (!out) {
    return "cannot write " + std::string(value) + " to " + path + ": " + std::strerror(errno);
  }
  return {};
}

std::optional<long> read_sysctl(std::string_view name) {
  std::ifstream in("/proc/sys/" + std::string(name));
  long value = 0;
  if (!(in >> value)) return std::nullopt;
  return value;
}

}  // namespace vipfarm::host
