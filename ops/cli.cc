#include "ops/cli.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/match.h"
#include "ops/log.h"

namespace edgesplit {
namespace cli {
namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min(
          {row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The app whose flags apply: the deepest subcommand chosen.
const CLI::App* Chosen(const CLI::App& app) {
  const CLI::App* at = &app;
  for (;;) {
    auto subs = at->get_subcommands();
    if (subs.empty()) return at;
    at = subs.front();
  }
}

bool IsKnown(const CLI::App& app, const std::string& flag) {
  const std::string name = flag.substr(0, flag.find('='));
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& l : o->get_lnames()) {
      if (name == "--" + l) return true;
    }
  }
  return false;
}

}  // namespace

std::string ClosestFlag(const CLI::App& app, const std::string& unknown) {
  const std::string name = unknown.substr(0, unknown.find('='));
  std::string best;
  size_t best_d = name.size() / 3 + 1;
  for (const CLI::Option* o : Chosen(app)->get_options()) {
    for (const std::string& l : o->get_lnames()) {
      const size_t d = EditDistance(name, "--" + l);
      if (d < best_d) {
        best_d = d;
        best = "--" + l;
      }
    }
  }
  return best;
}

int Parse(CLI::App& app, const std::vector<std::string>& args,
          std::ostream& out, std::ostream& err) {
  // CLI11 takes the words last first.
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
    return -1;
  } catch (const CLI::CallForHelp&) {
    out << Chosen(app)->help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    const CLI::App* chosen = Chosen(app);
    err << chosen->get_name() << ": " << e.what() << "\n";
    for (const std::string& a : args) {
      if (!absl::StartsWith(a, "--") || IsKnown(*chosen, a)) continue;
      const std::string close = ClosestFlag(app, a);
      if (!close.empty()) {
        err << "  " << a.substr(0, a.find('=')) << ": did you mean " << close
            << "?\n";
      }
    }
    err << "Run with --help for the flags and an example.\n";
    return kExitUsage;
  }
}

void AddLogFlags(CLI::App& app, LogFlags* flags) {
  app.add_option("--log-format", flags->format,
                 "Log lines as text or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--log-level", flags->level,
                 "Least severe level logged: debug, info, warning, error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}))
      ->capture_default_str();
}

bool LogSetup(const std::string& program, const LogFlags& flags,
              std::ostream& err) {
  auto format = log::ParseFormat(flags.format);
  auto level = log::ParseLevel(flags.level);
  if (!format.ok() || !level.ok()) {
    err << program << ": "
        << (format.ok() ? level.status() : format.status()).message() << "\n";
    return false;
  }
  log::Configure(program, *format, *level);
  return true;
}

int ParseDaemonFlags(CLI::App& app, const std::string& example, int argc,
                     char** argv) {
  LogFlags log_flags;
  AddLogFlags(app, &log_flags);
  app.footer("Example:\n  " + example +
             "\nExit codes: 0 stopped cleanly, 1 bad config or failed "
             "start, 2 usage.");
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (int rc = Parse(app, args, std::cout, std::cerr); rc >= 0) return rc;
  if (!LogSetup(app.get_name(), log_flags, std::cerr)) return kExitUsage;
  return -1;
}

}  // namespace cli
}  // namespace edgesplit
