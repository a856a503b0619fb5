// `edgesplit adapter register|list|placement` and `edgesplit model
// register|fetch`: the controller's adapter
// registry.
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_ADAPTER_COMMANDS_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_ADAPTER_COMMANDS_H_

#include <ostream>

#include "absl/status/status.h"
#include "device_agent/cli/args.h"
#include "edgesplit/v1/delivery.pb.h"

namespace edgesplit {
namespace cli {

// --controller HOST:PORT --model-id ID --name NAME --dir DIR (admin TLS):
// uploads the PEFT directory's two files (skipping blobs the controller
// already holds) and registers them under NAME.
absl::Status AdapterRegisterCommand(const Args& args, std::ostream& out);
// --controller HOST:PORT [--model-id ID]
absl::Status AdapterListCommand(const Args& args, std::ostream& out);
// --controller HOST:PORT --model-id ID --name NAME --dir DIR (admin TLS):
// uploads a model directory's parts (delivery/model_pack.h) and registers
// them as model copy NAME.
absl::Status ModelRegisterCommand(const Args& args, std::ostream& out);
// --controller HOST:PORT --model-id ID --name NAME --out DIR
// [--blob-dir DIR] [--device NAME]: writes model copy NAME as DIR, fetching
// only the parts not already in the blob directory (default: .edgesplit-
// blobs beside DIR); as the admin, or as device NAME (its `devices:` rules
// must allow the model).
absl::Status ModelFetchCommand(const Args& args, std::ostream& out);
// --controller HOST:PORT: the controller's adapter placement.
absl::Status AdapterPlacementCommand(const Args& args, std::ostream& out);
// Prints a placement (also under `cluster status`).
void PrintAdapterPlacement(const v1::AdapterPlacement& placement,
                           std::ostream& out);

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_CLI_ADAPTER_COMMANDS_H_
