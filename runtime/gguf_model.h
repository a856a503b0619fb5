// GGUF import: a llama.cpp model file (`--model FILE.gguf`) seen as the
// Hugging Face checkpoint edgesplit computes with, so users' existing
// quantized files run unchanged.
//
// Llama family only (general.architecture "llama"). The hyper-parameters
// come from the llama.* keys; tensors are renamed to their Hugging Face
// names (blk.N.attn_q.weight -> model.layers.N.self_attn.q_proj.weight,
// ...). F32/F16/BF16 tensors are plain tensors; Q8_0/Q4_0/Q4_K/Q6_K
// tensors are GGUF blocks, exactly as `edgesplit model quantize` stores
// them (safetensors metadata "edgesplit.weights.<name>"), so the rest of
// the runtime reads both the same way and never copies the file's bytes.
// llama.cpp's converter permutes the rows of q_proj and k_proj per head
// for its interleaved rotary embedding; `unpermute_heads` says which
// tensors must have that undone (UnpermuteRows) when loaded.
// The tokenizer comes from the tokenizer.ggml.* keys ("llama":
// SentencePiece BPE with byte fallback).
#ifndef EDGESPLIT_RUNTIME_GGUF_MODEL_H_
#define EDGESPLIT_RUNTIME_GGUF_MODEL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/safetensors.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {

struct GgufModel {
  std::shared_ptr<const GgufFile> file;
  ModelConfig config;
  // The file's tensors under their Hugging Face names (zero-copy).
  std::shared_ptr<const SafetensorsFile> view;
  // Hugging Face name -> heads whose rows to un-permute (q_proj, k_proj).
  std::map<std::string, int64_t> unpermute_heads;
};

// Errors name the file and the key or tensor.
absl::StatusOr<GgufModel> ImportGguf(const std::string& path);

// The row order llama.cpp's converter gives q_proj / k_proj: within each
// head of `rows / heads` rows, Hugging Face row j * half + i becomes GGUF
// row 2 * i + j (j in {0, 1}, i < half). UnpermuteRowIndex maps a Hugging
// Face row to the GGUF row holding it.
int64_t UnpermuteRowIndex(int64_t hf_row, int64_t rows, int64_t heads);

// The tokenizer the file describes, with BOS/EOS and add_bos from its keys.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(
    const GgufFile& file);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_GGUF_MODEL_H_
