// vipfarmctl: offline tools over the core library (config check, owner query, pcap
// verdicts, config reference). Talks to no daemon and links no DPDK.
#include <fcntl.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "top.hpp"
#include "vipfarm/api/api_client.hpp"
#include "vipfarm/api/commands.hpp"
#include "vipfarm/assignment/assignment.hpp"
#include "vipfarm/config/config.hpp"
#include "vipfarm/config/schema.hpp"
#include "vipfarm/packet/build.hpp"
#include "vipfarm/packet/classify.hpp"
#include "vipfarm/packet/pcap.hpp"
#include "vipfarm/tools/safekit.hpp"

namespace po = boost::program_options;
using namespace vipfarm;

namespace {

constexpr const char* kUsage =
    "usage: vipfarmctl COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  check-config FILE [--json]   validate a config; print a summary or every error\n"
    "  owner --config FILE [--view 1,2,3] [--via VIP] [--json] PROTO CLIENT SERVER\n"
    "                               which group, bucket and node take this flow\n"
    "                               PROTO: tcp|udp|icmp; CLIENT/SERVER: 192.0.2.7:40000,\n"
    "                               [2001:db8::7]:40000 (no port for icmp); --via: the\n"
    "                               gateway VIP a flow to a non-VIP server goes through\n"
    "  owner --config FILE [--view 1,2,3] [--json] --pcap FILE\n"
    "                               the verdict of every frame of a pcap\n"
    "  buckets --config FILE [--view 1,2,3] [--from-view 1,2,3] [--json]\n"
    "                               buckets per node and group; with --from-view, how many\n"
    "                               moved going from that view to --view\n"
    "  config-reference             the configuration keys as a Markdown table\n"
    "  import-safekit USERCONFIG.XML [--cluster CLUSTER.XML] [--node NAME] [--name CLUSTER]\n"
    "                [-o OUT.toml]\n"
    "                               convert a SafeKit farm module's configuration to a\n"
    "                               vipfarm TOML; what cannot be mapped is listed on stderr\n"
    "                               (and as comments in the TOML)\n"
    "  top --config FILE [--interval SECONDS] [--count N] [--json]\n"
    "                               live per-node view of the farm (state, epoch, share,\n"
    "                               packet rates, flows) from every node's /metrics\n"
    "exit status: 0 success, 1 invalid config or input, 2 usage error\n";

// The usage: the commands above, then the daemon's, from their declarations
// (api/commands.hpp), each with its synopsis and its help wrapped under it.
std::string usage() {
  std::string text = kUsage;
  const std::string tail = text.substr(text.rfind("\nexit status"));
  text.resize(text.size() - tail.size());
  text += "\ncommands for a running vipfarmd (admin socket, default /run/vipfarm/vipfarmd.sock):\n";
  constexpr std::size_t kIndent = 31, kWidth = 90;
  for (const api::Command& c : api::admin_commands()) {
    if (c.synopsis.empty()) continue;  // the API only
    text += "  " + std::string(c.name) + " " + std::string(c.synopsis) + "\n";
    std::string line(kIndent, ' ');
    std::istringstream words{std::string(c.help)};
    for (std::string word; words >> word;) {
      if (line.size() > kIndent && line.size() + 1 + word.size() > kWidth) {
        text += line + "\n";
        line.assign(kIndent, ' ');
      }
      line += (line.size() > kIndent ? " " : "") + word;
    }
    text += line + "\n";
  }
  return text + "  --version\n" + tail;
}

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::optional<config::Config> load_or_report(const std::string& path) {
  config::LoadResult loaded = config::load_file(path);
  for (const config::Error& e : loaded.errors) std::cerr << e.to_string() << "\n";
  if (!loaded.errors.empty()) {
    std::cerr << path << ": " << loaded.errors.size() << " error"
              << (loaded.errors.size() == 1 ? "" : "s") << "\n";
  }
  return std::move(loaded.config);
}

config::ViewMask parse_view(const config::Config& config, const std::string& text) {
  if (text.empty()) return config::all_nodes(config);
  config::ViewMask view = 0;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    unsigned id = 0;
    try {
      id = static_cast<unsigned>(std::stoul(item));
    } catch (const std::exception&) {
      throw UsageError("--view: not a node id: \"" + item + "\"");
    }
    if (id < 1 || id > kMaxNodes ||
        config.find_node(NodeId{static_cast<std::uint8_t>(id)}) == nullptr) {
      throw UsageError("--view: node " + item + " is not in the config");
    }
    view |= config::view_bit(NodeId{static_cast<std::uint8_t>(id)});
  }
  return view;
}

