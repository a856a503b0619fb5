// `edgesplit plan` (what-if planning from a cluster file) and `edgesplit
// cluster status` (the controller's cost graph and plans).
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_CLUSTER_COMMANDS_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_CLUSTER_COMMANDS_H_

#include <ostream>

#include "absl/status/status.h"
#include "device_agent/cli/args.h"

namespace edgesplit {
namespace cli {

// --cluster FILE --model DIR [--objective O] [--model-id ID] [--out FILE]
absl::Status PlanCommand(const Args& args, std::ostream& out,
                         std::ostream& err);
// --controller HOST:PORT
absl::Status ClusterStatusCommand(const Args& args, std::ostream& out);

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_CLI_CLUSTER_COMMANDS_H_
