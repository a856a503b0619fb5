#include "runtime/tokenizer/protobuf_wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace edgesplit {
namespace pbwire {
namespace {

// protobuf's own limit on field numbers (29 bits).
constexpr uint32_t kMaxFieldNumber = (1u << 29) - 1;
// Nested groups recurse; bound the depth so that crafted input cannot
// overflow the stack. protobuf's default recursion limit is 100.
constexpr int kMaxGroupDepth = 100;

const char* WireTypeName(WireType type) {
  switch (type) {
    case WireType::kVarint:
      return "varint";
    case WireType::kFixed64:
      return "fixed64";
    case WireType::kLengthDelimited:
      return "length-delimited";
    case WireType::kStartGroup:
      return "start-group";
    case WireType::kEndGroup:
      return "end-group";
    case WireType::kFixed32:
      return "fixed32";
  }
  return "invalid";
}

}  // namespace

WireReader::WireReader(absl::string_view data, absl::string_view source,
                       std::string context)
    : WireReader(data, source, std::move(context), 0) {}

WireReader::WireReader(absl::string_view data, absl::string_view source,
                       std::string context, size_t base_offset)
    : data_(data),
      source_(source),
      context_(std::move(context)),
      base_offset_(base_offset) {}

absl::Status WireReader::Error(absl::string_view what) const {
  return absl::InvalidArgumentError(absl::StrCat(
      source_, ": ", context_, " at byte ", base_offset_ + pos_, ": ", what));
}

absl::Status WireReader::ReadVarint(uint64_t* value) {
  uint64_t result = 0;
  for (int i = 0; i < 10; ++i) {
    if (pos_ >= data_.size()) return Error("truncated varint");
    const uint8_t byte = static_cast<uint8_t>(data_[pos_++]);
    // The tenth byte holds only bit 63: anything more does not fit in 64
    // bits, so the encoding is corrupt rather than merely large.
    if (i == 9 && byte > 1) return Error("varint longer than 64 bits");
    result |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) {
      *value = result;
      return absl::OkStatus();
    }
  }
  return Error("varint longer than 10 bytes");
}

absl::Status WireReader::ReadFixed32(uint32_t* value) {
  if (data_.size() - pos_ < 4) return Error("truncated fixed32");
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
  }
  pos_ += 4;
  *value = v;
  return absl::OkStatus();
}

absl::Status WireReader::ReadFixed64(uint64_t* value) {
  if (data_.size() - pos_ < 8) return Error("truncated fixed64");
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
  }
  pos_ += 8;
  *value = v;
  return absl::OkStatus();
}

absl::Status WireReader::ReadLengthDelimited(absl::string_view* bytes) {
  uint64_t length = 0;
  if (absl::Status s = ReadVarint(&length); !s.ok()) return s;
  if (length > data_.size() - pos_) {
    return Error(absl::StrCat("length ", length, " runs past the end (",
                              data_.size() - pos_, " bytes left)"));
  }
  *bytes = data_.substr(pos_, static_cast<size_t>(length));
  pos_ += static_cast<size_t>(length);
  return absl::OkStatus();
}

absl::Status WireReader::ReadTag(uint32_t* field, WireType* type) {
  uint64_t tag = 0;
  if (absl::Status s = ReadVarint(&tag); !s.ok()) return s;
  const uint64_t number = tag >> 3;
  const uint32_t wire = static_cast<uint32_t>(tag & 7);
  if (number == 0) return Error("field number 0");
  if (number > kMaxFieldNumber) {
    return Error(absl::StrCat("field number ", number, " out of range"));
  }
  if (wire > 5) return Error(absl::StrCat("invalid wire type ", wire));
  *field = static_cast<uint32_t>(number);
  *type = static_cast<WireType>(wire);
  return absl::OkStatus();
}

absl::Status WireReader::ExpectWireType(uint32_t field, WireType actual,
                                        WireType expected) const {
  if (actual == expected) return absl::OkStatus();
  return Error(absl::StrCat("field ", field, " has wire type ",
                            WireTypeName(actual), ", expected ",
                            WireTypeName(expected)));
}

absl::Status WireReader::ReadInt32(uint32_t field, WireType type,
                                   int32_t* value) {
  if (absl::Status s = ExpectWireType(field, type, WireType::kVarint);
      !s.ok()) {
    return s;
  }
  uint64_t v = 0;
  if (absl::Status s = ReadVarint(&v); !s.ok()) return s;
  // protobuf truncates to the low 32 bits (negative int32 values arrive
  // sign-extended to 64).
  *value = static_cast<int32_t>(static_cast<uint32_t>(v));
  return absl::OkStatus();
}

absl::Status WireReader::ReadBool(uint32_t field, WireType type, bool* value) {
  if (absl::Status s = ExpectWireType(field, type, WireType::kVarint);
      !s.ok()) {
    return s;
  }
  uint64_t v = 0;
  if (absl::Status s = ReadVarint(&v); !s.ok()) return s;
  *value = v != 0;
  return absl::OkStatus();
}

