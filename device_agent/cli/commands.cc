#include "device_agent/cli/commands.h"

#include <iomanip>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "device_agent/cli/adapter_commands.h"
#include "device_agent/cli/args.h"
#include "device_agent/cli/cluster_commands.h"
#include "device_agent/cli/flag_help.h"
#include "device_agent/cli/security_commands.h"
#include "device_agent/cli/serve_command.h"
#include "device_agent/cli/train_commands.h"
#include "device_agent/drafts.h"
#include "edgesplit/device_agent.h"
#include "kernels/cpu/quant_blocks.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "runtime/lora.h"
#include "runtime/model_init.h"
#include "runtime/model_quantize.h"
#include "runtime/model_store.h"
#include "runtime/speculative.h"
#include "runtime/threading.h"
#include "runtime/torch_util.h"
#include "runtime/weight_layout.h"

namespace edgesplit {
namespace cli {
namespace {

constexpr char kUsage[] =
    R"(usage: edgesplit <command> [flags]

commands:
  model init --arch {gpt2,llama} --preset NAME --out DIR [--seed N]
             [--dtype f32|f16|bf16] [--shard-mb MB]
      Write a randomly initialised model in Hugging Face layout.
      Presets: gpt2 tiny, mini, small (124M); llama tiny, mini, 1b (1.1B).
  model info DIR|FILE.gguf
      Print architecture, parameter count and bytes per block.
  model quantize --model DIR --out DIR --type q8_0|q4_0|q4_k|q6_k
      Write a copy whose block linears (and untied head) are GGUF blocks:
      about 3.8x (q8_0) / 7x (q4_0, q4_k) / 4.9x (q6_k) fewer bytes to load
      and read per token. K types need rows of 256 (narrower ones fall back
      to q4_0 / q8_0, as llama.cpp does).
      Every command loads it as it is; --weights converts on load.
  generate --model DIR|FILE.gguf --prompt TEXT [--max-new-tokens N]
           [--temperature T] [--top-k K] [--top-p P] [--repetition-penalty R]
           [--seed S]
           [--adapter DIR] [--split B1,B2,...] [--dtype f32|bf16]
           [--weights f32|f16|q8_0|q4_0|q4_k|q6_k] [--threads N]
           [--mmap-weights]
      Stream the continuation of TEXT to stdout; statistics to stderr.
      --temperature 0 is greedy decoding. --split runs the model as a local
      pipeline cut before the given blocks (same result as unsplit).
      Weights are copied into memory (fastest decode); --mmap-weights
      computes from the read-only file mapping instead (less memory).
      --weights q8_0, q4_0, ... quantizes the blocks and head at load (GGUF
      block formats; about 3.8x / 7x fewer bytes to read per token; an
      approximation: +0.04% / +12% perplexity on stories260K).
      A .gguf file (llama.cpp, Llama family) runs as it is: its tensors
      keep their types; the tokenizer comes from its metadata.
      --chat [--system TEXT] sends TEXT as the user's turn of a
      conversation in the model's chat format (chat_template.jinja or
      tokenizer_config.json's chat_template); the reply streams out.
  generate --controller HOST:PORT --model-id ID --prompt TEXT
           [--codec fp32|fp16|bf16|int8] [--model-dir DIR]
           [--model-cache-dir DIR]
           [--adapter NAME --adapter-dir DIR] [same sampling flags]
      The same, split across this device and the edge servers the
      controller's plan names. Statistics include per-hop latency.
      --adapter names a LoRA adapter the servers hold (their adapter_dir);
      the device applies its blocks' part from DIR/NAME. Sessions of
      different adapters share the servers' batches and base weights.
  generate ... --draft lookup|self:q8_0|self:q4_0|DIR [--draft-max K]
           [--draft-fixed] [--draft-skip P]
      Speculative decoding: a draft here proposes up to K tokens (default
      8; adaptive unless --draft-fixed), the model (or the split route)
      checks them in one step. Greedy output is identical to plain
      decoding; sampled output has the same distribution (rejection
      sampling). lookup copies from the context, self:TYPE is the model
      quantized, DIR a small model with the same tokenizer.
      --draft-skip P (approximate, off by default): draft tokens the draft
      model gives probability >= P are emitted at once, unverified; the
      statistics say how often verification would have kept them.
  generate --controller ... --privacy-epsilon E --privacy-clip C
           [--privacy-delta D] [--privacy-budget FILE
           --privacy-budget-epsilon LIMIT]
      Differential privacy (approximate: noise changes the output): each
      activation row this device sends is clipped to L2 norm C and gets
      Gaussian noise, calibrated so the whole generation is (E, D)-DP
      towards the servers (D default 1e-5). --privacy-budget keeps the
      epsilon spent across runs in FILE and refuses a generation that would
      take it past LIMIT. Not with --draft.
  serve --model DIR [--model-id NAME] [--adapter-dir DIR]
        [--listen HOST:PORT] [--api-key-file FILE] [--max-concurrent N]
        [--weights TYPE] [--dtype f32|bf16] [--threads N] [--mmap-weights]
  serve --controller HOST:PORT --model-id ID[,ID...] [--model-dir DIR]
        [--model-cache-dir DIR] [--adapter-dir DIR] [--codec C]
        [TLS flags as generate]
      An OpenAI-compatible HTTP API (default 127.0.0.1:8080): GET
      /v1/models, POST /v1/completions and /v1/chat/completions, streamed
      (server-sent events) or not, with max_tokens, temperature, top_p,
      top_k, stop, seed and usage counts. "model": "ID:ADAPTER" selects a
      LoRA adapter. Locally the model is NAME (default: the directory's
      name); split, each request is a session of the cluster's plan and
      requests share this device's blocks. A client that leaves a stream
      cancels its generation. --api-key-file: requests must send
      "Authorization: Bearer KEY". Runs until SIGINT/SIGTERM.
  plan --cluster FILE --model DIR [--objective latency|throughput|energy]
       [--model-id ID] [--out PLAN.yaml]
      What-if: the optimal split of the model over the cluster described in
      FILE (see configs/cluster/what-if.yaml) as a table with predictions;
      --out writes it as a plan file the controller can pin.
  train --controller HOST:PORT --model-id ID --data FILE
        [--mode sl|psl|sfl] [--steps N] [--lr X] [--rank R] [--alpha A]
        [--targets q_proj,v_proj,...] [--u-shaped] [--train-blocks A:B]
        [--freeze-ratio F] [--devices N] [--average-every K]
        [--batch-tokens T] [--seq-len L] [--eval-every N] [--job ID]
        [--checkpoint-every N] [--checkpoint-dir DIR] [--out DIR]
        [--warmup N] [--seed S] [--recompute] [--device-name NAME]
        [--job-members d1,d2]
        [--privacy-epsilon E --privacy-clip C --privacy-grad-clip G
         [--privacy-delta D] [--privacy-budget FILE
         --privacy-budget-epsilon LIMIT]]
        [--average-privacy-epsilon E --average-privacy-clip U]
        [--device-privacy-epsilon E --device-privacy-clip C]
      Split fine-tuning with LoRA: this device tokenizes FILE (text, or
      JSONL with a "text" field), keeps a held-out split, and trains with
      the servers of the model's plan (--u-shaped: labels and LM head stay
      here). Progress bar, eval lines (held-out loss, perplexity); resumes
      from the newest checkpoint after a hop fails or on a rerun; a job
      belongs to the device that created it and its --job-members; --out
      writes the PEFT adapter.
      --privacy-epsilon (with --u-shaped and the device's blocks frozen:
      --train-blocks K:N from the first server block K): every activation row (clipped to C, released
      once per window) and gradient row (clipped to G, per use) sent is
      noised so the run is (E, D)-DP per training window; eval lines show
      the epsilon spent. Approximate: the servers learn from noisy rows.
      --average-privacy-epsilon (sfl): each adapter update sent for
      averaging is clipped to norm U and noised: user-level (E, D)-DP over
      the run's rounds towards the controller and the other devices.
      --device-privacy-epsilon: DP-SGD of this device's own factors (each
      window's gradient clipped to C, each update noised); with
      --privacy-epsilon the device's blocks may then train, without it
      only they may (--train-blocks 0:K).
  adapter register --controller HOST:PORT --model-id ID --name NAME
                   --dir DIR
      Upload a PEFT adapter directory to the controller's registry (admin
      certificates): servers missing NAME fetch it from the nearest server
      holding it, or from the controller, and verify it by SHA-256.
  adapter list --controller HOST:PORT [--model-id ID]
      Registered adapters, their size and which servers hold them.
  model register --controller HOST:PORT --model-id ID --name NAME --dir DIR
      Upload a model directory (e.g. a quantized copy, or a fine-tuned
      variant) to the controller as copy NAME: each safetensors tensor is
      its own content-addressed part, so copies share unchanged tensors.
  model fetch --controller HOST:PORT --model-id ID --name NAME --out DIR
           [--device NAME] [--blob-dir DIR]
      Write copy NAME as DIR, fetching (resumable, verified) only parts not
      already held; --device fetches as that device (its certificate).
  adapter placement --controller HOST:PORT
      Which adapters each server caches (the controller's placement from
      counted demand; servers prefetch them), hit ratio, bytes stored vs
      stored apart, bytes to move.
  adapter export --controller HOST:PORT --model-id ID --job ID --out DIR
                 [--checkpoint-dir DIR]
      One PEFT adapter (adapter_config.json + adapter_model.safetensors)
      from the job's newest checkpoint on every hop and this device.
  cluster status --controller HOST:PORT
      The controller's view: nodes, measured compute and links, plans and
      their predicted latency.
  certs init --cluster NAME --out DIR [--nodes a,b] [--devices d,e]
             [--days N] [--force]
      A CA and certificates for a cluster: controller, admin-operator,
      node-<name> per server, device-<name> per device (keys 0600).
  certs issue --dir DIR (--node N | --device N | --admin N) [--days N]
      One more certificate from the CA in DIR.
  certs token --dir DIR --device N [--days N] [--out FILE] [--force]
      A bearer token for a device without a certificate, signed with
      DIR/grant.key, valid 30 days unless --days (default file
      DIR/device-N.token; prints the id to revoke it by).

Commands that reach a cluster use mutual TLS: --certs DIR (what `certs
init` wrote; also $EDGESPLIT_CERTS) with --device-name NAME, or
--ca/--cert/--key FILE, or --token FILE with the CA (servers must accept
device tokens); --insecure for plaintext on loopback only.
)";

