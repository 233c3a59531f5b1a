// The Prometheus endpoint: per-lcore counters are summed when scraped, never per packet.
#pragma once

#include <memory>
#include <string>

#include "vipfarm/control/control.hpp"
#include "vipfarm/control/host_path.hpp"
#include "vipfarm/control/membership_service.hpp"
#include "vipfarm/dataplane/dataplane.hpp"

namespace prometheus {
class Collectable;
class Exposer;
}  // namespace prometheus

namespace vipfarm::metrics {

class Exporter {
 public:
  Exporter();
  ~Exporter();
  // Serves /metrics on `listen` (address:port); returns an error message, empty on success.
  // `membership` may be null (no [membership]: a static view).
  std::string start(const std::string& listen, const control::Control& control,
                    const dataplane::Dataplane& dataplane,
                    const control::MembershipService* membership,
                    const control::HostPath* host_path);

 private:
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Collectable> collector_;
};

}  // namespace vipfarm::metrics
