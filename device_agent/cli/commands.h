// The `edgesplit` subcommands, as a library so tests run them in-process.
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_COMMANDS_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

namespace edgesplit {
namespace cli {

// Runs `edgesplit <args...>` (args excludes the program name). Generated
// text goes to `out`; statistics, usage and errors to `err`. Returns the
// process exit code (0 ok, 1 failure, 2 usage error).
int Run(const std::vector<std::string>& args, std::ostream& out,
        std::ostream& err);

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_CLI_COMMANDS_H_
