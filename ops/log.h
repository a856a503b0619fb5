// The daemons' log: one line per event on stderr, with a UTC timestamp,
// a level and the program's name, as plain text
//
//   2026-12-03T17:55:35.123Z INFO edgesplit-server: plan applied version=3
//
// or, with --log-format json, one JSON object per line for collectors
// (Loki, Elasticsearch, Cloud Logging):
//
//   {"ts":"2026-12-03T17:55:35.123Z","level":"info",
//    "program":"edgesplit-server","msg":"plan applied","version":"3"}
//
// Process-wide, like the stderr it writes to: Configure once at start
// (main, before threads), then Log from any thread (each line is one
// write, never interleaved with another's).
#ifndef EDGESPLIT_OPS_LOG_H_
#define EDGESPLIT_OPS_LOG_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {
namespace log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class Format { kText, kJson };

// "debug", "info", "warning", "error" / "text", "json"; else
// INVALID_ARGUMENT naming the accepted values.
absl::StatusOr<Level> ParseLevel(absl::string_view name);
absl::StatusOr<Format> ParseFormat(absl::string_view name);

// Before any Log call; not thread-safe. Until then: text, info, "edgesplit".
void Configure(std::string program, Format format, Level min_level);

using Fields = std::vector<std::pair<std::string, std::string>>;

// Writes the line if `level` is at least the configured minimum.
// Thread-safe.
void Log(Level level, absl::string_view message, const Fields& fields = {});
inline void Info(absl::string_view m, const Fields& f = {}) {
  Log(Level::kInfo, m, f);
}
inline void Warning(absl::string_view m, const Fields& f = {}) {
  Log(Level::kWarning, m, f);
}
inline void Error(absl::string_view m, const Fields& f = {}) {
  Log(Level::kError, m, f);
}

// The line Log would write (without its newline), for tests.
std::string FormatLine(Format format, absl::string_view program,
                       absl::string_view timestamp, Level level,
                       absl::string_view message, const Fields& fields);

}  // namespace log
}  // namespace edgesplit

#endif  // EDGESPLIT_OPS_LOG_H_
