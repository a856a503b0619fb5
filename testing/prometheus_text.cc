#include "testing/prometheus_text.h"

#include <cmath>
#include <cstdlib>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace edgesplit {
namespace testing {
namespace {

bool IsNameChar(char c, bool first, bool colons) {
  return absl::ascii_isalpha(c) || c == '_' || (colons && c == ':') ||
         (!first && absl::ascii_isdigit(c));
}

// Reads a name at the front of `s`.
std::string TakeName(absl::string_view* s, bool colons) {
  size_t n = 0;
  while (n < s->size() && IsNameChar((*s)[n], n == 0, colons)) ++n;
  std::string name(s->substr(0, n));
  s->remove_prefix(n);
  return name;
}

// Go's ParseFloat as the format allows: decimal or exponent notation,
// NaN, +Inf, -Inf (and Inf).
bool ParseValue(absl::string_view s, double* v) {
  if (s == "NaN") {
    *v = NAN;
    return true;
  }
  if (s == "+Inf" || s == "Inf") {
    *v = INFINITY;
    return true;
  }
  if (s == "-Inf") {
    *v = -INFINITY;
    return true;
  }
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && c != '.' && c != 'e' && c != 'E' &&
        c != '+' && c != '-') {
      return false;
    }
  }
  return absl::SimpleAtod(s, v);
}

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", what));
}

// A label set: {a="x",b="y"} with escapes \\ \" \n; a trailing comma is
// allowed.
absl::Status ParseLabels(absl::string_view* s, int line,
                         std::map<std::string, std::string>* labels) {
  s->remove_prefix(1);  // '{'
  while (true) {
    if (!s->empty() && s->front() == '}') {
      s->remove_prefix(1);
      return absl::OkStatus();
    }
    const std::string name = TakeName(s, /*colons=*/false);
    if (name.empty()) return LineError(line, "bad label name");
    if (s->size() < 2 || (*s)[0] != '=' || (*s)[1] != '"') {
      return LineError(line, absl::StrCat("label ", name, " lacks =\""));
    }
    s->remove_prefix(2);
    std::string value;
    while (true) {
      if (s->empty()) return LineError(line, "unterminated label value");
      const char c = s->front();
      s->remove_prefix(1);
      if (c == '"') break;
      if (c == '\n') return LineError(line, "raw newline in a label value");
      if (c != '\\') {
        value.push_back(c);
        continue;
      }
      if (s->empty()) return LineError(line, "escape at the end");
      const char e = s->front();
      s->remove_prefix(1);
      if (e == 'n') {
        value.push_back('\n');
      } else if (e == '\\' || e == '"') {
        value.push_back(e);
      } else {
        return LineError(line,
                         absl::StrCat("bad escape \\", std::string(1, e)));
      }
    }
    if (!labels->emplace(name, value).second) {
      return LineError(line, absl::StrCat("label ", name, " repeated"));
    }
    if (!s->empty() && s->front() == ',') {
      s->remove_prefix(1);
    } else if (s->empty() || s->front() != '}') {
      return LineError(line, absl::StrCat("no , or } after label ", name));
    }
  }
}

// The family a sample belongs to: its name, or for histograms and
// summaries its name less the suffix.
std::string FamilyOf(const std::string& sample,
                     const std::map<std::string, PromFamily>& families) {
  for (absl::string_view suffix : {"_bucket", "_sum", "_count"}) {
    if (absl::EndsWith(sample, suffix)) {
      std::string base = sample.substr(0, sample.size() - suffix.size());
      auto it = families.find(base);
      if (it != families.end() &&
          (it->second.type == "histogram" || it->second.type == "summary")) {
        return base;
      }
    }
  }
  return sample;
}

absl::Status CheckHistogram(const PromFamily& f) {
  // Group by labels other than le.
  std::map<std::map<std::string, std::string>,
           std::vector<std::pair<double, double>>>
      buckets;
  std::map<std::map<std::string, std::string>, double> counts, sums;
  for (const PromSample& s : f.samples) {
    auto labels = s.labels;
    if (s.name == f.name + "_bucket") {
      auto le = labels.find("le");
      double bound = 0;
      if (le == labels.end() || !ParseValue(le->second, &bound)) {
        return absl::InvalidArgumentError(
            absl::StrCat(f.name, ": a bucket without a numeric le"));
      }
      labels.erase(le);
      buckets[labels].push_back({bound, s.value});
    } else if (s.name == f.name + "_count") {
      counts[labels] = s.value;
    } else if (s.name == f.name + "_sum") {
      sums[labels] = s.value;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(f.name, ": stray sample ", s.name));
    }
  }
  for (const auto& [labels, bs] : buckets) {
    for (size_t i = 1; i < bs.size(); ++i) {
      if (!(bs[i].first > bs[i - 1].first) || bs[i].second < bs[i - 1].second) {
        return absl::InvalidArgumentError(absl::StrCat(
            f.name, ": buckets not increasing in le or not cumulative"));
      }
    }
    if (bs.empty() || !std::isinf(bs.back().first)) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.name, ": no +Inf bucket"));
    }
    auto c = counts.find(labels);
    if (c == counts.end() || c->second != bs.back().second) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.name, ": _count missing or not the +Inf bucket"));
    }
    if (sums.find(labels) == sums.end()) {
      return absl::InvalidArgumentError(absl::StrCat(f.name, ": no _sum"));
    }
  }
  if (counts.size() != buckets.size()) {
    return absl::InvalidArgumentError(absl::StrCat(f.name, ": _count alone"));
  }
  return absl::OkStatus();
}

}  // namespace

