// A Backend running a model directory in this process (`edgesplit serve
// --model DIR`): the same computation as `edgesplit generate --model DIR`.
#ifndef EDGESPLIT_OPENAI_LOCAL_BACKEND_H_
#define EDGESPLIT_OPENAI_LOCAL_BACKEND_H_

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "openai/backend.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"

namespace edgesplit {
namespace openai {

struct LocalBackendOptions {
  std::string model_dir;
  // The API's name of the model; "": the directory's last component.
  std::string model_id;
  // LoRA adapters requests may name ("model": "ID:NAME"): PEFT
  // directories <adapter_dir>/<NAME>, loaded when first named. "": none.
  std::string adapter_dir;
  StageOptions stage;
};

// Thread-safe: requests run concurrently, each on its own sequence of the
// shared pipeline (LocalPipeline is thread-safe for distinct sequences).
class LocalBackend : public Backend {
 public:
  // Errors name the directory or file that does not load.
  static absl::StatusOr<std::unique_ptr<LocalBackend>> Load(
      LocalBackendOptions options);

  std::vector<std::string> Models() const override;
  absl::StatusOr<std::unique_ptr<Generation>> Start(
      const CompletionRequest& request) override;

 private:
  class LocalGeneration;
  LocalBackend() = default;
  absl::Status Check(const CompletionRequest& request) const;
  // The adapter's name in the pipeline, attached on first use.
  absl::Status Attach(const std::string& adapter);
  absl::StatusOr<std::vector<int32_t>> PromptIds(
      const CompletionRequest& request) const;

  LocalBackendOptions options_;
  std::unique_ptr<ModelStore> store_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<LocalPipeline> pipeline_;
  std::unique_ptr<ChatTemplate> chat_;  // Null: the model has none.
  absl::Status chat_error_;             // Why chat_ is null.
  absl::Mutex mu_;
  std::set<std::string> attached_ ABSL_GUARDED_BY(mu_);
};

}  // namespace openai
}  // namespace edgesplit

#endif  // EDGESPLIT_OPENAI_LOCAL_BACKEND_H_
