#include "runtime/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/json_util.h"
#include "base/mapped_file.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace {

using json = nlohmann::json;

// Largest dimension accepted; keeps numel() products far from overflow.
constexpr int64_t kMaxDim = int64_t{1} << 40;

absl::Status HeaderError(absl::string_view source, absl::string_view tensor,
                         absl::string_view what) {
  if (source.empty()) return absl::InvalidArgumentError(what);
  if (tensor.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": tensor \"", tensor, "\": ", what));
}

absl::StatusOr<uint64_t> ReadUint(const json& v, absl::string_view source,
                                  absl::string_view tensor,
                                  absl::string_view field) {
  if (!v.is_number_unsigned()) {
    return HeaderError(source, tensor,
                       absl::StrCat(field,
                                    " must be a non-negative integer, "
                                    "got ",
                                    DescribeJson(v)));
  }
  return v.get<uint64_t>();
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const json& v,
                                      uint64_t data_size,
                                      absl::string_view source) {
  if (!v.is_object())
    return HeaderError(source, name, "entry is not an object");
  TensorInfo info;
  info.name = name;
  auto dtype_it = v.find("dtype");
  if (dtype_it == v.end() || !dtype_it->is_string()) {
    return HeaderError(source, name, "missing string field \"dtype\"");
  }
  auto dtype = ParseDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return HeaderError(source, name, dtype.status().message());
  info.dtype = *dtype;

  auto shape_it = v.find("shape");
  if (shape_it == v.end() || !shape_it->is_array()) {
    return HeaderError(source, name, "missing array field \"shape\"");
  }
  uint64_t numel = 1;
  for (const json& d : *shape_it) {
    ES_ASSIGN_OR_RETURN(uint64_t dim, ReadUint(d, source, name, "shape entry"));
    if (dim > static_cast<uint64_t>(kMaxDim)) {
      return HeaderError(source, name,
                         absl::StrCat("dimension ", dim, " is too large"));
    }
    if (__builtin_mul_overflow(numel, dim, &numel)) {
      return HeaderError(source, name, "shape overflows");
    }
    info.shape.push_back(static_cast<int64_t>(dim));
  }

  auto off_it = v.find("data_offsets");
  if (off_it == v.end() || !off_it->is_array() || off_it->size() != 2) {
    return HeaderError(source, name,
                       "missing field \"data_offsets\" of two integers");
  }
  ES_ASSIGN_OR_RETURN(info.begin,
                      ReadUint((*off_it)[0], source, name, "data_offsets[0]"));
  ES_ASSIGN_OR_RETURN(info.end,
                      ReadUint((*off_it)[1], source, name, "data_offsets[1]"));
  if (info.begin > info.end) {
    return HeaderError(source, name,
                       absl::StrCat("data_offsets [", info.begin, ", ",
                                    info.end, "] are reversed"));
  }
  if (info.end > data_size) {
    return HeaderError(
        source, name,
        absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                     "] past end of data (", data_size, " bytes)"));
  }
  uint64_t expected = 0;
  if (__builtin_mul_overflow(numel, DTypeSize(info.dtype), &expected) ||
      expected != info.end - info.begin) {
    return HeaderError(
        source, name,
        absl::StrCat("byte count ", info.end - info.begin,
                     " does not match shape and dtype ", DTypeName(info.dtype),
                     " (expected ", expected, ")"));
  }
  return info;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(
    absl::string_view text, uint64_t data_size, absl::string_view source) {
  // A valid header nests 3 levels (root, entry, shape); a little slack.
  auto parsed = ParseUntrustedJson(text, source, /*max_depth=*/4);
  if (!parsed.ok()) {
    return HeaderError(
        "", "", absl::StrCat(parsed.status().message(), " (in the header)"));
  }
  const json& root = *parsed;
  SafetensorsHeader header;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) {
        return HeaderError(source, "", "__metadata__ is not an object");
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return HeaderError(source, "",
                             absl::StrCat("__metadata__ value for \"", m.key(),
                                          "\" is not a string"));
        }
        header.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    ES_ASSIGN_OR_RETURN(TensorInfo info,
                        ParseEntry(it.key(), *it, data_size, source));
    header.tensors.push_back(std::move(info));
  }
  // Tensors may not share bytes: sort by offset and check neighbours.
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : header.tensors) {
    if (t.nbytes() > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) {
              return a->begin < b->begin;
            });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return HeaderError(source, by_offset[i]->name,
                         absl::StrCat("data_offsets overlap tensor \"",
                                      by_offset[i - 1]->name, "\""));
    }
  }
  // nlohmann::json objects iterate in key order: already sorted by name.
  return header;
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> map,
                      MappedFile::Open(path));
  const uint64_t size = map->size();
  if (size < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": file too short for a safetensors header (", size, " bytes)"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map->data()[i];
  if (header_len > size - 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header length ", header_len,
                     " past end of file (", size, " bytes)"));
  }
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": header length ", header_len, " exceeds the limit of ",
        kMaxSafetensorsHeaderBytes, " bytes"));
  }
  absl::string_view text(reinterpret_cast<const char*>(map->data() + 8),
                         header_len);
  ES_ASSIGN_OR_RETURN(
      SafetensorsHeader header,
      ParseSafetensorsHeader(text, size - 8 - header_len, path));
  return FromMapping(path, std::move(header), std::move(map), 8 + header_len);
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>>
SafetensorsFile::FromMapping(std::string path, SafetensorsHeader header,
                             std::shared_ptr<const MappedFile> map,
                             uint64_t data_offset) {
  if (data_offset > map->size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": data section starts past the end of the file"));
  }
  const uint64_t data_size = map->size() - data_offset;
  std::sort(
      header.tensors.begin(), header.tensors.end(),
      [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  for (size_t i = 0; i < header.tensors.size(); ++i) {
    const TensorInfo& t = header.tensors[i];
    if (t.begin > t.end || t.end > data_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", t.name, "\" lies outside the data"));
    }
    if (i > 0 && header.tensors[i - 1].name == t.name) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": duplicate tensor \"", t.name, "\""));
    }
  }
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(path);
  file->header_ = std::move(header);
  file->data_ = map->data() + data_offset;
  file->map_ = std::move(map);
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = std::lower_bound(
      header_.tensors.begin(), header_.tensors.end(), name,
      [](const TensorInfo& t, absl::string_view n) { return t.name < n; });
  if (it == header_.tensors.end() || it->name != name) return nullptr;
  return &*it;
}