std::set<std::string> WithInsecure(std::set<std::string> flags) {
  flags.insert("insecure");
  return flags;
}

absl::Status ModelInit(const Args& a, std::ostream& err) {
  ModelInitOptions o;
  ES_ASSIGN_OR_RETURN(std::string arch, a.RequiredString("arch"));
  auto parsed_arch = ParseArch(arch);
  if (!parsed_arch.ok() || arch != ArchName(*parsed_arch)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--arch: \"", arch, "\" (expected gpt2 or llama)"));
  }
  o.arch = *parsed_arch;
  ES_ASSIGN_OR_RETURN(o.preset, a.RequiredString("preset"));
  ES_ASSIGN_OR_RETURN(o.out_dir, a.RequiredString("out"));
  ES_ASSIGN_OR_RETURN(int64_t seed, a.Int("seed", 0));
  o.seed = static_cast<uint64_t>(seed);
  ES_ASSIGN_OR_RETURN(at::ScalarType dtype,
                      ParseTorchDtype(a.String("dtype", "f32")));
  ES_ASSIGN_OR_RETURN(o.dtype, FromScalarType(dtype));
  ES_ASSIGN_OR_RETURN(int64_t shard_mb, a.Int("shard-mb", 0));
  if (shard_mb < 0 || shard_mb > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("--shard-mb must be in [0, 2^30]");
  }
  o.max_shard_bytes = shard_mb << 20;
  ES_RETURN_IF_ERROR(InitModel(o));
  ES_ASSIGN_OR_RETURN(ModelConfig c, PresetConfig(o.arch, o.preset));
  err << "wrote " << ArchName(o.arch) << " " << o.preset << " ("
      << c.TotalParams() << " parameters) to " << o.out_dir << "\n";
  return absl::OkStatus();
}

