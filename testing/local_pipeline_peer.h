// Test helper: batched steps of a LocalPipeline (several sequences in one
// forward, as a server's batcher runs them), which only tests need.
#ifndef EDGESPLIT_TESTING_LOCAL_PIPELINE_PEER_H_
#define EDGESPLIT_TESTING_LOCAL_PIPELINE_PEER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/generator.h"

namespace edgesplit {
namespace testing {

class LocalPipelinePeer {
 public:
  // One batched step over `seqs` (tokens[i] new tokens for seqs[i]):
  // each sequence's last-token logits [n, vocab].
  static absl::StatusOr<at::Tensor> Step(
      const LocalPipeline& pipeline,
      absl::Span<LocalPipeline::Sequence* const> seqs,
      absl::Span<const std::vector<int32_t>> tokens) {
    std::vector<absl::Span<const int32_t>> spans(tokens.begin(), tokens.end());
    return pipeline.RunStages(seqs, spans, /*last_only=*/true);
  }
};

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_LOCAL_PIPELINE_PEER_H_
