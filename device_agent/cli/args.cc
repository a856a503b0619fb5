#include "device_agent/cli/args.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace edgesplit {
namespace cli {

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv,
                                 const std::set<std::string>& value_flags,
                                 const std::set<std::string>& bool_flags) {
  Args args;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) {
      args.positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (bool_flags.count(name) > 0) {
      if (inline_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " takes no value"));
      }
      args.values_[name] = inline_value ? value : "true";
    } else if (value_flags.count(name) > 0) {
      if (!inline_value) {
        if (i + 1 >= argv.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("flag --", name, " needs a value"));
        }
        value = argv[++i];
      }
      args.values_[name] = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  return args;
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