// Owner of every bucket of every group, for the view.
std::vector<std::vector<NodeId>> all_owners(const config::Config& config, config::ViewMask view) {
  std::vector<std::vector<NodeId>> owners;
  for (std::size_t g = 0; g < config.groups.size(); ++g) {
    owners.push_back(assignment::assign(config::assignment_input(config, g, view)));
  }
  return owners;
}

nlohmann::json describe(const config::Config& config,
                        const std::vector<std::vector<NodeId>>& owners, const packet::Result& r) {
  nlohmann::json out;
  out["verdict"] = std::string(packet::to_string(r.verdict));
  out["reason"] = std::string(packet::to_string(r.reason));
  if (r.verdict == packet::Verdict::kFarm) {
    const NodeId owner = owners[r.group][r.bucket];
    out["group"] = config.groups[r.group].name;
    out["bucket"] = r.bucket;
    out["owner"] = to_int(owner);
    const config::ClusterNode* node = config.find_node(owner);
    out["owner_name"] = node != nullptr ? node->name : "";
  } else {
    out["group"] = "";
    out["bucket"] = -1;
    out["owner"] = 0;
    out["owner_name"] = "";
  }
  return out;
}

std::string human(const nlohmann::json& d) {
  std::string line = d["verdict"].get<std::string>();
  if (!d["reason"].get<std::string>().empty()) line += "/" + d["reason"].get<std::string>();
  if (d["bucket"].get<long>() >= 0) {
    line += "  group " + d["group"].get<std::string>() + "  bucket " +
            std::to_string(d["bucket"].get<long>()) + "  owner ";
    line += d["owner"].get<unsigned>() == 0 ? std::string("none (no eligible member)")
                                            : std::to_string(d["owner"].get<unsigned>()) + " (" +
                                                  d["owner_name"].get<std::string>() + ")";
  }
  return line;
}

int cmd_check_config(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  bool json = false;
  for (const std::string& a : args) {
    if (a == "--json") {
      json = true;
    } else {
      files.push_back(a);
    }
  }
  if (files.size() != 1) throw UsageError("check-config takes one FILE");
  if (!json) {
    const auto config = load_or_report(files[0]);
    if (!config) return 1;
    std::cout << files[0] << ": OK\n" << config::summary(*config);
    for (const std::string& w : config::warnings(*config)) {
      std::cerr << "warning: " << files[0] << ": " << w << "\n";
    }
    return 0;
  }
  const config::LoadResult loaded = config::load_file(files[0]);
  nlohmann::json out{{"file", files[0]}, {"ok", loaded.config.has_value()}};
  if (loaded.config) {
    out["fingerprint"] = config::fingerprint(*loaded.config);
    out["node"] = to_int(loaded.config->node_id);
    out["nodes"] = loaded.config->nodes.size();
    out["vips"] = loaded.config->vips.size();
    out["groups"] = loaded.config->groups.size();
    out["buckets"] = loaded.config->buckets;
    out["warnings"] = config::warnings(*loaded.config);
  }
  out["errors"] = nlohmann::json::array();
  for (const config::Error& e : loaded.errors) {
    out["errors"].push_back({{"file", e.file},
                             {"line", e.line},
                             {"column", e.column},
                             {"key", e.key},
                             {"reason", e.message}});
  }
  std::cout << out.dump() << "\n";
  return loaded.config ? 0 : 1;
}

