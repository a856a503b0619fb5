// Prometheus metrics of one daemon, written in the text exposition format
// 0.0.4 (what `GET /metrics` answers; ops_http.h). Hand-written because
// Debian packages no C++ Prometheus client (prometheus-cpp is not in
// Debian 12); tests check the output with a strict parser written from the
// format's specification (testing/prometheus_text.h).
//
// Each daemon owns one Registry and hands pointers to the metrics it
// registered to the code that updates them (never a global: tests run
// several daemons in one process). Names follow Prometheus' conventions:
// base units in the name (`_seconds`, `_bytes`), counters end in `_total`.
// A name or label set that breaks the format is a programming error and
// aborts; label *values* may come from anywhere (they are escaped).
//
// Thread-safety: everything here is thread-safe. Updates are lock-free
// (atomics); a family's first use of a label combination takes its lock
// once. Metric pointers stay valid as long as the Registry.
#ifndef EDGESPLIT_OPS_METRICS_H_
#define EDGESPLIT_OPS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace edgesplit {
namespace metrics {

// A value that only goes up (a restart resets it, which Prometheus'
// rate() understands).
class Counter {
 public:
  void Increment(double by = 1);  // `by` < 0 or NaN is ignored.
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double by);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into fixed buckets, with their sum and count.
class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, strictly increasing, finite (the
  // +Inf bucket is implied).
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);  // NaN is ignored.

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // Per bound, then +Inf.
    double sum = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Bucket bounds: `count` bounds from `start`, each `factor` times the last.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Seconds from 100 µs to about 100 s: step and request latencies.
std::vector<double> LatencyBuckets();

enum class Type { kCounter, kGauge, kHistogram };

// One metric name with its HELP text and label names; one child per
// combination of label values, made on first use.
template <typename T>
class Family {
 public:
  // The child for these label values (as many as the family has label
  // names, else abort). The pointer lives as long as the family.
  T* With(const std::vector<std::string>& values);
  // The child without labels (only for families without label names).
  T* Get() { return With({}); }
  // Calls `fn` for each child, sorted by label values, under the family's
  // lock (`fn` must not use the family).
  void ForEach(const std::function<void(const std::vector<std::string>&,
                                        const T&)>& fn) const;

 private:
  friend class Registry;
  Family(std::vector<std::string> label_names, std::vector<double> bounds)
      : label_names_(std::move(label_names)), bounds_(std::move(bounds)) {}

  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // Histograms only.
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_
      ABSL_GUARDED_BY(mu_);
};

// Values computed when scraped: what a daemon already keeps elsewhere (KV
// bytes in use, node states, cache statistics), read by the callback on
// the scraping thread. The callback calls `emit` once per label
// combination; it must be thread-safe and outlive the Registry's use (a
// daemon registers it after building what it reads and scrapes stop
// before that goes: the HTTP port stops first).
using EmitFn =
    std::function<void(const std::vector<std::string>& values, double value)>;
using CollectFn = std::function<void(const EmitFn& emit)>;

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Each name once per registry (else abort). Counter names must end in
  // `_total`.
  Family<Counter>* AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>* AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>* AddHistogram(const std::string& name,
                                  const std::string& help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> bounds);
  // A counter or gauge whose values `collect` gives at each scrape.
  void AddCallback(Type type, const std::string& name, const std::string& help,
                   std::vector<std::string> label_names, CollectFn collect);

  // Every family in the text format 0.0.4, in registration order, series
  // sorted by label values. Families without series yet are written with
  // their HELP and TYPE only.
  std::string Render() const;

 private:
  struct Entry {
    Type type;
    std::string name, help;
    std::vector<std::string> label_names;
    std::unique_ptr<Family<Counter>> counters;
    std::unique_ptr<Family<Gauge>> gauges;
    std::unique_ptr<Family<Histogram>> histograms;
    CollectFn collect;
  };
  // An entry checked (names; abort if bad) but not yet visible.
  static std::unique_ptr<Entry> NewEntry(Type type, const std::string& name,
                                         const std::string& help,
                                         std::vector<std::string> label_names);
  // Makes a complete entry visible to Render (abort on a duplicate name).
  void Publish(std::unique_ptr<Entry> entry);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
};

// The content type of Render()'s output.
inline constexpr char kContentType[] =
    "text/plain; version=0.0.4; charset=utf-8";

// Registers the standard process metrics every Prometheus client exports:
// process_start_time_seconds, process_cpu_seconds_total,
// process_resident_memory_bytes, process_open_fds (from /proc/self).
void AddProcessMetrics(Registry* registry);

// A status code's name for a `reason` label: "deadline_exceeded", ...
std::string ReasonLabel(int absl_status_code);

}  // namespace metrics
}  // namespace edgesplit

#endif  // EDGESPLIT_OPS_METRICS_H_
