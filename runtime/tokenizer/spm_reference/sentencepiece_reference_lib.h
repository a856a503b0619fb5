// libsentencepiece behind a std-only interface, for
// sentencepiece_reference_test only. <sentencepiece_processor.h> declares
// `namespace absl { using std::string_view; }`, which collides with Debian's
// Abseil (whose absl::string_view is a class of its own), so no translation
// unit may include both it and any Abseil header: this header uses std types
// only and sentencepiece_reference_lib.cc includes no Abseil.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_SPM_REFERENCE_SENTENCEPIECE_REFERENCE_LIB_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_SPM_REFERENCE_SENTENCEPIECE_REFERENCE_LIB_H_

#include <memory>
#include <string>
#include <vector>

namespace edgesplit {
namespace spref {

class ReferenceProcessor {
 public:
  // Null with `*error` set when libsentencepiece refuses the model.
  static std::unique_ptr<ReferenceProcessor> LoadFromSerialized(
      const std::string& model_proto, std::string* error);
  ~ReferenceProcessor();

  // False with `*error` set when libsentencepiece reports an error.
  bool Encode(const std::string& text, std::vector<int>* ids,
              std::string* error) const;
  bool EncodeAsPieces(const std::string& text, std::vector<std::string>* pieces,
                      std::string* error) const;
  bool Decode(const std::vector<int>& ids, std::string* text,
              std::string* error) const;
  int PieceSize() const;
  std::string IdToPiece(int id) const;

 private:
  struct Impl;
  explicit ReferenceProcessor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace spref
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_SPM_REFERENCE_SENTENCEPIECE_REFERENCE_LIB_H_