int cmd_owner(const std::vector<std::string>& args) {
  po::options_description options("owner");
  std::string config_path, view_text, pcap_path, via;
  bool json = false;
  options.add_options()("config", po::value(&config_path)->required(), "config file")(
      "view", po::value(&view_text), "eligible node ids, comma-separated (default: all)")(
      "via", po::value(&via), "the gateway VIP the flow goes through (gateway farms)")(
      "pcap", po::value(&pcap_path), "classify every frame of this pcap")(
      "json", po::bool_switch(&json), "one JSON object per line")(
      "flow", po::value<std::vector<std::string>>(), "PROTO CLIENT SERVER");
  po::positional_options_description positional;
  positional.add("flow", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
  po::notify(vm);

  const auto config = load_or_report(config_path);
  if (!config) return 1;
  const config::ViewMask view = parse_view(*config, view_text);
  const auto owners = all_owners(*config, view);
  const packet::Classifier classifier(*config);

  if (!pcap_path.empty()) {
    if (vm.count("flow")) throw UsageError("give either --pcap or PROTO CLIENT SERVER");
    if (!via.empty())
      throw UsageError("--via applies to PROTO CLIENT SERVER (a pcap's frames carry their MAC)");
    std::ifstream in(pcap_path, std::ios::binary);
    if (!in) {
      std::cerr << pcap_path << ": cannot open\n";
      return 1;
    }
    const std::string bytes{std::istreambuf_iterator<char>(in), {}};
    std::size_t index = 0;
    const std::string error = packet::read_pcap(
        std::as_bytes(std::span(bytes.data(), bytes.size())), [&](std::span<const std::byte> f) {
          nlohmann::json d = describe(*config, owners, classifier.classify(f));
          d["index"] = index;
          if (json) {
            std::cout << d.dump() << "\n";
          } else {
            std::cout << index << "  " << human(d) << "\n";
          }
          ++index;
        });
    if (!error.empty()) {
      std::cerr << pcap_path << ": " << error << "\n";
      return 1;
    }
    return 0;
  }

  const auto flow =
      vm.count("flow") ? vm["flow"].as<std::vector<std::string>>() : std::vector<std::string>{};
  if (flow.size() != 3) throw UsageError("owner needs PROTO CLIENT SERVER or --pcap FILE");
  packet::FlowQuery query = packet::parse_flow_query(flow[0], flow[1], flow[2]);
  if (!query.error.empty()) throw UsageError(query.error);
  if (const std::string err = packet::route_through_gateway(*config, via, query.spec);
      !err.empty()) {
    throw UsageError(err);
  }
  const auto frame = packet::build_frame(query.spec);
  const nlohmann::json d = describe(*config, owners, classifier.classify(frame));
  std::cout << (json ? d.dump() : human(d)) << "\n";
  return 0;
}

constexpr const char* kDefaultSocket = "/run/vipfarm/vipfarmd.sock";

// Sends one request to the daemon; prints the error and returns nullopt when it fails.
std::optional<nlohmann::json> ask(const std::string& socket, const nlohmann::json& request) {
  const api::ApiReply reply = api::api_call(socket, request);
  if (!reply.transport_ok) {
    std::cerr << "vipfarmctl: " << reply.error << "\n";
    return std::nullopt;
  }
  if (!reply.body.value("ok", false)) {
    std::cerr << "vipfarmctl: " << reply.body.value("error", std::string("request failed")) << "\n";
    return std::nullopt;
  }
  return reply.body;
}

struct DaemonOptions {
  std::string socket = kDefaultSocket;
  bool json = false;
  std::vector<std::string> rest;
};

DaemonOptions daemon_options(const std::vector<std::string>& args) {
  po::options_description options("daemon");
  DaemonOptions out;
  options.add_options()("socket", po::value(&out.socket), "admin socket")(
      "json", po::bool_switch(&out.json), "JSON output")("rest", po::value(&out.rest), "");
  po::positional_options_description positional;
  positional.add("rest", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
  po::notify(vm);
  return out;
}

int cmd_status(const std::vector<std::string>& args) {
  const DaemonOptions o = daemon_options(args);
  const auto reply = ask(o.socket, {{"cmd", "status"}});
  if (!reply) return 1;
  if (o.json) {
    std::cout << reply->dump() << "\n";
    return 0;
  }
  const auto& r = *reply;
  std::cout << "node " << r["node"].get<unsigned>() << " (" << r["name"].get<std::string>()
            << ") of cluster " << r["cluster"].get<std::string>() << "\n";
  std::cout << "view        ";
  for (const auto& id : r["view"]) std::cout << " " << id.get<unsigned>();
  std::cout << "\ngeneration   " << r["generation"].get<std::uint64_t>()
            << " (applied by every worker: " << r["applied_generation"].get<std::uint64_t>()
            << ")\n";
  std::cout << "fingerprint  " << r["fingerprint"].get<std::string>() << "\n";
  for (const auto& g : r["groups"]) {
    std::cout << "group " << g["name"].get<std::string>() << ": owns " << g["owned"].get<unsigned>()
              << " of " << g["buckets"].get<unsigned>() << " buckets\n";
  }
  return 0;
}

int cmd_counters(const std::vector<std::string>& args) {
  const DaemonOptions o = daemon_options(args);
  const auto reply = ask(o.socket, {{"cmd", "counters"}});
  if (!reply) return 1;
  if (o.json) {
    std::cout << reply->dump() << "\n";
    return 0;
  }
  // One line per counter, nested objects by their dotted path (directed.forwarded.2):
  // whatever shape the daemon's reply takes, every value is printed, none aborts.
  std::function<void(const std::string&, const nlohmann::json&)> print =
      [&](const std::string& path, const nlohmann::json& value) {
        if (value.is_object()) {
          for (const auto& [sub, inner] : value.items()) print(path + "." + sub, inner);
        } else {
          std::cout << path << "  " << (value.is_string() ? value.get<std::string>() : value.dump())
                    << "\n";
        }
      };
  for (const auto& [key, value] : reply->items()) {
    if (key != "ok") print(key, value);
  }
  return 0;
}

std::string ids_text(const nlohmann::json& ids) {
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ",") + std::to_string(id.get<unsigned>());
  return out.empty() ? "-" : out;
}

std::string joined(const nlohmann::json& values) {
  std::string out;
  for (const auto& v : values) out += (out.empty() ? "" : "/") + std::to_string(v.get<unsigned>());
  return out.empty() ? "-" : out;
}

int cmd_nodes(const std::vector<std::string>& args) {
  const DaemonOptions o = daemon_options(args);
  const auto reply = ask(o.socket, {{"cmd", "nodes"}});
  if (!reply) return 1;
  if (o.json) {
    std::cout << reply->dump() << "\n";
    return 0;
  }
  std::printf("%-3s %-12s %-6s %-5s %-10s %-12s %-11s %s\n", "ID", "NAME", "STATE", "VIEW",
              "WEIGHT", "SHARE", "LAST-HEARD", "INCARNATION");
  for (const auto& n : (*reply)["nodes"]) {
    std::string heard = "never";
    if (n["last_heard_s"].is_number()) {
      char text[32];
      std::snprintf(text, sizeof text, "%.2fs", n["last_heard_s"].get<double>());
      heard = n["self"].get<bool>() ? "(self)" : text;
    }
    std::string state = n["state"].get<std::string>();
    if (!n["fingerprint_ok"].get<bool>()) state += "!cfg";
    if (n["held_down"].get<bool>()) state += "!held";
    std::printf("%-3u %-12s %-6s %-5s %-10s %-12s %-11s %llu\n", n["id"].get<unsigned>(),
                n["name"].get<std::string>().c_str(), state.c_str(),
                n["in_view"].get<bool>() ? "yes" : "no", joined(n["weights"]).c_str(),
                joined(n["share"]).c_str(), heard.c_str(),
                static_cast<unsigned long long>(n["incarnation"].get<std::uint64_t>()));
  }
  return 0;
}

int cmd_history(const std::vector<std::string>& args) {
  const DaemonOptions o = daemon_options(args);
  const auto reply = ask(o.socket, {{"cmd", "history"}});
  if (!reply) return 1;
  if (o.json) {
    std::cout << reply->dump() << "\n";
    return 0;
  }
  std::printf("%-6s %-24s %-12s %-6s %-9s %-10s %s\n", "EPOCH", "TIME (UTC)", "MEMBERS", "MOVED",
              "AGREED", "CONVERGED", "CAUSE");
  for (const auto& h : (*reply)["history"]) {
    char converged[32];
    std::snprintf(converged, sizeof converged, "%.0f ms", h["convergence_ms"].get<double>());
    std::printf("%-6llu %-24s %-12s %-6u %-9s %-10s %s\n",
                static_cast<unsigned long long>(h["epoch"].get<std::uint64_t>()),
                h["time"].get<std::string>().c_str(), ids_text(h["members"]).c_str(),
                h["moved"].get<unsigned>(), h["agreed"].get<bool>() ? "yes" : "given up", converged,
                h["cause"].get<std::string>().c_str());
  }
  return 0;
}

// `state`: the exit status is the state (SafeKit's convention), 4 when there is no answer.
int cmd_state(const std::vector<std::string>& args) {
  constexpr int kNoAnswer = 4;
  DaemonOptions o;
  try {
    o = daemon_options(args);
  } catch (const po::error& e) {
    std::cerr << "vipfarmctl: " << e.what() << "\n";
    return kNoAnswer;
  }
  const auto reply = ask(o.socket, {{"cmd", "state"}});
  if (!reply) return kNoAnswer;
  std::cout << (o.json ? reply->dump() : (*reply)["state"].get<std::string>()) << "\n";
  return static_cast<int>((*reply)["code"].get<unsigned>());
}

int cmd_reload(const std::vector<std::string>& args) {
  const DaemonOptions o = daemon_options(args);
  const auto reply = ask(o.socket, {{"cmd", "reload"}});
  if (!reply) return 1;
  if (o.json) {
    std::cout << reply->dump() << "\n";
    return 0;
  }
  std::string applied;
  for (const auto& key : (*reply)["applied"]) applied += " " + key.get<std::string>();
  std::cout << "reloaded; changed:" << (applied.empty() ? " nothing" : applied) << "\n";
  return 0;
}

int cmd_stop_start(const std::string& command, const std::vector<std::string>& args) {
  DaemonOptions o;
  double timeout = 0;
  if (command == "drain") {
    po::options_description options("drain");
    options.add_options()("socket", po::value(&o.socket), "admin socket")(
        "json", po::bool_switch(&o.json), "JSON output")("timeout", po::value(&timeout),
                                                         "seconds to keep the connections at most");
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(options).run(), vm);
    po::notify(vm);
  } else {
    o = daemon_options(args);
  }
  nlohmann::json request = {{"cmd", command}};
  if (timeout > 0) request["timeout_s"] = timeout;
  const auto reply = ask(o.socket, request);
  if (!reply) return 1;
  std::cout << (o.json ? reply->dump() : "state " + (*reply)["state"].get<std::string>()) << "\n";
  return 0;
}

