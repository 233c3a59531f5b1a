// The configuration schema: every key, its type, default, range and reload class. The
// loader rejects keys that are not here; the README's reference is generated from it.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace vipfarm::config {

enum class ValueType {
  kTable,
  kTableArray,
  kInteger,
  kString,
  kStringList,
  kPorts,
  kBool,
  kAddressList
};
enum class Reload { kRestart, kReloadable };

struct KeySpec {
  std::string_view path;  // dotted, arrays of tables as name[] (e.g. group[].rule[].key)
  ValueType type;
  std::string_view default_value;  // "required" when there is none
  std::string_view range;
  Reload reload;
  std::string_view help;
};

std::span<const KeySpec> schema() noexcept;
const KeySpec* find_key(std::string_view path) noexcept;

// The configuration reference as a Markdown table (README.md embeds it verbatim).
std::string reference_markdown();

}  // namespace vipfarm::config
