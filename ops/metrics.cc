#include "ops/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace edgesplit {
namespace metrics {
namespace {

void AddTo(std::atomic<double>* a, double by) {
  double old = a->load(std::memory_order_relaxed);
  while (!a->compare_exchange_weak(old, old + by, std::memory_order_relaxed)) {
  }
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "metrics: %s\n", what.c_str());
  std::abort();
}

bool ValidName(const std::string& s, bool colons) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = absl::ascii_isalpha(c) || c == '_' ||
                    (colons && c == ':') || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

// The format's numbers: Go's float syntax, shortest round-trip digits.
void AppendValue(double v, std::string* out) {
  if (std::isnan(v)) {
    out->append("NaN");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "+Inf" : "-Inf");
  } else if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    // Whole numbers (counts, bytes) in full rather than as 1e+12.
    absl::StrAppend(out, static_cast<int64_t>(v));
  } else {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out->append(buf, r.ptr);
  }
}

void AppendEscaped(const std::string& s, bool quote, std::string* out) {
  for (char c : s) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else if (quote && c == '"') {
      out->append("\\\"");
    } else {
      out->push_back(c);
    }
  }
}

// name{a="x",b="y"} or name (no labels), with `extra` appended last
// (a histogram's le).
void AppendSeries(const std::string& name,
                  const std::vector<std::string>& label_names,
                  const std::vector<std::string>& values,
                  const std::pair<std::string, std::string>* extra,
                  std::string* out) {
  out->append(name);
  if (label_names.empty() && extra == nullptr) return;
  out->push_back('{');
  for (size_t i = 0; i < label_names.size(); ++i) {
    if (i > 0) out->push_back(',');
    absl::StrAppend(out, label_names[i], "=\"");
    AppendEscaped(values[i], /*quote=*/true, out);
    out->push_back('"');
  }
  if (extra != nullptr) {
    if (!label_names.empty()) out->push_back(',');
    absl::StrAppend(out, extra->first, "=\"", extra->second, "\"");
  }
  out->push_back('}');
}

void AppendSample(const std::string& name,
                  const std::vector<std::string>& label_names,
                  const std::vector<std::string>& values, double v,
                  std::string* out,
                  const std::pair<std::string, std::string>* extra = nullptr) {
  AppendSeries(name, label_names, values, extra, out);
  out->push_back(' ');
  AppendValue(v, out);
  out->push_back('\n');
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

template <typename T>
std::unique_ptr<T> MakeChild(const std::vector<double>&) {
  return std::make_unique<T>();
}
template <>
std::unique_ptr<Histogram> MakeChild<Histogram>(
    const std::vector<double>& bounds) {
  return std::make_unique<Histogram>(bounds);
}

}  // namespace

void Counter::Increment(double by) {
  if (!(by >= 0)) return;  // Negative or NaN: a counter never goes down.
  AddTo(&value_, by);
}

void Gauge::Add(double by) { AddTo(&value_, by); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
      Die("histogram bounds must be finite and strictly increasing");
    }
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i] = 0;
}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  AddTo(&sum_, v);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(total);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

std::vector<double> LatencyBuckets() {
  // 100 µs, 250 µs, 500 µs, 1 ms, ... 100 s: a 1-2.5-5 series.
  std::vector<double> b;
  for (double decade = 1e-4; decade <= 100; decade *= 10) {
    for (double m : {1.0, 2.5, 5.0}) {
      if (decade * m <= 100.0001) b.push_back(decade * m);
    }
  }
  return b;
}

template <typename T>
T* Family<T>::With(const std::vector<std::string>& values) {
  if (values.size() != label_names_.size()) {
    Die(absl::StrCat("a family with ", label_names_.size(), " labels given ",
                     values.size(), " values"));
  }
  absl::MutexLock lock(&mu_);
  std::unique_ptr<T>& child = children_[values];
  if (child == nullptr) child = MakeChild<T>(bounds_);
  return child.get();
}

