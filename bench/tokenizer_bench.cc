// tokenizer.json encoding speed against Hugging Face's own library (the
// Rust `tokenizers` crate through npm @anush008/tokenizers), on the same
// tokenizer files and the same text: the nine pipelines of
// tests/js/hf_tokenizers_reference.js, trained on TinyStories, encoding all
// of Shakespeare (1.1 MB, text none of them trained on) as one string.
// Prints MB/s for both, their ratio, and whether the ids are identical.
//
//   tokenizer_bench [--text FILE] [--reps N]
//
// Needs node and `npm ci --prefix tests/js`. The library's time includes
// building its Encoding (offsets, word ids) and handing it to JavaScript,
// which edgesplit does not do: the ratio is what an application sees.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/hf_tokenizer.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string RunOrDie(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    std::cerr << "cannot run " << command << "\n";
    std::exit(1);
  }
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  if (pclose(pipe) != 0) {
    std::cerr << command << " failed\n";
    std::exit(1);
  }
  return out;
}

int Main(int argc, char** argv) {
  const std::string text_path = bench::Flag(
      argc, argv, "text", testing::SharedDir() + "/data/tinyshakespeare.txt");
  const int reps = std::atoi(bench::Flag(argc, argv, "reps", "5").c_str());
  const std::string script =
      testing::SourceDir() + "/tests/js/hf_tokenizers_reference.js";
  const std::string dir = testing::TempDir("tokenizer_bench");
  RunOrDie(absl::StrCat("node '", script, "' '", dir, "' '",
                        testing::SharedDir(),
                        "/data/tinystories_valid_sample.txt' 2>/dev/null"));
  const std::string library = RunOrDie(absl::StrCat(
      "node '", script, "' --bench '", dir, "' '", text_path, "' 2>/dev/null"));
  const std::string text = ReadAll(text_path);
  const double mb = text.size() / 1e6;
  std::printf("%.2f MB of text, best of %d (edgesplit) and of 3 (library)\n",
              mb, reps);
  std::printf("%-15s %12s %12s %8s %s\n", "pipeline", "edgesplit MB/s",
              "library MB/s", "ratio", "ids identical");
  std::istringstream lines(library);
  std::string line;
  while (std::getline(lines, line)) {
    const auto row = nlohmann::json::parse(line);
    const std::string name = row["name"].get<std::string>();
    auto tok = bench::Must(
        LoadHfTokenizer(absl::StrCat(dir, "/", name, "/tokenizer.json")),
        "tokenizer");
    double best = 1e30;
    std::vector<int32_t> ids;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      ids = bench::Must(tok->Encode(text), "encode");
      best = std::min(best, std::chrono::duration<double>(
                                std::chrono::steady_clock::now() - t0)
                                .count());
    }
    const double library_seconds = row["seconds"].get<double>();
    const bool same = ids == row["ids"].get<std::vector<int32_t>>();
    std::printf("%-15s %12.2f %12.2f %7.2fx %s\n", name.c_str(), mb / best,
                mb / library_seconds, library_seconds / best,
                same ? "yes" : "NO");
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
