#include "runtime/gguf.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace edgesplit {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian.
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = 1 << 20;
constexpr uint32_t kMaxDims = 4;
constexpr int64_t kMaxElements = int64_t{1} << 48;

// Bytes per block and elements per block of a tensor type; nullopt for a
// type edgesplit does not read.
struct TypeSize {
  int64_t block, bytes;
};
std::optional<TypeSize> SizeOf(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32:
      return TypeSize{1, 4};
    case GgmlType::kF16:
    case GgmlType::kBF16:
      return TypeSize{1, 2};
    case GgmlType::kQ4_0:
      return TypeSize{32, 18};
    case GgmlType::kQ8_0:
      return TypeSize{32, 34};
    case GgmlType::kQ4_K:
      return TypeSize{256, 144};
    case GgmlType::kQ6_K:
      return TypeSize{256, 210};
  }
  return std::nullopt;
}

// Sequential little-endian reads bounded by the header's bytes.
class Reader {
 public:
  Reader(const uint8_t* p, uint64_t size, const std::string& source)
      : p_(p), size_(size), source_(source) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": ", what, " (at byte ", pos_, ")"));
  }

  template <typename T>
  absl::StatusOr<T> Scalar(absl::string_view what) {
    if (left() < sizeof(T)) {
      return Error(absl::StrCat("file ends inside ", what));
    }
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));  // x86/ARM: little-endian.
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<std::string> String(absl::string_view what) {
    ES_ASSIGN_OR_RETURN(uint64_t n, Scalar<uint64_t>(what));
    if (n > left()) {
      return Error(absl::StrCat(what, " of ", n, " bytes runs past the end"));
    }
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& source_;
};

int64_t ScalarBytes(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      break;
  }
  return 0;
}

// One numeric scalar as (double, int64); `exact` false for a u64 past
// INT64_MAX or a non-integral float.
absl::Status ReadNumber(Reader& r, GgufType t, const std::string& key,
                        double* number, int64_t* integer) {
  auto take = [&](auto v) {
    *number = static_cast<double>(v);
    if constexpr (std::is_integral_v<decltype(v)>) {
      *integer = static_cast<int64_t>(v);
    }
    return absl::OkStatus();
  };
  const std::string what = absl::StrCat("value of \"", key, "\"");
  switch (t) {
    case GgufType::kU8: {
      ES_ASSIGN_OR_RETURN(uint8_t v, r.Scalar<uint8_t>(what));
      return take(v);
    }
    case GgufType::kI8: {
      ES_ASSIGN_OR_RETURN(int8_t v, r.Scalar<int8_t>(what));
      return take(v);
    }
    case GgufType::kBool: {
      ES_ASSIGN_OR_RETURN(uint8_t v, r.Scalar<uint8_t>(what));
      if (v > 1) return r.Error(absl::StrCat(what, ": bool is ", int{v}));
      return take(v);
    }
    case GgufType::kU16: {
      ES_ASSIGN_OR_RETURN(uint16_t v, r.Scalar<uint16_t>(what));
      return take(v);
    }
    case GgufType::kI16: {
      ES_ASSIGN_OR_RETURN(int16_t v, r.Scalar<int16_t>(what));
      return take(v);
    }
    case GgufType::kU32: {
      ES_ASSIGN_OR_RETURN(uint32_t v, r.Scalar<uint32_t>(what));
      return take(v);
    }
    case GgufType::kI32: {
      ES_ASSIGN_OR_RETURN(int32_t v, r.Scalar<int32_t>(what));
      return take(v);
    }
    case GgufType::kU64: {
      ES_ASSIGN_OR_RETURN(uint64_t v, r.Scalar<uint64_t>(what));
      *number = static_cast<double>(v);
      *integer =
          v > static_cast<uint64_t>(INT64_MAX) ? -1 : static_cast<int64_t>(v);
      return absl::OkStatus();
    }
    case GgufType::kI64: {
      ES_ASSIGN_OR_RETURN(int64_t v, r.Scalar<int64_t>(what));
      return take(v);
    }
    case GgufType::kF32: {
      ES_ASSIGN_OR_RETURN(float v, r.Scalar<float>(what));
      return take(v);
    }
    case GgufType::kF64: {
      ES_ASSIGN_OR_RETURN(double v, r.Scalar<double>(what));
      return take(v);
    }
    case GgufType::kString:
    case GgufType::kArray:
      break;
  }
  return r.Error(absl::StrCat(what, ": not a number"));
}

bool KnownType(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufType::kF64);
}

