// The admin API's commands, each declared once: its name, vipfarmctl's synopsis and help
// line, and the fields its request may carry (its schema). vipfarmd answers through a
// Dispatcher that holds one handler per declared command and checks every request against
// the declaration first; vipfarmctl prints its usage from the same table, and the CLI test
// checks the man page and the bash completion against it.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>

namespace vipfarm::api {

// A request field besides "cmd". Every field is optional; the handler checks ranges.
struct Field {
  enum class Kind { kNumber, kString, kIdList };  // kIdList: an array of unsigned integers
  std::string_view name;
  Kind kind;
};

struct Command {
  std::string_view name;
  std::string_view synopsis;  // vipfarmctl's arguments after the name; empty: the API only
  std::string_view help;      // what it does, one sentence (lines of up to 60 characters)
  std::span<const Field> fields;
  // Why it is not answered when no handler was registered (the config lacks what it needs).
  std::string_view unavailable = "not available in this configuration";
};

// Every admin command, in the order vipfarmctl's usage lists them.
std::span<const Command> admin_commands();
const Command* find_command(std::string_view name);

// One request → its reply ({"ok": true, ...} or {"ok": false, "error": ...}).
using Handler = std::function<nlohmann::json(const nlohmann::json&)>;

class Dispatcher {
 public:
  // Registers the handler of a declared command; a name that is not declared, or declared
  // twice, is a programming error (std::logic_error, at start-up).
  void on(std::string_view name, Handler handler);
  // Checks the request against its command's declaration (a known "cmd", no undeclared
  // field, each field of its kind) and calls its handler.
  nlohmann::json handle(const nlohmann::json& request) const;

 private:
  std::map<std::string_view, Handler> handlers_;
};

}  // namespace vipfarm::api
