#include "runtime/train/loss.h"

#include "absl/strings/str_cat.h"
#include "runtime/torch_util.h"

namespace edgesplit {

absl::StatusOr<at::Tensor> CausalLmLoss(const at::Tensor& logits,
                                        const at::Tensor& labels) {
  if (logits.dim() != 2 || labels.dim() != 1 ||
      logits.size(0) != labels.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss: logits [T, vocab] and labels [T] disagree (",
                     logits.dim(), "-d logits, ", labels.dim(), "-d labels)"));
  }
  return TorchCall("loss", [&]() -> absl::StatusOr<at::Tensor> {
    return at::cross_entropy_loss(logits.to(at::kFloat), labels.to(at::kLong),
                                  /*weight=*/{}, at::Reduction::Mean,
                                  /*ignore_index=*/-100);
  });
}

}  // namespace edgesplit
