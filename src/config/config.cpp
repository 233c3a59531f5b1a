// TOML into a validated Config: every problem is collected as file:line:col: key: reason.
#include "vipfarm/config/config.hpp"

#include <openssl/evp.h>
#include <pwd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <tuple>

#include "vipfarm/config/schema.hpp"

namespace vipfarm::config {

namespace {

// Walks the TOML tree, records every error with its position, and reads typed values.
class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

  std::vector<Error>& errors() { return errors_; }

  void error(const toml::source_region& where, std::string key, std::string message) {
    errors_.push_back(
        {file_, where.begin.line, where.begin.column, std::move(key), std::move(message)});
  }

  // Flags keys of `table` that the schema does not know under `schema_prefix`.
  void check_unknown(const toml::table& table, const std::string& schema_prefix,
                     const std::string& path) {
    for (const auto& [key, node] : table) {
      const std::string spath = join(schema_prefix, key.str());
      if (find_key(spath) == nullptr) {
        // Name it as TOML would write it: an empty or unusual key in quotes.
        const std::string_view k = key.str();
        const bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
        });
        error(key.source(), join(path, bare ? std::string(k) : "\"" + std::string(k) + "\""),
              "unknown key");
      }
    }
  }

  std::optional<std::int64_t> integer(const toml::table& table, std::string_view name,
                                      const std::string& path, std::int64_t lo, std::int64_t hi,
                                      std::optional<std::int64_t> fallback) {
    const toml::node* node = table.get(name);
    const std::string key = join(path, name);
    if (node == nullptr) {
      if (!fallback) error(table.source(), key, "missing required key");
      return fallback;
    }
    const auto value = node->value_exact<std::int64_t>();
    if (!value) {
      error(node->source(), key, "expected an integer");
      return std::nullopt;
    }
    if (*value < lo || *value > hi) {
      error(node->source(), key,
            "out of range: " + std::to_string(*value) + " not in " + std::to_string(lo) + ".." +
                std::to_string(hi));
      return std::nullopt;
    }
    return value;
  }

  // An optional unsigned integer in lo..hi; `fallback` when absent or invalid (reported).
  std::uint32_t u32(const toml::table& table, std::string_view name, const std::string& path,
                    std::int64_t lo, std::int64_t hi, std::uint32_t fallback) {
    return static_cast<std::uint32_t>(
        integer(table, name, path, lo, hi, fallback).value_or(fallback));
  }

  std::optional<std::string> string(const toml::table& table, std::string_view name,
                                    const std::string& path,
                                    std::optional<std::string_view> fallback) {
    const toml::node* node = table.get(name);
    const std::string key = join(path, name);
    if (node == nullptr) {
      if (!fallback) error(table.source(), key, "missing required key");
      return fallback ? std::optional<std::string>(*fallback) : std::nullopt;
    }
    const auto value = node->value_exact<std::string>();
    if (!value) {
      error(node->source(), key, "expected a string");
      return std::nullopt;
    }
    return value;
  }

  // An optional boolean; `fallback` when absent or invalid (reported).
  bool boolean(const toml::table& table, std::string_view name, const std::string& path,
               bool fallback) {
    const toml::node* node = table.get(name);
    if (node == nullptr) return fallback;
    if (const auto value = node->value_exact<bool>()) return *value;
    error(node->source(), join(path, name), "expected true or false");
    return fallback;
  }

  // A string that must be one of `choices`; returns its index.
  template <std::size_t N>
  std::optional<std::size_t> choice(const toml::table& table, std::string_view name,
                                    const std::string& path,
                                    const std::array<std::string_view, N>& choices,
                                    std::size_t fallback) {
    const auto text = string(table, name, path, choices[fallback]);
    if (!text) return std::nullopt;
    for (std::size_t i = 0; i < N; ++i) {
      if (*text == choices[i]) return i;
    }
    std::string allowed;
    for (const auto c : choices) allowed += (allowed.empty() ? "" : ", ") + std::string(c);
    error(table.get(name)->source(), join(path, name),
          "unknown value \"" + *text + "\" (expected one of: " + allowed + ")");
    return std::nullopt;
  }

  // An optional array of tables; a wrong type is an error.
  const toml::array* table_array(const toml::table& table, std::string_view name,
                                 const std::string& path, bool required) {
    const toml::node* node = table.get(name);
    if (node == nullptr) {
      if (required) error(table.source(), join(path, name), "missing required key");
      return nullptr;
    }
    if (!node->is_array_of_tables() || node->as_array()->empty()) {
      error(node->source(), join(path, name),
            "expected an array of tables ([[" + join(path, name) + "]])");
      return nullptr;
    }
    return node->as_array();
  }

  const toml::table* table(const toml::table& parent, std::string_view name) {
    const toml::node* node = parent.get(name);
    if (node == nullptr) {
      error(parent.source(), std::string(name),
            "missing required table [" + std::string(name) + "]");
      return nullptr;
    }
    if (!node->is_table()) {
      error(node->source(), std::string(name), "expected a table");
      return nullptr;
    }
    return node->as_table();
  }

  // An optional table: nullptr when absent, and when it is not a table (reported).
  const toml::table* optional_table(const toml::table& parent, std::string_view name) {
    const toml::node* node = parent.get(name);
    if (node == nullptr) return nullptr;
    if (!node->is_table()) {
      error(node->source(), std::string(name), "expected a table");
      return nullptr;
    }
    return node->as_table();
  }

  static std::string join(std::string_view prefix, std::string_view name) {
    return prefix.empty() ? std::string(name) : std::string(prefix) + "." + std::string(name);
  }

 private:
  std::string file_;
  std::vector<Error> errors_;
};

std::optional<std::uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// "80", "8000-8099", comma-separated lists of them. Returns false on a bad item.
bool parse_port_items(std::string_view text, std::vector<PortRange>& out, std::string& bad) {
  while (true) {
    const auto comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    const auto dash = item.find('-');
    const auto first = parse_port(trim(item.substr(0, dash)));
    const auto last =
        dash == std::string_view::npos ? first : parse_port(trim(item.substr(dash + 1)));
    if (!first || !last || *first > *last) {
      bad = std::string(item);
      return false;
    }
    out.push_back({*first, *last});
    if (comma == std::string_view::npos) return true;
    text.remove_prefix(comma + 1);
  }
}

