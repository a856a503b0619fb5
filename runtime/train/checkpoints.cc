#include "runtime/train/checkpoints.h"

#include <filesystem>
#include <iostream>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/safetensors.h"
#include "runtime/torch_util.h"

namespace edgesplit {

absl::Status SaveTrainerState(const std::string& path,
                              const std::map<std::string, FactorState>& state,
                              int64_t step) {
  SafetensorsWriter writer;
  std::vector<at::Tensor> keep;  // Bytes must live until Write().
  ES_RETURN_IF_ERROR(TorchCall("SaveTrainerState", [&]() -> absl::Status {
    for (const auto& [name, s] : state) {
      for (auto [suffix, t] :
           {std::pair<const char*, const at::Tensor*>{"", &s.value},
            {".exp_avg", &s.m},
            {".exp_avg_sq", &s.v}}) {
        at::Tensor c = ContiguousCpu(t->detach()).to(at::kFloat);
        keep.push_back(c);
        ES_RETURN_IF_ERROR(writer.Add(
            absl::StrCat(name, suffix), DType::kF32, c.sizes().vec(),
            absl::Span<const uint8_t>(static_cast<const uint8_t*>(c.data_ptr()),
                                      c.nbytes())));
      }
    }
    return absl::OkStatus();
  }));
  writer.SetMetadata("step", absl::StrCat(step));
  return writer.Write(path);
}

absl::StatusOr<TrainerCheckpoint> LoadTrainerState(const std::string& path) {
  ES_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  TrainerCheckpoint out;
  auto it = file->metadata().find("step");
  if (it == file->metadata().end() ||
      !absl::SimpleAtoi(it->second, &out.step) || out.step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": metadata \"step\" missing or not a count"));
  }
  auto read = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    const TensorInfo* info = file->Find(name);
    if (info == nullptr || info->dtype != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", name, "\" missing or not F32"));
    }
    auto data = file->Data(*info);
    return TorchCall("LoadTrainerState", [&]() -> absl::StatusOr<at::Tensor> {
      return at::from_blob(const_cast<uint8_t*>(data.data()), info->shape,
                           at::kFloat)
          .clone();
    });
  };
  for (const TensorInfo& info : file->tensors()) {
    absl::string_view name = info.name;
    if (absl::EndsWith(name, ".exp_avg") ||
        absl::EndsWith(name, ".exp_avg_sq")) {
      continue;
    }
    FactorState s;
    ES_ASSIGN_OR_RETURN(s.value, read(info.name));
    ES_ASSIGN_OR_RETURN(s.m, read(absl::StrCat(info.name, ".exp_avg")));
    ES_ASSIGN_OR_RETURN(s.v, read(absl::StrCat(info.name, ".exp_avg_sq")));
    if (s.m.sizes() != s.value.sizes() || s.v.sizes() != s.value.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": moments of \"", info.name, "\" have the wrong shape"));
    }
    out.state[info.name] = std::move(s);
  }
  return out;
}

std::string TrainerCheckpoints::Path(uint64_t step) const {
  return absl::StrFormat("%s/step-%08d.safetensors", dir_, step);
}

std::vector<uint64_t> TrainerCheckpoints::Files() const {
  std::vector<uint64_t> steps;
  if (dir_.empty()) return steps;
  static const std::regex kName("step-([0-9]{8})\\.safetensors");
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, kName)) steps.push_back(std::stoull(m[1]));
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

bool TrainerCheckpoints::Readable(uint64_t step) const {
  // The header, the tensors' extents against the file's size, and the
  // step it claims: what a torn or truncated write, or a file from
  // elsewhere, gets wrong. (Bit flips inside the data pass.)
  auto file = SafetensorsFile::Open(Path(step));
  if (!file.ok()) return false;
  auto it = (*file)->metadata().find("step");
  int64_t claimed = -1;
  return it != (*file)->metadata().end() &&
         absl::SimpleAtoi(it->second, &claimed) &&
         claimed == static_cast<int64_t>(step);
}

std::vector<uint64_t> TrainerCheckpoints::Steps() const {
  std::vector<uint64_t> steps;
  for (uint64_t step : Files()) {
    if (Readable(step)) {
      steps.push_back(step);
    } else {
      std::cerr << "edgesplit: skipping unreadable checkpoint " << Path(step)
                << "\n";
    }
  }
  return steps;
}

absl::Status TrainerCheckpoints::Save(const StageTrainer& trainer,
                                      uint64_t step) const {
  if (dir_.empty()) {
    return absl::FailedPreconditionError(
        "no checkpoint directory configured (checkpoint_dir is empty)");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(dir_, ": cannot create: ", ec.message()));
  }
  // Written durably (fsync of file and directory) before any older one
  // is removed.
  ES_RETURN_IF_ERROR(SaveTrainerState(Path(step), trainer.State(),
                                      static_cast<int64_t>(step)));
  // Keep the newest `keep_` readable ones; unreadable files older than
  // the one just written are of no use to anyone.
  size_t kept = 0;
  const std::vector<uint64_t> files = Files();
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    if (*it > step) continue;  // Not ours to judge (another writer's).
    if (kept < keep_ && Readable(*it)) {
      ++kept;
    } else {
      std::filesystem::remove(Path(*it), ec);
    }
  }
  return absl::OkStatus();
}

absl::Status TrainerCheckpoints::Restore(uint64_t step,
                                         StageTrainer* trainer) const {
  if (step == 0) return trainer->Reset();
  if (dir_.empty()) {
    return absl::FailedPreconditionError(
        "no checkpoint directory configured (checkpoint_dir is empty)");
  }
  const std::string path = Path(step);
  ES_ASSIGN_OR_RETURN(TrainerCheckpoint c, LoadTrainerState(path));
  if (c.step != static_cast<int64_t>(step)) {
    return absl::DataLossError(
        absl::StrCat(path, ": holds step ", c.step, ", not ", step));
  }
  absl::Status s = trainer->SetState(c.state);
  if (!s.ok())
    return absl::DataLossError(absl::StrCat(path, ": ", s.message()));
  return absl::OkStatus();
}

}  // namespace edgesplit
