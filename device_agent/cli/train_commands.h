// `edgesplit train` (split fine-tuning with LoRA from a text or JSONL file
// on this device) and `edgesplit adapter export` (one PEFT adapter from
// every shard's checkpoint).
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_TRAIN_COMMANDS_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_TRAIN_COMMANDS_H_

#include <ostream>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "device_agent/cli/args.h"
#include "edgesplit/device_agent.h"

namespace edgesplit {
namespace cli {

// The flags each command takes (values, then booleans).
extern const std::set<std::string> kTrainFlags, kTrainBoolFlags;

// --privacy-epsilon, --privacy-delta, --privacy-clip, --privacy-grad-clip
// into `privacy`; --privacy-budget FILE and --privacy-budget-epsilon LIMIT
// into `agent` (generate and train take them).
absl::Status ApplyPrivacyFlags(const Args& a, DeviceAgentOptions* agent,
                               PrivacyOptions* privacy);
extern const std::set<std::string> kExportFlags;

// Progress (a bar on a terminal, else one line per --log-every steps) and
// eval lines go to `err`; the summary to `out`.
absl::Status TrainCommand(const Args& args, std::ostream& out,
                          std::ostream& err);
absl::Status AdapterExportCommand(const Args& args, std::ostream& out);

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_CLI_TRAIN_COMMANDS_H_
