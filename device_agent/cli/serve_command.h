// `edgesplit serve`: the OpenAI-compatible HTTP API (openai/server.h) on
// a local model directory or on a cluster's split model.
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_SERVE_COMMAND_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_SERVE_COMMAND_H_

#include <ostream>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "device_agent/cli/args.h"

namespace edgesplit {
namespace cli {

extern const std::set<std::string> kServeFlags;      // Take a value.
extern const std::set<std::string> kServeBoolFlags;  // --mmap-weights, ...

// serve (--model DIR | --controller HOST:PORT --model-id ID[,ID...])
//       [--listen HOST:PORT] ...: serves until SIGINT or SIGTERM, then
// stops accepting, lets the requests in progress finish and returns.
// Prints "listening on http://HOST:PORT/v1" to `out` once it serves.
absl::Status ServeCommand(const Args& a, std::ostream& out, std::ostream& err);

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_CLI_SERVE_COMMAND_H_