absl::StatusOr<GgufValue> ReadValue(Reader& r, const std::string& key) {
  GgufValue v;
  ES_ASSIGN_OR_RETURN(
      uint32_t type, r.Scalar<uint32_t>(absl::StrCat("type of \"", key, "\"")));
  if (!KnownType(type)) {
    return r.Error(absl::StrCat("key \"", key, "\" has unknown type ", type));
  }
  v.type = static_cast<GgufType>(type);
  if (v.type == GgufType::kString) {
    ES_ASSIGN_OR_RETURN(v.str,
                        r.String(absl::StrCat("value of \"", key, "\"")));
    return v;
  }
  if (v.type != GgufType::kArray) {
    ES_RETURN_IF_ERROR(ReadNumber(r, v.type, key, &v.number, &v.integer));
    return v;
  }
  ES_ASSIGN_OR_RETURN(uint32_t et, r.Scalar<uint32_t>(absl::StrCat(
                                       "element type of \"", key, "\"")));
  if (!KnownType(et) || et == static_cast<uint32_t>(GgufType::kArray)) {
    return r.Error(
        absl::StrCat("array \"", key, "\" has unsupported element type ", et));
  }
  v.elem_type = static_cast<GgufType>(et);
  ES_ASSIGN_OR_RETURN(
      uint64_t n, r.Scalar<uint64_t>(absl::StrCat("length of \"", key, "\"")));
  // Each element takes at least its scalar size (a string its 8-byte
  // length): a count the rest of the file cannot hold is refused before
  // anything is allocated for it.
  const int64_t min_bytes =
      v.elem_type == GgufType::kString ? 8 : ScalarBytes(v.elem_type);
  if (n > r.left() / static_cast<uint64_t>(min_bytes)) {
    return r.Error(absl::StrCat("array \"", key, "\" claims ", n,
                                " elements, more than the file holds"));
  }
  if (v.elem_type == GgufType::kString) {
    v.strings.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
      ES_ASSIGN_OR_RETURN(std::string s,
                          r.String(absl::StrCat("\"", key, "\"[", i, "]")));
      v.strings.push_back(std::move(s));
    }
    return v;
  }
  v.numbers.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    int64_t ignored = 0;
    ES_RETURN_IF_ERROR(
        ReadNumber(r, v.elem_type, key, &v.numbers[i], &ignored));
  }
  return v;
}

}  // namespace

const char* GgmlTypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return "f32";
    case GgmlType::kF16:
      return "f16";
    case GgmlType::kBF16:
      return "bf16";
    case GgmlType::kQ4_0:
      return "q4_0";
    case GgmlType::kQ8_0:
      return "q8_0";
    case GgmlType::kQ4_K:
      return "q4_k";
    case GgmlType::kQ6_K:
      return "q6_k";
  }
  return "?";
}

bool GgufValue::IsInteger() const {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kBool:
      return true;
    default:
      return false;
  }
}

int64_t GgufTensor::rows() const {
  int64_t r = 1;
  for (size_t i = 1; i < ne.size(); ++i) r *= ne[i];
  return r;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(
    const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> map,
                      MappedFile::Open(path));
  return Parse(std::move(map));
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(
    std::shared_ptr<const MappedFile> map) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = map->path();
  f->base_ = map->data();
  const uint64_t size = map->size();
  f->map_ = std::move(map);
  ES_RETURN_IF_ERROR(f->ParseAll(size));
  return f;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::ParseBytes(
    absl::string_view bytes, absl::string_view source) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::string(source);
  f->owned_ = std::string(bytes);
  f->base_ = reinterpret_cast<const uint8_t*>(f->owned_.data());
  ES_RETURN_IF_ERROR(f->ParseAll(f->owned_.size()));
  return f;
}

