// The training loss of causal language models.
#ifndef EDGESPLIT_RUNTIME_TRAIN_LOSS_H_
#define EDGESPLIT_RUNTIME_TRAIN_LOSS_H_

#include <ATen/ATen.h>

#include "absl/status/statusor.h"

namespace edgesplit {

// Mean next-token cross-entropy: logits [T, vocab] predict labels [T]
// (label i is the token after position i; -100 is ignored). Float32.
absl::StatusOr<at::Tensor> CausalLmLoss(const at::Tensor& logits,
                                        const at::Tensor& labels);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TRAIN_LOSS_H_
