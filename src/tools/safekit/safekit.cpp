// SafeKit farm module (userconfig.xml + cluster.xml) into a vipfarm TOML. Element and
// attribute names, defaults and meanings follow the SafeKit 8.2 User's Guide (sections 12,
// 13 and 15, cited as §); anything else found in the file is reported, never guessed at.
#include "vipfarm/tools/safekit.hpp"

#include <pugixml.hpp>

#include <algorithm>
#include <charconv>
#include <exception>
#include <initializer_list>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "vipfarm/common/net.hpp"
#include "vipfarm/common/types.hpp"
#include "vipfarm/config/config.hpp"

namespace vipfarm::config {
namespace {

using Kind = SafekitNote::Kind;

// One parsed XML file, with what turns a pugixml offset into a line and column.
class Xml {
 public:
  Xml(std::string_view text, std::string file) : text_(text), file_(std::move(file)) {
    line_starts_.push_back(0);
    for (std::size_t i = 0; i < text_.size(); ++i) {
      if (text_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::optional<SafekitError> load() {
    const pugi::xml_parse_result result =
        doc_.load_buffer(text_.data(), text_.size(), pugi::parse_default, pugi::encoding_utf8);
    if (result) return std::nullopt;
    const auto [line, column] = position(result.offset);
    return SafekitError{file_, line, column, "",
                        std::string("malformed XML: ") + result.description()};
  }

  std::pair<std::uint32_t, std::uint32_t> position(std::ptrdiff_t offset) const {
    if (offset < 0) return {0, 0};
    const auto at = static_cast<std::size_t>(offset);
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), at);
    const auto line = static_cast<std::size_t>(it - line_starts_.begin());
    return {static_cast<std::uint32_t>(line),
            static_cast<std::uint32_t>(at - line_starts_[line - 1] + 1)};
  }

  std::uint32_t line_of(pugi::xml_node node) const { return position(node.offset_debug()).first; }
  const std::string& file() const { return file_; }
  const pugi::xml_document& doc() const { return doc_; }

 private:
  std::string_view text_;
  std::string file_;
  pugi::xml_document doc_;
  std::vector<std::size_t> line_starts_;
};

// /safe/service/vip/loadbalancing_list/group[2]/rule: an index (from 1) only where an
// element has same-named siblings.
std::string path_of(pugi::xml_node node) {
  std::vector<std::string> parts;
  for (; node && node.type() == pugi::node_element; node = node.parent()) {
    std::string part = node.name();
    std::size_t index = 0;
    std::size_t count = 0;
    for (pugi::xml_node s = node.parent().child(node.name()); s; s = s.next_sibling(node.name())) {
      ++count;
      if (s == node) index = count;
    }
    if (count > 1) part += "[" + std::to_string(index) + "]";
    parts.push_back(std::move(part));
  }
  std::string out;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) out += "/" + *it;
  return out;
}

// The length of the valid UTF-8 sequence at text[i] (no overlong form, no surrogate, at most
// U+10FFFF), 0 when the byte there starts none.
std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(text[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  const std::size_t n = c >= 0xC2 && c <= 0xDF   ? 2
                        : c >= 0xE0 && c <= 0xEF ? 3
                        : c >= 0xF0 && c <= 0xF4 ? 4
                                                 : 0;
  if (n == 0 || i + n > text.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xC0) != 0x80) return 0;
  }
  if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) > 0x9F) || (c == 0xF0 && b(1) < 0x90) ||
      (c == 0xF4 && b(1) > 0x8F)) {
    return 0;
  }
  return n;
}

