// The subset of SentencePiece's ModelProto (sentencepiece_model.proto) that
// encoding and decoding depend on, read and written with protobuf_wire.h
// instead of libprotobuf. Fields that only matter for training are skipped
// on read and not written back.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_MODEL_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {
namespace spm {

// ModelProto.SentencePiece.Type.
enum class PieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// TrainerSpec.ModelType.
enum ModelType : int32_t {
  kUnigram = 1,
  kBpe = 2,
  kWord = 3,
  kChar = 4,
};

inline constexpr absl::string_view kDefaultUnkSurface = " \xE2\x81\x87 ";

struct ModelPiece {
  std::string piece;                    // field 1
  float score = 0.0f;                   // field 2
  PieceType type = PieceType::kNormal;  // field 3
};

struct TrainerSpec {
  int32_t model_type = kUnigram;            // field 3; proto default UNIGRAM
  int32_t vocab_size = 8000;                // field 4
  bool treat_whitespace_as_suffix = false;  // field 24
  bool byte_fallback = false;               // field 35
  int32_t unk_id = 0;                       // field 40
  int32_t bos_id = 1;                       // field 41
  int32_t eos_id = 2;                       // field 42
  int32_t pad_id = -1;                      // field 43
  std::string unk_surface = std::string(kDefaultUnkSurface);  // field 44
  std::string unk_piece;                                      // field 45
  std::string bos_piece;                                      // field 46
  std::string eos_piece;                                      // field 47
  std::string pad_piece;                                      // field 48
};

struct NormalizerSpec {
  std::string name;                      // field 1
  std::string precompiled_charsmap;      // field 2
  bool add_dummy_prefix = true;          // field 3
  bool remove_extra_whitespaces = true;  // field 4
  bool escape_whitespaces = true;        // field 5
};

// SelfTestData.Sample: libsentencepiece encodes `input` on load and requires
// the pieces, joined by " ", to equal `expected`.
struct SelfTestSample {
  std::string input;     // field 1
  std::string expected;  // field 2
};

struct ModelProto {
  std::vector<ModelPiece> pieces;  // field 1
  bool has_trainer_spec = false;
  TrainerSpec trainer_spec;                       // field 2
  NormalizerSpec normalizer_spec;                 // field 3
  std::vector<SelfTestSample> self_test_samples;  // field 4 (samples = 1)
  bool has_denormalizer_spec = false;
  NormalizerSpec denormalizer_spec;  // field 5
};

// Parses serialized ModelProto bytes with proto2 semantics (repeated
// messages append, singular fields take the last value, embedded messages
// merge, unknown fields of every wire type are skipped). Malformed input and
// known fields with the wrong wire type or an undefined enum value give
// INVALID_ARGUMENT naming `source`. Does not check that the model is usable;
// the tokenizer does that.
absl::StatusOr<ModelProto> ParseModelProto(absl::string_view bytes,
                                           absl::string_view source);

// Serializes the fields above, in field-number order, as protobuf would.
std::string SerializeModelProto(const ModelProto& model);

}  // namespace spm
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_MODEL_H_