double PromFamily::Sum(const std::map<std::string, std::string>& labels,
                       const std::string& sample_name) const {
  const std::string want = sample_name.empty() ? name : sample_name;
  double sum = 0;
  bool any = false;
  for (const PromSample& s : samples) {
    if (s.name != want) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) {
      sum += s.value;
      any = true;
    }
  }
  return any ? sum : -1;
}

absl::StatusOr<std::map<std::string, PromFamily>> ParsePrometheusText(
    absl::string_view text) {
  std::map<std::string, PromFamily> families;
  std::set<std::string> done;  // Families whose samples ended.
  std::set<std::string> series;
  std::string current;
  if (!text.empty() && text.back() != '\n') {
    return absl::InvalidArgumentError("the text does not end in a newline");
  }
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++n;
    if (line.empty()) continue;
    if (line.front() == '#') {
      std::vector<absl::string_view> parts =
          absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() < 3 || (parts[1] != "HELP" && parts[1] != "TYPE")) {
        continue;  // A comment.
      }
      const std::string name(parts[2]);
      absl::string_view rest = parts.size() > 3 ? parts[3] : "";
      absl::string_view check = name;
      if (TakeName(&check, true) != name) {
        return LineError(n, absl::StrCat("bad metric name ", name));
      }
      if (done.count(name) != 0 ||
          (families.count(name) != 0 && !families[name].samples.empty())) {
        return LineError(
            n, absl::StrCat(parts[1], " of ", name, " after its samples"));
      }
      PromFamily& f = families[name];
      f.name = name;
      if (parts[1] == "HELP") {
        if (!f.help.empty()) return LineError(n, "HELP repeated");
        // HELP escapes only backslash and newline.
        for (size_t k = 0; k < rest.size(); ++k) {
          if (rest[k] != '\\') continue;
          if (k + 1 >= rest.size() ||
              (rest[k + 1] != '\\' && rest[k + 1] != 'n')) {
            return LineError(n, "bad escape in HELP");
          }
          ++k;
        }
        f.help = std::string(rest);
        if (f.help.empty()) f.help = " ";
      } else {
        if (!f.type.empty()) return LineError(n, "TYPE repeated");
        static const std::set<absl::string_view> kTypes = {
            "counter", "gauge", "histogram", "summary", "untyped"};
        if (kTypes.count(rest) == 0) {
          return LineError(n, absl::StrCat("unknown type ", rest));
        }
        f.type = std::string(rest);
      }
      continue;
    }
    absl::string_view s = line;
    PromSample sample;
    sample.name = TakeName(&s, /*colons=*/true);
    if (sample.name.empty()) return LineError(n, "no metric name");
    if (!s.empty() && s.front() == '{') {
      if (absl::Status st = ParseLabels(&s, n, &sample.labels); !st.ok()) {
        return st;
      }
    }
    if (s.empty() || s.front() != ' ') return LineError(n, "no value");
    std::vector<absl::string_view> rest =
        absl::StrSplit(s.substr(1), ' ', absl::SkipEmpty());
    if (rest.empty() || rest.size() > 2 ||
        !ParseValue(rest[0], &sample.value)) {
      return LineError(n, absl::StrCat("bad value \"", s, "\""));
    }
    int64_t ts = 0;
    if (rest.size() == 2 && !absl::SimpleAtoi(rest[1], &ts)) {
      return LineError(n, "bad timestamp");
    }
    const std::string family = FamilyOf(sample.name, families);
    if (family != current) {
      if (!current.empty()) done.insert(current);
      if (done.count(family) != 0) {
        return LineError(n, absl::StrCat("samples of ", family, " split"));
      }
      current = family;
    }
    std::string key = sample.name;
    for (const auto& [k, v] : sample.labels) {
      absl::StrAppend(&key, "\x1f", k, "\x1e", v);
    }
    if (!series.insert(key).second) {
      return LineError(n, absl::StrCat("series repeated: ", line));
    }
    PromFamily& f = families[family];
    f.name = family;
    if (f.type == "counter" &&
        (!(sample.value >= 0) || std::isinf(sample.value))) {
      return LineError(n, "a counter's value must be finite and >= 0");
    }
    if (f.type == "histogram" && family == sample.name) {
      return LineError(n, "a histogram sample without its suffix");
    }
    f.samples.push_back(std::move(sample));
  }
  for (const auto& [name, f] : families) {
    if (f.type == "counter" && !absl::EndsWith(name, "_total")) {
      return absl::InvalidArgumentError(
          absl::StrCat("counter ", name, " does not end in _total"));
    }
    if (f.type == "histogram") {
      if (absl::Status s = CheckHistogram(f); !s.ok()) return s;
    }
  }
  return families;
}

}  // namespace testing
}  // namespace edgesplit
