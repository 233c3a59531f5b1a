// A blocking one-request client of the admin API, for vipfarmctl and the tests.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

namespace vipfarm::api {

struct ApiReply {
  bool transport_ok = false;  // a reply line arrived and parsed as JSON
  std::string error;          // why not, naming the socket path; empty when transport_ok
  nlohmann::json body;        // the daemon's reply (it may itself say "ok": false)
};

// Connects to `path`, sends `request` as one line and reads one line back, all within
// `timeout`. Never throws for transport problems.
ApiReply api_call(const std::string& path, const nlohmann::json& request,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

}  // namespace vipfarm::api
