#include "runtime/model_init.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
#include "runtime/tokenizer/gpt2_bpe_tokenizer.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"
#include "runtime/torch_util.h"
#include "runtime/weight_layout.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Training text for the SentencePiece tokenizer of random Llama models:
// enough variety for a few hundred BPE merges; byte fallback covers the rest.
constexpr const char* kTokenizerCorpus[] = {
    "Once upon a time there was a little robot that lived at the edge of "
    "a big network.",
    "Every morning the robot computed the first blocks of a story and sent "
    "the rest to its friends on the servers.",
    "The servers were kind and fast. They passed the activations along, one "
    "hop after another, until the words came back.",
    "The controller watched the links and the memory of every node, and "
    "decided who should run which blocks.",
    "When a server went away, the controller made a new plan, and nobody "
    "lost a single token.",
    "She said: \"Let's train together, but keep the labels on the phone.\"",
    "They measured latency in milliseconds, bandwidth in megabits per second "
    "and memory in gigabytes.",
    "The quick brown fox jumps over the lazy dog; 0123456789.",
    "In the evening, the little robot read stories about dragons, castles, "
    "gardens, rivers and the sea.",
    "Questions? Answers! Numbers like 3.14, 42 and 2026 appear in the text "
    "too, with commas, colons: and dashes - everywhere.",
};

absl::Status WriteLlamaTokenizer(const std::string& dir,
                                 const ModelConfig& config) {
  std::vector<std::string> corpus;
  for (const char* line : kTokenizerCorpus) corpus.emplace_back(line);
  // The small corpus yields a few hundred pieces; a larger model vocabulary
  // is padded past the tokenizer's (those ids decode to nothing).
  const int vocab = static_cast<int>(std::min<int64_t>(config.vocab_size, 512));
  ES_RETURN_IF_ERROR(
      WriteSentencePieceBpeModel(corpus, vocab, dir + "/tokenizer.model"));
  json tc = {{"add_bos_token", true},
             {"add_eos_token", false},
             {"tokenizer_class", "LlamaTokenizer"},
             {"bos_token", "<s>"},
             {"eos_token", "</s>"},
             {"unk_token", "<unk>"}};
  return WriteFileAtomically(dir + "/tokenizer_config.json", tc.dump(2) + "\n");
}

}  // namespace

std::vector<std::string> PresetNames(Arch arch) {
  return arch == Arch::kGpt2 ? std::vector<std::string>{"tiny", "mini", "small"}
                             : std::vector<std::string>{"tiny", "mini", "1b"};
}