int cmd_view(const std::vector<std::string>& args) {
  const DaemonOptions o = daemon_options(args);
  if (o.rest.empty()) {
    const auto reply = ask(o.socket, {{"cmd", "view"}});
    if (!reply) return 1;
    if (o.json) {
      std::cout << reply->dump() << "\n";
      return 0;
    }
    const auto& r = *reply;
    std::cout << "epoch     " << r["epoch"].get<std::uint64_t>() << "\nmembers   "
              << ids_text(r["members"]) << "\ninstalled " << r["installed_s_ago"].get<double>()
              << " s ago, " << (r["agreed"].get<bool>() ? "agreed" : "given up: not a member")
              << ": " << r["cause"].get<std::string>() << "\nsettled   " << ids_text(r["settled"])
              << (r.value("clear", false) ? " (clear here)" : " (not clear here yet)")
              << "\nproposal  " << ids_text(r["proposal"]) << "\nlease     "
              << (r["lease_ok"].get<bool>() ? "valid" : "lapsed (not serving)") << "\n";
    if (const std::string aside = r.value("aside", std::string()); !aside.empty()) {
      std::cout << "aside     " << aside << "\n";
    }
    if (r["witness"].is_boolean()) {
      std::cout << "witness   " << (r["witness"].get<bool>() ? "reachable" : "unreachable") << "\n";
    }
    return 0;
  }
  if (o.rest.size() != 2 || o.rest[0] != "set") throw UsageError("usage: view [set IDS]");
  nlohmann::json ids = nlohmann::json::array();
  std::stringstream in(o.rest[1]);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      ids.push_back(std::stoul(item));
    } catch (const std::exception&) {
      throw UsageError("view set: not a node id: \"" + item + "\"");
    }
  }
  const auto reply = ask(o.socket, {{"cmd", "view"}, {"set", ids}});
  if (!reply) return 1;
  if (o.json) {
    std::cout << reply->dump() << "\n";
  } else {
    std::cout << "view set; generation " << (*reply)["generation"].get<std::uint64_t>() << ", "
              << (*reply)["moved"].get<unsigned>() << " buckets moved\n";
  }
  return 0;
}