template <typename T>
void Family<T>::ForEach(
    const std::function<void(const std::vector<std::string>&, const T&)>& fn)
    const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, child] : children_) fn(values, *child);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

std::unique_ptr<Registry::Entry> Registry::NewEntry(
    Type type, const std::string& name, const std::string& help,
    std::vector<std::string> label_names) {
  if (!ValidName(name, /*colons=*/true)) Die("bad metric name " + name);
  if (type == Type::kCounter && !absl::EndsWith(name, "_total")) {
    Die("counter " + name + " must end in _total");
  }
  for (const std::string& l : label_names) {
    if (!ValidName(l, /*colons=*/false) || absl::StartsWith(l, "__") ||
        (type == Type::kHistogram && l == "le")) {
      Die("bad label name " + l + " of " + name);
    }
  }
  auto e = std::make_unique<Entry>();
  e->type = type;
  e->name = name;
  e->help = help;
  e->label_names = std::move(label_names);
  return e;
}

// Published only once complete: Render reads entries without the lock.
void Registry::Publish(std::unique_ptr<Entry> e) {
  absl::MutexLock lock(&mu_);
  for (const auto& other : entries_) {
    if (other->name == e->name) Die("metric " + e->name + " registered twice");
  }
  entries_.push_back(std::move(e));
}

Family<Counter>* Registry::AddCounter(const std::string& name,
                                      const std::string& help,
                                      std::vector<std::string> label_names) {
  auto e = NewEntry(Type::kCounter, name, help, label_names);
  e->counters.reset(new Family<Counter>(std::move(label_names), {}));
  Family<Counter>* f = e->counters.get();
  Publish(std::move(e));
  return f;
}

Family<Gauge>* Registry::AddGauge(const std::string& name,
                                  const std::string& help,
                                  std::vector<std::string> label_names) {
  auto e = NewEntry(Type::kGauge, name, help, label_names);
  e->gauges.reset(new Family<Gauge>(std::move(label_names), {}));
  Family<Gauge>* f = e->gauges.get();
  Publish(std::move(e));
  return f;
}

Family<Histogram>* Registry::AddHistogram(const std::string& name,
                                          const std::string& help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> bounds) {
  Histogram check(bounds);  // Aborts on bad bounds now, not at first use.
  auto e = NewEntry(Type::kHistogram, name, help, label_names);
  e->histograms.reset(
      new Family<Histogram>(std::move(label_names), std::move(bounds)));
  Family<Histogram>* f = e->histograms.get();
  Publish(std::move(e));
  return f;
}

void Registry::AddCallback(Type type, const std::string& name,
                           const std::string& help,
                           std::vector<std::string> label_names,
                           CollectFn collect) {
  if (type == Type::kHistogram) Die("callback histograms are not supported");
  auto e = NewEntry(type, name, help, std::move(label_names));
  e->collect = std::move(collect);
  Publish(std::move(e));
}

namespace {

template <typename T>
std::map<std::vector<std::string>, double> Values(const Family<T>& f) {
  std::map<std::vector<std::string>, double> out;
  f.ForEach([&](const std::vector<std::string>& values, const T& child) {
    out[values] = child.value();
  });
  return out;
}

}  // namespace

