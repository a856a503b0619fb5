// What `edgesplit <command> --help` says: each command's description and
// example, each flag's help line.
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_FLAG_HELP_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_FLAG_HELP_H_

#include <string>
#include <vector>

namespace edgesplit {
namespace cli {

struct CommandHelp {
  const char* description;
  const char* example;
  // Its positional words ("DIR|FILE.gguf"); null: it takes none.
  const char* positional = nullptr;
};

// Every command ("model init", "generate", ...).
std::vector<std::string> CommandNames();

// `command` as typed ("model init"); null for an unknown one.
const CommandHelp* FindCommandHelp(const std::string& command);

// The help line of --`flag` in `command` ("" when it has none: a test
// checks every flag of every command has one).
std::string FlagHelp(const std::string& command, const std::string& flag);

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_CLI_FLAG_HELP_H_
