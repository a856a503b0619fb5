#include "device_agent/cli/flag_help.h"

#include <map>
#include <utility>

namespace edgesplit {
namespace cli {
namespace {

// Help per flag: "command:flag" where a command gives the flag its own
// meaning, else "flag".
const std::map<std::string, std::string>& FlagTable() {
  static const auto* const t = new std::map<std::string, std::string>{
      // Reaching a cluster (mutual TLS).
      {"controller", "The controller (HOST:PORT)"},
      {"certs", "Directory of `certs init` output (also $EDGESPLIT_CERTS)"},
      {"ca", "The cluster CA certificate (PEM)"},
      {"cert", "This device's certificate (PEM)"},
      {"key", "This device's private key (PEM)"},
      {"token", "A device bearer token file instead of a certificate"},
      {"insecure", "Plaintext without identities (loopback addresses only)"},
      {"device-name", "This device's name (its certificate's)"},
      // Models and weights.
      {"model", "Model directory (HF layout) or .gguf file"},
      {"model-id", "The model's id in the cluster's plans"},
      {"model-dir", "This device's copy of the model (default: the plan's)"},
      {"model-cache-dir",
       "Where model copies the plan names are fetched (without --model-dir)"},
      {"weights",
       "Weight type: f32|f16|q8_0|q6_k|q4_k|q4_0 (quantized at load)"},
      {"dtype", "Compute dtype: f32|bf16"},
      {"threads", "Compute threads (0: every core)"},
      {"mmap-weights", "Compute from the file mapping instead of copies"},
      {"codec", "Activation codec on the wire: fp32|fp16|bf16|int8"},
      {"split", "Local pipeline cut before these blocks (B1,B2,...)"},
      // Sampling.
      {"prompt", "The prompt text"},
      {"system", "A system message (with --chat)"},
      {"chat", "Format the prompt with the model's chat template"},
      {"max-new-tokens", "Tokens to generate at most"},
      {"temperature", "Sampling temperature (0: greedy)"},
      {"top-k", "Sample among the K most likely tokens (0: all)"},
      {"top-p", "Nucleus sampling mass"},
      {"repetition-penalty", "Penalty on tokens already seen (1: none)"},
      {"seed", "Random seed"},
      {"adapter",
       "LoRA adapter: a PEFT directory, or a cluster's adapter name"},
      {"adapter-dir", "Directory of PEFT adapters, one per name"},
      {"draft", "Speculative decoding draft: lookup|self:q8_0|self:q4_0|DIR"},
      {"draft-max", "Draft tokens per verification at most"},
      {"draft-skip", "Self-draft: blocks skipped"},
      {"draft-fixed", "Always draft --draft-max tokens (no adaptation)"},
      // Differential privacy.
      {"privacy-epsilon", "Differential privacy: epsilon of the run"},
      {"privacy-delta", "Differential privacy: delta"},
      {"privacy-clip", "Differential privacy: L2 clip of each row"},
      {"privacy-grad-clip",
       "Differential privacy: L2 clip of each gradient row"},
      {"privacy-budget", "File keeping the epsilon spent per user"},
      {"privacy-budget-epsilon", "The budget file's limit"},
      {"average-privacy-epsilon", "DP of the adapters sent for averaging"},
      {"average-privacy-clip", "L2 clip of each averaging update"},
      {"device-privacy-epsilon", "DP-SGD of this device's own factors"},
      {"device-privacy-clip", "DP-SGD: L2 clip of each window's gradient"},
      // Training.
      {"data", "Training text file"},
      {"mode", "sl (turns) | psl (parallel) | sfl (parallel + averaging)"},
      {"steps", "Optimizer updates to reach"},
      {"lr", "Learning rate"},
      {"rank", "LoRA rank"},
      {"alpha", "LoRA alpha"},
      {"targets", "Modules to adapt (q_proj,v_proj,...; default: all)"},
      {"train-blocks", "Blocks whose factors train (A:B)"},
      {"freeze-ratio", "Fraction of blocks frozen from the bottom"},
      {"devices", "Devices training together (psl, sfl)"},
      {"job-members", "Other devices allowed to join the job (a,b)"},
      {"average-every", "sfl: average the devices' adapters every K steps"},
      {"batch-tokens", "Tokens per update"},
      {"seq-len", "Tokens per training window"},
      {"eval-every", "Held-out evaluation every N updates (0: start only)"},
      {"eval-windows", "Held-out windows evaluated"},
      {"held-out", "Fraction of the data held out"},
      {"checkpoint-every", "Checkpoint every N updates (0: at the end)"},
      {"checkpoint-dir", "This device's checkpoints"},
      {"job", "Training job id"},
      {"warmup", "Learning-rate warmup updates"},
      {"max-grad-norm", "Clip the global gradient norm"},
      {"weight-decay", "AdamW weight decay"},
      {"log-every", "A progress line every N updates (without a terminal)"},
      {"u-shaped", "Keep the labels on the device (U-shaped route)"},
      {"recompute", "Recompute activations in backward (less memory)"},
      {"train:out", "Write the trained adapter (PEFT) here"},
      // serve.
      {"listen", "HTTP address (HOST:PORT)"},
      {"api-key-file", "Require this API key (Authorization: Bearer)"},
      {"max-concurrent", "Requests served at once"},
      {"serve:model-id", "Model id(s) served (ID[,ID...])"},
      // plan.
      {"cluster", "The cluster description (YAML)"},
      {"objective", "latency | throughput | energy"},
      {"plan:out", "Write the plan YAML here"},
      // model.
      {"arch", "gpt2 | llama"},
      {"preset", "Size preset (tiny, mini, small, 1b)"},
      {"shard-mb", "Split model.safetensors into shards of this size"},
      {"type", "Quantized type: q8_0|q4_0|q4_k|q6_k"},
      {"out", "Output directory"},
      {"name", "Name in the cluster's registry"},
      {"dir", "Directory to upload"},
      {"blob-dir", "Local store of fetched parts (resumes downloads)"},
      {"model:fetch:device", "Fetch as this device (its certificate's name)"},
      // certs.
      {"certs:init:cluster", "The cluster's name (in every SPIFFE ID)"},
      {"nodes", "Servers to certify (a,b)"},
      {"certs:init:devices", "Devices to certify (d,e)"},
      {"days", "Validity in days"},
      {"certs:dir", "The CA directory (ca.pem, ca.key)"},
      {"node", "Certify this server"},
      {"device", "Certify this device"},
      {"admin", "Certify this operator"},
      {"certs:token:out", "Token file (default DIR/device-N.token)"},
      {"certs:init:out", "Directory for the CA, certificates and keys"},
      {"force", "Overwrite existing files"},
  };
  return *t;
}

const std::map<std::string, CommandHelp>& CommandTable() {
  static const auto* const t = new std::map<std::string, CommandHelp>{
      {"model init",
       {"Writes a randomly initialized model (HF layout: config, "
        "safetensors, tokenizer).",
        "edgesplit model init --arch llama --preset tiny --out /tmp/tiny"}},
      {"model info",
       {"Architecture, parameter count, bytes per block, tokenizer of a "
        "model directory or .gguf file.",
        "edgesplit model info ../shared/models/stories260K", "DIR|FILE.gguf"}},
      {"model quantize",
       {"Writes a quantized copy (GGUF block formats in safetensors).",
        "edgesplit model quantize --model DIR --out DIR-q8 --type q8_0"}},
      {"model register",
       {"Uploads a model directory to the controller's store.",
        "edgesplit model register --controller 127.0.0.1:50051 --model-id "
        "m --name m-q8 --dir DIR-q8 --certs certs"}},
      {"model fetch",
       {"Downloads a registered model copy (verified, resumable).",
        "edgesplit model fetch --controller 127.0.0.1:50051 --model-id m "
        "--name m-q8 --out /data/m-q8 --certs certs --device-name phone"}},
      {"generate",
       {"Generates text locally (--model) or split through a cluster "
        "(--controller): the continuation on stdout, stats on stderr.",
        "edgesplit generate --model ../shared/models/stories260K --prompt "
        "\"Once upon a time\" --max-new-tokens 64"}},
      {"serve",
       {"Serves the OpenAI API (/v1/completions, /v1/chat/completions) "
        "for a local model or a cluster's split model.",
        "edgesplit serve --model ../shared/models/stories260K --listen "
        "127.0.0.1:8080"}},
      {"plan",
       {"The optimal split of a model over a described cluster.",
        "edgesplit plan --cluster configs/cluster/what-if.yaml --model "
        "../shared/models/stories260K"}},
      {"train",
       {"Split LoRA fine-tuning through the cluster.",
        "edgesplit train --controller 127.0.0.1:50051 --model-id "
        "stories260K --data ../shared/data/tinyshakespeare.txt --steps 100 "
        "--certs certs --device-name device"}},
      {"cluster status",
       {"The controller's view: nodes, measured compute and links, plans.",
        "edgesplit cluster status --controller 127.0.0.1:50051 --certs "
        "certs"}},
      {"adapter register",
       {"Uploads and registers a LoRA adapter (admin certificate).",
        "edgesplit adapter register --controller 127.0.0.1:50051 --model-id "
        "m --name shakespeare --dir adapters/shakespeare --certs certs"}},
      {"adapter list",
       {"The registered adapters and which servers hold them.",
        "edgesplit adapter list --controller 127.0.0.1:50051 --certs certs"}},
      {"adapter placement",
       {"Which adapters the controller places on which servers.",
        "edgesplit adapter placement --controller 127.0.0.1:50051 --certs "
        "certs"}},
      {"adapter export",
       {"A training job's whole adapter in PEFT format, from its newest "
        "checkpoint.",
        "edgesplit adapter export --controller 127.0.0.1:50051 --model-id m "
        "--job job --out adapters/mine --certs certs"}},
      {"certs init",
       {"A CA and certificates for a cluster (keys written 0600).",
        "edgesplit certs init --cluster demo --out certs --nodes "
        "server-a,server-b --devices phone"}},
      {"certs issue",
       {"One more certificate from the CA in --dir.",
        "edgesplit certs issue --dir certs --node server-c"}},
      {"certs token",
       {"A bearer token for a device without a certificate.",
        "edgesplit certs token --dir certs --device phone --days 30"}},
  };
  return *t;
}

}  // namespace

std::string FlagHelp(const std::string& command, const std::string& flag) {
  const auto& t = FlagTable();
  // "certs init" + "out": "certs:init:out", then "certs:out", then "out".
  std::string key = command;
  for (char& c : key) {
    if (c == ' ') c = ':';
  }
  for (;;) {
    auto it = t.find(key + ":" + flag);
    if (it != t.end()) return it->second;
    const size_t colon = key.rfind(':');
    if (colon == std::string::npos) break;
    key = key.substr(0, colon);
  }
  auto it = t.find(flag);
  return it == t.end() ? std::string() : it->second;
}

std::vector<std::string> CommandNames() {
  std::vector<std::string> names;
  for (const auto& [name, help] : CommandTable()) names.push_back(name);
  return names;
}

const CommandHelp* FindCommandHelp(const std::string& command) {
  auto it = CommandTable().find(command);
  return it == CommandTable().end() ? nullptr : &it->second;
}

}  // namespace cli
}  // namespace edgesplit
