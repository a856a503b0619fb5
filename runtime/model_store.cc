#include "runtime/model_store.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "kernels/cpu/gemv.h"
#include "nlohmann/json.hpp"
#include "runtime/gguf_model.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kBlocksKey[] = "edgesplit.weights.";

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A weight stored as GGUF blocks: uint8 [out, out-row bytes] (GPT-2's
// Conv1D weights too, as their transpose's rows). `lm` is the matrix the
// name belongs to, or null when it is no linear weight.
absl::StatusOr<at::Tensor> LoadBlocks(
    const std::shared_ptr<const SafetensorsFile>& file, const TensorInfo& info,
    const std::string& name, const LinearModule* lm, kernels::WeightType type) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat(file->path(), ": tensor \"", name, "\" (",
                     kernels::WeightTypeName(type), " blocks) ", what));
  };
  if (lm == nullptr) return bad("is not a linear layer's weight");
  if (info.dtype != DType::kU8) {
    return bad(absl::StrCat("has dtype ", DTypeName(info.dtype), ", not U8"));
  }
  const std::vector<int64_t> want = {lm->out_features,
                                     kernels::RowBytes(type, lm->in_features)};
  if (!kernels::CheckCols(type, lm->in_features) || info.shape != want) {
    return bad(absl::StrCat("has shape ", ShapeString(info.shape), "; a [",
                            lm->out_features, ", ", lm->in_features,
                            "] weight needs ", ShapeString(want)));
  }
  return TensorFromSafetensors(file, info, at::kByte);
}

// A block tensor that is no linear weight (a GGUF file's quantized token
// embeddings): dequantized to the float [rows, cols] table the stage
// indexes, in `dtype`.
absl::StatusOr<at::Tensor> DequantizeTable(const SafetensorsFile& file,
                                           const TensorInfo& info,
                                           const WeightSpec& w,
                                           kernels::WeightType type,
                                           at::ScalarType dtype) {
  if (w.shape.size() != 2 ||
      info.shape != std::vector<int64_t>{w.shape[0],
                                         kernels::RowBytes(type, w.shape[1])} ||
      !kernels::CheckCols(type, w.shape[1])) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.path(), ": tensor \"", w.name, "\" (",
        kernels::WeightTypeName(type), " blocks) has shape ",
        ShapeString(info.shape), " but config implies ", ShapeString(w.shape)));
  }
  return TorchCall(w.name, [&]() -> absl::StatusOr<at::Tensor> {
    at::Tensor out = at::empty(w.shape, at::kFloat);
    kernels::DequantizeRows(
        {type, file.Data(info).data(), w.shape[0], w.shape[1]}, 0, w.shape[0],
        out.data_ptr<float>());
    return out.to(dtype);
  });
}

// Undoes llama.cpp's per-head row permutation of q_proj / k_proj (a copy:
// the rows move, float or blocks alike).
absl::StatusOr<at::Tensor> UnpermuteRows(const at::Tensor& t, int64_t heads,
                                         const std::string& name) {
  const int64_t rows = t.size(0);
  if (heads <= 0 || rows % heads != 0 || (rows / heads) % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor \"", name, "\": ", rows,
                     " rows do not split into ", heads, " heads of even size"));
  }
  return TorchCall(name, [&]() -> absl::StatusOr<at::Tensor> {
    std::vector<int64_t> index(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      index[r] = UnpermuteRowIndex(r, rows, heads);
    }
    return t.index_select(0, at::tensor(index)).contiguous();
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Open(
    const std::string& dir) {
  std::error_code ec;
  if (absl::EndsWith(dir, ".gguf") && fs::is_regular_file(dir, ec)) {
    return OpenGguf(dir);
  }
  if (!fs::is_directory(dir)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": not a model directory (or a .gguf file)"));
  }
  std::unique_ptr<ModelStore> store(new ModelStore());
  store->dir_ = dir;
  ES_ASSIGN_OR_RETURN(store->config_, LoadModelConfig(dir + "/config.json"));

  const std::string index_path = absl::StrCat(dir, "/", kIndexFile);
  const std::string single_path = absl::StrCat(dir, "/", kSingleFile);
  if (fs::exists(index_path)) {
    ES_ASSIGN_OR_RETURN(json j, ReadUntrustedJson(index_path));
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": expected a JSON object with a \"weight_map\" object"));
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry \"", it.key(),
                         "\" is not a file name"));
      }
      const std::string file = it->get<std::string>();
      // Shards must live in the model directory.
      if (file.empty() || file.find('/') != std::string::npos || file == "." ||
          file == "..") {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry \"", it.key(),
                         "\" names an invalid shard \"", file, "\""));
      }
      store->weight_map_[it.key()] = file;
    }
  } else if (fs::exists(single_path)) {
    // One file: its header names every tensor (opening it reads the header
    // only; data pages stay untouched until asked for).
    ES_ASSIGN_OR_RETURN(auto file, store->Shard(kSingleFile));
    for (const TensorInfo& t : file->tensors()) {
      store->weight_map_[t.name] = kSingleFile;
    }
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": no ", kSingleFile, " or ",
                                            kIndexFile, " in the directory"));
  }
  if (store->config_.arch == Arch::kGpt2 &&
      store->weight_map_.count("transformer.wte.weight") > 0) {
    store->gpt2_prefix_ = "transformer.";
  }
  return store;
}

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::OpenGguf(
    const std::string& path) {
  ES_ASSIGN_OR_RETURN(GgufModel m, ImportGguf(path));
  std::unique_ptr<ModelStore> store(new ModelStore());
  store->dir_ = path;
  store->config_ = m.config;
  store->gguf_ = m.file;
  store->unpermute_heads_ = std::move(m.unpermute_heads);
  const std::string shard = fs::path(path).filename().string();
  for (const TensorInfo& t : m.view->tensors()) {
    store->weight_map_[t.name] = shard;
  }
  absl::MutexLock lock(&store->mu_);
  store->shards_[shard] = m.view;  // Never opened by path.
  return store;
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> ModelStore::Shard(
    const std::string& file) const {
  absl::MutexLock lock(&mu_);
  auto it = shards_.find(file);
  if (it != shards_.end()) return it->second;
  ES_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> f,
                      SafetensorsFile::Open(absl::StrCat(dir_, "/", file)));
  shards_[file] = f;
  return f;
}

