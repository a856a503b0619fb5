#include "ops/log.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/json_util.h"

namespace edgesplit {
namespace log {
namespace {

struct Config {
  std::string program = "edgesplit";
  Format format = Format::kText;
  Level min = Level::kInfo;
};
Config& TheConfig() {
  static Config* const c = new Config();
  return *c;
}
absl::Mutex& WriteMu() {
  static absl::Mutex* const mu = new absl::Mutex();
  return *mu;
}

const char* LevelName(Level l, bool upper) {
  switch (l) {
    case Level::kDebug:
      return upper ? "DEBUG" : "debug";
    case Level::kInfo:
      return upper ? "INFO" : "info";
    case Level::kWarning:
      return upper ? "WARNING" : "warning";
    case Level::kError:
      return upper ? "ERROR" : "error";
  }
  return "?";
}

// A text value: as it is unless it has spaces, quotes or newlines.
void AppendTextValue(absl::string_view v, std::string* out) {
  const bool quote =
      v.empty() || v.find_first_of(" \"\n\t=") != absl::string_view::npos;
  if (quote) {
    AppendJsonString(v, out);
  } else {
    out->append(v.data(), v.size());
  }
}

}  // namespace

absl::StatusOr<Level> ParseLevel(absl::string_view name) {
  for (Level l :
       {Level::kDebug, Level::kInfo, Level::kWarning, Level::kError}) {
    if (name == LevelName(l, false)) return l;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "log level \"", name, "\" is not one of debug, info, warning, error"));
}

absl::StatusOr<Format> ParseFormat(absl::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("log format \"", name, "\" is not text or json"));
}

void Configure(std::string program, Format format, Level min_level) {
  Config& c = TheConfig();
  c.program = std::move(program);
  c.format = format;
  c.min = min_level;
}

std::string FormatLine(Format format, absl::string_view program,
                       absl::string_view timestamp, Level level,
                       absl::string_view message, const Fields& fields) {
  std::string line;
  if (format == Format::kJson) {
    line = "{\"ts\":";
    AppendJsonString(timestamp, &line);
    absl::StrAppend(&line, ",\"level\":\"", LevelName(level, false),
                    "\",\"program\":");
    AppendJsonString(program, &line);
    line.append(",\"msg\":");
    AppendJsonString(message, &line);
    for (const auto& [k, v] : fields) {
      line.push_back(',');
      AppendJsonString(k, &line);
      line.push_back(':');
      AppendJsonString(v, &line);
    }
    line.push_back('}');
    return line;
  }
  absl::StrAppend(&line, timestamp, " ", LevelName(level, true), " ", program,
                  ": ");
  // One event, one line: a message's own newlines are escaped.
  for (char c : message) {
    if (c == '\n') {
      line.append("\\n");
    } else {
      line.push_back(c);
    }
  }
  for (const auto& [k, v] : fields) {
    absl::StrAppend(&line, " ", k, "=");
    AppendTextValue(v, &line);
  }
  return line;
}

void Log(Level level, absl::string_view message, const Fields& fields) {
  const Config& c = TheConfig();
  if (level < c.min) return;
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                                          absl::UTCTimeZone());
  std::string line =
      FormatLine(c.format, c.program, ts, level, message, fields);
  line.push_back('\n');
  absl::MutexLock lock(&WriteMu());
  // One write per line: lines of concurrent threads never interleave.
  for (size_t done = 0; done < line.size();) {
    const ssize_t n =
        ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

}  // namespace log
}  // namespace edgesplit