absl::Status GgufFile::ParseAll(uint64_t size) {
  Reader r(base_, size, path_);
  ES_ASSIGN_OR_RETURN(uint32_t magic, r.Scalar<uint32_t>("the magic"));
  if (magic != kMagic) return r.Error("not a GGUF file (bad magic)");
  ES_ASSIGN_OR_RETURN(version_, r.Scalar<uint32_t>("the version"));
  if (version_ != 2 && version_ != 3) {
    return r.Error(absl::StrCat("GGUF version ", version_,
                                " is not supported (2 and 3 are; a version "
                                "past 2^24 means a big-endian file)"));
  }
  ES_ASSIGN_OR_RETURN(uint64_t n_tensors, r.Scalar<uint64_t>("tensor count"));
  ES_ASSIGN_OR_RETURN(uint64_t n_kv, r.Scalar<uint64_t>("key count"));
  if (n_tensors > kMaxGgufTensors || n_kv > kMaxGgufKeys) {
    return r.Error(absl::StrCat(n_tensors, " tensors and ", n_kv,
                                " keys exceed the limits (", kMaxGgufTensors,
                                ", ", kMaxGgufKeys, ")"));
  }
  for (uint64_t i = 0; i < n_kv; ++i) {
    ES_ASSIGN_OR_RETURN(std::string key, r.String("a key"));
    ES_ASSIGN_OR_RETURN(GgufValue v, ReadValue(r, key));
    if (!kv_.emplace(key, std::move(v)).second) {
      return r.Error(absl::StrCat("duplicate key \"", key, "\""));
    }
  }
  uint64_t alignment = kDefaultAlignment;
  if (kv_.count("general.alignment") > 0) {
    ES_ASSIGN_OR_RETURN(int64_t a, Int("general.alignment"));
    if (a <= 0 || static_cast<uint64_t>(a) > kMaxAlignment ||
        (a & (a - 1)) != 0) {
      return r.Error(absl::StrCat("general.alignment ", a,
                                  " is not a power of two up to ",
                                  kMaxAlignment));
    }
    alignment = static_cast<uint64_t>(a);
  }
  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    ES_ASSIGN_OR_RETURN(t.name, r.String("a tensor name"));
    const std::string what = absl::StrCat("tensor \"", t.name, "\"");
    ES_ASSIGN_OR_RETURN(uint32_t n_dims, r.Scalar<uint32_t>(what));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return r.Error(absl::StrCat(what, " has ", n_dims, " dimensions"));
    }
    int64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      ES_ASSIGN_OR_RETURN(uint64_t ne, r.Scalar<uint64_t>(what));
      if (ne == 0 || ne > static_cast<uint64_t>(kMaxElements) ||
          static_cast<int64_t>(ne) > kMaxElements / elements) {
        return r.Error(absl::StrCat(what, " has dimension ", d, " = ", ne));
      }
      elements *= static_cast<int64_t>(ne);
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    ES_ASSIGN_OR_RETURN(uint32_t type, r.Scalar<uint32_t>(what));
    const std::optional<TypeSize> ts = SizeOf(type);
    if (!ts) {
      return r.Error(absl::StrCat(
          what, " has ggml type ", type,
          ", which edgesplit does not read (f32, f16, bf16, q8_0, q4_0, "
          "q4_k, q6_k)"));
    }
    t.type = static_cast<GgmlType>(type);
    if (t.ne[0] % ts->block != 0) {
      return r.Error(absl::StrCat(what, " (", GgmlTypeName(t.type),
                                  ") has rows of ", t.ne[0],
                                  ", not a multiple of ", ts->block));
    }
    t.nbytes = static_cast<uint64_t>(elements / ts->block * ts->bytes);
    ES_ASSIGN_OR_RETURN(t.offset, r.Scalar<uint64_t>(what));
    if (t.offset % alignment != 0) {
      return r.Error(absl::StrCat(what, " offset ", t.offset,
                                  " is not aligned to ", alignment));
    }
    if (!by_name_.emplace(t.name, tensors_.size()).second) {
      return r.Error(absl::StrCat("duplicate ", what));
    }
    tensors_.push_back(std::move(t));
  }
  data_offset_ = (r.pos() + alignment - 1) / alignment * alignment;
  if (data_offset_ > size) {
    return r.Error("the data section starts past the end of the file");
  }
  const uint64_t data_size = size - data_offset_;
  for (const GgufTensor& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": tensor \"", t.name, "\" (", t.nbytes, " bytes at offset ",
          t.offset, ") runs past the end of the data (", data_size, " bytes)"));
    }
  }
  return absl::OkStatus();
}

const GgufTensor* GgufFile::Find(absl::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<int64_t> GgufFile::Int(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no key \"", key, "\""));
  }
  if (!it->second.IsInteger() || it->second.integer < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": \"", key, "\" is not a non-negative integer"));
  }
  return it->second.integer;
}

absl::StatusOr<int64_t> GgufFile::Int(const std::string& key,
                                      int64_t fallback) const {
  if (kv_.count(key) == 0) return fallback;
  return Int(key);
}

absl::StatusOr<double> GgufFile::Float(const std::string& key,
                                       double fallback) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return fallback;
  const GgufType t = it->second.type;
  if (t == GgufType::kString || t == GgufType::kArray ||
      !std::isfinite(it->second.number)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": \"", key, "\" is not a finite number"));
  }
  return it->second.number;
}

absl::StatusOr<bool> GgufFile::Bool(const std::string& key,
                                    bool fallback) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return fallback;
  if (it->second.type != GgufType::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": \"", key, "\" is not a bool"));
  }
  return it->second.integer != 0;
}

absl::StatusOr<std::string> GgufFile::String(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no key \"", key, "\""));
  }
  if (it->second.type != GgufType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": \"", key, "\" is not a string"));
  }
  return it->second.str;
}

absl::StatusOr<const std::vector<std::string>*> GgufFile::Strings(
    const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no key \"", key, "\""));
  }
  if (it->second.type != GgufType::kArray ||
      it->second.elem_type != GgufType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": \"", key, "\" is not an array of strings"));
  }
  return &it->second.strings;
}

absl::StatusOr<const std::vector<double>*> GgufFile::Numbers(
    const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no key \"", key, "\""));
  }
  if (it->second.type != GgufType::kArray ||
      it->second.elem_type == GgufType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": \"", key, "\" is not an array of numbers"));
  }
  return &it->second.numbers;
}

}  // namespace edgesplit