absl::Status WireReader::ReadFloat(uint32_t field, WireType type,
                                   float* value) {
  if (absl::Status s = ExpectWireType(field, type, WireType::kFixed32);
      !s.ok()) {
    return s;
  }
  uint32_t bits = 0;
  if (absl::Status s = ReadFixed32(&bits); !s.ok()) return s;
  static_assert(sizeof(float) == sizeof(uint32_t), "IEEE-754 float expected");
  std::memcpy(value, &bits, sizeof(bits));
  return absl::OkStatus();
}

absl::Status WireReader::ReadBytes(uint32_t field, WireType type,
                                   std::string* value) {
  if (absl::Status s = ExpectWireType(field, type, WireType::kLengthDelimited);
      !s.ok()) {
    return s;
  }
  absl::string_view bytes;
  if (absl::Status s = ReadLengthDelimited(&bytes); !s.ok()) return s;
  value->assign(bytes.data(), bytes.size());
  return absl::OkStatus();
}

absl::Status WireReader::ReadMessage(uint32_t field, WireType type,
                                     std::string child_context,
                                     WireReader* child) {
  if (absl::Status s = ExpectWireType(field, type, WireType::kLengthDelimited);
      !s.ok()) {
    return s;
  }
  absl::string_view bytes;
  if (absl::Status s = ReadLengthDelimited(&bytes); !s.ok()) return s;
  const size_t offset = base_offset_ + pos_ - bytes.size();
  *child = WireReader(bytes, source_, std::move(child_context), offset);
  return absl::OkStatus();
}

absl::Status WireReader::SkipField(uint32_t field, WireType type) {
  switch (type) {
    case WireType::kVarint: {
      uint64_t ignored = 0;
      return ReadVarint(&ignored);
    }
    case WireType::kFixed64: {
      uint64_t ignored = 0;
      return ReadFixed64(&ignored);
    }
    case WireType::kLengthDelimited: {
      absl::string_view ignored;
      return ReadLengthDelimited(&ignored);
    }
    case WireType::kStartGroup:
      return SkipGroup(field, 1);
    case WireType::kEndGroup:
      // Groups are consumed whole by SkipGroup, so an end tag here has no
      // matching start (protobuf rejects it the same way).
      return Error(absl::StrCat("end-group tag for field ", field,
                                " without a start-group"));
    case WireType::kFixed32: {
      uint32_t ignored = 0;
      return ReadFixed32(&ignored);
    }
  }
  return Error("invalid wire type");
}

absl::Status WireReader::SkipGroup(uint32_t field, int depth) {
  if (depth > kMaxGroupDepth) return Error("groups nested too deeply");
  while (true) {
    if (done()) {
      return Error(absl::StrCat("group ", field, " has no end-group tag"));
    }
    uint32_t inner = 0;
    WireType type = WireType::kVarint;
    if (absl::Status s = ReadTag(&inner, &type); !s.ok()) return s;
    if (type == WireType::kEndGroup) {
      if (inner != field) {
        return Error(absl::StrCat("end-group tag for field ", inner,
                                  " inside group ", field));
      }
      return absl::OkStatus();
    }
    absl::Status s = type == WireType::kStartGroup ? SkipGroup(inner, depth + 1)
                                                   : SkipField(inner, type);
    if (!s.ok()) return s;
  }
}

void WireWriter::WriteVarint(uint64_t value) {
  while (value >= 0x80) {
    data_.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  data_.push_back(static_cast<char>(value));
}

void WireWriter::WriteTag(uint32_t field, WireType type) {
  WriteVarint((static_cast<uint64_t>(field) << 3) |
              static_cast<uint64_t>(type));
}

void WireWriter::WriteVarintField(uint32_t field, uint64_t value) {
  WriteTag(field, WireType::kVarint);
  WriteVarint(value);
}

void WireWriter::WriteInt32Field(uint32_t field, int32_t value) {
  WriteVarintField(field, static_cast<uint64_t>(static_cast<int64_t>(value)));
}

void WireWriter::WriteBoolField(uint32_t field, bool value) {
  WriteVarintField(field, value ? 1 : 0);
}

void WireWriter::WriteFixed32Field(uint32_t field, uint32_t value) {
  WriteTag(field, WireType::kFixed32);
  for (int i = 0; i < 4; ++i) {
    data_.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
}

void WireWriter::WriteFloatField(uint32_t field, float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  WriteFixed32Field(field, bits);
}

void WireWriter::WriteBytesField(uint32_t field, absl::string_view value) {
  WriteTag(field, WireType::kLengthDelimited);
  WriteVarint(value.size());
  data_.append(value.data(), value.size());
}

}  // namespace pbwire
}  // namespace edgesplit