// Sorted, merged ranges: the canonical form (fingerprint, fast lookup).
std::vector<PortRange> normalise(std::vector<PortRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
  std::vector<PortRange> out;
  for (const PortRange& r : ranges) {
    if (!out.empty() && r.first <= static_cast<unsigned>(out.back().last) + 1) {
      out.back().last = std::max(out.back().last, r.last);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

struct PortsResult {
  bool ok = true;
  std::vector<PortRange> ranges;  // empty: "*"
};

PortsResult read_ports(Loader& loader, const toml::table& table, const std::string& path) {
  const toml::node* node = table.get("ports");
  const std::string key = Loader::join(path, "ports");
  PortsResult result;
  if (node == nullptr) return result;
  std::vector<PortRange> ranges;
  bool any = false;
  auto take = [&](const toml::node& item) {
    std::string bad;
    if (const auto number = item.value_exact<std::int64_t>()) {
      if (*number < 0 || *number > 65535) {
        loader.error(item.source(), key, "port out of range: " + std::to_string(*number));
        result.ok = false;
      } else {
        const auto port = static_cast<std::uint16_t>(*number);
        ranges.push_back({port, port});
      }
    } else if (const auto text = item.value_exact<std::string>()) {
      if (trim(*text) == "*") {
        any = true;
      } else if (!parse_port_items(*text, ranges, bad)) {
        loader.error(item.source(), key,
                     "bad port or range \"" + bad + "\" (expected 80, 8000-8099, lists, or *)");
        result.ok = false;
      }
    } else {
      loader.error(item.source(), key, "expected a port number, a string of ports, or *");
      result.ok = false;
    }
  };
  if (const toml::array* list = node->as_array()) {
    if (list->empty()) {
      loader.error(node->source(), key, "empty port list (use \"*\" for every port)");
      result.ok = false;
    }
    for (const toml::node& item : *list) take(item);
  } else {
    take(*node);
  }
  if (!any) result.ranges = normalise(std::move(ranges));
  return result;
}

// Prefixes as "10.0.0.0/8, 2001:db8::/32" or a list of such strings; "*" alone: every address
// (an empty list). `hosts`: addresses with their prefix length ("192.0.2.11/24"), host bits
// expected; otherwise host bits must be clear. nullopt when the key is absent.
std::optional<std::vector<Prefix>> read_prefixes(Loader& loader, const toml::table& table,
                                                 std::string_view name, const std::string& path,
                                                 bool hosts) {
  const toml::node* node = table.get(name);
  if (node == nullptr) return std::nullopt;
  const std::string key = Loader::join(path, name);
  std::vector<Prefix> out;
  bool any = false;
  auto take = [&](const toml::node& item) {
    const auto text = item.value_exact<std::string>();
    if (!text) {
      loader.error(item.source(), key, "expected a string of prefixes or a list of them");
      return;
    }
    std::string_view rest = *text;
    while (true) {
      const auto comma = rest.find(',');
      const std::string_view part = trim(rest.substr(0, comma));
      if (part == "*" && !hosts) {
        any = true;
      } else if (const auto prefix = parse_prefix(part); !prefix) {
        loader.error(item.source(), key,
                     "\"" + std::string(part) + "\" is not " +
                         (hosts ? "address/prefix (192.0.2.11/24, 2001:db8::11/64)"
                                : "a prefix (10.0.0.0/8, 2001:db8::/32) or *"));
      } else if (!hosts && !prefix->host_bits_clear()) {
        loader.error(
            item.source(), key,
            "\"" + std::string(part) + "\" has host bits set (did you mean " +
                Prefix{prefix->address.masked(prefix->length), prefix->length}.to_string() + "?)");
      } else {
        out.push_back(*prefix);
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  };
  if (const toml::array* list = node->as_array()) {
    if (list->empty()) loader.error(node->source(), key, "empty list");
    for (const toml::node& item : *list) take(item);
  } else {
    take(*node);
  }
  if (any) out.clear();
  return out;
}

std::string ifname_error(const std::string& name) {
  return "\"" + name + "\" is not a valid interface name (1-15 characters, no / : or space)";
}

constexpr std::array<std::string_view, 2> kPolls = {"busy", "adaptive"};
constexpr std::array<std::string_view, 2> kUnmatched = {"drop", "pass"};
constexpr std::array<std::string_view, 2> kL2Modes = {"flood", "directed"};
constexpr std::array<std::string_view, 2> kIcmpEcho = {"one", "none"};
constexpr std::array<std::string_view, 2> kSplitBrain = {"serve", "majority"};
constexpr std::array<std::string_view, 4> kCheckerKinds = {"tcp", "ping", "interface", "custom"};
constexpr std::array<std::string_view, 2> kModes = {"balance", "failover"};
constexpr std::array<std::string_view, 4> kProtos = {"any", "tcp", "udp", "icmp"};
constexpr std::array<std::string_view, 9> kKeys = {"on_addr",     "on_port",    "on_ipid",
                                                   "five_tuple",  "client_net", "on_dst_addr",
                                                   "on_dst_port", "symmetric",  "symmetric_port"};

void load_cluster(Loader& loader, const toml::table& root, Config& config) {
  const toml::table* cluster = loader.table(root, "cluster");
  if (cluster == nullptr) return;
  loader.check_unknown(*cluster, "cluster", "cluster");
  if (auto name = loader.string(*cluster, "name", "cluster", std::nullopt)) {
    if (name->empty())
      loader.error(cluster->get("name")->source(), "cluster.name", "must not be empty");
    config.cluster_name = std::move(*name);
  }
  if (auto buckets =
          loader.integer(*cluster, "buckets", "cluster", 2, kMaxBuckets, kDefaultBuckets)) {
    if (!std::has_single_bit(static_cast<std::uint64_t>(*buckets))) {
      loader.error(cluster->get("buckets")->source(), "cluster.buckets",
                   "must be a power of two, got " + std::to_string(*buckets));
    }
    config.buckets = static_cast<std::uint32_t>(*buckets);
  }
  if (auto seed = loader.integer(*cluster, "seed", "cluster", 0, INT64_MAX, 0)) {
    config.seed = static_cast<std::uint64_t>(*seed);
  }
  if (auto u = loader.choice(*cluster, "unmatched", "cluster", kUnmatched, 0)) {
    config.unmatched = static_cast<Unmatched>(*u);
  }
  if (auto e = loader.choice(*cluster, "icmp_echo", "cluster", kIcmpEcho, 0)) {
    config.icmp_echo = static_cast<IcmpEcho>(*e);
  }
  const toml::array* nodes = loader.table_array(*cluster, "node", "cluster", true);
  if (nodes == nullptr) return;
  if (nodes->size() > kMaxNodes) {
    loader.error(cluster->get("node")->source(), "cluster.node",
                 "at most " + std::to_string(kMaxNodes) + " nodes");
  }
  std::set<unsigned> ids;
  std::set<std::string> names;
  std::set<IpAddr> addresses;
  for (std::size_t i = 0; i < nodes->size(); ++i) {
    const toml::table& entry = *(*nodes)[i].as_table();
    const std::string path = "cluster.node[" + std::to_string(i) + "]";
    loader.check_unknown(entry, "cluster.node[]", path);
    const auto id = loader.integer(entry, "id", path, 1, kMaxNodes, std::nullopt);
    const auto name = loader.string(entry, "name", path, std::nullopt);
    const auto address = loader.string(entry, "address", path, std::nullopt);
    ClusterNode node{kNoNode, name.value_or(""), {}, std::nullopt};
    if (const auto mac_text = loader.string(entry, "mac", path, "")) {
      if (!mac_text->empty()) {
        const auto mac = parse_mac(*mac_text);
        if (!mac || ((*mac)[0] & 1) != 0) {
          loader.error(entry.get("mac")->source(), path + ".mac",
                       "not a unicast MAC address: \"" + *mac_text + "\"");
        } else {
          node.mac = *mac;
        }
      }
    }
    if (id) {
      node.id = NodeId{static_cast<std::uint8_t>(*id)};
      if (!ids.insert(static_cast<unsigned>(*id)).second) {
        loader.error(entry.get("id")->source(), path + ".id",
                     "duplicate node id " + std::to_string(*id));
      }
    }
    if (name) {
      if (name->empty()) {
        loader.error(entry.get("name")->source(), path + ".name", "must not be empty");
      } else if (!names.insert(*name).second) {
        loader.error(entry.get("name")->source(), path + ".name",
                     "duplicate node name \"" + *name + "\"");
      }
    }
    if (address) {
      if (const auto ip = IpAddr::parse(*address)) {
        node.address = *ip;
        if (!addresses.insert(*ip).second) {
          loader.error(entry.get("address")->source(), path + ".address",
                       "duplicate node address " + *address);
        }
      } else {
        loader.error(entry.get("address")->source(), path + ".address",
                     "not an IPv4 or IPv6 address: \"" + *address + "\"");
      }
    }
    config.nodes.push_back(std::move(node));
  }
}

void load_node(Loader& loader, const toml::table& root, Config& config) {
  const toml::table* node = loader.table(root, "node");
  if (node == nullptr) return;
  loader.check_unknown(*node, "node", "node");
  const auto id = loader.integer(*node, "id", "node", 1, kMaxNodes, std::nullopt);
  const auto name = loader.string(*node, "name", "node", "");
  if (!id) return;
  config.node_id = NodeId{static_cast<std::uint8_t>(*id)};
  const ClusterNode* self = config.find_node(config.node_id);
  if (self == nullptr) {
    if (!config.nodes.empty()) {
      loader.error(node->get("id")->source(), "node.id",
                   "node " + std::to_string(*id) + " is not listed in [[cluster.node]]");
    }
    return;
  }
  config.node_name = name && !name->empty() ? *name : self->name;
  if (name && !name->empty() && *name != self->name) {
    loader.error(
        node->get("name")->source(), "node.name",
        "\"" + *name + "\" differs from the cluster.node entry's name \"" + self->name + "\"");
  }
}

void load_vips(Loader& loader, const toml::table& root, Config& config) {
  const toml::array* vips = loader.table_array(root, "vip", "", true);
  if (vips == nullptr) return;
  std::set<IpAddr> addresses;
  std::set<MacAddr> macs;
  for (std::size_t i = 0; i < vips->size(); ++i) {
    const toml::table& entry = *(*vips)[i].as_table();
    const std::string path = "vip[" + std::to_string(i) + "]";
    loader.check_unknown(entry, "vip[]", path);
    Vip vip{};
    const auto address = loader.string(entry, "address", path, std::nullopt);
    if (address) {
      if (const auto ip = IpAddr::parse(*address)) {
        vip.address = *ip;
        if (!addresses.insert(*ip).second) {
          loader.error(entry.get("address")->source(), path + ".address",
                       "duplicate VIP " + *address);
        }
        if (std::any_of(config.nodes.begin(), config.nodes.end(),
                        [&](const ClusterNode& n) { return n.address == *ip; })) {
          loader.error(entry.get("address")->source(), path + ".address",
                       *address + " is also a node address");
        }
      } else {
        loader.error(entry.get("address")->source(), path + ".address",
                     "not an IPv4 or IPv6 address: \"" + *address + "\"");
      }
    }
    vip.mac = default_vip_mac(vip.address);
    if (const auto mac_text = loader.string(entry, "mac", path, "")) {
      if (!mac_text->empty()) {
        const auto mac = parse_mac(*mac_text);
        if (!mac) {
          loader.error(entry.get("mac")->source(), path + ".mac",
                       "not a MAC address (expected 5A:FE:0A:00:00:32): \"" + *mac_text + "\"");
        } else if (((*mac)[0] & 1) != 0) {
          loader.error(entry.get("mac")->source(), path + ".mac",
                       "multicast MAC " + *mac_text + ": a virtual MAC must be unicast");
        } else {
          vip.mac = *mac;
        }
      }
    }
    if (address && !macs.insert(vip.mac).second) {
      loader.error(entry.source(), path + ".mac",
                   "duplicate virtual MAC " + vipfarm::to_string(vip.mac));
    }
    if (const auto mode = loader.choice(entry, "l2_mode", path, kL2Modes, 0)) {
      vip.l2_mode = static_cast<L2Mode>(*mode);
    }
    vip.gateway = loader.boolean(entry, "gateway", path, false);
    if (vip.gateway && vip.l2_mode == L2Mode::kDirected) {
      loader.error(entry.get("l2_mode")->source(), path + ".l2_mode",
                   "a gateway VIP is flood only: its virtual MAC is the clients' router");
    }
    config.vips.push_back(vip);
  }
}

void load_rule(Loader& loader, const toml::table& entry, const std::string& path, Config& config,
               Rule& rule) {
  loader.check_unknown(entry, "group[].rule[]", path);
  if (const auto vip = loader.string(entry, "vip", path, "*")) {
    if (*vip != "*") {
      const auto ip = IpAddr::parse(*vip);
      const auto it = ip ? std::find_if(config.vips.begin(), config.vips.end(),
                                        [&](const Vip& v) { return v.address == *ip; })
                         : config.vips.end();
      if (it == config.vips.end()) {
        loader.error(entry.get("vip")->source(), path + ".vip",
                     "\"" + *vip + "\" is not a configured [[vip]] address (or \"*\")");
      } else {
        rule.vip = static_cast<std::size_t>(it - config.vips.begin());
      }
    }
  }
  if (const auto proto = loader.choice(entry, "proto", path, kProtos, 0)) {
    rule.proto = static_cast<Proto>(*proto);
  }
  rule.ports = read_ports(loader, entry, path).ranges;
  if (const auto key = loader.choice(entry, "key", path, kKeys, 0)) {
    rule.key = static_cast<KeyKind>(*key);
  }
  const auto prefix = loader.integer(entry, "prefix", path, 0, 32, 24);
  const auto prefix6 = loader.integer(entry, "prefix6", path, 0, 128, 64);
  if (rule.key != KeyKind::kClientNet) {
    for (const char* k : {"prefix", "prefix6"}) {
      if (entry.get(k) != nullptr) {
        loader.error(entry.get(k)->source(), path + "." + k,
                     "only meaningful with key = \"client_net\"");
      }
    }
  }
  rule.prefix = static_cast<std::uint8_t>(prefix.value_or(24));
  rule.prefix6 = static_cast<std::uint8_t>(prefix6.value_or(64));
  if ((rule.proto == Proto::kIcmp) && !rule.ports.empty()) {
    loader.error(entry.get("ports")->source(), path + ".ports", "ICMP has no ports: use \"*\"");
  }
  const bool port_key = rule.key == KeyKind::kOnPort || rule.key == KeyKind::kOnDstPort ||
                        rule.key == KeyKind::kSymmetricPort;
  if ((rule.proto == Proto::kIcmp) && port_key) {
    loader.error(entry.get("key")->source(), path + ".key",
                 "ICMP has no ports: " + std::string(to_string(rule.key)) + " cannot apply");
  }
  const Vip* vip = rule.vip ? &config.vips[*rule.vip] : nullptr;
  if (vip != nullptr && !vip->gateway &&
      (rule.key == KeyKind::kOnDstAddr || rule.key == KeyKind::kOnDstPort)) {
    loader.error(entry.get("key")->source(), path + ".key",
                 std::string(to_string(rule.key)) + " on a service VIP hashes the VIP itself: " +
                     "every packet would land in one bucket (gateway VIPs only)");
  }
  if (auto dst = read_prefixes(loader, entry, "dst", path, false)) {
    if (vip == nullptr || !vip->gateway) {
      loader.error(entry.get("dst")->source(), path + ".dst",
                   "only for a rule whose vip is a gateway VIP (a service VIP's destination is "
                   "the VIP itself)");
    }
    for (const Prefix& prefix : *dst) {
      if (vip != nullptr && prefix.address.is_v4() != vip->address.is_v4()) {
        loader.error(
            entry.get("dst")->source(), path + ".dst",
            prefix.to_string() + " is not of the VIP's family (" + vip->address.to_string() + ")");
      }
    }
    rule.dst = std::move(*dst);
  }
}

void load_groups(Loader& loader, const toml::table& root, Config& config) {
  const toml::array* groups = loader.table_array(root, "group", "", true);
  if (groups == nullptr) return;
  std::set<std::string> names;
  for (std::size_t g = 0; g < groups->size(); ++g) {
    const toml::table& entry = *(*groups)[g].as_table();
    const std::string path = "group[" + std::to_string(g) + "]";
    loader.check_unknown(entry, "group[]", path);
    Group group;
    if (auto name = loader.string(entry, "name", path, std::nullopt)) {
      if (name->empty()) {
        loader.error(entry.get("name")->source(), path + ".name", "must not be empty");
      } else if (!names.insert(*name).second) {
        loader.error(entry.get("name")->source(), path + ".name",
                     "duplicate group name \"" + *name + "\"");
      }
      group.name = std::move(*name);
    }
    if (const auto mode = loader.choice(entry, "mode", path, kModes, 0)) {
      group.mode = static_cast<assignment::Mode>(*mode);
    }
    if (const toml::array* members = loader.table_array(entry, "member", path, false)) {
      std::set<unsigned> seen;
      for (std::size_t m = 0; m < members->size(); ++m) {
        const toml::table& me = *(*members)[m].as_table();
        const std::string mpath = path + ".member[" + std::to_string(m) + "]";
        loader.check_unknown(me, "group[].member[]", mpath);
        const auto node = loader.integer(me, "node", mpath, 1, kMaxNodes, std::nullopt);
        const auto weight = loader.integer(me, "weight", mpath, 0, 1000, 1);
        const auto priority = loader.integer(me, "priority", mpath, -1000000, 1000000, 0);
        if (!node) continue;
        const NodeId id{static_cast<std::uint8_t>(*node)};
        if (config.find_node(id) == nullptr && !config.nodes.empty()) {
          loader.error(me.get("node")->source(), mpath + ".node",
                       "node " + std::to_string(*node) + " is not listed in [[cluster.node]]");
        }
        if (!seen.insert(static_cast<unsigned>(*node)).second) {
          loader.error(me.get("node")->source(), mpath + ".node",
                       "node " + std::to_string(*node) + " is a member twice");
        }
        group.members.push_back({id, static_cast<std::uint32_t>(weight.value_or(1)),
                                 static_cast<std::int32_t>(priority.value_or(0))});
      }
    } else if (entry.get("member") == nullptr) {
      for (const ClusterNode& n : config.nodes) group.members.push_back({n.id, 1, 0});
    }
    const bool any_weight = std::any_of(group.members.begin(), group.members.end(),
                                        [](const Member& m) { return m.weight > 0; });
    if (!any_weight && !group.members.empty()) {
      loader.error(entry.source(), path + ".member", "no eligible member: every weight is 0");
    }
    if (const toml::array* rules = loader.table_array(entry, "rule", path, true)) {
      for (std::size_t r = 0; r < rules->size(); ++r) {
        Rule rule;
        load_rule(loader, *(*rules)[r].as_table(), path + ".rule[" + std::to_string(r) + "]",
                  config, rule);
        group.rules.push_back(std::move(rule));
      }
    }
    config.groups.push_back(std::move(group));
  }
}

// [[dataplane.port]]: each uplink with its TAP and this node's addresses there.
void load_ports(Loader& loader, const toml::array& ports, Config& config) {
  if (ports.size() > kMaxPorts) {
    loader.error(ports.source(), "dataplane.port",
                 "at most " + std::to_string(kMaxPorts) + " ports");
  }
  std::set<std::string> names, devices, taps;
  for (std::size_t i = 0; i < ports.size(); ++i) {
    const toml::table& entry = *ports[i].as_table();
    const std::string path = "dataplane.port[" + std::to_string(i) + "]";
    loader.check_unknown(entry, "dataplane.port[]", path);
    Port port;
    if (auto name = loader.string(entry, "name", path, std::nullopt)) {
      if (name->empty() || !names.insert(*name).second) {
        loader.error(entry.get("name")->source(), path + ".name",
                     name->empty() ? "must not be empty" : "duplicate port \"" + *name + "\"");
      }
      port.name = std::move(*name);
    }
    if (auto uplink = loader.string(entry, "uplink", path, std::nullopt)) {
      // The device name (a vdev's before its first comma) identifies the DPDK port.
      const std::string device = uplink->substr(0, uplink->find(','));
      if (uplink->empty() || !devices.insert(device).second) {
        loader.error(entry.get("uplink")->source(), path + ".uplink",
                     uplink->empty() ? "must not be empty"
                                     : "device \"" + device + "\" is another port's already");
      }
      port.uplink = std::move(*uplink);
    }
    const std::string fallback = "vipfarm" + std::to_string(i);
    if (auto tap = loader.string(entry, "exception", path, fallback)) {
      if (!valid_ifname(*tap)) {
        loader.error(entry.get("exception")->source(), path + ".exception", ifname_error(*tap));
      } else if (!taps.insert(*tap).second) {
        loader.error(entry.get("exception")->source(), path + ".exception",
                     "TAP \"" + *tap + "\" is another port's already");
      }
      port.exception = std::move(*tap);
    }
    if (auto addresses = read_prefixes(loader, entry, "address", path, true)) {
      port.addresses = std::move(*addresses);
    }
    config.dataplane.ports.push_back(std::move(port));
  }
}

// [dataplane] and [exception]: what only the daemon needs; both tables are optional here.
void load_daemon(Loader& loader, const toml::table& root, Config& config) {
  const toml::table* exception = loader.optional_table(root, "exception");
  if (exception != nullptr) {
    const toml::table& t = *exception;
    Exception& e = config.exception;
    loader.check_unknown(t, "exception", "exception");
    if (auto name = loader.string(t, "name", "exception", e.name)) {
      if (!valid_ifname(*name)) {
        loader.error(t.get("name")->source(), "exception.name", ifname_error(*name));
      }
      e.name = std::move(*name);
    }
    e.prefix =
        static_cast<std::uint8_t>(loader.integer(t, "prefix", "exception", 0, 32, 24).value_or(24));
    e.prefix6 = static_cast<std::uint8_t>(
        loader.integer(t, "prefix6", "exception", 0, 128, 64).value_or(64));
    if (const auto ring = loader.integer(t, "ring_size", "exception", 64, 65536, 4096)) {
      if (!std::has_single_bit(static_cast<std::uint64_t>(*ring))) {
        loader.error(t.get("ring_size")->source(), "exception.ring_size",
                     "must be a power of two, got " + std::to_string(*ring));
      }
      e.ring_size = static_cast<std::uint32_t>(*ring);
    }
  }
  const toml::table* dataplane = loader.optional_table(root, "dataplane");
  if (dataplane == nullptr) return;
  const toml::table& t = *dataplane;
  Dataplane& d = config.dataplane;
  d.present = true;
  loader.check_unknown(t, "dataplane", "dataplane");
  if (const toml::array* ports = loader.table_array(t, "port", "dataplane", false)) {
    if (t.get("uplink") != nullptr) {
      loader.error(t.get("uplink")->source(), "dataplane.uplink",
                   "give either uplink (one port) or [[dataplane.port]] entries, not both");
    }
    if (exception != nullptr && exception->get("name") != nullptr) {
      loader.error(exception->get("name")->source(), "exception.name",
                   "with [[dataplane.port]] each port names its TAP (dataplane.port[].exception)");
    }
    load_ports(loader, *ports, config);
  } else if (t.get("port") == nullptr) {
    if (auto uplink = loader.string(t, "uplink", "dataplane", std::nullopt)) {
      if (uplink->empty())
        loader.error(t.get("uplink")->source(), "dataplane.uplink", "must not be empty");
      d.ports.push_back({"uplink", std::move(*uplink), config.exception.name, {}});
    }
  }
  if (const toml::node* args = t.get("eal_args")) {
    const toml::array* list = args->as_array();
    if (list == nullptr) {
      loader.error(args->source(), "dataplane.eal_args", "expected an array of strings");
    } else {
      for (const toml::node& item : *list) {
        if (const auto text = item.value_exact<std::string>()) {
          d.eal_args.push_back(*text);
        } else {
          loader.error(item.source(), "dataplane.eal_args", "expected a string");
        }
      }
    }
  }
  d.workers =
      static_cast<std::uint32_t>(loader.integer(t, "workers", "dataplane", 1, 64, 1).value_or(1));
  if (const auto poll = loader.choice(t, "poll", "dataplane", kPolls, 0))
    d.poll = static_cast<Poll>(*poll);
  d.burst =
      static_cast<std::uint32_t>(loader.integer(t, "burst", "dataplane", 1, 64, 32).value_or(32));
  d.garp_interval_s = static_cast<std::uint32_t>(
      loader.integer(t, "garp_interval", "dataplane", 1, 3600, 60).value_or(60));
  d.garp_duration_s = static_cast<std::uint32_t>(
      loader.integer(t, "garp_duration", "dataplane", 0, 86400, 1200).value_or(1200));
}

// vip[].port names a dataplane port; gateway VIPs need an address of this node of their
// family on their port, or the kernel has no route through it; directed VIPs live on the
// first port (heartbeats carry its MAC).
void place_vips(Loader& loader, const toml::table& root, Config& config) {
  const toml::array* vips = root.get("vip") != nullptr ? root.get("vip")->as_array() : nullptr;
  if (vips == nullptr || vips->size() != config.vips.size()) return;  // reported already
  const std::vector<Port>& ports = config.dataplane.ports;
  const ClusterNode* self = config.find_node(config.node_id);
  for (std::size_t i = 0; i < config.vips.size(); ++i) {
    const toml::table& entry = *(*vips)[i].as_table();
    const std::string path = "vip[" + std::to_string(i) + "]";
    Vip& vip = config.vips[i];
    if (const auto name = loader.string(entry, "port", path, "")) {
      if (!name->empty()) {
        const auto it = std::find_if(ports.begin(), ports.end(),
                                     [&](const Port& p) { return p.name == *name; });
        if (it != ports.end()) {
          vip.port = static_cast<std::size_t>(it - ports.begin());
        } else {
          std::string known;
          for (const Port& p : ports) known += (known.empty() ? "" : ", ") + p.name;
          loader.error(entry.get("port")->source(), path + ".port",
                       "no port named \"" + *name + "\"" +
                           (known.empty() ? std::string(" (there is no [dataplane])")
                                          : " (ports: " + known + ")"));
        }
      }
    }
    if (vip.l2_mode == L2Mode::kDirected && vip.port != 0) {
      loader.error(entry.get("port")->source(), path + ".port",
                   "a directed VIP lives on the first port (heartbeats carry its MAC)");
    }
    if (!vip.gateway || vip.port >= ports.size() || self == nullptr) continue;
    const bool v4 = vip.address.is_v4();
    bool routed = vip.port == 0 && self->address.is_v4() == v4;
    for (const Prefix& a : ports[vip.port].addresses) routed = routed || a.address.is_v4() == v4;
    if (!routed) {
      loader.error(entry.get("gateway")->source(), path + ".gateway",
                   "this node has no " + std::string(v4 ? "IPv4" : "IPv6") + " address on port \"" +
                       ports[vip.port].name + "\" (dataplane.port[" + std::to_string(vip.port) +
                       "].address): the kernel routes through it");
    }
  }
}

// [api] and [metrics]: where the daemon listens.
void load_endpoints(Loader& loader, const toml::table& root, Config& config) {
  if (const toml::table* t = loader.optional_table(root, "api")) {
    loader.check_unknown(*t, "api", "api");
    if (auto path = loader.string(*t, "socket", "api", config.api.socket)) {
      if (path->empty() || path->front() != '/') {
        loader.error(t->get("socket")->source(), "api.socket", "must be an absolute path");
      }
      config.api.socket = std::move(*path);
    }
  }
  bool listen_given = false;
  if (const toml::table* t = loader.optional_table(root, "metrics")) {
    loader.check_unknown(*t, "metrics", "metrics");
    if (auto listen = loader.string(*t, "listen", "metrics", config.metrics.listen)) {
      listen_given = true;
      const std::optional<Endpoint> at = parse_endpoint(*listen);
      if (!listen->empty() && (!at || at->port == 0)) {
        loader.error(t->get("listen")->source(), "metrics.listen",
                     "expected address:port (e.g. 192.0.2.11:9469, [2001:db8::11]:9469), got \"" +
                         *listen + "\"");
      } else if (at && std::any_of(config.vips.begin(), config.vips.end(),
                                   [&](const Vip& v) { return v.address == at->address; })) {
        loader.error(t->get("listen")->source(), "metrics.listen",
                     at->address.to_string() +
                         " is a VIP: /metrics would answer the farm's clients (the topology, "
                         "the views); listen on the node's own address");
      }
      config.metrics.listen = std::move(*listen);
    }
  }
  // The default: the node's own address (never every address: the VIPs live on the TAP).
  if (!listen_given) {
    if (const ClusterNode* self = config.find_node(config.node_id)) {
      config.metrics.listen = endpoint_text(self->address, kMetricsPort);
    }
  }
}

std::optional<IpAddr> address_value(Loader& loader, const toml::table& t, std::string_view name,
                                    const std::string& path, bool required) {
  const auto text = loader.string(t, name, path, required ? std::nullopt : std::optional(""));
  if (!text || text->empty()) return std::nullopt;
  const auto ip = IpAddr::parse(*text);
  if (!ip) {
    loader.error(t.get(name)->source(), Loader::join(path, name),
                 "not an IPv4 or IPv6 address: \"" + *text + "\"");
  }
  return ip;
}

void load_lans(Loader& loader, const toml::table& t, Config& config) {
  const toml::array* lans = loader.table_array(t, "lan", "membership", false);
  if (lans == nullptr) return;
  std::set<std::string> names;
  for (std::size_t i = 0; i < lans->size(); ++i) {
    const toml::table& entry = *(*lans)[i].as_table();
    const std::string path = "membership.lan[" + std::to_string(i) + "]";
    loader.check_unknown(entry, "membership.lan[]", path);
    HeartbeatLan lan;
    if (auto name = loader.string(entry, "name", path, std::nullopt)) {
      if (name->empty() || !names.insert(*name).second) {
        loader.error(entry.get("name")->source(), path + ".name",
                     name->empty() ? "must not be empty" : "duplicate network \"" + *name + "\"");
      }
      lan.name = std::move(*name);
    }
    const toml::array* nodes = loader.table_array(entry, "node", path, true);
    std::set<unsigned> ids;
    for (std::size_t k = 0; nodes != nullptr && k < nodes->size(); ++k) {
      const toml::table& n = *(*nodes)[k].as_table();
      const std::string npath = path + ".node[" + std::to_string(k) + "]";
      loader.check_unknown(n, "membership.lan[].node[]", npath);
      const auto id = loader.integer(n, "id", npath, 1, kMaxNodes, std::nullopt);
      const auto address = address_value(loader, n, "address", npath, true);
      if (!id || !address) continue;
      const NodeId node{static_cast<std::uint8_t>(*id)};
      if (config.find_node(node) == nullptr) {
        loader.error(n.get("id")->source(), npath + ".id",
                     "node " + std::to_string(*id) + " is not listed in [[cluster.node]]");
      } else if (!ids.insert(static_cast<unsigned>(*id)).second) {
        loader.error(n.get("id")->source(), npath + ".id",
                     "node " + std::to_string(*id) + " listed twice");
      }
      lan.addresses.emplace_back(node, *address);
    }
    if (nodes != nullptr && config.node_id != kNoNode && lan.find(config.node_id) == nullptr) {
      loader.error(entry.source(), path + ".node",
                   "this node (" + std::to_string(to_int(config.node_id)) + ") has no address");
    }
    config.membership.lans.push_back(std::move(lan));
  }
}

void load_keys(Loader& loader, const toml::table& t, Config& config) {
  Membership& m = config.membership;
  const toml::array* keys = loader.table_array(t, "key", "membership", true);
  std::set<unsigned> ids;
  for (std::size_t i = 0; keys != nullptr && i < keys->size(); ++i) {
    const toml::table& entry = *(*keys)[i].as_table();
    const std::string path = "membership.key[" + std::to_string(i) + "]";
    loader.check_unknown(entry, "membership.key[]", path);
    const auto id = loader.integer(entry, "id", path, 1, 255, std::nullopt);
    auto file = loader.string(entry, "file", path, std::nullopt);
    if (file && (file->empty() || file->front() != '/')) {
      loader.error(entry.get("file")->source(), path + ".file", "must be an absolute path");
    }
    if (!id || !file) continue;
    if (!ids.insert(static_cast<unsigned>(*id)).second) {
      loader.error(entry.get("id")->source(), path + ".id",
                   "duplicate key id " + std::to_string(*id));
    }
    m.keys.push_back({static_cast<std::uint8_t>(*id), std::move(*file)});
  }
  const std::optional<std::int64_t> only =
      m.keys.size() == 1 ? std::optional<std::int64_t>(m.keys[0].id) : std::nullopt;
  if (t.get("send_key") == nullptr && m.keys.size() > 1) {
    loader.error(t.source(), "membership.send_key",
                 "required when more than one [[membership.key]] is listed");
    return;
  }
  if (const auto send = loader.integer(t, "send_key", "membership", 1, 255, only.value_or(1))) {
    if (!m.keys.empty() && !ids.contains(static_cast<unsigned>(*send))) {
      loader.error(t.get("send_key") ? t.get("send_key")->source() : t.source(),
                   "membership.send_key",
                   "key " + std::to_string(*send) + " is not a [[membership.key]] id");
    }
    m.send_key = static_cast<std::uint8_t>(*send);
  }
}

void load_membership(Loader& loader, const toml::table& root, Config& config) {
  const toml::table* t = loader.optional_table(root, "membership");
  if (t == nullptr) return;
  Membership& m = config.membership;
  m.present = true;
  loader.check_unknown(*t, "membership", "membership");
  auto u32 = [&](std::string_view name, std::int64_t lo, std::int64_t hi, std::uint32_t fallback) {
    return loader.u32(*t, name, "membership", lo, hi, fallback);
  };
  m.port = static_cast<std::uint16_t>(u32("port", 1, 65535, m.port));
  const auto interval = loader.integer(*t, "interval_ms", "membership", 10, 10000, m.interval_ms);
  if (interval) m.interval_ms = static_cast<std::uint32_t>(*interval);
  m.dead_after = u32("dead_after", 2, 100, m.dead_after);
  m.agreement_timeout_ms = u32("agreement_timeout_ms", 0, 60000, m.agreement_timeout_ms);
  const auto split_brain = loader.choice(*t, "split_brain", "membership", kSplitBrain, 0);
  if (split_brain) m.split_brain = static_cast<SplitBrain>(*split_brain);
  m.witness = address_value(loader, *t, "witness", "membership", false);
  m.witness_port = static_cast<std::uint16_t>(u32("witness_port", 0, 65535, m.witness_port));
  m.flap_limit = u32("flap_limit", 0, 1000, m.flap_limit);
  m.flap_window_s = u32("flap_window", 1, 86400, m.flap_window_s);
  m.hold_down_s = u32("hold_down", 0, 86400, m.hold_down_s);
  m.lease_ms = u32("lease_ms", 0, 600000, m.lease_ms);
  // Checks that combine keys run only when the keys they read are valid (no cascades).
  if (interval && m.lease_ms != 0 && m.lease_ms < 2 * m.interval_ms) {
    loader.error(
        t->get("lease_ms")->source(), "membership.lease_ms",
        "must be at least two intervals (" + std::to_string(2 * m.interval_ms) + " ms) or 0");
  }
  if (split_brain && m.witness && m.split_brain != SplitBrain::kMajority) {
    loader.error(t->get("witness")->source(), "membership.witness",
                 "only used with split_brain = \"majority\"");
  }
  if (m.witness_port != 0 && t->get("witness") == nullptr) {
    loader.error(t->get("witness_port")->source(), "membership.witness_port",
                 "only used with membership.witness (the address of vipfarmd --witness)");
  }
  load_keys(loader, *t, config);
  load_lans(loader, *t, config);
}

void load_flows(Loader& loader, const toml::table& root, Config& config) {
  const toml::table* t = loader.optional_table(root, "flows");
  if (t == nullptr) return;
  loader.check_unknown(*t, "flows", "flows");
  Flows& f = config.flows;
  f.handoff = loader.boolean(*t, "handoff", "flows", f.handoff);
  auto u32 = [&](std::string_view name, std::int64_t lo, std::int64_t hi, std::uint32_t fallback) {
    return loader.u32(*t, name, "flows", lo, hi, fallback);
  };
  f.capacity = u32("capacity", 1024, 16 * 1024 * 1024, f.capacity);
  f.window_s = u32("window", 1, 86400, f.window_s);
  f.syn_timeout_ms = u32("syn_timeout_ms", 100, 600000, f.syn_timeout_ms);
  f.established_timeout_s = u32("established_timeout", 10, 7 * 86400, f.established_timeout_s);
  f.closing_timeout_ms = u32("closing_timeout_ms", 100, 600000, f.closing_timeout_ms);
  f.udp_timeout_s = u32("udp_timeout", 1, 86400, f.udp_timeout_s);
}

// Empty when `name` is a user of this system, else why not. Looked up when the file is
// loaded, so that `vipfarmd --check-config` and a reload refuse a typo; the checker looks it
// up again for its ids and groups.
std::string user_problem(const std::string& name) {
  if (name.empty()) return "must not be empty";
  if (name.find('\0') != std::string::npos) return "must not contain a NUL character";
  std::vector<char> buffer(1024);
  passwd entry{};
  passwd* found = nullptr;
  while (true) {
    const int rc = ::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && buffer.size() < (1U << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    // getpwnam_r(3): some systems report "no such user" as an error number.
    if (found != nullptr) return {};
    if (rc == 0 || rc == ENOENT || rc == ESRCH) return "no user \"" + name + "\" on this system";
    return "cannot look up user \"" + name + "\": " + std::system_category().message(rc);
  }
}

bool valid_env_name(std::string_view name) {
  const auto word = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || (c >= '0' && c <= '9');
  };
  return !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
         std::all_of(name.begin(), name.end(), word);
}

// A custom checker's user and env (src/health/checkers.cpp runs the command with them).
void load_checker_process(Loader& loader, const toml::table& entry, const std::string& path,
                          Checker& c) {
  for (const char* key : {"user", "env"}) {
    const toml::node* node = entry.get(key);
    if (node != nullptr && c.kind != CheckerKind::kCustom) {
      loader.error(node->source(), path + "." + key, "only for kind = \"custom\"");
    }
  }
  if (auto user = loader.string(entry, "user", path, "")) {
    if (entry.get("user") != nullptr) {
      if (const std::string problem = user_problem(*user); !problem.empty()) {
        loader.error(entry.get("user")->source(), path + ".user", problem);
      }
    }
    c.user = std::move(*user);
  }
  const toml::node* env = entry.get("env");
  if (env == nullptr) return;
  const toml::array* list = env->as_array();
  if (list == nullptr) {
    loader.error(env->source(), path + ".env", "expected an array of \"NAME=value\" strings");
    return;
  }
  std::set<std::string, std::less<>> names;
  for (const toml::node& item : *list) {
    const auto text = item.value_exact<std::string>();
    const std::size_t equals = text ? text->find('=') : std::string::npos;
    const std::string_view name =
        text ? std::string_view(*text).substr(0, equals) : std::string_view();
    std::string bad;
    if (!text) {
      bad = "expected a \"NAME=value\" string";
    } else if (equals == std::string::npos) {
      bad = "\"" + *text + "\": expected NAME=value";
    } else if (!valid_env_name(name)) {
      bad = "\"" + std::string(name) + "\" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)";
    } else if (text->find('\0') != std::string::npos) {
      bad = std::string(name) + ": the value must not contain a NUL character";
    } else if (!names.emplace(name).second) {
      bad = std::string(name) + " is set twice";
    }
    if (bad.empty()) {
      c.env.push_back(*text);
    } else {
      loader.error(item.source(), path + ".env", bad);
    }
  }
}

void load_checkers(Loader& loader, const toml::table& root, Config& config) {
  const toml::array* checkers = loader.table_array(root, "checker", "", false);
  if (checkers == nullptr) return;
  std::set<std::string> names;
  for (std::size_t i = 0; i < checkers->size(); ++i) {
    const toml::table& entry = *(*checkers)[i].as_table();
    const std::string path = "checker[" + std::to_string(i) + "]";
    loader.check_unknown(entry, "checker[]", path);
    Checker c;
    if (auto name = loader.string(entry, "name", path, std::nullopt)) {
      if (name->empty() || !names.insert(*name).second) {
        loader.error(entry.get("name")->source(), path + ".name",
                     name->empty() ? "must not be empty" : "duplicate checker \"" + *name + "\"");
      }
      c.name = std::move(*name);
    }
    std::optional<std::size_t> kind;
    if (entry.get("kind") == nullptr) {
      loader.error(entry.source(), path + ".kind", "missing required key");
    } else {
      kind = loader.choice(entry, "kind", path, kCheckerKinds, 0);
    }
    if (kind) c.kind = static_cast<CheckerKind>(*kind);
    if (auto target = loader.string(entry, "target", path, std::nullopt)) {
      std::string bad;
      if (target->empty()) {
        bad = "must not be empty";
      } else if (!kind) {
        // The kind is missing or unknown (reported): its target cannot be judged.
      } else if (c.kind == CheckerKind::kTcp && !parse_endpoint(*target)) {
        bad = "expected address:port (127.0.0.1:80, [::1]:80), got \"" + *target + "\"";
      } else if (c.kind == CheckerKind::kPing && !IpAddr::parse(*target)) {
        bad = "not an IPv4 or IPv6 address: \"" + *target + "\"";
      } else if (c.kind == CheckerKind::kInterface && !valid_ifname(*target)) {
        bad = "\"" + *target + "\" is not a valid interface name";
      }
      if (!bad.empty()) loader.error(entry.get("target")->source(), path + ".target", bad);
      c.target = std::move(*target);
    }
    auto u32 = [&](std::string_view name, std::int64_t lo, std::int64_t hi,
                   std::uint32_t fallback) {
      return loader.u32(entry, name, path, lo, hi, fallback);
    };
    c.interval_ms = u32("interval_ms", 10, 3600000, c.interval_ms);
    c.timeout_ms = u32("timeout_ms", 1, 3600000, c.timeout_ms);
    c.rise = u32("rise", 1, 100, c.rise);
    c.fall = u32("fall", 1, 100, c.fall);
    if (auto group = loader.string(entry, "group", path, "")) {
      if (!group->empty()) {
        const auto it = std::find_if(config.groups.begin(), config.groups.end(),
                                     [&](const Group& g) { return g.name == *group; });
        if (it == config.groups.end()) {
          loader.error(entry.get("group")->source(), path + ".group",
                       "no [[group]] named \"" + *group + "\"");
        } else {
          c.group = static_cast<std::size_t>(it - config.groups.begin());
        }
      }
    }
    load_checker_process(loader, entry, path, c);
    config.checkers.push_back(std::move(c));
  }
}

std::string hex(const unsigned char* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 15];
  }
  return out;
}

std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

bool valid_ifname(std::string_view name) {
  return !name.empty() && name.size() <= 15 && name.find_first_of("/ \t:") == std::string::npos;
}

const ClusterNode* Config::find_node(NodeId id) const noexcept {
  for (const ClusterNode& n : nodes) {
    if (n.id == id) return &n;
  }
  return nullptr;
}

ViewMask all_nodes(const Config& config) noexcept {
  ViewMask mask = 0;
  for (const ClusterNode& n : config.nodes) mask |= view_bit(n.id);
  return mask;
}

assignment::Input assignment_input(const Config& config, std::size_t group, ViewMask view) {
  const Group& g = config.groups[group];
  assignment::Input input;
  input.mode = g.mode;
  input.buckets = config.buckets;
  input.seed = config.seed;
  for (const Member& m : g.members) {
    input.members.push_back({m.node, m.weight, m.priority, (view & view_bit(m.node)) != 0});
  }
  return input;
}

std::string Error::to_string() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + key + ": " +
         message;
}

MacAddr default_vip_mac(const IpAddr& address) {
  if (address.is_v4()) {
    const std::uint32_t v = address.v4_value();
    return {0x5A,
            0xFE,
            static_cast<std::uint8_t>(v >> 24),
            static_cast<std::uint8_t>(v >> 16),
            static_cast<std::uint8_t>(v >> 8),
            static_cast<std::uint8_t>(v)};
  }
  const std::uint64_t h = mix64(address.hi ^ mix64(address.lo));
  return {0x5A,
          0xF6,
          static_cast<std::uint8_t>(h >> 56),
          static_cast<std::uint8_t>(h >> 48),
          static_cast<std::uint8_t>(h >> 40),
          static_cast<std::uint8_t>(h >> 32)};
}

LoadResult parse(std::string_view text, std::string_view source_name) {
  Loader loader{std::string(source_name)};
  LoadResult result;
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    loader.error(e.source(), "(syntax)", std::string(e.description()));
    result.errors = std::move(loader.errors());
    return result;
  }
  Config config;
  config.source = std::string(source_name);
  loader.check_unknown(root, "", "");
  load_cluster(loader, root, config);
  load_node(loader, root, config);
  load_vips(loader, root, config);
  load_groups(loader, root, config);
  load_daemon(loader, root, config);
  place_vips(loader, root, config);
  load_endpoints(loader, root, config);
  load_membership(loader, root, config);
  load_flows(loader, root, config);
  load_checkers(loader, root, config);
  if (loader.errors().empty()) {
    result.config = std::move(config);
  } else {
    std::stable_sort(loader.errors().begin(), loader.errors().end(),
                     [](const Error& a, const Error& b) {
                       return std::tie(a.line, a.column) < std::tie(b.line, b.column);
                     });
    result.errors = std::move(loader.errors());
  }
  return result;
}

LoadResult load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult result;
    result.errors.push_back(
        {path, 0, 0, "(file)", "cannot open: " + std::string(std::strerror(errno))});
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

std::vector<std::string> warnings(const Config& config) {
  std::vector<std::string> out;
  // DPDK's net_af_packet joins a PACKET_FANOUT group with the kernel's defragment flag: IPv4
  // fragments reach the data plane reassembled, and cut at the mbuf size (issue 16).
  const Rule* fragmenting = nullptr;
  const Group* in_group = nullptr;
  for (const Group& group : config.groups) {
    for (const Rule& rule : group.rules) {
      if (rule.proto != Proto::kTcp && fragmenting == nullptr) {
        fragmenting = &rule;
        in_group = &group;
      }
    }
  }
  for (std::size_t p = 0; p < config.dataplane.ports.size() && fragmenting != nullptr; ++p) {
    const std::string& uplink = config.dataplane.ports[p].uplink;
    if (!uplink.starts_with("net_af_packet")) continue;
    const auto at = uplink.find("iface=");
    const std::string iface =
        at == std::string::npos ? "IFACE" : uplink.substr(at + 6, uplink.find(',', at) - at - 6);
    constexpr std::size_t kPrefix = std::string_view("net_af_packet").size();
    const std::string device = uplink.substr(kPrefix, uplink.find(',') - kPrefix);  // "0", "1"
    const std::string key =
        config.dataplane.ports.size() == 1 && config.dataplane.ports[p].name == "uplink"
            ? "dataplane.uplink"
            : "dataplane.port[" + std::to_string(p) + "].uplink";
    out.push_back(key +
                  ": net_af_packet reassembles IPv4 fragments in the kernel and cuts them "
                  "at the mbuf size, so every fragmented datagram of group \"" +
                  in_group->name + "\"'s " + std::string(to_string(fragmenting->proto)) +
                  " rule is lost: use \"net_af_xdp" + device + ",iface=" + iface +
                  "\" (or \"net_pcap" + device + ",iface=" + iface +
                  ",phy_mac=1\"), which deliver fragments as they come");
  }
  return out;
}

std::string_view to_string(Proto proto) { return kProtos[static_cast<std::size_t>(proto)]; }
std::string_view to_string(KeyKind key) { return kKeys[static_cast<std::size_t>(key)]; }
std::string_view to_string(CheckerKind kind) {
  return kCheckerKinds[static_cast<std::size_t>(kind)];
}

const IpAddr* HeartbeatLan::find(NodeId id) const noexcept {
  for (const auto& [node, address] : addresses) {
    if (node == id) return &address;
  }
  return nullptr;
}

std::string format_ports(const std::vector<PortRange>& ports) {
  if (ports.empty()) return "*";
  std::string out;
  for (const PortRange& r : ports) {
    if (!out.empty()) out += ",";
    out += std::to_string(r.first);
    if (r.last != r.first) out += "-" + std::to_string(r.last);
  }
  return out;
}

std::string describe_rule(const Config& config, const Rule& rule) {
  std::string out = "vip=" + (rule.vip ? config.vips[*rule.vip].address.to_string() : "*");
  out += " proto=" + std::string(to_string(rule.proto));
  out += " ports=" + format_ports(rule.ports);
  out += " key=" + std::string(to_string(rule.key));
  if (rule.key == KeyKind::kClientNet) {
    out += "/" + std::to_string(rule.prefix) + "/" + std::to_string(rule.prefix6);
  }
  if (!rule.dst.empty()) {
    out += " dst=";
    for (std::size_t i = 0; i < rule.dst.size(); ++i) {
      out += (i == 0 ? "" : ",") + rule.dst[i].to_string();
    }
  }
  return out;
}

std::string fingerprint(const Config& config) {
  std::string canon = "vipfarm-fingerprint-v1\n";
  canon += "cluster " + config.cluster_name + "\n";
  canon += "buckets " + std::to_string(config.buckets) + "\n";
  canon += "seed " + std::to_string(config.seed) + "\n";
  canon +=
      "unmatched " + std::string(kUnmatched[static_cast<std::size_t>(config.unmatched)]) + "\n";
  canon += "icmp_echo " + std::string(kIcmpEcho[static_cast<std::size_t>(config.icmp_echo)]) + "\n";
  std::vector<unsigned> ids;
  for (const ClusterNode& n : config.nodes) ids.push_back(to_int(n.id));
  std::sort(ids.begin(), ids.end());
  for (const unsigned id : ids) canon += "node " + std::to_string(id) + "\n";
  for (const Vip& vip : config.vips) {
    canon += "vip " + vip.address.to_string() + " " + vipfarm::to_string(vip.mac) +
             (vip.l2_mode == L2Mode::kDirected ? " directed" : "") +
             (vip.gateway ? " gateway" : "") + "\n";
  }
  for (const Group& group : config.groups) {
    canon += "group " + group.name + " " +
             std::string(kModes[static_cast<std::size_t>(group.mode)]) + "\n";
    std::vector<std::pair<unsigned, std::int32_t>> members;
    for (const Member& m : group.members) members.emplace_back(to_int(m.node), m.priority);
    std::sort(members.begin(), members.end());
    for (const auto& [id, priority] : members) {
      canon += " member " + std::to_string(id) + " priority " + std::to_string(priority) + "\n";
    }
    for (const Rule& rule : group.rules) canon += " rule " + describe_rule(config, rule) + "\n";
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(canon.data(), canon.size(), digest, &size, EVP_sha256(), nullptr);
  return hex(digest, size);
}

std::vector<std::string> changed_keys(const Config& a, const Config& b) {
  std::vector<std::string> out;
  for (const KeySpec& spec : schema()) {
    if (spec.compare.differs != nullptr && spec.compare.differs(a, b)) out.emplace_back(spec.path);
  }
  return out;
}

std::string reload_refusal(const Config& running, const Config& next) {
  std::string restart;
  for (const std::string& key : changed_keys(running, next)) {
    if (find_key(key)->reload == Reload::kRestart) restart += (restart.empty() ? "" : ", ") + key;
  }
  if (!restart.empty()) {
    return "these changes need a restart (or the rolling procedure in docs/handoff.md): " + restart;
  }
  const Membership &a = running.membership, &b = next.membership;
  if (!b.present || (a.interval_ms == b.interval_ms && a.dead_after == b.dead_after)) return {};
  const std::uint64_t old_dead = std::uint64_t{a.interval_ms} * a.dead_after;
  const std::uint64_t new_dead = std::uint64_t{b.interval_ms} * b.dead_after;
  auto ms = [](std::uint64_t v) { return std::to_string(v) + " ms"; };
  if (2 * std::uint64_t{b.interval_ms} > old_dead) {
    return "membership.interval_ms " + std::to_string(b.interval_ms) +
           ": the peers still on the running timers declare a node dead after " + ms(old_dead) +
           " and would lose this one; change the timers in steps, each interval at most half "
           "the other side's dead time (docs/membership.md)";
  }
  if (2 * std::uint64_t{a.interval_ms} > new_dead) {
    return "membership.interval_ms x dead_after = " + ms(new_dead) +
           ": this node would declare dead the peers still sending every " + ms(a.interval_ms) +
           "; change the timers in steps, each interval at most half the other side's dead "
           "time (docs/membership.md)";
  }
  return {};
}

std::string summary(const Config& config) {
  std::ostringstream out;
  const std::string fp = fingerprint(config);
  out << "cluster " << config.cluster_name << ": " << config.nodes.size() << " nodes, "
      << config.vips.size() << " VIPs, " << config.groups.size() << " groups, " << config.buckets
      << " buckets, seed " << config.seed << "\n";
  out << "this node: " << to_int(config.node_id) << " (" << config.node_name << ")\n";
  out << "fingerprint: " << fp << "\n";
  for (const ClusterNode& n : config.nodes) {
    out << "  node " << to_int(n.id) << " " << n.name << " " << n.address.to_string() << "\n";
  }
  for (const Vip& vip : config.vips) {
    out << "  vip " << vip.address.to_string() << " mac " << vipfarm::to_string(vip.mac)
        << (vip.l2_mode == L2Mode::kDirected ? " directed" : "") << (vip.gateway ? " gateway" : "");
    if (config.dataplane.ports.size() > 1) out << " port " << config.dataplane.ports[vip.port].name;
    out << "\n";
  }
  for (const Group& group : config.groups) {
    out << "  group " << group.name << " (" << kModes[static_cast<std::size_t>(group.mode)] << "):";
    for (const Member& m : group.members) {
      out << " " << to_int(m.node) << "(w" << m.weight << ",p" << m.priority << ")";
    }
    out << "\n";
    for (const Rule& rule : group.rules) out << "    rule " << describe_rule(config, rule) << "\n";
  }
  return out.str();
}

}  // namespace vipfarm::config
