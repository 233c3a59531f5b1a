// The admin API's ownership and data plane commands (status, buckets, owner, view,
// counters), answered from the ledger (ownership/ledger.hpp) and the data plane's counters.
// Runs on the control thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vipfarm/config/config.hpp"
#include "vipfarm/dataplane/dataplane.hpp"
#include "vipfarm/ownership/ledger.hpp"

namespace vipfarm::control {

class Control {
 public:
  Control(ownership::Ledger& ledger, const dataplane::Dataplane& dataplane);

  // The admin commands it answers (api/commands.hpp declares them): replies
  // {"ok": true, ...} or {"ok": false, "error": ...}.
  nlohmann::json status() const;
  nlohmann::json buckets() const;
  nlohmann::json counters() const;
  nlohmann::json owner(const nlohmann::json& request) const;
  // Without [membership]: `set` (node ids) becomes the view at once.
  nlohmann::json view(const nlohmann::json& request);

  struct Identity {
    std::string cluster;
    unsigned node;
    std::string name;
  };
  Identity identity() const;
  // The configured nodes' ids.
  std::vector<unsigned> node_ids() const;
  const ownership::Ledger& ledger() const noexcept { return ledger_; }

 private:
  ownership::Ledger& ledger_;
  const dataplane::Dataplane& dataplane_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace vipfarm::control
