#include "runtime/tokenizer/sentencepiece_model.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/tokenizer/protobuf_wire.h"

namespace edgesplit {
namespace spm {
namespace {

using pbwire::WireReader;
using pbwire::WireType;
using pbwire::WireWriter;

absl::Status ParsePiece(WireReader& reader, ModelPiece* piece) {
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type = WireType::kVarint;
    ES_RETURN_IF_ERROR(reader.ReadTag(&field, &type));
    switch (field) {
      case 1:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &piece->piece));
        break;
      case 2:
        ES_RETURN_IF_ERROR(reader.ReadFloat(field, type, &piece->score));
        break;
      case 3: {
        int32_t value = 0;
        ES_RETURN_IF_ERROR(reader.ReadInt32(field, type, &value));
        // protobuf would keep an undefined value as an unknown field and
        // leave the type NORMAL; a file with one is corrupt or from a newer
        // format we do not understand, so say so instead.
        if (value < 1 || value > 6) {
          return reader.Error(absl::StrCat("undefined piece type ", value));
        }
        piece->type = static_cast<PieceType>(value);
        break;
      }
      default:
        ES_RETURN_IF_ERROR(reader.SkipField(field, type));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTrainerSpec(WireReader& reader, TrainerSpec* spec) {
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type = WireType::kVarint;
    ES_RETURN_IF_ERROR(reader.ReadTag(&field, &type));
    switch (field) {
      case 3:
        ES_RETURN_IF_ERROR(reader.ReadInt32(field, type, &spec->model_type));
        break;
      case 4:
        ES_RETURN_IF_ERROR(reader.ReadInt32(field, type, &spec->vocab_size));
        break;
      case 24:
        ES_RETURN_IF_ERROR(
            reader.ReadBool(field, type, &spec->treat_whitespace_as_suffix));
        break;
      case 35:
        ES_RETURN_IF_ERROR(reader.ReadBool(field, type, &spec->byte_fallback));
        break;
      case 40:
        ES_RETURN_IF_ERROR(reader.ReadInt32(field, type, &spec->unk_id));
        break;
      case 41:
        ES_RETURN_IF_ERROR(reader.ReadInt32(field, type, &spec->bos_id));
        break;
      case 42:
        ES_RETURN_IF_ERROR(reader.ReadInt32(field, type, &spec->eos_id));
        break;
      case 43:
        ES_RETURN_IF_ERROR(reader.ReadInt32(field, type, &spec->pad_id));
        break;
      case 44:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &spec->unk_surface));
        break;
      case 45:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &spec->unk_piece));
        break;
      case 46:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &spec->bos_piece));
        break;
      case 47:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &spec->eos_piece));
        break;
      case 48:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &spec->pad_piece));
        break;
      default:
        ES_RETURN_IF_ERROR(reader.SkipField(field, type));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizerSpec(WireReader& reader, NormalizerSpec* spec) {
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type = WireType::kVarint;
    ES_RETURN_IF_ERROR(reader.ReadTag(&field, &type));
    switch (field) {
      case 1:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &spec->name));
        break;
      case 2:
        ES_RETURN_IF_ERROR(
            reader.ReadBytes(field, type, &spec->precompiled_charsmap));
        break;
      case 3:
        ES_RETURN_IF_ERROR(
            reader.ReadBool(field, type, &spec->add_dummy_prefix));
        break;
      case 4:
        ES_RETURN_IF_ERROR(
            reader.ReadBool(field, type, &spec->remove_extra_whitespaces));
        break;
      case 5:
        ES_RETURN_IF_ERROR(
            reader.ReadBool(field, type, &spec->escape_whitespaces));
        break;
      default:
        ES_RETURN_IF_ERROR(reader.SkipField(field, type));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseSelfTestSample(WireReader& reader, SelfTestSample* sample) {
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type = WireType::kVarint;
    ES_RETURN_IF_ERROR(reader.ReadTag(&field, &type));
    switch (field) {
      case 1:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &sample->input));
        break;
      case 2:
        ES_RETURN_IF_ERROR(reader.ReadBytes(field, type, &sample->expected));
        break;
      default:
        ES_RETURN_IF_ERROR(reader.SkipField(field, type));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseSelfTestData(WireReader& reader,
                               std::vector<SelfTestSample>* samples) {
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type = WireType::kVarint;
    ES_RETURN_IF_ERROR(reader.ReadTag(&field, &type));
    if (field != 1) {
      ES_RETURN_IF_ERROR(reader.SkipField(field, type));
      continue;
    }
    WireReader child;
    ES_RETURN_IF_ERROR(
        reader.ReadMessage(field, type,
                           absl::StrCat("ModelProto.self_test_data.samples[",
                                        samples->size(), "]"),
                           &child));
    samples->emplace_back();
    ES_RETURN_IF_ERROR(ParseSelfTestSample(child, &samples->back()));
  }
  return absl::OkStatus();
}