std::string Registry::Render() const {
  // Entries are never removed: render from their pointers outside the
  // lock, so a callback may take locks of its own.
  std::vector<const Entry*> entries;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& e : entries_) entries.push_back(e.get());
  }
  std::string out;
  for (const Entry* e : entries) {
    absl::StrAppend(&out, "# HELP ", e->name, " ");
    AppendEscaped(e->help, /*quote=*/false, &out);
    absl::StrAppend(&out, "\n# TYPE ", e->name, " ", TypeName(e->type), "\n");
    if (e->histograms != nullptr) {
      std::map<std::vector<std::string>, Histogram::Snapshot> snaps;
      e->histograms->ForEach(
          [&](const std::vector<std::string>& values, const Histogram& h) {
            snaps[values] = h.snapshot();
          });
      for (const auto& [values, s] : snaps) {
        for (size_t i = 0; i <= s.bounds.size(); ++i) {
          std::string le;
          if (i < s.bounds.size()) {
            AppendValue(s.bounds[i], &le);
          } else {
            le = "+Inf";
          }
          const std::pair<std::string, std::string> extra("le", le);
          AppendSample(e->name + "_bucket", e->label_names, values,
                       static_cast<double>(s.cumulative[i]), &out, &extra);
        }
        AppendSample(e->name + "_sum", e->label_names, values, s.sum, &out);
        AppendSample(e->name + "_count", e->label_names, values,
                     static_cast<double>(s.cumulative.back()), &out);
      }
      continue;
    }
    std::map<std::vector<std::string>, double> values;
    if (e->counters != nullptr) values = Values(*e->counters);
    if (e->gauges != nullptr) values = Values(*e->gauges);
    if (e->collect) {
      const size_t n = e->label_names.size();
      e->collect([&](const std::vector<std::string>& v, double value) {
        if (v.size() != n) Die("callback of " + e->name + ": label count");
        values[v] = value;
      });
    }
    for (const auto& [v, value] : values) {
      AppendSample(e->name, e->label_names, v, value, &out);
    }
  }
  return out;
}

namespace {

// The fields of /proc/self/stat after the command name: f[0] is field 3
// (state) of proc(5), so field N is f[N - 3]. Empty when unreadable.
std::vector<std::string> ProcSelfStat() {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos || close + 2 > line.size()) return {};
  return absl::StrSplit(line.substr(close + 2), ' ');
}

double ProcStartSeconds() {
  // Field 22: start time in clock ticks after boot.
  const std::vector<std::string> f = ProcSelfStat();
  std::ifstream up("/proc/stat");
  double btime = 0;
  for (std::string l; std::getline(up, l);) {
    if (absl::StartsWith(l, "btime ")) btime = std::atof(l.c_str() + 6);
  }
  if (f.size() < 20) return 0;
  return btime + std::atof(f[19].c_str()) / sysconf(_SC_CLK_TCK);
}

}  // namespace

void AddProcessMetrics(Registry* registry) {
  const double start = ProcStartSeconds();
  registry->AddCallback(Type::kGauge, "process_start_time_seconds",
                        "Start time of the process since the Unix epoch.", {},
                        [start](const EmitFn& emit) { emit({}, start); });
  registry->AddCallback(
      Type::kCounter, "process_cpu_seconds_total",
      "User and system CPU time spent, in seconds.", {},
      [](const EmitFn& emit) {
        // Fields 14 and 15: user and system time in clock ticks.
        const std::vector<std::string> f = ProcSelfStat();
        if (f.size() < 13) return;
        emit({}, (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) /
                     sysconf(_SC_CLK_TCK));
      });
  registry->AddCallback(Type::kGauge, "process_resident_memory_bytes",
                        "Resident memory size in bytes.", {},
                        [](const EmitFn& emit) {
                          std::ifstream statm("/proc/self/statm");
                          double pages = 0, resident = 0;
                          if (statm >> pages >> resident) {
                            emit({}, resident * sysconf(_SC_PAGESIZE));
                          }
                        });
  registry->AddCallback(Type::kGauge, "process_open_fds",
                        "Number of open file descriptors.", {},
                        [](const EmitFn& emit) {
                          DIR* d = opendir("/proc/self/fd");
                          if (d == nullptr) return;
                          int n = 0;
                          while (readdir(d) != nullptr) ++n;
                          closedir(d);
                          emit({}, n - 3);  // ".", ".." and d itself.
                        });
}

std::string ReasonLabel(int absl_status_code) {
  std::string s =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(absl_status_code));
  absl::AsciiStrToLower(&s);
  return s.empty() ? "unknown" : s;
}

}  // namespace metrics
}  // namespace edgesplit