absl::Status ModelQuantize(const Args& a, std::ostream& err) {
  QuantizeOptions o;
  ES_ASSIGN_OR_RETURN(o.model_dir, a.RequiredString("model"));
  ES_ASSIGN_OR_RETURN(o.out_dir, a.RequiredString("out"));
  ES_ASSIGN_OR_RETURN(std::string type, a.RequiredString("type"));
  auto t = kernels::ParseWeightType(type);
  if (!t || !kernels::IsBlockType(*t)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--type \"", type, "\" is not one of q8_0, q4_0, q4_k, q6_k"));
  }
  o.type = *t;
  ES_ASSIGN_OR_RETURN(QuantizeReport r, QuantizeModel(o));
  err << absl::StreamFormat(
      "wrote %s: %d weights as %s blocks, %d tensors kept; %.1f MiB -> %.1f "
      "MiB (%.2fx smaller)\n",
      o.out_dir, r.quantized, type, r.kept, r.bytes_before / 1048576.0,
      r.bytes_after / 1048576.0,
      static_cast<double>(r.bytes_before) /
          std::max<int64_t>(r.bytes_after, 1));
  return absl::OkStatus();
}

absl::Status ModelInfo(const Args& a, std::ostream& out) {
  if (a.positional().size() != 1) {
    return absl::InvalidArgumentError("usage: edgesplit model info DIR");
  }
  ES_ASSIGN_OR_RETURN(auto store, ModelStore::Open(a.positional()[0]));
  const ModelConfig& c = store->config();
  const std::string& p = store->gpt2_prefix();
  out << "model:          " << store->dir() << "\n"
      << "architecture:   " << ArchName(c.arch) << " (model_type "
      << c.model_type << ")\n"
      << "hidden size:    " << c.hidden_size << "\n"
      << "blocks:         " << c.num_layers << "\n"
      << "heads:          " << c.num_heads << " (" << c.num_kv_heads
      << " key/value heads, head dim " << c.head_dim << ")\n"
      << "intermediate:   " << c.intermediate_size << "\n"
      << "vocabulary:     " << c.vocab_size << "\n"
      << "context:        " << c.max_positions << "\n"
      << "tied head:      " << (c.tie_word_embeddings ? "yes" : "no") << "\n"
      << "parameters:     " << c.TotalParams() << "\n";
  ES_ASSIGN_OR_RETURN(int64_t emb, store->StoredBytes(EmbeddingWeights(c, p)));
  ES_ASSIGN_OR_RETURN(int64_t head, store->StoredBytes(HeadWeights(c, p)));
  out << "embedding:      " << emb << " bytes\n"
      << "head:           " << head << " bytes"
      << (c.tie_word_embeddings ? " (+ the tied embedding)" : "") << "\n"
      << "KV per token:   " << c.KvBytesPerToken(4)
      << " bytes per block (fp32)\n"
      << "block  bytes\n";
  int64_t total = emb + head;
  for (int64_t b = 0; b < c.num_layers; ++b) {
    ES_ASSIGN_OR_RETURN(int64_t bytes,
                        store->StoredBytes(BlockWeights(c, b, p)));
    out << absl::StrFormat("%5d  %d\n", b, bytes);
    total += bytes;
  }
  out << "total:          " << total << " bytes\n";
  auto tok = store->LoadTokenizer();
  out << "tokenizer:      "
      << (tok.ok() ? absl::StrCat((*tok)->vocab_size(), " tokens")
                   : std::string(tok.status().message()))
      << "\n";
  return absl::OkStatus();
}

