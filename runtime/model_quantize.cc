#include "runtime/model_quantize.h"

#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "runtime/linear_weight.h"
#include "runtime/model_store.h"
#include "runtime/safetensors.h"
#include "runtime/torch_util.h"
#include "runtime/weight_layout.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;

// Checkpoint names of the weights to quantize (block linears, an untied
// head), each with whether it is a GPT-2 Conv1D ([in, out]) weight. A tied
// head is the embedding table, which lookups need as floats.
std::map<std::string, bool> QuantizableWeights(const ModelConfig& c,
                                               const std::string& prefix) {
  std::map<std::string, bool> out;
  for (const LinearModule& lm :
       StageMatrixWeights(c, {{0, c.num_layers}, false, true})) {
    out[LinearWeightName(c, lm, prefix)] = lm.conv1d;
  }
  return out;
}

absl::Status CopyTokenizerFiles(const std::string& from,
                                const std::string& to) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(from, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name == "config.json" ||
        name == "model.safetensors.index.json" ||
        e.path().extension() == ".safetensors") {
      continue;
    }
    fs::copy_file(e.path(), fs::path(to) / name,
                  fs::copy_options::overwrite_existing, ec);
    // Read-only sources (a package, ../shared) give writable copies.
    if (!ec) {
      fs::permissions(fs::path(to) / name, fs::perms::owner_write,
                      fs::perm_options::add, ec);
    }
    if (ec) {
      return absl::InternalError(
          absl::StrCat("copying ", e.path().string(), ": ", ec.message()));
    }
  }
  if (ec) {
    return absl::NotFoundError(absl::StrCat(from, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<QuantizeReport> QuantizeModel(const QuantizeOptions& options) {
  if (!kernels::IsBlockType(options.type)) {
    return absl::InvalidArgumentError(
        "--type must be a block type (q8_0, q4_0, q4_k, q6_k)");
  }
  std::error_code ec;
  if (options.out_dir.empty() ||
      fs::equivalent(options.model_dir, options.out_dir, ec)) {
    return absl::InvalidArgumentError(
        "the output directory must differ from the model directory");
  }
  ES_ASSIGN_OR_RETURN(auto store, ModelStore::Open(options.model_dir));
  ModelConfig c = store->config();
  if (!c.quantized_weights.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(options.model_dir, " is already quantized (",
                     c.quantized_weights, ")"));
  }
  ES_ASSIGN_OR_RETURN(at::ScalarType dtype, ParseTorchDtype(c.torch_dtype));
  const StageSpec whole{{0, c.num_layers}, true, true};
  // In the checkpoint's own dtype: the tensors kept are written unchanged.
  ES_ASSIGN_OR_RETURN(WeightMap weights,
                      store->LoadStageWeights(whole, dtype, false));
  const std::map<std::string, bool> linears =
      QuantizableWeights(c, store->gpt2_prefix());
  QuantizeReport report;
  SafetensorsWriter writer;
  std::vector<at::Tensor> keep;  // Bytes the writer references.
  ES_RETURN_IF_ERROR(TorchCall("model quantize", [&]() -> absl::Status {
    for (auto& [name, t] : weights) {
      report.bytes_before += t.nbytes();
      auto it = linears.find(name);
      if (it != linears.end()) {
        at::Tensor w = it->second ? t.t().contiguous() : t;
        ES_ASSIGN_OR_RETURN(LinearWeight lw,
                            MakeLinearWeight(w, options.type, name));
        if (lw.type != kernels::WeightType::kF32) {
          const int64_t row = kernels::RowBytes(lw.type, lw.in);
          keep.push_back(lw.blocks);
          ES_RETURN_IF_ERROR(
              writer.Add(name, DType::kU8, {lw.out, row},
                         {lw.blocks.data_ptr<uint8_t>(),
                          static_cast<size_t>(lw.blocks.nbytes())}));
          writer.SetMetadata(absl::StrCat("edgesplit.weights.", name),
                             kernels::WeightTypeName(lw.type));
          report.bytes_after += lw.blocks.nbytes();
          ++report.quantized;
          continue;
        }
      }
      at::Tensor c_t = ContiguousCpu(t);
      keep.push_back(c_t);
      ES_ASSIGN_OR_RETURN(DType dt, FromScalarType(c_t.scalar_type()));
      ES_RETURN_IF_ERROR(
          writer.Add(name, dt, c_t.sizes().vec(),
                     {static_cast<const uint8_t*>(c_t.data_ptr()),
                      static_cast<size_t>(c_t.nbytes())}));
      report.bytes_after += c_t.nbytes();
      ++report.kept;
    }
    return absl::OkStatus();
  }));
  fs::create_directories(options.out_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("creating ", options.out_dir, ": ", ec.message()));
  }
  ES_RETURN_IF_ERROR(writer.Write(options.out_dir + "/model.safetensors"));
  c.quantized_weights = kernels::WeightTypeName(options.type);
  const std::string config_json = ModelConfigToJson(c);
  ES_RETURN_IF_ERROR(
      WriteFileAtomically(options.out_dir + "/config.json", config_json));
  ES_RETURN_IF_ERROR(CopyTokenizerFiles(options.model_dir, options.out_dir));
  return report;
}

}  // namespace edgesplit
