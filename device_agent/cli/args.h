// Minimal command-line parsing for the `edgesplit` tool's subcommands:
// positional words, then `--name value` / `--name=value` / `--flag`.
// Unknown flags and malformed numbers are errors naming the flag.
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_ARGS_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_ARGS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {
namespace cli {

class Args {
 public:
  // `value_flags` take a value; `bool_flags` don't.
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& value_flags,
                                    const std::set<std::string>& bool_flags);

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
