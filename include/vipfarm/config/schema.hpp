// The configuration schema: every key, its type, default, range, how a reload applies it and
// how a change of it is found. The loader rejects keys that are not here; the README's
// reference, changed_keys() and reload_refusal() are generated from it.
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
// How a running daemon takes a new value of the key (vipfarmd's reload(), docs/handoff.md).
enum class Reload {
  kRestart,  // restart only: reload refuses a file that changes it, naming the key
  // ownership::Ledger::set_farm: how traffic is classified and the buckets owned (the unmatched and
  // echo policies, groups' modes, members, weights and rules); MembershipService::apply
  // gives the peers the new fingerprint and this node's weights.
  kFarm,
  kFlows,       // ownership::Ledger::set_farm: the flow handoff window and timeouts
  kMembership,  // MembershipService::apply: heartbeat timers, policies and the witness
  kKeys,        // MembershipService::reload_keys: the cluster keys, read again
  kCheckers,    // MembershipService::apply: the health checks, kept by name with their health
};

struct Config;
// Whether a key's value differs between two configs.
using Differs = bool (*)(const Config&, const Config&);

// How changed_keys() finds that a key changed: by its own comparison, or as part of another
// key (a table array's fields compare as their table does). A key with neither is a plain
// table whose keys are compared one by one.
struct Compare {
  Differs differs = nullptr;
  std::string_view within;  // the key a change of this one is reported as
};

struct KeySpec {
  std::string_view path;  // dotted, arrays of tables as name[] (e.g. group[].rule[].key)
  ValueType type;
  std::string_view default_value;  // "required" when there is none
  std::string_view range;
  Reload reload;
  Compare compare;
  std::string_view help;
};

std::span<const KeySpec> schema() noexcept;
const KeySpec* find_key(std::string_view path) noexcept;

// The configuration reference as a Markdown table (README.md embeds it verbatim).
std::string reference_markdown();

}  // namespace vipfarm::config