absl::StatusOr<GenerationOptions> ParseGeneration(const Args& a) {
  GenerationOptions g;
  ES_ASSIGN_OR_RETURN(int64_t max_new, a.Int("max-new-tokens", 64));
  if (max_new < 0 || max_new > (1 << 30)) {
    return absl::InvalidArgumentError("--max-new-tokens must be in [0, 2^30]");
  }
  g.max_new_tokens = static_cast<int32_t>(max_new);
  ES_ASSIGN_OR_RETURN(double temperature, a.Double("temperature", 1.0));
  ES_ASSIGN_OR_RETURN(int64_t top_k, a.Int("top-k", 0));
  if (top_k < 0 || top_k > (1 << 30)) {
    return absl::InvalidArgumentError("--top-k must be in [0, 2^30]");
  }
  ES_ASSIGN_OR_RETURN(double top_p, a.Double("top-p", 1.0));
  ES_ASSIGN_OR_RETURN(double rep, a.Double("repetition-penalty", 1.0));
  ES_ASSIGN_OR_RETURN(int64_t seed, a.Int("seed", 0));
  g.sampling.temperature = static_cast<float>(temperature);
  g.sampling.top_k = static_cast<int32_t>(top_k);
  g.sampling.top_p = static_cast<float>(top_p);
  g.sampling.repetition_penalty = static_cast<float>(rep);
  g.sampling.seed = static_cast<uint64_t>(seed);
  ES_RETURN_IF_ERROR(g.sampling.Validate());
  return g;
}

absl::StatusOr<std::optional<kernels::WeightType>> ParseWeights(const Args& a) {
  if (!a.Has("weights")) return std::nullopt;
  const std::string name = a.String("weights", "");
  auto t = kernels::ParseWeightType(name);
  if (!t) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--weights \"", name, "\" is not one of ", kernels::WeightTypeList()));
  }
  return t;
}