absl::StatusOr<std::string> ModelStore::ShardOf(
    const std::string& tensor) const {
  auto it = weight_map_.find(tensor);
  if (it == weight_map_.end()) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": checkpoint has no tensor \"", tensor,
                     "\", which config.json implies"));
  }
  return it->second;
}

std::vector<std::string> ModelStore::OpenedShards() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [name, f] : shards_) out.push_back(name);
  return out;
}

absl::StatusOr<WeightMap> ModelStore::LoadStageWeights(const StageSpec& spec,
                                                       at::ScalarType dtype,
                                                       bool copy) const {
  ES_RETURN_IF_ERROR(ValidateStageSpec(config_, spec));
  std::map<std::string, LinearModule> matrices;
  for (LinearModule& lm : StageMatrixWeights(config_, spec)) {
    std::string name = LinearWeightName(config_, lm, gpt2_prefix_);
    matrices.emplace(std::move(name), std::move(lm));
  }
  WeightMap out;
  for (const WeightSpec& w : StageWeights(config_, spec, gpt2_prefix_)) {
    if (out.count(w.name) > 0) continue;
    ES_ASSIGN_OR_RETURN(std::string shard, ShardOf(w.name));
    ES_ASSIGN_OR_RETURN(auto file, Shard(shard));
    const TensorInfo* info = file->Find(w.name);
    if (info == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(file->path(), ": missing tensor \"", w.name, "\""));
    }
    ES_ASSIGN_OR_RETURN(std::optional<kernels::WeightType> blocks,
                        StoredBlocks(w.name));
    if (blocks) {
      auto m = matrices.find(w.name);
      if (m == matrices.end() && gguf_ != nullptr) {
        ES_ASSIGN_OR_RETURN(out[w.name],
                            DequantizeTable(*file, *info, w, *blocks, dtype));
        continue;
      }
      ES_ASSIGN_OR_RETURN(
          at::Tensor t,
          LoadBlocks(file, *info, w.name,
                     m == matrices.end() ? nullptr : &m->second, *blocks));
      out[w.name] = copy ? t.clone() : t;
      ES_RETURN_IF_ERROR(Unpermute(w.name, &out[w.name]));
      continue;
    }
    if (info->shape != w.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat(file->path(), ": tensor \"", w.name, "\" has shape ",
                       ShapeString(info->shape), " but config.json implies ",
                       ShapeString(w.shape)));
    }
    if (info->dtype != DType::kF32 && info->dtype != DType::kF16 &&
        info->dtype != DType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(
          file->path(), ": tensor \"", w.name, "\" has dtype ",
          DTypeName(info->dtype), "; weights must be F32, F16 or BF16"));
    }
    ES_ASSIGN_OR_RETURN(at::Tensor t,
                        TensorFromSafetensors(file, *info, dtype));
    if (copy) {
      ES_RETURN_IF_ERROR(TorchCall(w.name, [&]() -> absl::Status {
        t = t.clone();
        return absl::OkStatus();
      }));
    }
    out[w.name] = std::move(t);
    ES_RETURN_IF_ERROR(Unpermute(w.name, &out[w.name]));
  }
  return out;
}

absl::StatusOr<std::optional<kernels::WeightType>> ModelStore::StoredBlocks(
    const std::string& tensor) const {
  ES_ASSIGN_OR_RETURN(std::string shard, ShardOf(tensor));
  ES_ASSIGN_OR_RETURN(auto file, Shard(shard));
  auto it = file->metadata().find(absl::StrCat(kBlocksKey, tensor));
  if (it == file->metadata().end()) return std::nullopt;
  std::optional<kernels::WeightType> type =
      kernels::ParseWeightType(it->second);
  if (!type || !kernels::IsBlockType(*type)) {
    return absl::InvalidArgumentError(absl::StrCat(
        file->path(), ": metadata \"", it->first, "\" = \"", it->second,
        "\" is not a block type (q8_0, q4_0, q4_k, q6_k)"));
  }
  return type;
}

absl::StatusOr<int64_t> ModelStore::StoredBytes(
    const std::vector<WeightSpec>& weights) const {
  int64_t total = 0;
  for (const WeightSpec& w : weights) {
    ES_ASSIGN_OR_RETURN(std::string shard, ShardOf(w.name));
    ES_ASSIGN_OR_RETURN(auto file, Shard(shard));
    const TensorInfo* info = file->Find(w.name);
    if (info == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(file->path(), ": missing tensor \"", w.name, "\""));
    }
    total += static_cast<int64_t>(info->nbytes());
  }
  return total;
}

absl::Status ModelStore::Unpermute(const std::string& name,
                                   at::Tensor* t) const {
  auto it = unpermute_heads_.find(name);
  if (it == unpermute_heads_.end()) return absl::OkStatus();
  ES_ASSIGN_OR_RETURN(*t, UnpermuteRows(*t, it->second, name));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> ModelStore::LoadTokenizer() const {
  if (gguf_ != nullptr) return LoadGgufTokenizer(*gguf_);
  return edgesplit::LoadTokenizer(dir_, config_);
}

}  // namespace edgesplit