absl::StatusOr<ModelConfig> PresetConfig(Arch arch, absl::string_view preset) {
  ModelConfig c;
  c.arch = arch;
  c.model_type = std::string(ArchName(arch));
  if (arch == Arch::kGpt2) {
    c.attention_bias = true;
    c.hidden_act = "gelu_new";
    c.tie_word_embeddings = true;
    // Byte-level tokenizer written by model init: <|endoftext|> is id 256.
    c.bos_token_id = c.eos_token_id = 256;
    if (preset == "tiny") {
      c.hidden_size = 64, c.num_layers = 4, c.num_heads = 4;
      c.intermediate_size = 256, c.vocab_size = 512, c.max_positions = 256;
    } else if (preset == "mini") {
      c.hidden_size = 256, c.num_layers = 4, c.num_heads = 4;
      c.intermediate_size = 512, c.vocab_size = 512, c.max_positions = 256;
    } else if (preset == "small") {
      c.hidden_size = 768, c.num_layers = 12, c.num_heads = 12;
      c.intermediate_size = 3072, c.vocab_size = 50257;
      c.max_positions = 1024;
    }
    c.num_kv_heads = c.num_heads;
    if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
    c.norm_eps = 1e-5;
  } else {
    c.hidden_act = "silu";
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    c.norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    if (preset == "tiny") {
      c.hidden_size = 64, c.num_layers = 4, c.num_heads = 4;
      c.num_kv_heads = 2, c.head_dim = 16, c.intermediate_size = 176;
      c.vocab_size = 512, c.max_positions = 512, c.tie_word_embeddings = true;
    } else if (preset == "mini") {
      // Every width a multiple of 256: the narrowest model whose linears
      // all hold K-format super-blocks.
      c.hidden_size = 256, c.num_layers = 4, c.num_heads = 4;
      c.num_kv_heads = 2, c.head_dim = 64, c.intermediate_size = 512;
      c.vocab_size = 512, c.max_positions = 512, c.tie_word_embeddings = false;
    } else if (preset == "1b") {
      // Llama-3.2-1B's shape with a 32k vocabulary: 1.1B parameters.
      c.hidden_size = 2048, c.num_layers = 16, c.num_heads = 32;
      c.num_kv_heads = 8, c.head_dim = 64, c.intermediate_size = 8192;
      c.vocab_size = 32000, c.max_positions = 2048;
      c.tie_word_embeddings = false;
    }
  }
  if (c.hidden_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset \"", preset, "\" for ", ArchName(arch),
                     " (known: ", absl::StrJoin(PresetNames(arch), ", "), ")"));
  }
  ES_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::Status InitModel(const ModelInitOptions& options) {
  ES_ASSIGN_OR_RETURN(ModelConfig config,
                      PresetConfig(options.arch, options.preset));
  if (options.dtype != DType::kF32 && options.dtype != DType::kF16 &&
      options.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("model dtype must be F32, F16 or BF16");
  }
  config.torch_dtype = options.dtype == DType::kF32   ? "float32"
                       : options.dtype == DType::kF16 ? "float16"
                                                      : "bfloat16";
  const std::string& dir = options.out_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(dir, ": cannot create: ", ec.message()));
  }
  ES_RETURN_IF_ERROR(
      WriteFileAtomically(dir + "/config.json", ModelConfigToJson(config)));
  json gen = {{"bos_token_id", config.bos_token_id},
              {"eos_token_id", config.eos_token_id},
              {"do_sample", false}};
  ES_RETURN_IF_ERROR(
      WriteFileAtomically(dir + "/generation_config.json", gen.dump(2) + "\n"));

  StageSpec all;
  all.blocks = {0, config.num_layers};
  all.embedding = all.head = true;
  const std::string prefix = "transformer.";  // As save_pretrained writes.
  std::vector<WeightSpec> weights =
      StageWeights(config, all, config.arch == Arch::kGpt2 ? prefix : "");
  // A tied head re-lists the embedding: write each tensor once.
  std::vector<WeightSpec> unique;
  for (const WeightSpec& w : weights) {
    bool dup = false;
    for (const WeightSpec& u : unique) dup |= u.name == w.name;
    if (!dup) unique.push_back(w);
  }

  std::vector<at::Tensor> tensors;
  ES_RETURN_IF_ERROR(TorchCall("model init", [&]() -> absl::Status {
    at::Generator gen = at::detail::createCPUGenerator(options.seed);
    for (const WeightSpec& w : unique) {
      at::Tensor t;
      switch (w.init) {
        case WeightInit::kOnes:
          t = at::ones(w.shape);
          break;
        case WeightInit::kZeros:
          t = at::zeros(w.shape);
          break;
        case WeightInit::kNormal:
          // GPT-2 / Llama initializer_range.
          t = at::empty(w.shape).normal_(0.0, 0.02, gen);
          break;
      }
      tensors.push_back(t.to(ToScalarType(options.dtype)).contiguous());
    }
    return absl::OkStatus();
  }));

  // Group tensors into shards in order (embeddings, blocks, head).
  std::vector<std::vector<size_t>> shards(1);
  int64_t shard_bytes = 0;
  for (size_t i = 0; i < unique.size(); ++i) {
    const int64_t bytes = tensors[i].nbytes();
    if (options.max_shard_bytes > 0 && shard_bytes > 0 &&
        shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += bytes;
  }
  json weight_map = json::object();
  int64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file =
        options.max_shard_bytes > 0
            ? absl::StrCat("model-", absl::StrFormat("%05d", s + 1), "-of-",
                           absl::StrFormat("%05d", shards.size()),
                           ".safetensors")
            : "model.safetensors";
    SafetensorsWriter writer;
    writer.SetMetadata("format", "pt");
    for (size_t i : shards[s]) {
      const at::Tensor& t = tensors[i];
      ES_ASSIGN_OR_RETURN(DType dt, FromScalarType(t.scalar_type()));
      ES_RETURN_IF_ERROR(writer.Add(
          unique[i].name, dt, unique[i].shape,
          absl::Span<const uint8_t>(static_cast<const uint8_t*>(t.data_ptr()),
                                    t.nbytes())));
      weight_map[unique[i].name] = file;
      total += t.nbytes();
    }
    ES_RETURN_IF_ERROR(writer.Write(dir + "/" + file));
  }
  if (options.max_shard_bytes > 0) {
    json index = {{"metadata", {{"total_size", total}}},
                  {"weight_map", weight_map}};
    ES_RETURN_IF_ERROR(WriteFileAtomically(
        dir + "/model.safetensors.index.json", index.dump(2) + "\n"));
  }

  if (config.arch == Arch::kGpt2) return WriteByteLevelGpt2Tokenizer(dir);
  return WriteLlamaTokenizer(dir, config);
}

}  // namespace edgesplit
