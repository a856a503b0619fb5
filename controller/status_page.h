// The controller's HTTP port (ops/ops_http.h) with its status page:
//   GET /             one self-contained HTML page (no external assets)
//                     that fetches /status.json every second and draws the
//                     nodes (state, measured compute and memory), links
//                     (RTT, bandwidth), each model's plan as the chain
//                     device -> servers with block ranges and predicted
//                     latency (SVG), live sessions and training jobs;
//   GET /status.json  the same as JSON;
// besides /healthz, /readyz and /metrics (the controller's registry). Like
// the rest of the port it is plain HTTP and read-only: it shows node names,
// addresses and plans, never sessions' data; bind it where only operators
// reach.
#ifndef EDGESPLIT_CONTROLLER_STATUS_PAGE_H_
#define EDGESPLIT_CONTROLLER_STATUS_PAGE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "controller/controller.h"
#include "ops/ops_http.h"

namespace edgesplit {

// What /status.json answers (thread-safe: reads the controller's state
// under its lock).
std::string ControllerStatusJson(Controller& controller);

// The page /.
const std::string& ControllerStatusHtml();

// Starts the controller's HTTP port on `listen` with the probes (`ready`,
// thread-safe), its metrics and the status page. `controller` must outlive
// the returned server.
absl::StatusOr<std::unique_ptr<OpsHttp>> StartControllerHttp(
    const std::string& listen, Controller* controller,
    std::function<bool()> ready);

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_STATUS_PAGE_H_
