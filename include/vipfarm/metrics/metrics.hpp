// The Prometheus endpoint: per-lcore counters are summed when scraped, never per packet.
#pragma once

#include <memory>
#include <string>

#include "vipfarm/control/control.hpp"
#include "vipfarm/control/host_path.hpp"
#include "vipfarm/control/membership_service.hpp"
#include "vipfarm/dataplane/dataplane.hpp"

namespace vipfarm::metrics {

// Serves /metrics over HTTP (control::HttpServer, with its bounds) on a thread of its own,
// named vf-metrics: a scrape never waits for the control thread, nor delays it.
class Exporter {
 public:
  Exporter();
  // Stops the thread and closes every connection.
  ~Exporter();
  // Serves /metrics on `listen` (address:port); returns an error message, empty on success.
  // `membership` may be null (no [membership]: a static view).
  std::string start(const std::string& listen, const control::Control& control,
                    const dataplane::Dataplane& dataplane,
                    const control::MembershipService* membership,
                    const control::HostPath* host_path);

 private:
  struct Server;
  std::unique_ptr<Server> server_;
};

}  // namespace vipfarm::metrics
