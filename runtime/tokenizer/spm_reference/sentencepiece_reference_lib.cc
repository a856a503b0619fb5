#include "runtime/tokenizer/spm_reference/sentencepiece_reference_lib.h"

#include <sentencepiece_processor.h>

#include <utility>

namespace edgesplit {
namespace spref {

struct ReferenceProcessor::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

ReferenceProcessor::ReferenceProcessor(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

ReferenceProcessor::~ReferenceProcessor() = default;

std::unique_ptr<ReferenceProcessor> ReferenceProcessor::LoadFromSerialized(
    const std::string& model_proto, std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.LoadFromSerializedProto(model_proto);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<ReferenceProcessor>(
      new ReferenceProcessor(std::move(impl)));
}

bool ReferenceProcessor::Encode(const std::string& text, std::vector<int>* ids,
                                std::string* error) const {
  const auto status = impl_->sp.Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool ReferenceProcessor::EncodeAsPieces(const std::string& text,
                                        std::vector<std::string>* pieces,
                                        std::string* error) const {
  const auto status = impl_->sp.Encode(text, pieces);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool ReferenceProcessor::Decode(const std::vector<int>& ids, std::string* text,
                                std::string* error) const {
  const auto status = impl_->sp.Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

int ReferenceProcessor::PieceSize() const { return impl_->sp.GetPieceSize(); }

std::string ReferenceProcessor::IdToPiece(int id) const {
  return impl_->sp.IdToPiece(id);
}

}  // namespace spref
}  // namespace edgesplit
