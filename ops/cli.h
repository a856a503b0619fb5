// Command-line flags of edgesplit's programs, on CLI11 (Debian's
// libcli11-dev): each program and subcommand answers --help with its flags
// and an example; an unknown flag is an error that names the closest known
// one. Exit codes, the same for every program:
//
//   0  success (and --help)
//   1  the command failed: a bad config or input file, a peer that could
//      not be reached, a refused request
//   2  usage: an unknown flag or subcommand, a missing or malformed value
//
// Daemons also take --log-format text|json and --log-level (ops/log.h).
#ifndef EDGESPLIT_OPS_CLI_H_
#define EDGESPLIT_OPS_CLI_H_

#include <ostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace edgesplit {
namespace cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Parses `args` (without the program name) into `app`'s options. Returns
// -1 when the program should go on; otherwise the exit code after printing:
// kExitOk after --help (the help on `out`), kExitUsage after an error (on
// `err`, with "did you mean --X?" for an unknown flag close to a known one
// and a pointer to --help).
int Parse(CLI::App& app, const std::vector<std::string>& args,
          std::ostream& out, std::ostream& err);

// The known long flag of `app` (or of its chosen subcommand) closest to
// `unknown` ("--contoller" -> "--controller"), or "" when none is within
// a third of its length in edit distance.
std::string ClosestFlag(const CLI::App& app, const std::string& unknown);

// A daemon's command line: adds --log-format and --log-level and a footer
// with `example` and the exit codes to `app`, parses argv, configures
// ops/log.h for the program (`app`'s name). -1: go on; else the exit code.
int ParseDaemonFlags(CLI::App& app, const std::string& example, int argc,
                     char** argv);

// The daemons' logging flags, added to `app`; LogSetup() applies them.
struct LogFlags {
  std::string format = "text";
  std::string level = "info";
};
void AddLogFlags(CLI::App& app, LogFlags* flags);
// Configures ops/log.h for `program`; false (and the error on `err`) for
// an unknown format or level.
bool LogSetup(const std::string& program, const LogFlags& flags,
              std::ostream& err);

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_OPS_CLI_H_
