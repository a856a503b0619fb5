// Training data for (split) fine-tuning, read and tokenized on the device:
// plain text (documents separated by blank lines) or JSONL (one object per
// line with a "text" string). Documents are tokenized (BOS first when the
// tokenizer adds it), cut into windows of sequence_tokens + 1 (inputs and
// their next-token labels), shuffled with a seed, and split into training
// and held-out windows. Batches group windows of similar length.
#ifndef EDGESPLIT_RUNTIME_TRAIN_TRAINING_DATA_H_
#define EDGESPLIT_RUNTIME_TRAIN_TRAINING_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {

struct TrainingDataOptions {
  int64_t sequence_tokens = 128;  // Inputs per window (labels: one more).
  double held_out_fraction = 0.1;
  uint64_t seed = 0;
  int64_t max_bytes = int64_t{1} << 30;  // Files larger are refused.
};

struct TrainingData {
  // Each window: tokens[0..n) are inputs, tokens[1..n] their labels.
  std::vector<std::vector<int32_t>> train, held_out;
  int64_t documents = 0;
  int64_t tokens = 0;
};

// Errors name the file (and line, for JSONL).
absl::StatusOr<TrainingData> LoadTrainingData(
    const std::string& path, const Tokenizer& tokenizer,
    const TrainingDataOptions& options);

// Indices of `windows` in batches of at most `max_tokens` input tokens,
// each batch of windows of similar length (sorted by length, then cut).
std::vector<std::vector<size_t>> BatchByLength(
    const std::vector<std::vector<int32_t>>& windows, int64_t max_tokens);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TRAIN_TRAINING_DATA_H_