absl::Span<const uint8_t> SafetensorsFile::Data(const TensorInfo& info) const {
  return absl::Span<const uint8_t>(data_ + info.begin, info.nbytes());
}

absl::Status SafetensorsWriter::Add(std::string name, DType dtype,
                                    std::vector<int64_t> shape,
                                    absl::Span<const uint8_t> data) {
  if (name == "__metadata__" || entries_.count(name) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("duplicate or reserved tensor name \"", name, "\""));
  }
  TensorInfo info;
  info.name = name;
  info.dtype = dtype;
  info.shape = std::move(shape);
  if (static_cast<uint64_t>(info.numel()) * DTypeSize(dtype) != data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor \"", name, "\": ", data.size(),
                     " bytes do not match its shape"));
  }
  entries_[name] = Entry{std::move(info), data};
  return absl::OkStatus();
}

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  json header = json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& [name, e] : entries_) {
    header[name] = {{"dtype", std::string(DTypeName(e.info.dtype))},
                    {"shape", e.info.shape},
                    {"data_offsets", {offset, offset + e.data.size()}}};
    offset += e.data.size();
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');

  char len_bytes[8];
  const uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>(len >> (8 * i));
  std::vector<absl::string_view> pieces = {absl::string_view(len_bytes, 8),
                                           text};
  for (const auto& [name, e] : entries_) {
    pieces.emplace_back(reinterpret_cast<const char*>(e.data.data()),
                        e.data.size());
  }
  return WriteFileAtomically(path, pieces);
}

}  // namespace edgesplit
