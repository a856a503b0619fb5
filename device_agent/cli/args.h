// The `edgesplit` tool's parsed command lines: each subcommand's flags
// are parsed by CLI11 (ops/cli.h: --help, closest-flag suggestions, exit
// codes) into an Args, which the commands read by flag name: positional
// words, `--name value` / `--name=value` / `--flag`. Unknown flags and
// malformed numbers are errors naming the flag.
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_ARGS_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_ARGS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {
namespace cli {

// What --help says about a command.
struct CommandInfo {
  std::string name;         // "edgesplit model init"
  std::string description;  // A sentence or two.
  std::string example;      // One command line.
  // What its positional words are ("DIR"); "": it takes none.
  std::string positional;
  // The help line of a flag.
  std::function<std::string(const std::string& flag)> help =
      [](const std::string&) { return std::string(); };
};

class Args {
 public:
  // `value_flags` take a value; `bool_flags` don't. --help and usage
  // errors become INVALID_ARGUMENT (the message names the flag).
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& value_flags,
                                    const std::set<std::string>& bool_flags);
  // The same for a program's command: --help prints `info` and the flags
  // on `out`, a usage error (with the closest flag) on `err`; both return
  // nullopt with *exit_code set (0, 2).
  static std::optional<Args> ParseCommand(
      const std::vector<std::string>& argv,
      const std::set<std::string>& value_flags,
      const std::set<std::string>& bool_flags, const CommandInfo& info,
      std::ostream& out, std::ostream& err, int* exit_code);

  void Set(const std::string& flag, std::string value) {
    values_[flag] = std::move(value);
  }
  void AddPositional(std::string word) {
    positional_.push_back(std::move(word));
  }

  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& flag) const { return values_.count(flag) > 0; }
  std::string String(const std::string& flag, std::string fallback = "") const;
  absl::StatusOr<std::string> RequiredString(const std::string& flag) const;
  absl::StatusOr<int64_t> Int(const std::string& flag, int64_t fallback) const;
  absl::StatusOr<double> Double(const std::string& flag, double fallback) const;
  // Comma-separated integers ("2,4").
  absl::StatusOr<std::vector<int64_t>> IntList(const std::string& flag) const;

 private:
  std::vector<std::string> positional_;
  std::map<std::string, std::string> values_;
};

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_CLI_ARGS_H_