absl::StatusOr<SpeculationParams> ParseSpeculation(const Args& a) {
  SpeculationParams p;
  ES_ASSIGN_OR_RETURN(int64_t k, a.Int("draft-max", p.max_draft));
  if (k < 1 || k > kMaxDraftTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--draft-max ", k, " is not in [1, ", kMaxDraftTokens, "]"));
  }
  p.max_draft = static_cast<int>(k);
  p.adaptive = !a.Has("draft-fixed");
  ES_ASSIGN_OR_RETURN(double skip, a.Double("draft-skip", 0.0));
  if (!(skip >= 0 && skip <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--draft-skip ", skip, " is not in [0, 1]"));
  }
  p.skip_threshold = static_cast<float>(skip);
  return p;
}

// What a speculative generation did, for stderr.
struct SpeculationSummary {
  int64_t steps = 0, draft_steps = 0, drafted = 0, accepted = 0;
  size_t tokens = 0;
  std::vector<int> k;  // Per step with drafts.
  int64_t skipped = 0;
  double agreement = 0;  // Mean, over skipped tokens.
};

std::string SpeculationLines(const std::string& draft,
                             const SpeculationSummary& s) {
  std::string out = absl::StrFormat(
      "speculative (%s): %d steps for %d tokens (%.2f tokens/step), %d with "
      "drafts; %d of %d draft tokens accepted (%.0f%%)\n",
      draft, s.steps, s.tokens,
      s.steps > 0 ? static_cast<double>(s.tokens) / (s.steps + 1) : 0.0,
      s.draft_steps, s.accepted, s.drafted,
      s.drafted > 0 ? 100.0 * s.accepted / s.drafted : 0.0);
  if (!s.k.empty()) {
    constexpr size_t kShown = 32;
    std::vector<int> shown(s.k.begin(),
                           s.k.begin() + std::min(s.k.size(), kShown));
    absl::StrAppend(&out,
                    "  k per step with drafts: ", absl::StrJoin(shown, " "),
                    s.k.size() > kShown ? " ..." : "", "\n");
  }
  if (s.skipped > 0) {
    absl::StrAppend(
        &out, absl::StrFormat("  uncertainty skip: %d tokens unverified; "
                              "verification would have kept %.1f%% of them\n",
                              s.skipped, 100.0 * s.agreement));
  }
  return out;
}

absl::Status GenerateRemote(const Args& a, std::ostream& out,
                            std::ostream& err) {
  ES_ASSIGN_OR_RETURN(std::string model_id, a.RequiredString("model-id"));
  if (!a.Has("prompt")) return absl::InvalidArgumentError("missing --prompt");
  ES_ASSIGN_OR_RETURN(GenerationOptions g, ParseGeneration(a));
  DeviceAgentOptions o;
  o.controller = a.String("controller");
  o.codec = a.String("codec", "fp32");
  o.copy_weights = !a.Has("mmap-weights");
  o.weights = a.String("weights", "");
  if (a.Has("model-dir")) o.model_dirs[model_id] = a.String("model-dir");
  o.model_cache_dir = a.String("model-cache-dir", "");
  o.adapter_dir = a.String("adapter-dir", "");
  ES_ASSIGN_OR_RETURN(int64_t threads, a.Int("threads", 0));
  o.threads = static_cast<int>(threads);
  o.device_name = a.String("device-name", "device");
  SamplingOptions s;
  ES_RETURN_IF_ERROR(ApplyPrivacyFlags(a, &o, &s.privacy));
  if (s.privacy.grad_clip != 0) {
    return absl::InvalidArgumentError(
        "--privacy-grad-clip is for train (gradients), not generate");
  }
  ES_RETURN_IF_ERROR(ApplyTlsFlags(a, o.device_name, &o));
  ES_ASSIGN_OR_RETURN(auto agent, DeviceAgent::Connect(o));
  ES_ASSIGN_OR_RETURN(auto session,
                      agent->OpenSession(model_id, a.String("adapter")));
  s.temperature = g.sampling.temperature;
  s.top_k = g.sampling.top_k;
  s.top_p = g.sampling.top_p;
  s.repetition_penalty = g.sampling.repetition_penalty;
  s.seed = g.sampling.seed;
  s.max_new_tokens = g.max_new_tokens;
  ES_ASSIGN_OR_RETURN(SpeculationParams spec, ParseSpeculation(a));
  s.speculative.draft = a.String("draft", "");
  s.speculative.max_draft = spec.max_draft;
  s.speculative.adaptive = spec.adaptive;
  s.speculative.skip_threshold = spec.skip_threshold;
  auto on_text = [&](absl::string_view text) {
    out << text;
    out.flush();
  };
  if (a.Has("system") && !a.Has("chat")) {
    return absl::InvalidArgumentError("--system needs --chat");
  }
  std::vector<ChatMessage> messages;
  if (a.Has("system")) messages.push_back({"system", a.String("system")});
  messages.push_back({"user", a.String("prompt")});
  ES_ASSIGN_OR_RETURN(GenerationStats st,
                      a.Has("chat")
                          ? session->Chat(messages, s, on_text)
                          : session->Generate(a.String("prompt"), s, on_text));
  out << "\n";
  out.flush();
  err << absl::StrFormat(
      "route: %s\nprompt tokens: %d, new tokens: %d, prefill: %.1f ms, "
      "decode: %.1f tokens/s, device: %.2f ms/step, sent: %d bytes "
      "(%.0f/token), received: %d bytes (%.0f/token)%s\n",
      session->route(), st.prompt_tokens, st.tokens.size(), st.prefill_ms,
      st.decode_tokens_per_s, st.device_ms_per_step, st.bytes_sent,
      static_cast<double>(st.bytes_sent) /
          std::max<size_t>(st.tokens.size(), 1),
      st.bytes_received,
      static_cast<double>(st.bytes_received) /
          std::max<size_t>(st.tokens.size(), 1),
      st.stopped_at_eos ? ", stopped at EOS" : "");
  if (!s.speculative.draft.empty()) {
    SpeculationSummary sum;
    sum.steps = st.steps;
    sum.tokens = st.tokens.size();
    sum.draft_steps = st.draft_steps;
    sum.drafted = st.drafted_tokens;
    sum.accepted = st.accepted_tokens;
    sum.k.assign(st.draft_lengths.begin(), st.draft_lengths.end());
    sum.skipped = st.skipped_tokens;
    sum.agreement = st.skip_agreement;
    err << SpeculationLines(s.speculative.draft, sum);
  }
  if (st.private_rows > 0) {
    err << absl::StrFormat(
        "privacy: epsilon %.3g at delta %g (noise multiplier %.3g, clip %g); "
        "%d rows sent, %d clipped%s\n",
        st.privacy_epsilon, st.privacy_delta, st.noise_multiplier,
        s.privacy.clip, st.private_rows, st.clipped_rows,
        o.privacy_budget_file.empty()
            ? ""
            : absl::StrFormat("; budget: epsilon %.3g of %g spent",
                              st.budget_epsilon_spent,
                              o.privacy_budget_epsilon));
  }
  for (const HopLatency& h : st.hops) {
    err << absl::StrFormat(
        "  hop %s: %.2f ms/step compute, %.2f ms/step "
        "total\n",
        h.node, h.compute_ms, h.total_ms);
  }
  return absl::OkStatus();
}

absl::Status GenerateLocal(const Args& a, std::ostream& out,
                           std::ostream& err) {
  if (a.Has("controller")) return GenerateRemote(a, out, err);
  for (const char* f : {"privacy-epsilon", "privacy-clip", "privacy-budget"}) {
    if (a.Has(f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", f,
          " applies to split generation (--controller): a local one "
          "sends nothing"));
    }
  }
  ES_ASSIGN_OR_RETURN(std::string model_dir, a.RequiredString("model"));
  if (!a.Has("prompt")) return absl::InvalidArgumentError("missing --prompt");
  const std::string prompt = a.String("prompt");
  ES_ASSIGN_OR_RETURN(GenerationOptions g, ParseGeneration(a));
  ES_ASSIGN_OR_RETURN(int64_t threads, a.Int("threads", 0));
  SetComputeThreads(static_cast<int>(threads));
  StageOptions so;
  ES_ASSIGN_OR_RETURN(so.dtype, ParseTorchDtype(a.String("dtype", "f32")));
  // Copied weights decode up to ~1.8x faster than the file mapping on large
  // models (see bench/decode_bench); --mmap-weights trades that for memory.
  so.copy_weights = !a.Has("mmap-weights");
  ES_ASSIGN_OR_RETURN(so.weights, ParseWeights(a));
  ES_ASSIGN_OR_RETURN(std::vector<int64_t> cuts, a.IntList("split"));

  ES_ASSIGN_OR_RETURN(auto store, ModelStore::Open(model_dir));
  ES_ASSIGN_OR_RETURN(auto tokenizer, store->LoadTokenizer());
  ES_ASSIGN_OR_RETURN(auto pipeline, LocalPipeline::Load(*store, cuts, so));
  std::string adapter_name;
  if (a.Has("adapter")) {
    ES_ASSIGN_OR_RETURN(
        std::shared_ptr<LoraAdapter> adapter,
        LoraAdapter::LoadPeft(a.String("adapter"), store->config(), "cli"));
    adapter_name = adapter->name();
    ES_RETURN_IF_ERROR(pipeline->AttachAdapter(std::move(adapter)));
  }
  auto seq = pipeline->NewSequence(nullptr, adapter_name);
  auto on_text = [&](absl::string_view text) {
    out << text;
    out.flush();
  };
  const std::string draft = a.String("draft", "");
  ES_ASSIGN_OR_RETURN(SpeculationParams spec, ParseSpeculation(a));
  SpeculativeStats spec_stats;
  DraftCache draft_cache;
  std::unique_ptr<Drafter> drafter;
  if (!draft.empty()) {
    ES_ASSIGN_OR_RETURN(drafter, MakeDrafter(draft, model_dir, store->config(),
                                             g.sampling, &draft_cache));
  }
  if (a.Has("system") && !a.Has("chat")) {
    return absl::InvalidArgumentError("--system needs --chat");
  }
  // --chat: the prompt as the user's turn in the model's chat format.
  std::vector<int32_t> prompt_ids;
  if (a.Has("chat")) {
    ES_ASSIGN_OR_RETURN(auto chat, ChatTemplate::Load(model_dir));
    std::vector<ChatTurn> turns;
    if (a.Has("system")) turns.push_back({"system", a.String("system")});
    turns.push_back({"user", prompt});
    ES_ASSIGN_OR_RETURN(std::string text,
                        chat->Render(turns, /*add_generation_prompt=*/true));
    ES_ASSIGN_OR_RETURN(prompt_ids, chat->Encode(*tokenizer, text));
    const int32_t turn_end = chat->TurnEndId(*tokenizer);
    if (turn_end >= 0) g.more_eos_ids.push_back(turn_end);
  } else {
    ES_ASSIGN_OR_RETURN(prompt_ids, tokenizer->EncodePrompt(prompt));
  }
  ES_ASSIGN_OR_RETURN(
      GenerationResult r,
      GenerateTextFromIds(*tokenizer, std::move(prompt_ids), on_text,
                          [&](absl::Span<const int32_t> ids, int32_t eos,
                              const TokenCallback& on_token) {
                            if (drafter == nullptr) {
                              return GenerateIds(*seq, ids, g, eos, on_token);
                            }
                            return GenerateSpeculativeIds(
                                *seq, *drafter, ids, g, spec, eos, on_token,
                                &spec_stats);
                          }));
  out << "\n";
  out.flush();
  const double decode_tps =
      r.tokens.size() > 1 ? (r.tokens.size() - 1) / r.decode_seconds : 0.0;
  err << absl::StrFormat(
      "prompt tokens: %d, new tokens: %d, prefill: %.1f ms (%.1f tokens/s), "
      "decode: %.1f tokens/s%s%s\n",
      r.prompt_ids.size(), r.tokens.size(), r.prefill_seconds * 1e3,
      r.prompt_ids.size() / std::max(r.prefill_seconds, 1e-9), decode_tps,
      r.stopped_at_eos ? ", stopped at EOS" : "",
      r.stopped_at_context ? ", stopped: context full" : "");
  if (drafter != nullptr) {
    SpeculationSummary sum;
    sum.steps = spec_stats.rounds;
    sum.tokens = r.tokens.size();
    sum.draft_steps = spec_stats.draft_rounds;
    sum.drafted = spec_stats.drafted;
    sum.accepted = spec_stats.accepted;
    sum.k = spec_stats.k;
    sum.skipped = spec_stats.skipped;
    sum.agreement =
        spec_stats.skipped_checked > 0
            ? spec_stats.skipped_agreement / spec_stats.skipped_checked
            : 0.0;
    err << SpeculationLines(draft, sum);
  }
  return absl::OkStatus();
}

}  // namespace

