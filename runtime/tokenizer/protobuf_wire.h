// A minimal protocol buffers wire-format reader and writer: enough to read
// and write SentencePiece's ModelProto without libprotobuf (see
// sentencepiece_tokenizer.h for why that library must stay out of the
// runtime).
//
// The reader is meant for untrusted bytes: every read is bounds-checked and
// any malformed pattern (truncated varints or payloads, over-long varints,
// field number 0, wire types 6/7, unbalanced or too deeply nested groups)
// gives INVALID_ARGUMENT naming the source, the message being read and the
// byte offset. It never reads outside the buffer it was given.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_PROTOBUF_WIRE_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_PROTOBUF_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace edgesplit {
namespace pbwire {

enum class WireType : uint8_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

// Reads the fields of one message. Typical use:
//   while (!reader.done()) {
//     uint32_t field; WireType type;
//     ES_RETURN_IF_ERROR(reader.ReadTag(&field, &type));
//     switch (field) { ... default: reader.SkipField(field, type); }
//   }
class WireReader {
 public:
  WireReader() = default;
  // `context` names the message in errors ("ModelProto.pieces[3]").
  WireReader(absl::string_view data, absl::string_view source,
             std::string context);

  bool done() const { return pos_ >= data_.size(); }

  absl::Status ReadTag(uint32_t* field, WireType* type);
  absl::Status ReadVarint(uint64_t* value);
  absl::Status ReadFixed32(uint32_t* value);
  absl::Status ReadFixed64(uint64_t* value);
  // `bytes` views into the reader's buffer.
  absl::Status ReadLengthDelimited(absl::string_view* bytes);

  // Typed reads of a field whose tag was just read: they check that `type` is
  // the wire type the field's declared type uses. protobuf itself would file
  // a mismatched field away as unknown; we reject it, since a known field
  // with the wrong encoding means the file is not what it claims to be.
  absl::Status ReadInt32(uint32_t field, WireType type, int32_t* value);
  absl::Status ReadBool(uint32_t field, WireType type, bool* value);
  absl::Status ReadFloat(uint32_t field, WireType type, float* value);
  absl::Status ReadBytes(uint32_t field, WireType type, std::string* value);
  // Returns a reader over an embedded message field, for `child_context`.
  absl::Status ReadMessage(uint32_t field, WireType type,
                           std::string child_context, WireReader* child);

  // Skips the value of an unknown field, groups included.
  absl::Status SkipField(uint32_t field, WireType type);

  // INVALID_ARGUMENT: "<source>: <context> at byte <offset>: <what>".
  absl::Status Error(absl::string_view what) const;

 private:
  WireReader(absl::string_view data, absl::string_view source,
             std::string context, size_t base_offset);
  absl::Status ExpectWireType(uint32_t field, WireType actual,
                              WireType expected) const;
  absl::Status SkipGroup(uint32_t field, int depth);

  absl::string_view data_;
  absl::string_view source_;
  std::string context_;
  size_t base_offset_ = 0;  // Offset of data_ within the whole input.
  size_t pos_ = 0;
};

// Appends fields to a buffer in the encoding protobuf itself produces.
class WireWriter {
 public:
  void WriteVarintField(uint32_t field, uint64_t value);
  // Negative values take ten bytes, sign-extended, as protobuf writes int32.
  void WriteInt32Field(uint32_t field, int32_t value);
  void WriteBoolField(uint32_t field, bool value);
  void WriteFixed32Field(uint32_t field, uint32_t value);
  void WriteFloatField(uint32_t field, float value);
  void WriteBytesField(uint32_t field, absl::string_view value);
  // Raw tag, for building deliberately odd inputs in tests.
  void WriteTag(uint32_t field, WireType type);
  void WriteVarint(uint64_t value);

  const std::string& data() const { return data_; }
  std::string Release() { return std::move(data_); }

 private:
  std::string data_;
};

}  // namespace pbwire
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_PROTOBUF_WIRE_H_