void WriteNormalizerSpec(const NormalizerSpec& spec, WireWriter& out) {
  out.WriteBytesField(1, spec.name);
  if (!spec.precompiled_charsmap.empty()) {
    out.WriteBytesField(2, spec.precompiled_charsmap);
  }
  out.WriteBoolField(3, spec.add_dummy_prefix);
  out.WriteBoolField(4, spec.remove_extra_whitespaces);
  out.WriteBoolField(5, spec.escape_whitespaces);
}

}  // namespace

absl::StatusOr<ModelProto> ParseModelProto(absl::string_view bytes,
                                           absl::string_view source) {
  ModelProto model;
  WireReader reader(bytes, source, "ModelProto");
  while (!reader.done()) {
    uint32_t field = 0;
    WireType type = WireType::kVarint;
    ES_RETURN_IF_ERROR(reader.ReadTag(&field, &type));
    WireReader child;
    switch (field) {
      case 1:
        ES_RETURN_IF_ERROR(reader.ReadMessage(
            field, type,
            absl::StrCat("ModelProto.pieces[", model.pieces.size(), "]"),
            &child));
        model.pieces.emplace_back();
        ES_RETURN_IF_ERROR(ParsePiece(child, &model.pieces.back()));
        break;
      case 2:
        ES_RETURN_IF_ERROR(
            reader.ReadMessage(field, type, "ModelProto.trainer_spec", &child));
        model.has_trainer_spec = true;
        ES_RETURN_IF_ERROR(ParseTrainerSpec(child, &model.trainer_spec));
        break;
      case 3:
        ES_RETURN_IF_ERROR(reader.ReadMessage(
            field, type, "ModelProto.normalizer_spec", &child));
        ES_RETURN_IF_ERROR(ParseNormalizerSpec(child, &model.normalizer_spec));
        break;
      case 4:
        ES_RETURN_IF_ERROR(reader.ReadMessage(
            field, type, "ModelProto.self_test_data", &child));
        ES_RETURN_IF_ERROR(ParseSelfTestData(child, &model.self_test_samples));
        break;
      case 5:
        ES_RETURN_IF_ERROR(reader.ReadMessage(
            field, type, "ModelProto.denormalizer_spec", &child));
        model.has_denormalizer_spec = true;
        ES_RETURN_IF_ERROR(
            ParseNormalizerSpec(child, &model.denormalizer_spec));
        break;
      default:
        ES_RETURN_IF_ERROR(reader.SkipField(field, type));
    }
  }
  return model;
}

std::string SerializeModelProto(const ModelProto& model) {
  WireWriter out;
  for (const ModelPiece& piece : model.pieces) {
    WireWriter p;
    p.WriteBytesField(1, piece.piece);
    p.WriteFloatField(2, piece.score);
    p.WriteInt32Field(3, static_cast<int32_t>(piece.type));
    out.WriteBytesField(1, p.data());
  }

  const TrainerSpec& ts = model.trainer_spec;
  WireWriter trainer;
  trainer.WriteInt32Field(3, ts.model_type);
  trainer.WriteInt32Field(4, ts.vocab_size);
  if (ts.treat_whitespace_as_suffix) trainer.WriteBoolField(24, true);
  trainer.WriteBoolField(35, ts.byte_fallback);
  trainer.WriteInt32Field(40, ts.unk_id);
  trainer.WriteInt32Field(41, ts.bos_id);
  trainer.WriteInt32Field(42, ts.eos_id);
  trainer.WriteInt32Field(43, ts.pad_id);
  // Written only when set to something else: libsentencepiece distinguishes
  // "absent" from "present", and absent means the same default.
  if (ts.unk_surface != kDefaultUnkSurface) {
    trainer.WriteBytesField(44, ts.unk_surface);
  }
  if (!ts.unk_piece.empty()) trainer.WriteBytesField(45, ts.unk_piece);
  if (!ts.bos_piece.empty()) trainer.WriteBytesField(46, ts.bos_piece);
  if (!ts.eos_piece.empty()) trainer.WriteBytesField(47, ts.eos_piece);
  if (!ts.pad_piece.empty()) trainer.WriteBytesField(48, ts.pad_piece);
  out.WriteBytesField(2, trainer.data());

  WireWriter normalizer;
  WriteNormalizerSpec(model.normalizer_spec, normalizer);
  out.WriteBytesField(3, normalizer.data());

  if (!model.self_test_samples.empty()) {
    WireWriter data;
    for (const SelfTestSample& sample : model.self_test_samples) {
      WireWriter s;
      s.WriteBytesField(1, sample.input);
      s.WriteBytesField(2, sample.expected);
      data.WriteBytesField(1, s.data());
    }
    out.WriteBytesField(4, data.data());
  }

  if (model.has_denormalizer_spec) {
    WireWriter denormalizer;
    WriteNormalizerSpec(model.denormalizer_spec, denormalizer);
    out.WriteBytesField(5, denormalizer.data());
  }
  return out.Release();
}

}  // namespace spm
}  // namespace edgesplit