// The daemon's owner map, summarised like the offline `buckets`.
int cmd_live_buckets(const DaemonOptions& o) {
  const auto reply = ask(o.socket, {{"cmd", "buckets"}});
  if (!reply) return 1;
  if (o.json) {
    std::cout << reply->dump() << "\n";
    return 0;
  }
  for (const auto& g : (*reply)["groups"]) {
    std::map<unsigned, unsigned> counts;
    for (const auto& owner : g["owners"]) ++counts[owner.get<unsigned>()];
    std::cout << "group " << g["name"].get<std::string>() << " (" << g["owners"].size()
              << " buckets)\n";
    for (const auto& [node, count] : counts) {
      std::cout << "  " << (node == 0 ? std::string("no owner") : "node " + std::to_string(node))
                << "  " << count << "\n";
    }
  }
  return 0;
}

int cmd_buckets(const std::vector<std::string>& args) {
  po::options_description options("buckets");
  std::string config_path, view_text, from_text, socket;
  bool json = false;
  options.add_options()("config", po::value(&config_path), "config file")(
      "socket", po::value(&socket), "ask the running daemon instead")(
      "view", po::value(&view_text), "eligible node ids (default: all)")(
      "from-view", po::value(&from_text), "compare with this earlier view")(
      "json", po::bool_switch(&json), "JSON output");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(options).run(), vm);
  po::notify(vm);
  if (!socket.empty()) return cmd_live_buckets({socket, json, {}});
  if (config_path.empty()) throw UsageError("buckets needs --config FILE or --socket PATH");
  const auto config = load_or_report(config_path);
  if (!config) return 1;
  const auto now = all_owners(*config, parse_view(*config, view_text));
  const auto before = from_text.empty() ? now : all_owners(*config, parse_view(*config, from_text));
  nlohmann::json out = nlohmann::json::array();
  for (std::size_t g = 0; g < config->groups.size(); ++g) {
    nlohmann::json group{{"group", config->groups[g].name}, {"buckets", config->buckets}};
    std::map<unsigned, unsigned> counts;
    unsigned moved = 0;
    for (BucketId b = 0; b < config->buckets; ++b) {
      ++counts[to_int(now[g][b])];
      moved += now[g][b] != before[g][b];
    }
    for (const auto& [node, count] : counts) {
      group["owners"].push_back({{"node", node}, {"owned", count}});
    }
    if (!from_text.empty()) group["moved"] = moved;
    out.push_back(group);
  }
  if (json) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  for (const auto& group : out) {
    std::cout << "group " << group["group"].get<std::string>() << " (" << config->buckets
              << " buckets)";
    if (group.contains("moved")) std::cout << ": " << group["moved"].get<unsigned>() << " moved";
    std::cout << "\n";
    for (const auto& o : group["owners"]) {
      const unsigned node = o["node"].get<unsigned>();
      const config::ClusterNode* n = config->find_node(NodeId{static_cast<std::uint8_t>(node)});
      std::cout << "  "
                << (node == 0 ? std::string("no owner")
                              : "node " + std::to_string(node) + " (" + n->name + ")")
                << "  " << o["owned"].get<unsigned>() << "\n";
    }
  }
  return 0;
}