int Run(const std::vector<std::string>& args, std::ostream& out,
        std::ostream& err) {
  if (args.empty() || args[0] == "help" || args[0] == "--help" ||
      args[0] == "-h") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? 2 : 0;
  }
  absl::Status status;
  const std::string& cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  // Each command's flags (CLI11): --help prints the command's flags and
  // example and exits 0; a usage error exits 2 (ops/cli.h).
  int parse_exit = -1;
  auto ParseFor = [&](const std::vector<std::string>& argv,
                      const std::set<std::string>& value_flags,
                      const std::set<std::string>& bool_flags = {})
      -> absl::StatusOr<Args> {
    const std::vector<std::string> words(args.begin(),
                                         args.end() - argv.size());
    CommandInfo info;
    const std::string command = absl::StrJoin(words, " ");
    info.name = "edgesplit " + command;
    if (const CommandHelp* h = FindCommandHelp(command)) {
      info.description = h->description;
      info.example = h->example;
      if (h->positional != nullptr) info.positional = h->positional;
    }
    info.help = [command](const std::string& f) {
      return FlagHelp(command, f);
    };
    std::optional<Args> a = Args::ParseCommand(argv, value_flags, bool_flags,
                                               info, out, err, &parse_exit);
    if (!a) return absl::CancelledError("parsing ended the command");
    return *std::move(a);
  };
  if (cmd == "model" && !rest.empty() &&
      (rest[0] == "init" || rest[0] == "info" || rest[0] == "quantize")) {
    std::vector<std::string> sub(rest.begin() + 1, rest.end());
    if (rest[0] == "quantize") {
      auto a = ParseFor(sub, {"model", "out", "type"});
      status = a.ok() ? ModelQuantize(*a, err) : a.status();
    } else if (rest[0] == "init") {
      auto a =
          ParseFor(sub, {"arch", "preset", "out", "seed", "dtype", "shard-mb"});
      status = a.ok() ? ModelInit(*a, err) : a.status();
    } else {
      auto a = ParseFor(sub, {});
      status = a.ok() ? ModelInfo(*a, out) : a.status();
    }
  } else if (cmd == "serve") {
    auto a =
        ParseFor(rest, WithTls(kServeFlags), WithInsecure(kServeBoolFlags));
    status = a.ok() ? ServeCommand(*a, out, err) : a.status();
  } else if (cmd == "plan") {
    auto a =
        ParseFor(rest, {"cluster", "model", "objective", "model-id", "out"});
    status = a.ok() ? PlanCommand(*a, out, err) : a.status();
  } else if (cmd == "cluster" && !rest.empty() && rest[0] == "status") {
    auto a = ParseFor({rest.begin() + 1, rest.end()}, WithTls({"controller"}),
                      kTlsBoolFlags);
    status = a.ok() ? ClusterStatusCommand(*a, out) : a.status();
  } else if (cmd == "certs" && !rest.empty() &&
             (rest[0] == "init" || rest[0] == "issue" || rest[0] == "token")) {
    auto a = ParseFor({rest.begin() + 1, rest.end()}, CertsFlags(rest[0]),
                      {"force"});
    status = a.ok() ? CertsCommand(rest[0], *a, out) : a.status();
  } else if (cmd == "train") {
    auto a =
        ParseFor(rest, WithTls(kTrainFlags), WithInsecure(kTrainBoolFlags));
    status = a.ok() ? TrainCommand(*a, out, err) : a.status();
  } else if (cmd == "adapter" && !rest.empty() && rest[0] == "register") {
    auto a = ParseFor({rest.begin() + 1, rest.end()},
                      WithTls({"controller", "model-id", "name", "dir"}),
                      kTlsBoolFlags);
    status = a.ok() ? AdapterRegisterCommand(*a, out) : a.status();
  } else if (cmd == "adapter" && !rest.empty() && rest[0] == "list") {
    auto a = ParseFor({rest.begin() + 1, rest.end()},
                      WithTls({"controller", "model-id"}), kTlsBoolFlags);
    status = a.ok() ? AdapterListCommand(*a, out) : a.status();
  } else if (cmd == "model" && !rest.empty() && rest[0] == "register") {
    auto a = ParseFor({rest.begin() + 1, rest.end()},
                      WithTls({"controller", "model-id", "name", "dir"}),
                      kTlsBoolFlags);
    status = a.ok() ? ModelRegisterCommand(*a, out) : a.status();
  } else if (cmd == "model" && !rest.empty() && rest[0] == "fetch") {
    auto a = ParseFor({rest.begin() + 1, rest.end()},
                      WithTls({"controller", "model-id", "name", "out",
                               "blob-dir", "device"}),
                      kTlsBoolFlags);
    status = a.ok() ? ModelFetchCommand(*a, out) : a.status();
  } else if (cmd == "adapter" && !rest.empty() && rest[0] == "placement") {
    auto a = ParseFor({rest.begin() + 1, rest.end()}, WithTls({"controller"}),
                      kTlsBoolFlags);
    status = a.ok() ? AdapterPlacementCommand(*a, out) : a.status();
  } else if (cmd == "adapter" && !rest.empty() && rest[0] == "export") {
    auto a = ParseFor({rest.begin() + 1, rest.end()}, WithTls(kExportFlags),
                      kTlsBoolFlags);
    status = a.ok() ? AdapterExportCommand(*a, out) : a.status();
  } else if (cmd == "generate") {
    auto a = ParseFor(rest,
                      WithTls({"model",
                               "prompt",
                               "max-new-tokens",
                               "temperature",
                               "top-k",
                               "top-p",
                               "repetition-penalty",
                               "seed",
                               "adapter",
                               "adapter-dir",
                               "split",
                               "dtype",
                               "weights",
                               "threads",
                               "controller",
                               "model-id",
                               "codec",
                               "model-dir",
                               "model-cache-dir",
                               "device-name",
                               "draft",
                               "draft-max",
                               "draft-skip",
                               "privacy-epsilon",
                               "privacy-delta",
                               "privacy-clip",
                               "privacy-grad-clip",
                               "privacy-budget",
                               "privacy-budget-epsilon",
                               "system"}),
                      {"mmap-weights", "insecure", "draft-fixed", "chat"});
    status = a.ok() ? GenerateLocal(*a, out, err) : a.status();
  } else {
    err << "edgesplit: unknown command \"" << absl::StrJoin(args, " ")
        << "\"\n\n"
        << kUsage;
    return 2;
  }
  if (parse_exit >= 0) return parse_exit;  // --help, or a usage error.
  if (!status.ok()) {
    err << "edgesplit: " << status.message() << "\n";
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

}  // namespace cli
}  // namespace edgesplit
