// A strict reader of Prometheus' text exposition format 0.0.4, written from
// the format's specification
// (prometheus.io/docs/instrumenting/exposition_formats) independently of
// ops/metrics.cc, so tests check what scrapers will read rather than what
// the writer meant. Test-only.
//
// Beyond the grammar (metric and label names, quoted and escaped label
// values, Go float values, optional timestamps) it checks the rules
// scrapers and the conventions rely on: HELP and TYPE at most once per
// family and before its samples; a family's samples together; no repeated
// series; counters named `_total`, finite and non-negative; histograms with
// `le` buckets in increasing order, cumulative counts, a `+Inf` bucket
// equal to `_count`, and `_sum`.
#ifndef EDGESPLIT_TESTING_PROMETHEUS_TEXT_H_
#define EDGESPLIT_TESTING_PROMETHEUS_TEXT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {
namespace testing {

struct PromSample {
  std::string name;  // As written: a histogram's have _bucket/_sum/_count.
  std::map<std::string, std::string> labels;  // Unescaped.
  double value = 0;
};

struct PromFamily {
  std::string name, help, type;  // type: counter, gauge, histogram, ...
  std::vector<PromSample> samples;

  // The value of the sample named `name` (default: the family's) whose
  // labels include `labels`; the sum over all that match, or -1 when none
  // does.
  double Sum(const std::map<std::string, std::string>& labels = {},
             const std::string& name = "") const;
};

// Families by name. An error names the line number and what is wrong.
absl::StatusOr<std::map<std::string, PromFamily>> ParsePrometheusText(
    absl::string_view text);

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_PROMETHEUS_TEXT_H_