// Text from the XML for the TOML, with `quotes` inside a basic string: every control
// character (a newline that pugixml decoded from &#10; would end a comment and start a live
// line) and every byte that is not UTF-8 (a Latin-1 file: pugixml reads bytes as UTF-8,
// and TOML must be UTF-8) written as \u00XX, which reads a stray byte as Latin-1.
std::string toml_text(std::string_view text, bool quotes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const std::size_t n = utf8_length(text, i);
    if (quotes && (c == '"' || c == '\\')) {
      out += '\\';
      out += text[i];
    } else if (n == 0 || c < 0x20 || c == 0x7f) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out.append(text.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return out;
}

std::string commented(std::string_view text) { return toml_text(text, false); }

// What a basic string made by quote() reads back as: the text, a stray byte as its Latin-1
// character (two bytes of UTF-8).
std::string toml_unquoted(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_length(text, i);
    if (n != 0) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      const auto c = static_cast<unsigned char>(text[i++]);
      out += static_cast<char>(0xC0 | c >> 6);
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

std::string quote(std::string_view text) {
  std::string out = "\"" + toml_text(text, true);
  return out + "\"";
}

std::optional<std::uint64_t> to_uint(std::string_view text) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// A SafeKit duration (§13.1.2): a number in the attribute's own unit, or with a unit among
// d, h, m, s, ms, us. In milliseconds, rounded down.
std::optional<std::uint64_t> duration_ms(std::string_view text, std::uint64_t unit_us) {
  static constexpr std::pair<std::string_view, std::uint64_t> kUnits[] = {
      {"ms", 1000},      {"us", 1},       {"d", 86400000000},
      {"h", 3600000000}, {"m", 60000000}, {"s", 1000000}};
  std::uint64_t scale = unit_us;
  for (const auto& [suffix, us] : kUnits) {
    if (text.size() > suffix.size() && text.ends_with(suffix)) {
      text.remove_suffix(suffix.size());
      scale = us;
      break;
    }
  }
  const auto value = to_uint(text);
  if (!value || *value > 100000000000ULL) return std::nullopt;
  return *value * scale / 1000;
}

// "[2001::7334]" (cluster.xml's IPv6 form, §12.1.3) or a plain address.
std::optional<IpAddr> parse_address(std::string_view text) {
  if (text.size() > 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  return IpAddr::parse(text);
}

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::kUnmapped:
      return "unmapped";
    case Kind::kApproximated:
      return "approximated";
    case Kind::kTodo:
      return "to do";
  }
  return "note";
}

// SAFE/modules/<name>/conf/userconfig.xml: the module's name, which userconfig.xml lacks.
std::string module_name(std::string_view source) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= source.size()) {
    const std::size_t slash = source.find('/', start);
    const std::size_t end = slash == std::string_view::npos ? source.size() : slash;
    parts.push_back(source.substr(start, end - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (parts.size() >= 3 && parts[parts.size() - 2] == "conf" && !parts[parts.size() - 3].empty()) {
    return std::string(parts[parts.size() - 3]);
  }
  return "";
}

struct Node {
  std::string name;
  IpAddr address;
};

struct Lan {
  std::string name;
  std::vector<std::pair<unsigned, IpAddr>> addresses;  // node id, address
  std::string from;                                    // the element it came from
};

struct Vip {
  IpAddr address;
  std::optional<MacAddr> mac;
  std::string from;
  bool directed = false;  // type="vmac_directed": l2_mode = "directed"
};

struct Member {
  unsigned node;
  std::uint64_t weight;
};

struct Rule {
  std::string vip = "*";
  std::string proto;
  std::optional<std::uint16_t> port;  // nullopt: every port
  std::string key;
  std::string from;
};

struct Group {
  std::string name;
  bool listed_members = false;  // a <cluster>: only these members
  std::vector<Member> members;
  std::vector<Rule> rules;
  std::string from;
};

struct Checker {
  std::string name;
  std::string kind;
  std::string target;
  std::optional<std::uint64_t> interval_ms;
  std::optional<std::uint64_t> timeout_ms;
  std::string from;
};

class Importer {
 public:
  Importer(std::string_view xml, std::string_view source, const SafekitOptions& options)
      : options_(options), user_(xml, std::string(source)) {}

  SafekitImport run();

 private:
  // Notes and errors.
  void note(Kind kind, const Xml& xml, pugi::xml_node node, std::string message) {
    notes_.push_back({kind, xml.file(), xml.line_of(node), path_of(node), std::move(message)});
  }
  void note_global(Kind kind, std::string message) {
    notes_.push_back({kind, user_.file(), 0, "", std::move(message)});
  }
  void fail(const Xml& xml, pugi::xml_node node, std::string message) {
    if (!error_) {
      error_ = SafekitError{xml.file(), xml.line_of(node), 0, path_of(node), std::move(message)};
    }
  }
  void unknown_element(const Xml& xml, pugi::xml_node node) {
    note(Kind::kUnmapped, xml, node,
         "unknown element <" + std::string(node.name()) +
             ">: not in the SafeKit 8.2 User's Guide; ignored");
  }
  void check_attributes(const Xml& xml, pugi::xml_node node,
                        std::initializer_list<std::string_view> known) {
    for (const pugi::xml_attribute a : node.attributes()) {
      if (std::find(known.begin(), known.end(), std::string_view(a.name())) == known.end()) {
        note(Kind::kUnmapped, xml, node,
             "unknown attribute " + std::string(a.name()) + "=\"" + a.value() +
                 "\": not in the SafeKit 8.2 User's Guide; ignored");
      }
    }
  }
  // An attribute's value with its %macros% expanded (§13.2); nullopt when absent.
  std::optional<std::string> attr(const Xml& xml, pugi::xml_node node, const char* name);

  void read_macros(pugi::xml_node parent);
  void read_service(pugi::xml_node service);
  void read_farm(pugi::xml_node farm);
  bool resolve_nodes();
  void read_vip(pugi::xml_node vip);
  void read_interface(pugi::xml_node interface);
  void read_virtual_interface(pugi::xml_node vi);
  void read_group(pugi::xml_node group);
  std::optional<Rule> read_rule(pugi::xml_node rule);
  void read_check(pugi::xml_node check);
  void read_probe(pugi::xml_node probe, std::string_view kind);
  void note_unmapped_section(pugi::xml_node node);
  std::string unique_checker_name(std::string name, pugi::xml_node node);
  std::string emit() const;

  const SafekitOptions& options_;
  Xml user_;
  std::optional<Xml> cluster_;
  std::optional<SafekitError> error_;
  std::vector<SafekitNote> notes_;
  std::map<std::string, std::string> macros_;

  pugi::xml_node farm_;
  std::vector<pugi::xml_node> vips_xml_;
  std::vector<pugi::xml_node> checks_xml_;

  std::string cluster_name_;
  std::vector<Node> nodes_;
  unsigned self_ = 0;  // index into nodes_
  std::vector<Lan> lans_;
  std::optional<std::uint64_t> port_;
  std::uint64_t interval_ms_ = 100;  // <farm pulse="100ms"> (§13.5.3)
  std::uint64_t dead_after_ = 10;    // <farm slost_count="10">
  std::vector<Vip> vips_;
  std::vector<Group> groups_;
  std::vector<Checker> checkers_;
  std::vector<std::string> hints_;  // commented TOML for what the operator may add by hand
  std::optional<std::string> uplink_name_;
  std::optional<std::uint64_t> garp_interval_s_;
  std::optional<std::uint64_t> garp_duration_s_;
};

std::optional<std::string> Importer::attr(const Xml& xml, pugi::xml_node node, const char* name) {
  const pugi::xml_attribute a = node.attribute(name);
  if (!a) return std::nullopt;
  const std::string_view raw = a.value();
  std::string out;
  std::size_t i = 0;
  while (i < raw.size()) {
    const std::size_t open = raw.find('%', i);
    if (open == std::string_view::npos) break;
    const std::size_t close = raw.find('%', open + 1);
    if (close == std::string_view::npos) break;
    const std::string_view id = raw.substr(open + 1, close - open - 1);
    const bool identifier = !id.empty() && std::all_of(id.begin(), id.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    });
    if (!identifier) {
      out += raw.substr(i, close - i);
      i = close;
      continue;
    }
    out += raw.substr(i, open - i);
    if (const auto it = macros_.find(std::string(id)); it != macros_.end()) {
      out += it->second;
    } else {
      out += raw.substr(open, close - open + 1);
      note(Kind::kApproximated, xml, node,
           std::string(name) + ": %" + std::string(id) +
               "% is not a <macro> of this file (an environment variable of the SafeKit "
               "node?): kept as written");
    }
    i = close + 1;
  }
  out += raw.substr(std::min(i, raw.size()));
  return out;
}

void Importer::read_macros(pugi::xml_node parent) {
  for (const pugi::xml_node m : parent.children("macro")) {
    check_attributes(user_, m, {"name", "value"});
    const std::string name = m.attribute("name").value();
    if (name.empty()) {
      note(Kind::kUnmapped, user_, m, "<macro> without a name: ignored");
      continue;
    }
    macros_[name] = m.attribute("value").value();
  }
}

SafekitImport Importer::run() {
  SafekitImport out;
  if (auto e = user_.load()) {
    out.error = std::move(e);
    return out;
  }
  if (!options_.cluster_xml.empty()) {
    cluster_.emplace(options_.cluster_xml, std::string(options_.cluster_xml_source));
    if (auto e = cluster_->load()) {
      out.error = std::move(e);
      return out;
    }
  }
  pugi::xml_node safe;
  // The guide's examples put <macro> beside <safe> as well as inside it (§15.2.2).
  read_macros(user_.doc());
  for (const pugi::xml_node n : user_.doc().children()) {
    if (n.type() != pugi::node_element) continue;
    if (std::string_view(n.name()) == "safe" && !safe) {
      safe = n;
    } else if (std::string_view(n.name()) != "macro") {
      unknown_element(user_, n);
    }
  }
  if (!safe) {
    out.error = SafekitError{user_.file(), 1, 0, "",
                             "no <safe> element: not a SafeKit userconfig.xml (§13)"};
    return out;
  }
  read_macros(safe);
  pugi::xml_node service;
  for (const pugi::xml_node n : safe.children()) {
    if (n.type() != pugi::node_element) continue;
    const std::string_view name = n.name();
    if (name == "service" && !service) {
      service = n;
    } else if (name == "service") {
      note(Kind::kUnmapped, user_, n, "a second <service>: only the first is imported");
    } else if (name != "macro") {
      unknown_element(user_, n);
    }
  }
  if (!service) {
    out.error = SafekitError{user_.file(), user_.line_of(safe), 0, path_of(safe),
                             "no <service>: nothing to import (§13.3)"};
    return out;
  }
  cluster_name_ = std::string(options_.cluster_name);
  if (cluster_name_.empty()) {
    cluster_name_ = module_name(user_.file());
    note_global(Kind::kApproximated,
                cluster_name_.empty()
                    ? "cluster.name is \"safekit\": userconfig.xml does not hold the module's name"
                    : "cluster.name is \"" + cluster_name_ + "\", the module's directory");
    if (cluster_name_.empty()) cluster_name_ = "safekit";
  }
  read_service(service);
  std::stable_sort(notes_.begin(), notes_.end(), [&](const SafekitNote& a, const SafekitNote& b) {
    return std::make_tuple(a.file != user_.file(), a.file, a.line) <
           std::make_tuple(b.file != user_.file(), b.file, b.line);
  });
  if (!error_) {
    out.toml = emit();
    // The emitted file must load: a failure here is a bug of this importer, said as such.
    const LoadResult check = parse(out.toml, user_.file() + " (imported)");
    if (!check.errors.empty()) {
      error_ = SafekitError{
          user_.file(), 0, 0, "",
          "internal error: the generated TOML does not load: " + check.errors.front().to_string()};
    }
  }
  out.notes = std::move(notes_);
  if (error_) {
    out.error = std::move(error_);
    out.toml.clear();
  }
  return out;
}

void Importer::read_service(pugi::xml_node service) {
  check_attributes(user_, service,
                   {"mode", "boot", "boot_delay", "failover", "defaultprim", "maxloop",
                    "loop_interval", "automatic_reboot"});
  const std::string mode = attr(user_, service, "mode").value_or("");
  if (mode != "farm") {
    fail(user_, service,
         mode.empty()
             ? "<service> has no mode: only a farm module (mode=\"farm\") can be imported"
             : "mode=\"" + mode + "\": only a farm module (mode=\"farm\") can be imported (§13.3)");
    return;
  }
  if (const auto boot = attr(user_, service, "boot")) {
    note(Kind::kApproximated, user_, service,
         "boot=\"" + *boot +
             "\": vipfarmd starts at boot when its systemd unit is enabled "
             "(systemctl enable vipfarmd)");
  }
  for (const char* a : {"boot_delay", "maxloop", "loop_interval", "automatic_reboot"}) {
    if (const auto v = attr(user_, service, a)) {
      note(Kind::kUnmapped, user_, service,
           std::string(a) + "=\"" + *v +
               "\": vipfarm neither stops nor reboots a node after repeated failures; a "
               "failing checker keeps the node out of the farm (WAIT) until it passes again");
    }
  }
  for (const char* a : {"failover", "defaultprim"}) {
    if (const auto v = attr(user_, service, a)) {
      note(Kind::kUnmapped, user_, service,
           std::string(a) + "=\"" + *v + "\": a mirror-module setting (§13.3.3); ignored");
    }
  }
  for (const pugi::xml_node n : service.children()) {
    if (n.type() != pugi::node_element) continue;
    const std::string_view name = n.name();
    if (name == "farm") {
      if (farm_) {
        note(Kind::kUnmapped, user_, n, "a second <farm>: only the first is imported");
      } else {
        farm_ = n;
      }
    } else if (name == "vip") {
      vips_xml_.push_back(n);
    } else if (name == "check") {
      checks_xml_.push_back(n);
    } else if (name == "heart" || name == "rfs" || name == "user" || name == "vhost" ||
               name == "errd" || name == "failover") {
      note_unmapped_section(n);
    } else {
      unknown_element(user_, n);
    }
  }
  if (!farm_) {
    fail(user_, service,
         "no <farm>: a farm module names its networks and nodes in <farm><lan> (§13.5)");
    return;
  }
  read_farm(farm_);
  if (error_ || !resolve_nodes()) return;
  for (const pugi::xml_node v : vips_xml_) read_vip(v);
  if (vips_.empty()) {
    fail(user_, vips_xml_.empty() ? service : vips_xml_.front(),
         "no virtual IP address could be imported (see the notes): vipfarm needs at least one");
    return;
  }
  if (groups_.empty()) {
    fail(user_, vips_xml_.front(),
         "no load-balancing rule could be imported (<loadbalancing_list>, §13.6.6; see the "
         "notes): vipfarm needs at least one [[group]] with a rule");
    return;
  }
  for (const pugi::xml_node c : checks_xml_) read_check(c);
  note_global(Kind::kTodo, "[[membership.key]] points at " + std::string(kSafekitKeyFile) +
                               ", which SafeKit has no equivalent of: create it once, "
                               "(umask 077; head -c 32 /dev/urandom > " +
                               std::string(kSafekitKeyFile) + "), and copy it to every node");
  note_global(Kind::kTodo,
              "[dataplane] is left commented out: set this node's uplink (a PCI address, or "
              "a vdev such as net_af_xdp0,iface=eth0) before starting vipfarmd");
  note_global(Kind::kApproximated,
              "vipfarm hashes clients into buckets differently from SafeKit: a client may be "
              "served by another node than before; move every node of the farm at once");
}

void Importer::note_unmapped_section(pugi::xml_node n) {
  const std::string_view name = n.name();
  std::string why;
  if (name == "heart") {
    why =
        "heartbeats of a mirror module (§13.4, for mirror modules only); the farm's "
        "membership comes from <farm>";
  } else if (name == "rfs") {
    why = "file replication (mirror modules only, §13.7): vipfarm replicates nothing";
  } else if (name == "user") {
    why =
        "module scripts (start_both, stop_both, ...) are not run by vipfarm: start the "
        "application with its own systemd unit";
    std::string vars;
    for (const pugi::xml_node v : n.children("var")) {
      vars += (vars.empty() ? "" : ", ") + std::string(v.attribute("name").value());
    }
    if (!vars.empty()) why += "; script variables not carried over: " + vars;
  } else if (name == "vhost") {
    why = "virtual hostname (§13.9): no vipfarm equivalent";
  } else if (name == "errd") {
    why =
        "process monitoring (§13.10): vipfarm has no process monitor; a [[checker]] "
        "kind = \"custom\" (a commented one follows in the TOML) takes the node out while "
        "the process is missing, but restarts nothing";
    for (const pugi::xml_node p : n.children("proc")) {
      const std::string proc = attr(user_, p, "name").value_or("");
      if (proc.empty()) continue;
      // service="yes": a systemd service on Linux (§13.10.1.2); else a command name.
      const std::string test = attr(user_, p, "service").value_or("no") == "yes"
                                   ? "systemctl is-active --quiet " + proc
                                   : "pgrep -x " + proc + " >/dev/null";
      hints_.push_back("# from " + commented(path_of(p)) + "\n# [[checker]]\n# name = " +
                       quote("proc-" + proc) + "\n# kind = \"custom\"\n# target = " + quote(test) +
                       "\n# user = \"root\"  # under the unit's ProtectProc=invisible only root "
                       "sees every process\n");
    }
  } else {
    why =
        "failover rules (§13.19): vipfarm has none; each [[checker]] takes the node out "
        "(WAIT) while it fails";
  }
  note(Kind::kUnmapped, user_, n, why);
}

void Importer::read_farm(pugi::xml_node farm) {
  check_attributes(user_, farm, {"port", "pulse", "mlost_count", "slost_count"});
  if (const auto port = attr(user_, farm, "port")) {
    const auto value = to_uint(*port);
    if (value && *value >= 1 && *value <= 65535) {
      port_ = *value;
    } else {
      note(Kind::kUnmapped, user_, farm, "port=\"" + *port + "\" is not a UDP port; ignored");
    }
  }
  if (const auto pulse = attr(user_, farm, "pulse")) {
    const auto ms = duration_ms(*pulse, 1000);
    if (ms && *ms >= 10 && *ms <= 10000) {
      interval_ms_ = *ms;
    } else {
      note(Kind::kUnmapped, user_, farm,
           "pulse=\"" + *pulse +
               "\": not a heartbeat period vipfarm takes (10 ms to 10 s); SafeKit's default, "
               "100 ms, is kept");
    }
  }
  if (const auto lost = attr(user_, farm, "slost_count")) {
    const auto value = to_uint(*lost);
    if (value && *value >= 2 && *value <= 100) {
      dead_after_ = *value;
    } else if (value) {
      dead_after_ = std::clamp<std::uint64_t>(*value, 2, 100);
      note(Kind::kApproximated, user_, farm,
           "slost_count=\"" + *lost + "\": membership.dead_after is " +
               std::to_string(dead_after_) + " (vipfarm takes 2 to 100)");
    } else {
      note(Kind::kUnmapped, user_, farm,
           "slost_count=\"" + *lost + "\" is not a number; SafeKit's default, 10, is kept");
    }
  }
  if (const auto lost = attr(user_, farm, "mlost_count")) {
    note(Kind::kUnmapped, user_, farm,
         "mlost_count=\"" + *lost +
             "\": vipfarm's membership has no leader to re-elect (every node computes the "
             "same view, docs/membership.md)");
  }
}

bool Importer::resolve_nodes() {
  struct RawNode {
    std::string name;
    std::string addr;
    const Xml* xml;
    pugi::xml_node where;
  };
  struct RawLan {
    std::string name;
    std::vector<RawNode> nodes;
    pugi::xml_node where;
  };
  // cluster.xml (§12.1.2): <cluster><lans><lan name><node name addr [laddr]/>...
  std::map<std::string, RawLan> cluster_lans;
  if (cluster_) {
    const pugi::xml_node root = cluster_->doc().document_element();
    if (std::string_view(root.name()) != "cluster") {
      fail(*cluster_, root, "no <cluster> element: not a SafeKit cluster.xml (§12.1)");
      return false;
    }
    for (const pugi::xml_node lans_el : root.children()) {
      if (lans_el.type() != pugi::node_element) continue;
      if (std::string_view(lans_el.name()) != "lans") {
        unknown_element(*cluster_, lans_el);
        continue;
      }
      check_attributes(*cluster_, lans_el, {"port", "pulse", "mlost_count", "slost_count"});
      for (const char* a : {"port", "pulse", "mlost_count", "slost_count"}) {
        if (lans_el.attribute(a)) {
          note(Kind::kUnmapped, *cluster_, lans_el,
               std::string(a) + "=\"" + lans_el.attribute(a).value() +
                   "\": SafeKit's own cluster protocol; the farm's heartbeats follow "
                   "userconfig.xml's <farm>");
        }
      }
      for (const pugi::xml_node lan : lans_el.children()) {
        if (lan.type() != pugi::node_element) continue;
        if (std::string_view(lan.name()) != "lan") {
          unknown_element(*cluster_, lan);
          continue;
        }
        check_attributes(*cluster_, lan, {"name", "command", "console", "framework"});
        if (lan.attribute("command")) {
          note(Kind::kUnmapped, *cluster_, lan,
               "command=\"" + std::string(lan.attribute("command").value()) +
                   "\": the network of SafeKit's distributed commands; vipfarm has none");
        }
        for (const char* a : {"console", "framework"}) {
          if (lan.attribute(a)) {
            note(Kind::kUnmapped, *cluster_, lan,
                 std::string(a) + "=\"" + lan.attribute(a).value() +
                     "\": obsolete since SafeKit 8.2 (§12.1.3); ignored");
          }
        }
        RawLan raw{lan.attribute("name").value(), {}, lan};
        for (const pugi::xml_node n : lan.children()) {
          if (n.type() != pugi::node_element) continue;
          if (std::string_view(n.name()) != "node") {
            unknown_element(*cluster_, n);
            continue;
          }
          check_attributes(*cluster_, n, {"name", "addr", "laddr"});
          raw.nodes.push_back(
              {n.attribute("name").value(), n.attribute("addr").value(), &*cluster_, n});
        }
        cluster_lans.emplace(raw.name, std::move(raw));
      }
    }
  }
  std::vector<RawLan> lans;
  for (const pugi::xml_node lan : farm_.children()) {
    if (lan.type() != pugi::node_element) continue;
    if (std::string_view(lan.name()) != "lan") {
      unknown_element(user_, lan);
      continue;
    }
    check_attributes(user_, lan, {"name"});
    RawLan raw{attr(user_, lan, "name").value_or(""), {}, lan};
    // The legacy syntax (before 7.2, §13.5.3) lists the nodes in userconfig.xml itself.
    for (const pugi::xml_node n : lan.children()) {
      if (n.type() != pugi::node_element) continue;
      if (std::string_view(n.name()) != "node") {
        unknown_element(user_, n);
        continue;
      }
      check_attributes(user_, n, {"name", "addr"});
      raw.nodes.push_back(
          {attr(user_, n, "name").value_or(""), attr(user_, n, "addr").value_or(""), &user_, n});
    }
    if (raw.nodes.empty()) {
      if (!cluster_) {
        fail(user_, lan,
             "<lan name=\"" + raw.name +
                 "\">: the nodes and their addresses are in SafeKit's cluster configuration "
                 "(SAFEVAR/cluster/cluster.xml, §12): give that file too");
        return false;
      }
      const auto it = cluster_lans.find(raw.name);
      if (it == cluster_lans.end()) {
        fail(user_, lan,
             "<lan name=\"" + raw.name + "\"> is not a network of " + cluster_->file() +
                 " (§13.5.3)");
        return false;
      }
      raw.nodes = it->second.nodes;
    }
    lans.push_back(std::move(raw));
  }
  if (lans.empty()) {
    fail(user_, farm_, "<farm> names no <lan>: at least one is needed (§13.5.3)");
    return false;
  }
  std::map<std::string, unsigned> ids;
  std::set<IpAddr> addresses;
  for (const RawNode& n : lans.front().nodes) {
    if (n.name.empty()) {
      fail(*n.xml, n.where, "a <node> without a name");
      return false;
    }
    const auto ip = parse_address(n.addr);
    if (!ip) {
      fail(*n.xml, n.where,
           "node \"" + n.name + "\": addr=\"" + n.addr +
               "\" is not an IP address: vipfarm needs each node's address (a name is not "
               "resolved here)");
      return false;
    }
    if (!ids.emplace(n.name, static_cast<unsigned>(nodes_.size()) + 1).second) {
      fail(*n.xml, n.where, "node \"" + n.name + "\" is listed twice");
      return false;
    }
    if (!addresses.insert(*ip).second) {
      fail(*n.xml, n.where, "node \"" + n.name + "\": address " + n.addr + " is used twice");
      return false;
    }
    if (n.where.attribute("laddr")) {
      note(Kind::kUnmapped, *n.xml, n.where,
           "laddr=\"" + std::string(n.where.attribute("laddr").value()) +
               "\": vipfarm has no NAT between nodes; the node's address is addr=\"" + n.addr +
               "\"");
    }
    nodes_.push_back({n.name, *ip});
  }
  if (nodes_.empty()) {
    fail(user_, lans.front().where, "<lan name=\"" + lans.front().name + "\"> has no node");
    return false;
  }
  if (nodes_.size() > kMaxNodes) {
    fail(user_, lans.front().where,
         std::to_string(nodes_.size()) + " nodes: vipfarm takes at most " +
             std::to_string(kMaxNodes));
    return false;
  }
  if (options_.node.empty()) {
    self_ = 0;
    note_global(Kind::kTodo, "no node chosen: [node] is \"" + nodes_.front().name +
                                 "\" (id 1); convert once per node, naming each in turn");
  } else {
    const auto it = ids.find(std::string(options_.node));
    if (it == ids.end()) {
      std::string names;
      for (const Node& n : nodes_) names += (names.empty() ? "" : ", ") + n.name;
      fail(user_, lans.front().where,
           "no node \"" + std::string(options_.node) + "\" in the farm (nodes: " + names + ")");
      return false;
    }
    self_ = it->second - 1;
  }
  for (std::size_t l = 1; l < lans.size(); ++l) {
    const RawLan& raw = lans[l];
    Lan lan{raw.name, {}, path_of(raw.where)};
    std::set<unsigned> seen;
    for (const RawNode& n : raw.nodes) {
      const auto id = ids.find(n.name);
      const auto ip = parse_address(n.addr);
      if (id == ids.end()) {
        note(Kind::kUnmapped, *n.xml, n.where,
             "node \"" + n.name + "\" is not on the farm's first network (\"" + lans.front().name +
                 "\"): left out of network \"" + raw.name + "\"");
      } else if (!ip) {
        note(Kind::kUnmapped, *n.xml, n.where,
             "addr=\"" + n.addr + "\" is not an IP address: left out of network \"" + raw.name +
                 "\"");
      } else if (seen.insert(id->second).second) {
        lan.addresses.emplace_back(id->second, *ip);
      }
    }
    const bool has_self = seen.count(self_ + 1) != 0;
    if (lan.name.empty() || !has_self ||
        std::any_of(lans_.begin(), lans_.end(), [&](const Lan& x) { return x.name == lan.name; })) {
      note(Kind::kUnmapped, user_, raw.where,
           lan.name.empty() ? "a <lan> without a name: left out"
           : !has_self      ? "node \"" + nodes_[self_].name + "\" has no address on network \"" +
                             lan.name + "\": left out of this node's heartbeat networks"
                       : "network \"" + lan.name + "\" is listed twice: left out");
      continue;
    }
    lans_.push_back(std::move(lan));
  }
  return true;
}

void Importer::read_vip(pugi::xml_node vip) {
  check_attributes(user_, vip, {"tcpreset", "scriptcontrol"});
  if (const auto reset = attr(user_, vip, "tcpreset")) {
    note(Kind::kUnmapped, user_, vip,
         "tcpreset=\"" + *reset +
             "\": vipfarm resets no connection when the VIP goes; with [flows] handoff a "
             "planned change keeps them (docs/handoff.md)");
  }
  if (const auto control = attr(user_, vip, "scriptcontrol"); control && *control != "off") {
    note(Kind::kApproximated, user_, vip,
         "scriptcontrol=\"" + *control +
             "\": where SafeKit's scripts open and close the VIP's traffic (vipd SETGROUPS, "
             "§15.2.3.2), run vipfarmctl start / vipfarmctl stop (or resume / drain)");
  }
  for (const pugi::xml_node n : vip.children()) {
    if (n.type() != pugi::node_element) continue;
    const std::string_view name = n.name();
    if (name == "interface_list") {
      std::size_t count = 0;
      for ([[maybe_unused]] const pugi::xml_node i : n.children("interface")) ++count;
      if (count > 1) {
        note(Kind::kApproximated, user_, n,
             "several <interface>: vipfarm serves every VIP on its one uplink");
      }
      for (const pugi::xml_node i : n.children()) {
        if (i.type() != pugi::node_element) continue;
        if (std::string_view(i.name()) == "interface") {
          read_interface(i);
        } else {
          unknown_element(user_, i);
        }
      }
    } else if (name == "loadbalancing_list") {
      for (const pugi::xml_node g : n.children()) {
        if (g.type() != pugi::node_element) continue;
        if (std::string_view(g.name()) == "group") {
          read_group(g);
        } else {
          unknown_element(user_, g);
        }
      }
    } else {
      unknown_element(user_, n);
    }
  }
}

void Importer::read_interface(pugi::xml_node interface) {
  check_attributes(user_, interface, {"check", "arpreroute", "arpinterval", "arpelapse", "name"});
  const auto name = attr(user_, interface, "name");
  if (name && !name->empty() && !uplink_name_) uplink_name_ = *name;
  // check="on" is the default (§13.6.5): an interface checker puts the module in WAIT while
  // the interface is down, which is what vipfarm's interface checker does to a node.
  if (attr(user_, interface, "check").value_or("on") == "on") {
    // As the loader will judge it, in the TOML's UTF-8 (a stray byte becomes two).
    if (name && valid_ifname(toml_unquoted(*name))) {
      checkers_.push_back({unique_checker_name("intf-" + *name, interface), "interface", *name,
                           std::nullopt, std::nullopt, path_of(interface)});
    } else {
      note(Kind::kUnmapped, user_, interface,
           "check=\"on\" watches the interface holding the VIPs, which SafeKit finds itself; "
           "vipfarm's interface checker needs its name (name=\"...\" is not set, or not a "
           "valid interface name): add one by hand (a commented [[checker]] follows in the "
           "TOML)");
      hints_.push_back("# from " + commented(path_of(interface)) +
                       "\n# [[checker]]\n# name = \"uplink\"\n# kind = \"interface\"\n"
                       "# target = \"eth0\"          # the uplink's kernel netdev\n");
    }
  }
  if (const auto reroute = attr(user_, interface, "arpreroute")) {
    note(Kind::kApproximated, user_, interface,
         "arpreroute=\"" + *reroute +
             "\": vipfarm always announces its VIPs (gratuitous ARP, unsolicited NA)");
  }
  if (const auto v = attr(user_, interface, "arpinterval")) {
    if (const auto ms = duration_ms(*v, 1000000); ms && *ms >= 1000 && *ms <= 3600000) {
      garp_interval_s_ = *ms / 1000;
      note(Kind::kApproximated, user_, interface,
           "arpinterval=\"" + *v + "\": dataplane.garp_interval in the commented [dataplane]");
    } else {
      note(Kind::kUnmapped, user_, interface,
           "arpinterval=\"" + *v + "\": not a period vipfarm takes (1 to 3600 s)");
    }
  }
  if (const auto v = attr(user_, interface, "arpelapse")) {
    if (const auto ms = duration_ms(*v, 1000000); ms && *ms <= 86400000) {
      garp_duration_s_ = *ms / 1000;
      note(Kind::kApproximated, user_, interface,
           "arpelapse=\"" + *v + "\": dataplane.garp_duration in the commented [dataplane]");
    } else {
      note(Kind::kUnmapped, user_, interface,
           "arpelapse=\"" + *v + "\": not a duration vipfarm takes (0 to 86400 s)");
    }
  }
  for (const pugi::xml_node n : interface.children()) {
    if (n.type() != pugi::node_element) continue;
    const std::string_view child = n.name();
    if (child == "virtual_interface") {
      read_virtual_interface(n);
    } else if (child == "real_interface") {
      note(Kind::kUnmapped, user_, n,
           "<real_interface>: the VIP of a mirror module, on one node at a time (§13.6.5.2); "
           "a farm's VIPs are in <virtual_interface>: not imported");
    } else {
      unknown_element(user_, n);
    }
  }
}

void Importer::read_virtual_interface(pugi::xml_node vi) {
  check_attributes(user_, vi, {"type", "addr"});
  const auto type = attr(user_, vi, "type");
  if (!type) {
    note(Kind::kApproximated, user_, vi,
         "no type: the guide gives no default (§13.6.5.1); served as type=\"vmac_invisible\"");
  } else if (*type == "vmac_directed") {
    note(Kind::kApproximated, user_, vi,
         "type=\"vmac_directed\": imported as l2_mode = \"directed\" (docs/directed.md): each "
         "client is answered by one node's own MAC, chosen by the same buckets, and the nodes "
         "forward what they do not own; SafeKit's proto=\"arp\" rule is not needed");
  } else if (*type != "vmac_invisible") {
    note(Kind::kApproximated, user_, vi,
         "type=\"" + *type + "\" is not in the guide; served as type=\"vmac_invisible\"");
  }
  std::optional<MacAddr> mac;
  if (const auto text = attr(user_, vi, "addr")) {
    const auto parsed = parse_mac(*text);
    if (!parsed || ((*parsed)[0] & 1) != 0) {
      note(Kind::kUnmapped, user_, vi,
           "addr=\"" + *text +
               "\" is not a unicast MAC address: the default virtual MAC is "
               "used");
    } else if (std::any_of(vips_.begin(), vips_.end(), [&](const Vip& v) {
                 return v.mac == *parsed || default_vip_mac(v.address) == *parsed;
               })) {
      note(Kind::kUnmapped, user_, vi,
           "addr=\"" + *text + "\" is already another VIP's virtual MAC: the default is used");
    } else {
      mac = parsed;
    }
  }
  bool first = true;
  for (const pugi::xml_node n : vi.children()) {
    if (n.type() != pugi::node_element) continue;
    if (std::string_view(n.name()) != "virtual_addr") {
      unknown_element(user_, n);
      continue;
    }
    check_attributes(user_, n, {"addr", "where", "check", "connections", "netmask"});
    const std::string text = attr(user_, n, "addr").value_or("");
    const auto ip = parse_address(text);
    if (!ip) {
      note(Kind::kUnmapped, user_, n,
           "addr=\"" + text +
               "\" is not an IP address (a name is not resolved here): this "
               "VIP is not imported");
      continue;
    }
    if (std::any_of(vips_.begin(), vips_.end(), [&](const Vip& v) { return v.address == *ip; })) {
      note(Kind::kUnmapped, user_, n, text + " is listed twice: imported once");
      continue;
    }
    if (std::any_of(nodes_.begin(), nodes_.end(),
                    [&](const Node& x) { return x.address == *ip; })) {
      note(Kind::kUnmapped, user_, n, text + " is also a node's address: not imported as a VIP");
      continue;
    }
    if (const auto where = attr(user_, n, "where"); where && *where != "alias") {
      note(Kind::kApproximated, user_, n,
           "where=\"" + *where +
               "\": a farm's VIPs are where=\"alias\" (§13.6.5.1); imported "
               "as a farm VIP");
    }
    if (attr(user_, n, "check").value_or("on") == "on") {
      note(Kind::kUnmapped, user_, n,
           "check=\"on\" (the default): SafeKit's ip checker; vipfarmd puts the VIP on its "
           "own interface itself and keeps it there: no checker");
    }
    if (attr(user_, n, "connections").value_or("off") != "off") {
      note(Kind::kUnmapped, user_, n,
           "connections=\"on\": vipfarm counts tracked flows (vipfarm_flows_tracked), not "
           "connections per VIP");
    }
    if (const auto mask = attr(user_, n, "netmask")) {
      note(Kind::kUnmapped, user_, n,
           "netmask=\"" + *mask + "\": vipfarm puts an IPv4 VIP on its TAP as a /32");
    }
    Vip v{*ip, std::nullopt, path_of(n), type && *type == "vmac_directed"};
    const std::string own = vipfarm::to_string(default_vip_mac(*ip));
    if (first) {
      v.mac = mac;
      if (!mac && !ip->is_v4()) {
        note(Kind::kApproximated, user_, n,
             "SafeKit's default virtual MAC is 5A:FE and the first VIP in hex (§13.6.5.1), "
             "which the guide does not define for IPv6; this VIP gets vipfarm's " +
                 own);
      }
    } else {
      note(Kind::kApproximated, user_, n,
           "SafeKit answers for every VIP of a <virtual_interface> with one virtual MAC; "
           "vipfarm gives each VIP its own: " +
               own);
    }
    first = false;
    vips_.push_back(std::move(v));
  }
}

void Importer::read_group(pugi::xml_node group) {
  check_attributes(user_, group, {"name"});
  Group g;
  g.from = path_of(group);
  g.name = attr(user_, group, "name").value_or("");
  const std::string fallback = "group" + std::to_string(groups_.size() + 1);
  if (g.name.empty()) {
    note(Kind::kApproximated, user_, group, "a <group> without a name: named " + fallback);
    g.name = fallback;
  } else if (std::any_of(groups_.begin(), groups_.end(),
                         [&](const Group& x) { return x.name == g.name; })) {
    note(Kind::kApproximated, user_, group,
         "group \"" + g.name + "\" is named twice: this one is " + g.name + "-" + fallback);
    g.name += "-" + fallback;
  }
  bool cluster_seen = false;
  for (const pugi::xml_node n : group.children()) {
    if (n.type() != pugi::node_element) continue;
    const std::string_view name = n.name();
    if (name == "rule") {
      if (auto rule = read_rule(n)) g.rules.push_back(std::move(*rule));
      continue;
    }
    if (name != "cluster") {
      unknown_element(user_, n);
      continue;
    }
    if (cluster_seen) {
      note(Kind::kUnmapped, user_, n, "a second <cluster> in the group: ignored");
      continue;
    }
    cluster_seen = true;
    g.listed_members = true;
    check_attributes(user_, n, {});
    for (const pugi::xml_node h : n.children()) {
      if (h.type() != pugi::node_element) continue;
      if (std::string_view(h.name()) != "host") {
        unknown_element(user_, h);
        continue;
      }
      check_attributes(user_, h, {"name", "power"});
      const std::string host = attr(user_, h, "name").value_or("");
      const auto node =
          std::find_if(nodes_.begin(), nodes_.end(), [&](const Node& x) { return x.name == host; });
      if (node == nodes_.end()) {
        note(Kind::kUnmapped, user_, h,
             "host \"" + host + "\" is not a node of the farm (§13.6.6): left out");
        continue;
      }
      const auto id = static_cast<unsigned>(node - nodes_.begin()) + 1;
      if (std::any_of(g.members.begin(), g.members.end(),
                      [&](const Member& m) { return m.node == id; })) {
        note(Kind::kUnmapped, user_, h, "host \"" + host + "\" is listed twice: left out");
        continue;
      }
      std::uint64_t weight = 1;
      if (const auto power = attr(user_, h, "power")) {
        if (const auto value = to_uint(*power)) {
          weight = std::min<std::uint64_t>(*value, 1000);
          if (*value > 1000) {
            note(Kind::kApproximated, user_, h,
                 "power=\"" + *power + "\": vipfarm's weights go up to 1000; weight 1000");
          }
        } else {
          note(Kind::kApproximated, user_, h, "power=\"" + *power + "\" is not a number: weight 1");
        }
      } else {
        note(Kind::kApproximated, user_, h, "no power: weight 1");
      }
      g.members.push_back({id, weight});
    }
  }
  const bool any_weight =
      std::any_of(g.members.begin(), g.members.end(), [](const Member& m) { return m.weight > 0; });
  if (g.rules.empty()) {
    note(Kind::kUnmapped, user_, group,
         "group \"" + g.name + "\" has no rule that could be imported: left out");
  } else if (g.listed_members && !any_weight) {
    note(Kind::kUnmapped, user_, group,
         "group \"" + g.name +
             "\" has no host with a power above 0, so it takes no traffic: "
             "left out (its traffic is dropped as unmatched)");
  } else {
    groups_.push_back(std::move(g));
  }
}

std::optional<Rule> Importer::read_rule(pugi::xml_node rule) {
  check_attributes(user_, rule, {"virtual_addr", "port", "proto", "filter"});
  Rule r;
  r.from = path_of(rule);
  if (const auto vip = attr(user_, rule, "virtual_addr"); vip && *vip != "*") {
    const auto ip = parse_address(*vip);
    if (!ip ||
        std::none_of(vips_.begin(), vips_.end(), [&](const Vip& v) { return v.address == *ip; })) {
      note(Kind::kUnmapped, user_, rule,
           "virtual_addr=\"" + *vip + "\" is not an imported VIP address: rule left out");
      return std::nullopt;
    }
    r.vip = ip->to_string();
  }
  if (const auto port = attr(user_, rule, "port"); port && *port != "*") {
    const auto value = to_uint(*port);
    if (!value || *value > 65535) {
      note(Kind::kUnmapped, user_, rule,
           "port=\"" + *port + "\": not a port (\"*\" or a number, §13.6.6): rule left out");
      return std::nullopt;
    }
    r.port = static_cast<std::uint16_t>(*value);
  }
  const auto proto = attr(user_, rule, "proto");
  if (!proto) {
    note(Kind::kUnmapped, user_, rule, "no proto (it is required, §13.6.6): rule left out");
    return std::nullopt;
  }
  if (*proto == "arp") {
    note(Kind::kUnmapped, user_, rule,
         "proto=\"arp\" shares ARP/ND answers in vmac_directed mode (§13.6.7.3); vipfarm "
         "answers them itself (a directed VIP: the requester's ARP owner, with its own MAC): "
         "rule left out");
    return std::nullopt;
  }
  if (*proto != "tcp" && *proto != "udp") {
    note(Kind::kUnmapped, user_, rule, "proto=\"" + *proto + "\" is not tcp or udp: rule left out");
    return std::nullopt;
  }
  r.proto = *proto;
  const auto filter = attr(user_, rule, "filter");
  if (!filter || (*filter != "on_addr" && *filter != "on_port" && *filter != "on_ipid")) {
    note(Kind::kUnmapped, user_, rule,
         (filter ? "filter=\"" + *filter + "\" is not on_addr, on_port or on_ipid"
                 : std::string("no filter (it is required, §13.6.6)")) +
             ": rule left out");
    return std::nullopt;
  }
  r.key = *filter;
  if (r.key == "on_ipid" && r.proto == "tcp") {
    note(Kind::kApproximated, user_, rule,
         "filter=\"on_ipid\" with TCP (the guide: no sense for TCP): kept as key = \"on_ipid\", "
         "which spreads the packets of one connection over the nodes");
  }
  return r;
}

std::string Importer::unique_checker_name(std::string name, pugi::xml_node node) {
  const auto taken = [&](const std::string& n) {
    return std::any_of(checkers_.begin(), checkers_.end(),
                       [&](const Checker& c) { return c.name == n; });
  };
  if (!taken(name)) return name;
  std::string other;
  for (unsigned k = 2; taken(other = name + "-" + std::to_string(k)); ++k) {
  }
  note(Kind::kApproximated, user_, node,
       "checker name \"" + name + "\" is already used: named \"" + other + "\"");
  return other;
}

void Importer::read_check(pugi::xml_node check) {
  check_attributes(user_, check, {});
  const std::size_t before = checkers_.size();
  for (const pugi::xml_node n : check.children()) {
    if (n.type() != pugi::node_element) continue;
    const std::string_view name = n.name();
    if (name == "tcp" || name == "ping") {
      read_probe(n, name);
    } else if (name == "intf") {
      check_attributes(user_, n, {"ident", "when"});
      const std::string addr = attr(user_, n.child("to"), "local_addr").value_or("");
      note(Kind::kUnmapped, user_, n,
           "watches the interface that holds local_addr=\"" + addr +
               "\"; vipfarm's interface checker takes the interface's name instead: add it by "
               "hand (a commented [[checker]] follows in the TOML)");
      hints_.push_back("# from " + commented(path_of(n)) + "\n# [[checker]]\n# name = " +
                       quote(attr(user_, n, "ident").value_or("intf")) +
                       "\n# kind = \"interface\"\n# target = \"eth0\"          # the "
                       "interface that holds " +
                       commented(addr) + "\n");
    } else if (name == "custom") {
      check_attributes(user_, n, {"ident", "when", "exec", "arg", "action"});
      const std::string exec = attr(user_, n, "exec").value_or("");
      const std::string arg = attr(user_, n, "arg").value_or("");
      note(Kind::kUnmapped, user_, n,
           "a SafeKit custom checker is a long-running loop that sets its resource with "
           "safekit set (§13.16); vipfarm runs one command per check, exit 0 = healthy: "
           "rewrite exec=\"" +
               exec +
               "\" as such a command (a commented [[checker]] follows "
               "in the TOML)");
      hints_.push_back(
          "# from " + commented(path_of(n)) +
          "\n# [[checker]]\n# name = " + quote(attr(user_, n, "ident").value_or("custom")) +
          "\n# kind = \"custom\"\n# target = " + quote(exec + (arg.empty() ? "" : " " + arg)) +
          "   # one check per run: exit 0 = healthy\n");
    } else if (name == "ip") {
      note(Kind::kUnmapped, user_, n,
           "ip checker (§13.15): vipfarmd puts the VIPs on its own interface and keeps them "
           "there: no checker");
    } else if (name == "module") {
      note(Kind::kUnmapped, user_, n,
           "module checker (§13.17): vipfarm cannot watch a SafeKit module; a [[checker]] "
           "kind = \"tcp\" or \"custom\" on the service it depends on comes closest");
    } else if (name == "splitbrain") {
      note(Kind::kUnmapped, user_, n,
           "split-brain checker (§13.18, mirror modules): the closest in vipfarm is "
           "[membership] split_brain = \"majority\" with witness = the address pinged");
    } else {
      unknown_element(user_, n);
    }
  }
  if (checkers_.size() > before) {
    note(Kind::kApproximated, user_, check,
         "SafeKit acts on a checker's first failed test (once the failover machine's "
         "handle_time, 15 s by default, has passed, §13.19.3); the imported checkers have "
         "rise = 1 and fall = 1: raise fall to damp short failures");
  }
}

// <tcp> (§13.12) and <ping> (§13.13): ident, when, action and one <to>.
void Importer::read_probe(pugi::xml_node probe, std::string_view kind) {
  check_attributes(user_, probe, {"ident", "when", "action"});
  const bool tcp = kind == "tcp";
  std::string ident = attr(user_, probe, "ident").value_or("");
  if (ident.empty()) {
    ident = std::string(kind) + std::to_string(checkers_.size() + 1);
    note(Kind::kApproximated, user_, probe, "no ident: named " + ident);
  }
  if (const auto when = attr(user_, probe, "when"); when && *when != "both" && *when != "pre") {
    note(Kind::kApproximated, user_, probe,
         "when=\"" + *when + "\" is a mirror-module role; the checker runs on every node");
  }
  const std::string action = attr(user_, probe, "action").value_or(tcp ? "restart" : "wait");
  const std::string from = path_of(probe);
  const auto hint = [&](std::string_view target) {
    hints_.push_back("# from " + commented(from) + "\n# [[checker]]\n# name = " + quote(ident) +
                     "\n# kind = " + quote(kind) + "\n# target = " + quote(target) + "\n");
  };
  const pugi::xml_node to = probe.child("to");
  if (!to) {
    note(Kind::kUnmapped, user_, probe, "no <to>: nothing to check; left out");
    return;
  }
  for (const pugi::xml_node n : probe.children()) {
    if (n.type() != pugi::node_element) continue;
    if (std::string_view(n.name()) != "to") {
      unknown_element(user_, n);
    } else if (n != to) {
      note(Kind::kUnmapped, user_, n, "a second <to>: only the first is imported");
    }
  }
  if (tcp) {
    check_attributes(user_, to, {"addr", "port", "interval", "timeout"});
  } else {
    check_attributes(user_, to, {"addr", "interval", "timeout"});
  }
  const std::string addr = attr(user_, to, "addr").value_or("");
  std::optional<IpAddr> ip = parse_address(addr);
  if (!ip && addr == "localhost") {
    ip = IpAddr::parse("127.0.0.1");
    note(Kind::kApproximated, user_, to, "addr=\"localhost\": checked at 127.0.0.1");
  }
  std::optional<std::uint64_t> port;
  if (tcp) {
    const std::string text = attr(user_, to, "port").value_or("");
    port = to_uint(text);
    if (!port || *port < 1 || *port > 65535) {
      note(Kind::kUnmapped, user_, to, "port=\"" + text + "\" is not a TCP port: left out");
      return;
    }
  }
  std::string target;
  if (ip) {
    target = tcp ? endpoint_text(*ip, static_cast<std::uint16_t>(*port)) : ip->to_string();
  }
  if (action == "noaction") {
    note(Kind::kUnmapped, user_, probe,
         "action=\"noaction\": the checker only sets its resource, for a <failover> rule to "
         "act on; vipfarm checkers always act: left out (a commented [[checker]] follows in "
         "the TOML)");
    hint(target.empty() ? addr : target);
    return;
  }
  if (!ip) {
    note(Kind::kUnmapped, user_, to,
         "addr=\"" + addr +
             "\" is not an IP address (a name is not resolved here): left out "
             "(a commented [[checker]] follows in the TOML)");
    hint(tcp ? addr + ":" + std::to_string(*port) : addr);
    return;
  }
  if (action != "wait") {
    note(Kind::kApproximated, user_, probe,
         "action=\"" + action +
             "\": a failing vipfarm checker takes the node out of the farm (WAIT) until it "
             "passes, as action=\"wait\"; it does not restart or stop the application (for "
             "restarts use the application's systemd unit, Restart=)");
  }
  Checker c{unique_checker_name(ident, probe), std::string(kind), target, 10000, 5000, from};
  // Defaults of <to>: interval 10 s, timeout 5 s (§13.12.3, §13.13.3).
  for (const auto& [name, field, lo] :
       {std::make_tuple("interval", &c.interval_ms, std::uint64_t{10}),
        std::make_tuple("timeout", &c.timeout_ms, std::uint64_t{1})}) {
    const auto text = attr(user_, to, name);
    if (!text) continue;
    const auto ms = duration_ms(*text, 1000000);
    if (!ms) {
      note(Kind::kUnmapped, user_, to,
           std::string(name) + "=\"" + *text + "\" is not a duration: SafeKit's default kept");
      continue;
    }
    *field = std::clamp<std::uint64_t>(*ms, lo, 3600000);
    if (*field != *ms) {
      note(Kind::kApproximated, user_, to,
           std::string(name) + "=\"" + *text + "\": " + std::to_string(**field) +
               " ms, the nearest vipfarm takes");
    }
  }
  checkers_.push_back(std::move(c));
}

std::string Importer::emit() const {
  std::string t;
  const auto line = [&](std::string_view text) {
    t += text;
    t += '\n';
  };
  line("# vipfarm configuration imported from a SafeKit farm module (vipfarmctl import-safekit).");
  line("# source: " +
       commented(user_.file() + (cluster_ ? ", nodes from " + cluster_->file() : "")));
  line("# Every node of the farm gets this file with its own [node]. The notes at the end say");
  line("# what SafeKit had that this file does not carry; read them before deploying.");
  line("");
  line("[node]");
  line("id = " + std::to_string(self_ + 1));
  line("name = " + quote(nodes_[self_].name));
  line("");
  line("[cluster]");
  line("name = " + quote(cluster_name_));
  line("buckets = 256                # SafeKit's load-balancing bitmap has 256 bits");
  line("seed = 0                     # any value, the same on every node");
  line("unmatched = \"drop\"           # SafeKit denies VIP traffic that no rule matches");
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    line("");
    line("[[cluster.node]]");
    line("id = " + std::to_string(i + 1));
    line("name = " + quote(nodes_[i].name));
    line("address = " + quote(nodes_[i].address.to_string()));
  }
  for (const Vip& v : vips_) {
    line("");
    line("[[vip]]                      # " + v.from);
    line("address = " + quote(v.address.to_string()));
    if (v.mac) line("mac = " + quote(vipfarm::to_string(*v.mac)));
    if (v.directed) line("l2_mode = \"directed\"");
  }
  for (const Group& g : groups_) {
    line("");
    line("[[group]]                    # " + g.from);
    line("name = " + quote(g.name));
    for (const Member& m : g.members) {
      line("");
      line("[[group.member]]");
      line("node = " + std::to_string(m.node) + "                     # " +
           nodes_[m.node - 1].name);
      line("weight = " + std::to_string(m.weight) + "                   # SafeKit's power");
    }
    for (const Rule& r : g.rules) {
      line("");
      line("[[group.rule]]               # " + r.from);
      line("vip = " + quote(r.vip));
      line("proto = " + quote(r.proto));
      line("ports = " + (r.port ? std::to_string(*r.port) : std::string("\"*\"")));
      line("key = " + quote(r.key));
    }
  }
  line("");
  line("[membership]                 # " + path_of(farm_));
  if (port_) line("port = " + std::to_string(*port_));
  line("interval_ms = " + std::to_string(interval_ms_) + "            # SafeKit's pulse");
  line("dead_after = " + std::to_string(dead_after_) + "               # SafeKit's slost_count");
  line("split_brain = \"serve\"        # SafeKit's farm: every partition serves");
  line("");
  line("[[membership.key]]           # SafeKit has none: create it (see the notes)");
  line("id = 1");
  line("file = " + quote(kSafekitKeyFile));
  for (const Lan& lan : lans_) {
    line("");
    line("[[membership.lan]]           # " + lan.from);
    line("name = " + quote(lan.name));
    for (const auto& [id, address] : lan.addresses) {
      line("");
      line("[[membership.lan.node]]");
      line("id = " + std::to_string(id));
      line("address = " + quote(address.to_string()));
    }
  }
  for (const Checker& c : checkers_) {
    line("");
    line("[[checker]]                  # " + commented(c.from));
    line("name = " + quote(c.name));
    line("kind = " + quote(c.kind));
    line("target = " + quote(c.target));
    if (c.interval_ms) line("interval_ms = " + std::to_string(*c.interval_ms));
    if (c.timeout_ms) line("timeout_ms = " + std::to_string(*c.timeout_ms));
    line("rise = 1");
    line("fall = 1");
  }
  line("");
  line("# [dataplane]                # this node's NIC: fill in, then uncomment");
  line("# uplink = " +
       quote(uplink_name_ ? "net_af_xdp0,iface=" + *uplink_name_ + ",busy_budget=0"
                          : std::string("0000:3b:00.0")) +
       "   # a PCI address or a DPDK vdev");
  if (garp_interval_s_) line("# garp_interval = " + std::to_string(*garp_interval_s_));
  if (garp_duration_s_) line("# garp_duration = " + std::to_string(*garp_duration_s_));
  if (!hints_.empty()) {
    line("");
    line("# Not imported, to adapt by hand (see the notes):");
    for (const std::string& h : hints_) {
      line("");
      t += h;
    }
  }
  line("");
  line("# Notes from the import:");
  for (const SafekitNote& n : notes_) {
    line("#   " + commented(n.to_string()));
  }
  return t;
}

}  // namespace

std::string SafekitNote::to_string() const {
  std::string out = file;
  if (line != 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!path.empty()) out += path + ": ";
  return out + std::string(kind_name(kind)) + ": " + message;
}

std::string SafekitError::to_string() const {
  std::string out = file;
  if (line != 0) out += ":" + std::to_string(line);
  if (line != 0 && column != 0) out += ":" + std::to_string(column);
  out += ": ";
  if (!path.empty()) out += path + ": ";
  return out + message;
}

SafekitImport import_safekit(std::string_view userconfig_xml, std::string_view source,
                             const SafekitOptions& options) {
  try {
    Importer importer(userconfig_xml, source, options);
    return importer.run();
  } catch (const std::exception& e) {
    SafekitImport out;
    out.error =
        SafekitError{std::string(source), 0, 0, "", std::string("import failed: ") + e.what()};
    return out;
  }
}

}  // namespace vipfarm::config
