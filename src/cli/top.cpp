// vipfarmctl top (top.hpp): every node's /metrics over HTTP, in parallel, once per interval;
// rates from consecutive frames.
#include "top.hpp"

#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

namespace vipfarm::cli {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kFetchTimeout = std::chrono::milliseconds(700);

// The body of GET /metrics from address:port, or the error.
struct Fetched {
  bool ok = false;
  std::string body;  // or the error text
};

Fetched fetch_metrics(const IpAddr& address, std::uint16_t port) {
  const std::string host = address.to_string();
  boost::asio::ip::tcp::iostream s;
  s.expires_after(kFetchTimeout);
  s.connect(host, std::to_string(port));
  if (!s) return {false, "connect: " + s.error().message()};
  s << "GET /metrics HTTP/1.0\r\nHost: " << (address.is_v4() ? host : "[" + host + "]") << ":"
    << port << "\r\nAccept: text/plain\r\n\r\n"
    << std::flush;
  std::string status;
  if (!std::getline(s, status)) return {false, "no answer: " + s.error().message()};
  if (!status.empty() && status.back() == '\r') status.pop_back();
  if (status.find(" 200") == std::string::npos) return {false, "answered \"" + status + "\""};
  for (std::string header; std::getline(s, header) && header != "\r" && !header.empty();) {
  }
  std::ostringstream body;
  body << s.rdbuf();
  if (s.error() && s.error() != boost::asio::error::eof) return {false, s.error().message()};
  return {true, body.str()};
}

// What top shows of one node, from one scrape.
struct NodeSample {
  bool ok = false;
  std::string error;
  std::string state = "-";  // no [membership]: no state
  double epoch = -1;
  double lease_ok = -1;
  std::map<std::string, std::pair<double, double>> owned;  // group -> (owned, buckets)
  double rx = 0, accepted = 0, rejects = 0, flows = 0;
  Clock::time_point at;
};

NodeSample summarise(const std::vector<MetricSample>& samples) {
  NodeSample n;
  n.ok = true;
  n.at = Clock::now();
  for (const MetricSample& m : samples) {
    auto label = [&](const char* key) {
      const auto it = m.labels.find(key);
      return it == m.labels.end() ? std::string() : it->second;
    };
    if (m.name == "vipfarm_node_state" && m.value == 1) n.state = label("state");
    if (m.name == "vipfarm_view_epoch") n.epoch = m.value;
    if (m.name == "vipfarm_lease_ok") n.lease_ok = m.value;
    if (m.name == "vipfarm_owned_buckets") n.owned[label("group")].first = m.value;
    if (m.name == "vipfarm_buckets") n.owned[label("group")].second = m.value;
    if (m.name == "vipfarm_rx_packets_total") n.rx = m.value;
    if (m.name == "vipfarm_packets_total" && label("verdict") == "accept") n.accepted = m.value;
    if (m.name == "vipfarm_heartbeats_rejected_total") n.rejects += m.value;
    if (m.name == "vipfarm_flows_tracked") n.flows = m.value;
  }
  return n;
}

// Per second between two scrapes of a node; nullopt without an earlier one (or a restart).
std::optional<double> rate(const NodeSample* before, const NodeSample& now, double NodeSample::*f) {
  if (before == nullptr || !before->ok || !now.ok) return std::nullopt;
  const double dt = std::chrono::duration<double>(now.at - before->at).count();
  const double delta = now.*f - before->*f;
  if (dt <= 0 || delta < 0) return std::nullopt;
  return delta / dt;
}

std::string rate_text(std::optional<double> r) {
  if (!r) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.0f", *r);
  return text;
}

std::string share_text(const NodeSample& n) {
  std::string out;
  for (const auto& [group, counts] : n.owned) {
    if (counts.second <= 0) continue;
    char text[64];
    std::snprintf(text, sizeof text, "%s %.0f%%", group.c_str(),
                  100 * counts.first / counts.second);
    out += (out.empty() ? "" : " ") + std::string(text);
  }
  return out.empty() ? "-" : out;
}

nlohmann::json frame_json(const config::Config& farm, const std::vector<NodeSample>& now,
                          const std::vector<NodeSample>& before) {
  nlohmann::json nodes = nlohmann::json::array();
  for (std::size_t i = 0; i < farm.nodes.size(); ++i) {
    const NodeSample& n = now[i];
    const NodeSample* b = before.empty() ? nullptr : &before[i];
    nlohmann::json j{{"id", to_int(farm.nodes[i].id)}, {"name", farm.nodes[i].name}, {"ok", n.ok}};
    if (!n.ok) {
      j["error"] = n.error;
    } else {
      j["state"] = n.state;
      j["epoch"] = n.epoch;
      j["lease_ok"] = n.lease_ok;
      for (const auto& [group, counts] : n.owned) {
        j["owned"][group] = counts.first;
        j["buckets"][group] = counts.second;
      }
      auto put = [&](const char* key, std::optional<double> r) {
        j[key] = r ? nlohmann::json(*r) : nlohmann::json(nullptr);
      };
      put("rx_pps", rate(b, n, &NodeSample::rx));
      put("accept_pps", rate(b, n, &NodeSample::accepted));
      put("rejects_ps", rate(b, n, &NodeSample::rejects));
      j["flows"] = n.flows;
    }
    nodes.push_back(std::move(j));
  }
  return {{"cluster", farm.cluster_name}, {"nodes", nodes}};
}

void print_table(const config::Config& farm, const std::vector<NodeSample>& now,
                 const std::vector<NodeSample>& before, double interval_s, bool clear) {
  std::ostringstream out;
  if (clear) out << "\033[H\033[2J";
  unsigned answering = 0;
  for (const NodeSample& n : now) answering += n.ok ? 1 : 0;
  out << "vipfarm top: farm " << farm.cluster_name << ", " << answering << " of "
      << farm.nodes.size() << " nodes answering, every " << interval_s << " s (Ctrl-C to quit)\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-3s %-12s %-6s %-6s %-5s %-16s %10s %10s %9s %7s\n", "ID",
                "NAME", "STATE", "EPOCH", "LEASE", "SHARE", "RX/s", "ACCEPT/s", "FLOWS", "REJ/s");
  out << line;
  for (std::size_t i = 0; i < farm.nodes.size(); ++i) {
    const NodeSample& n = now[i];
    const NodeSample* b = before.empty() ? nullptr : &before[i];
    if (!n.ok) {
      std::snprintf(line, sizeof line, "%-3u %-12s unreachable: %s\n", to_int(farm.nodes[i].id),
                    farm.nodes[i].name.c_str(), n.error.c_str());
      out << line;
      continue;
    }
    const std::string epoch = n.epoch < 0 ? "-" : std::to_string(static_cast<long long>(n.epoch));
    const char* lease = n.lease_ok < 0 ? "-" : n.lease_ok > 0 ? "ok" : "LAPSED";
    std::snprintf(line, sizeof line, "%-3u %-12s %-6s %-6s %-5s %-16s %10s %10s %9.0f %7s\n",
                  to_int(farm.nodes[i].id), farm.nodes[i].name.c_str(), n.state.c_str(),
                  epoch.c_str(), lease, share_text(n).c_str(),
                  rate_text(rate(b, n, &NodeSample::rx)).c_str(),
                  rate_text(rate(b, n, &NodeSample::accepted)).c_str(), n.flows,
                  rate_text(rate(b, n, &NodeSample::rejects)).c_str());
    out << line;
  }
  std::cout << out.str() << std::flush;
}

}  // namespace

