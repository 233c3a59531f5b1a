// Import of a SafeKit farm module (its userconfig.xml, and the cluster.xml that holds its
// nodes' addresses) into a vipfarm TOML, with a note for everything that does not carry over.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vipfarm::config {

// One thing of the SafeKit configuration that the TOML does not carry exactly as it was.
struct SafekitNote {
  enum class Kind : std::uint8_t {
    kUnmapped,      // no vipfarm equivalent: left out (a commented hint in the TOML where useful)
    kApproximated,  // mapped to the closest vipfarm setting; the message says what differs
    kTodo,          // the operator must act (create the cluster key, set the uplink, ...)
  };
  Kind kind = Kind::kUnmapped;
  std::string file;        // the XML it concerns (the userconfig.xml or the cluster.xml)
  std::uint32_t line = 0;  // of the element; 0 when the note is about the whole import
  std::string path;        // the element, e.g. /safe/service/vip/loadbalancing_list/group[2]/rule
  std::string message;

  // "userconfig.xml:12: /safe/service/user: unmapped: module scripts are not run ..."
  std::string to_string() const;
};

// Why nothing could be converted: malformed XML, not a farm module, nothing loadable left.
struct SafekitError {
  std::string file;
  std::uint32_t line = 0;    // 0: not tied to a place in the file
  std::uint32_t column = 0;  // 0: the whole line or element
  std::string path;          // the element at fault; empty for XML syntax errors
  std::string message;

  // "file:line:col: path: message" (the parts that are known)
  std::string to_string() const;
};

// The views must outlive the call only.
struct SafekitOptions {
  // The SafeKit node name that becomes [node]; empty: the first node of the farm (noted).
  std::string_view node{};
  // [cluster] name; empty: the module's directory (SAFE/modules/<name>/conf/userconfig.xml),
  // else "safekit" (noted). userconfig.xml does not hold the module's name.
  std::string_view cluster_name{};
  // SafeKit >= 7.2 keeps the nodes and their addresses in the cluster configuration
  // (SAFEVAR/cluster/cluster.xml), userconfig.xml names only its networks: pass that file's
  // text here. Not needed when userconfig.xml uses the legacy <lan><node addr=.../></lan>.
  std::string_view cluster_xml{};
  std::string_view cluster_xml_source = "cluster.xml";
};

struct SafekitImport {
  std::optional<SafekitError> error;  // set: no TOML (the notes found so far are kept)
  std::string toml;                   // loads with config::parse without an error
  std::vector<SafekitNote> notes;     // import-wide ones first, then by file and line; also
                                      // listed, as comments, at the end of the TOML
};

// Converts a SafeKit farm module's userconfig.xml (`source` names it in messages) into the
// vipfarm configuration of one node. Pure: reads no file, throws nothing.
SafekitImport import_safekit(std::string_view userconfig_xml, std::string_view source,
                             const SafekitOptions& options = {});

// The file the emitted [[membership.key]] points at; the import does not create it.
inline constexpr std::string_view kSafekitKeyFile = "/etc/vipfarm/cluster.key";

}  // namespace vipfarm::config
