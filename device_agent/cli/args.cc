#include "device_agent/cli/args.h"

#include <map>
#include <memory>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ops/cli.h"

namespace edgesplit {
namespace cli {

namespace {

// The CLI11 app of one command: a string option per value flag (the last
// given wins, as with most tools), a flag per boolean, positional words.
struct Built {
  std::unique_ptr<CLI::App> app;
  std::vector<std::pair<std::string, CLI::Option*>> values;
  // Flags bound to bools, so CLI11 converts `--flag=VALUE` while parsing
  // (a bad value is a usage error there). A map: the addresses stay put.
  std::map<std::string, bool> bools;
  std::vector<std::string> positional;
};

// "--name=" (an explicitly empty value) as two words: CLI11 would take
// the next word as the value instead.
std::vector<std::string> SplitEmptyValues(
    const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (const std::string& a : argv) {
    if (a.size() > 3 && a.compare(0, 2, "--") == 0 && a.back() == '=' &&
        a.find('=') == a.size() - 1) {
      out.push_back(a.substr(0, a.size() - 1));
      out.push_back("");
    } else {
      out.push_back(a);
    }
  }
  return out;
}

std::unique_ptr<Built> Build(const std::set<std::string>& value_flags,
                             const std::set<std::string>& bool_flags,
                             const CommandInfo& info) {
  auto b = std::make_unique<Built>();
  b->app = std::make_unique<CLI::App>(info.description, info.name);
  // Wide enough that every flag's help stays on its line.
  b->app->get_formatter()->column_width(38);
  for (const std::string& f : value_flags) {
    CLI::Option* o = b->app->add_option("--" + f)->description(info.help(f));
    o->type_size(1)->expected(1)->type_name("VALUE");
    o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    b->values.emplace_back(f, o);
  }
  for (const std::string& f : bool_flags) {
    b->app->add_flag("--" + f, b->bools[f])->description(info.help(f));
  }
  if (!info.positional.empty()) {
    b->app->add_option("args", b->positional, info.positional)
        ->expected(0, -1)
        ->type_name("");
  }
  if (!info.example.empty()) {
    b->app->footer("Example:\n  " + info.example +
                   "\nExit codes: 0 success, 1 the command failed, 2 usage.");
  }
  return b;
}

Args Collect(const Built& b) {
  Args args;
  for (const auto& [name, o] : b.values) {
    if (o->count() > 0) args.Set(name, o->results().back());
  }
  for (const auto& [name, on] : b.bools) {
    if (on) args.Set(name, "true");
  }
  for (const std::string& p : b.positional) args.AddPositional(p);
  return args;
}

}  // namespace

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv,
                                 const std::set<std::string>& value_flags,
                                 const std::set<std::string>& bool_flags) {
  CommandInfo info;
  info.name = "edgesplit";
  info.positional = "ARGS";
  std::unique_ptr<Built> b = Build(value_flags, bool_flags, info);
  std::ostringstream out, err;
  const int rc = cli::Parse(*b->app, SplitEmptyValues(argv), out, err);
  if (rc == kExitOk) return absl::InvalidArgumentError("--help given");
  if (rc >= 0) {
    std::string message = err.str();
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return absl::InvalidArgumentError(message);
  }
  return Collect(*b);
}

std::optional<Args> Args::ParseCommand(const std::vector<std::string>& argv,
                                       const std::set<std::string>& value_flags,
                                       const std::set<std::string>& bool_flags,
                                       const CommandInfo& info,
                                       std::ostream& out, std::ostream& err,
                                       int* exit_code) {
  std::unique_ptr<Built> b = Build(value_flags, bool_flags, info);
  const int rc = cli::Parse(*b->app, SplitEmptyValues(argv), out, err);
  if (rc >= 0) {
    *exit_code = rc;
    return std::nullopt;
  }
  return Collect(*b);
}

std::string Args::String(const std::string& flag, std::string fallback) const {
  auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<std::string> Args::RequiredString(
    const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end() || it->second.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("missing --", flag));
  }
  return it->second;
}

absl::StatusOr<int64_t> Args::Int(const std::string& flag,
                                  int64_t fallback) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return fallback;
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flag --", flag, ": \"", it->second, "\" is not an integer"));
  }
  return v;
}

absl::StatusOr<double> Args::Double(const std::string& flag,
                                    double fallback) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return fallback;
  double v;
  if (!absl::SimpleAtod(it->second, &v)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flag --", flag, ": \"", it->second, "\" is not a number"));
  }
  return v;
}

absl::StatusOr<std::vector<int64_t>> Args::IntList(
    const std::string& flag) const {
  std::vector<int64_t> out;
  auto it = values_.find(flag);
  if (it == values_.end() || it->second.empty()) return out;
  for (absl::string_view part : absl::StrSplit(it->second, ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", flag, ": \"", part, "\" is not an integer"));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace cli
}  // namespace edgesplit