// The whole of a file, or nullopt with the reason printed.
std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    std::cerr << "vipfarmctl: " << path << ": cannot read: " << std::strerror(errno) << "\n";
    return std::nullopt;
  }
  return text;
}

int cmd_import_safekit(const std::vector<std::string>& args) {
  po::options_description options("import-safekit");
  std::string userconfig, cluster_path, node, name, out_path;
  options.add_options()("userconfig", po::value(&userconfig), "userconfig.xml")(
      "cluster", po::value(&cluster_path), "cluster.xml (SafeKit 7.2 and later)")(
      "node", po::value(&node), "the SafeKit node that becomes [node]")(
      "name", po::value(&name), "[cluster] name")("output,o", po::value(&out_path), "output file");
  po::positional_options_description positional;
  positional.add("userconfig", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
  po::notify(vm);
  if (userconfig.empty()) throw UsageError("import-safekit needs a userconfig.xml");
  const auto xml = read_text(userconfig);
  if (!xml) return 1;
  std::optional<std::string> cluster;
  if (!cluster_path.empty() && !(cluster = read_text(cluster_path))) return 1;
  const config::SafekitImport r = config::import_safekit(
      *xml, userconfig,
      {.node = node,
       .cluster_name = name,
       .cluster_xml = cluster ? std::string_view(*cluster) : std::string_view(),
       .cluster_xml_source = cluster_path.empty() ? "cluster.xml" : cluster_path});
  for (const config::SafekitNote& n : r.notes) std::cerr << n.to_string() << "\n";
  if (r.error) {
    std::cerr << r.error->to_string() << "\n";
    return 1;
  }
  if (out_path.empty()) {
    std::cout << r.toml;
  } else {
    // Never through a symlink (a root-run import must not overwrite what a link points
    // at); a new file is private until the operator says otherwise.
    const int fd =
        ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      std::cerr << "vipfarmctl: " << out_path << ": cannot write: "
                << (errno == ELOOP ? std::string("it is a symbolic link") : std::strerror(errno))
                << "\n";
      return 1;
    }
    std::size_t done = 0;
    while (done < r.toml.size()) {
      const ssize_t n = ::write(fd, r.toml.data() + done, r.toml.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    const int err = done == r.toml.size() ? 0 : errno;
    if (::close(fd) != 0 || err != 0) {
      std::cerr << "vipfarmctl: " << out_path
                << ": cannot write: " << std::strerror(err ? err : errno) << "\n";
      return 1;
    }
  }
  std::cerr << userconfig << ": converted, " << r.notes.size() << " note"
            << (r.notes.size() == 1 ? "" : "s") << " above\n";
  return 0;
}

int cmd_top(const std::vector<std::string>& args) {
  po::options_description options("top");
  std::string config_path;
  cli::TopOptions top;
  options.add_options()("config", po::value(&config_path), "the farm's config file")(
      "interval", po::value(&top.interval_s), "seconds between frames")(
      "count", po::value(&top.count), "frames to show (0: until interrupted)")(
      "json", po::bool_switch(&top.json), "one JSON object per frame");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(options).run(), vm);
  po::notify(vm);
  if (config_path.empty()) throw UsageError("top needs --config FILE");
  if (!(top.interval_s >= 0.1 && top.interval_s <= 3600)) {
    throw UsageError("top: --interval must be 0.1-3600 seconds");
  }
  const auto config = load_or_report(config_path);
  if (!config) return 1;
  return cli::run_top(*config, top);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << usage();
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "--version") {
      std::cout << "vipfarmctl " << VIPFARM_VERSION << "\n";
      return 0;
    }
    if (command == "check-config") return cmd_check_config(args);
    if (command == "owner") return cmd_owner(args);
    if (command == "buckets") return cmd_buckets(args);
    if (command == "status") return cmd_status(args);
    if (command == "counters") return cmd_counters(args);
    if (command == "view") return cmd_view(args);
    if (command == "nodes") return cmd_nodes(args);
    if (command == "history") return cmd_history(args);
    if (command == "state") return cmd_state(args);
    if (command == "stop" || command == "start" || command == "drain" || command == "resume") {
      return cmd_stop_start(command, args);
    }
    if (command == "reload") return cmd_reload(args);
    if (command == "top") return cmd_top(args);
    if (command == "import-safekit") return cmd_import_safekit(args);
    if (command == "config-reference") {
      std::cout << config::reference_markdown();
      return 0;
    }
    throw UsageError("unknown command \"" + command + "\"");
  } catch (const UsageError& e) {
    std::cerr << "vipfarmctl: " << e.what() << "\n" << usage();
    return 2;
  } catch (const po::error& e) {
    std::cerr << "vipfarmctl: " << e.what() << "\n" << usage();
    return 2;
  } catch (const std::exception& e) {
    // Never an abort: a reply of an unexpected shape (another daemon version), a full disk.
    std::cerr << "vipfarmctl: " << command << ": " << e.what() << "\n";
    return 1;
  } catch (...) {
    std::cerr << "vipfarmctl: " << command << ": unexpected error\n";
    return 1;
  }
}
