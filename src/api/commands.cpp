// The admin commands' declarations and their dispatch (commands.hpp).
#include "vipfarm/api/commands.hpp"

#include <algorithm>
#include <array>
#include <stdexcept>

namespace vipfarm::api {

namespace {

using Kind = Field::Kind;

constexpr std::array<Field, 4> kOwnerFields = {{{"proto", Kind::kString},
                                                {"client", Kind::kString},
                                                {"server", Kind::kString},
                                                {"via", Kind::kString}}};
constexpr std::array<Field, 1> kViewFields = {{{"set", Kind::kIdList}}};
constexpr std::array<Field, 1> kDrainFields = {{{"timeout_s", Kind::kNumber}}};
constexpr std::string_view kMembership = "needs [membership] in the config";

const std::array<Command, 13> kCommands = {{
    {"status", "[--socket PATH] [--json]", "node, view, snapshot generation, owned buckets", {}},
    {"counters", "[--socket PATH] [--json]", "packet counters by verdict and reason", {}},
    {"nodes",
     "[--socket PATH] [--json]",
     "every node: state, weights, share, last heard",
     {},
     kMembership},
    {"view", "[set IDS] [--socket PATH] [--json]",
     "the installed view: epoch, members, proposal; without [membership], `view set IDS` "
     "(e.g. 1,3) makes IDS the view and the buckets move now",
     kViewFields},
    {"history",
     "[--socket PATH] [--json]",
     "installed views: time, members, moved, cause",
     {},
     kMembership},
    {"state",
     "[--socket PATH] [--json]",
     "this node's state, also as the exit status: 0 STOP, 1 WAIT, 2 UP, 3 DRAIN, 4 no answer",
     {},
     kMembership},
    {"reload",
     "[--socket PATH] [--json]",
     "re-read the config file (as SIGHUP): every reloadable key applies at once; a "
     "restart-only change is refused, named; an invalid file changes nothing",
     {}},
    {"drain", "[--timeout SECONDS] [--socket PATH] [--json]",
     "leave the farm keeping this node's connections until they end or the timeout (default "
     "[flows] window); STOP",
     kDrainFields, kMembership},
    {"resume", "[--socket PATH] [--json]", "back from DRAIN or STOP", {}, kMembership},
    {"stop", "[--socket PATH] [--json]", "take this node out of the farm (STOP)", {}, kMembership},
    {"start", "[--socket PATH] [--json]", "bring this node back into the farm", {}, kMembership},
    {"buckets", "--socket PATH [--json]", "the daemon's owner map, per group and node", {}},
    {"owner", "",
     "which group, bucket and node take a flow (proto, client, server, via), under the "
     "daemon's running config and view",
     kOwnerFields},
}};

nlohmann::json error(const std::string& message) { return {{"ok", false}, {"error", message}}; }

bool of_kind(const nlohmann::json& value, Kind kind) {
  switch (kind) {
    case Kind::kNumber:
      return value.is_number();
    case Kind::kString:
      return value.is_string();
    case Kind::kIdList:
      return value.is_array() && std::all_of(value.begin(), value.end(),
                                             [](const auto& v) { return v.is_number_unsigned(); });
  }
  return false;
}

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::kNumber:
      return "a number";
    case Kind::kString:
      return "a string";
    case Kind::kIdList:
      return "an array of node ids";
  }
  return "?";
}

}  // namespace

std::span<const Command> admin_commands() { return kCommands; }

const Command* find_command(std::string_view name) {
  const auto it = std::find_if(kCommands.begin(), kCommands.end(),
                               [name](const Command& c) { return c.name == name; });
  return it == kCommands.end() ? nullptr : &*it;
}

void Dispatcher::on(std::string_view name, Handler handler) {
  const Command* command = find_command(name);
  if (command == nullptr)
    throw std::logic_error("admin command not declared: " + std::string(name));
  if (!handlers_.emplace(command->name, std::move(handler)).second) {
    throw std::logic_error("admin command registered twice: " + std::string(name));
  }
}

nlohmann::json Dispatcher::handle(const nlohmann::json& request) const {
  if (!request.is_object()) return error("a request is a JSON object");
  const auto cmd = request.find("cmd");
  if (cmd == request.end() || !cmd->is_string()) return error("missing \"cmd\" (a string)");
  const std::string name = cmd->get<std::string>();
  const Command* command = find_command(name);
  if (command == nullptr) {
    std::string known;
    for (const Command& c : kCommands) known += (known.empty() ? "" : ", ") + std::string(c.name);
    return error("unknown command \"" + name + "\" (" + known + ")");
  }
  for (const auto& [key, value] : request.items()) {
    if (key == "cmd") continue;
    const auto field = std::find_if(command->fields.begin(), command->fields.end(),
                                    [&key](const Field& f) { return f.name == key; });
    if (field == command->fields.end()) return error(name + ": unknown field \"" + key + "\"");
    if (!of_kind(value, field->kind)) {
      return error(name + ": \"" + key + "\" must be " + std::string(kind_name(field->kind)));
    }
  }
  const auto handler = handlers_.find(command->name);
  if (handler == handlers_.end()) return error(name + ": " + std::string(command->unavailable));
  return handler->second(request);
}

}  // namespace vipfarm::api