std::vector<MetricSample> parse_metrics_text(std::string_view text) {
  std::vector<MetricSample> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (line.empty() || line.front() == '#') continue;
    MetricSample s;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = std::string(line.substr(0, i));
    bool ok = !s.name.empty();
    if (ok && i < line.size() && line[i] == '{') {
      ++i;
      while (ok && i < line.size() && line[i] != '}') {
        const std::size_t eq = line.find('=', i);
        ok = eq != std::string_view::npos && eq + 1 < line.size() && line[eq + 1] == '"';
        if (!ok) break;
        std::string value;
        std::size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) ++j;  // \" \\ \n: kept as the char
          value += line[j];
        }
        ok = j < line.size();
        s.labels[std::string(line.substr(i, eq - i))] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ok = ok && i < line.size();
      ++i;  // '}'
    }
    if (!ok) continue;
    try {
      s.value = std::stod(std::string(line.substr(i)));
    } catch (const std::exception&) {
      continue;
    }
    out.push_back(std::move(s));
  }
  return out;
}

int run_top(const config::Config& farm, const TopOptions& options) {
  const auto listen = parse_endpoint(farm.metrics.listen);
  if (!listen) {
    std::cerr << "vipfarmctl: top: " << farm.source
              << ": [metrics] listen is empty or not address:port; top reads every node's "
                 "metrics endpoint\n";
    return 1;
  }
  const bool clear = !options.json && options.count != 1 && ::isatty(STDOUT_FILENO) == 1;
  std::vector<NodeSample> before;
  bool answered = false;
  for (unsigned frame = 0; options.count == 0 || frame < options.count; ++frame) {
    const auto started = Clock::now();
    std::vector<std::future<Fetched>> pending;
    for (const config::ClusterNode& node : farm.nodes) {
      pending.push_back(std::async(std::launch::async, fetch_metrics, node.address, listen->port));
    }
    std::vector<NodeSample> now;
    for (auto& f : pending) {
      Fetched got = f.get();
      NodeSample n;
      if (got.ok) {
        n = summarise(parse_metrics_text(got.body));
        answered = true;
      } else {
        n.error = std::move(got.body);
      }
      now.push_back(std::move(n));
    }
    if (options.json) {
      std::cout << frame_json(farm, now, before).dump() << std::endl;
    } else {
      print_table(farm, now, before, options.interval_s, clear);
    }
    before = std::move(now);
    if (options.count != 0 && frame + 1 == options.count) break;
    std::this_thread::sleep_until(started + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(options.interval_s)));
  }
  return answered ? 0 : 1;
}

}  // namespace vipfarm::cli
