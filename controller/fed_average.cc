#include "controller/fed_average.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace edgesplit {
namespace {

constexpr uint32_t kMaxDevices = 1024;
constexpr int kMaxFactors = 1 << 16;

absl::Status Bad(const v1::AverageAdaptersRequest& r, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("AverageAdapters from device \"", r.device(), "\" (job ",
                   r.job_id(), ", round ", r.round(), "): ", what));
}

}  // namespace

absl::Status ValidateAverageRequest(const v1::AverageAdaptersRequest& r) {
  if (r.job_id().empty() || r.job_id().size() > 128) {
    return Bad(r, "job_id: 1-128 characters");
  }
  if (r.device().empty()) return Bad(r, "device: missing");
  if (r.devices() < 1 || r.devices() > kMaxDevices) {
    return Bad(
        r, absl::StrCat("devices: ", r.devices(), " (1..", kMaxDevices, ")"));
  }
  if (r.participants() > r.devices()) {
    return Bad(r, absl::StrCat("participants: ", r.participants(),
                               " (at most devices, ", r.devices(), ")"));
  }
  if (r.sat_out()) {
    // It trained nothing this round and sends only its report.
    if (r.participants() == 0 || r.participants() == r.devices()) {
      return Bad(r, "sat_out: but every device takes part (participants)");
    }
    if (r.factors_size() > 0 || r.samples() != 0) {
      return Bad(r, "sat_out: with factors or samples");
    }
  } else if (!std::isfinite(r.samples()) || r.samples() <= 0) {
    return Bad(r, absl::StrCat("samples: ", r.samples(), " (positive)"));
  }
  for (auto [field, v] :
       {std::pair<const char*, double>{"noise_std", r.noise_std()},
        {"seconds_per_window", r.seconds_per_window()}}) {
    if (!std::isfinite(v) || v < 0 || v > 1e9) {
      return Bad(r, absl::StrCat(field, ": ", v, " (0..1e9)"));
    }
  }
  if (r.factors_size() > kMaxFactors) {
    return Bad(r, absl::StrCat("factors: ", r.factors_size(), " (at most ",
                               kMaxFactors, ")"));
  }
  for (const v1::NamedTensor& f : r.factors()) {
    const v1::Tensor& t = f.tensor();
    if (t.codec() != v1::CODEC_FP32 || t.shape_size() != 2 || t.shape(0) <= 0 ||
        t.shape(1) <= 0 || t.shape(0) > (1 << 20) || t.shape(1) > (1 << 20) ||
        static_cast<int64_t>(t.data().size()) != t.shape(0) * t.shape(1) * 4) {
      return Bad(r, absl::StrCat("factor \"", f.name(),
                                 "\": not fp32 [rows, cols] with matching "
                                 "bytes"));
    }
    const char* p = t.data().data();
    for (size_t i = 0; i < t.data().size(); i += 4) {
      float v;
      std::memcpy(&v, p + i, 4);
      if (!std::isfinite(v)) {
        return Bad(r,
                   absl::StrCat("factor \"", f.name(), "\": non-finite value"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::AverageAdaptersResponse> AverageFactors(
    const std::vector<const v1::AverageAdaptersRequest*>& requests) {
  if (requests.empty()) {
    return absl::InvalidArgumentError("nothing to average");
  }
  double total = 0;
  for (const auto* r : requests) total += r->samples();
  const v1::AverageAdaptersRequest& first = *requests.front();
  v1::AverageAdaptersResponse out;
  out.set_devices(static_cast<uint32_t>(requests.size()));
  out.set_samples(total);
  for (int i = 0; i < first.factors_size(); ++i) {
    const v1::NamedTensor& f0 = first.factors(i);
    const int64_t n = f0.tensor().shape(0) * f0.tensor().shape(1);
    std::vector<double> sum(static_cast<size_t>(n), 0.0);
    for (const auto* r : requests) {
      if (r->factors_size() != first.factors_size() ||
          r->factors(i).name() != f0.name() ||
          r->factors(i).tensor().shape(0) != f0.tensor().shape(0) ||
          r->factors(i).tensor().shape(1) != f0.tensor().shape(1)) {
        return Bad(
            *r, absl::StrCat("factor ", i, " (\"", f0.name(), "\" from device ",
                             first.device(), ") differs in name or shape"));
      }
      const double w = r->samples() / total;
      const char* p = r->factors(i).tensor().data().data();
      for (int64_t k = 0; k < n; ++k) {
        float v;
        std::memcpy(&v, p + 4 * k, 4);
        sum[static_cast<size_t>(k)] += w * v;
      }
    }
    v1::NamedTensor* o = out.add_factors();
    o->set_name(f0.name());
    *o->mutable_tensor()->mutable_shape() = f0.tensor().shape();
    o->mutable_tensor()->set_codec(v1::CODEC_FP32);
    std::string bytes(static_cast<size_t>(n) * 4, '\0');
    for (int64_t k = 0; k < n; ++k) {
      const float v = static_cast<float>(sum[static_cast<size_t>(k)]);
      std::memcpy(&bytes[4 * k], &v, 4);
    }
    o->mutable_tensor()->set_data(std::move(bytes));
  }
  return out;
}

void FedAverager::Submit(const v1::AverageAdaptersRequest& request,
                         absl::Time deadline, Done done) {
  absl::Status valid = ValidateAverageRequest(request);
  if (!valid.ok()) return done(valid);
  std::vector<Done> expired;
  std::vector<Done> ready;
  absl::StatusOr<v1::AverageAdaptersResponse> result;
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    ExpireLocked(absl::Now(), &expired);
    refused = AddLocked(request, deadline, &done, &ready, &result);
  }
  Fail(expired);
  if (!refused.ok()) return done(refused);
  for (auto& d : ready) d(result);
}

void FedAverager::Fail(std::vector<Done>& expired) {
  for (auto& d : expired) {
    d(absl::DeadlineExceededError(
        "averaging round expired: not every device of the job sent its "
        "adapter in time"));
  }
}

absl::Status FedAverager::AddLocked(
    const v1::AverageAdaptersRequest& request, absl::Time deadline, Done* done,
    std::vector<Done>* ready,
    absl::StatusOr<v1::AverageAdaptersResponse>* result) {
  const Key key{request.job_id(), request.round()};
  Job& job = JobLocked(request.job_id());
  const uint32_t participants =
      request.participants() == 0 ? request.devices() : request.participants();
  auto [it, created] = rounds_.try_emplace(key);
  Round& round = it->second;
  if (created) {
    round.devices = request.devices();
    round.participants = participants;
    // Every device trains this round (a new run): what the job's devices
    // reported before may name devices gone since.
    if (participants == request.devices()) job.reports.clear();
  } else if (round.devices != request.devices()) {
    return Bad(request, absl::StrCat("devices: ", request.devices(),
                                     " but the round has ", round.devices));
  } else if (round.participants != participants) {
    return Bad(request,
               absl::StrCat("participants: ", participants,
                            " but the round has ", round.participants));
  }
  if (round.answered.count(request.device()) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("device \"", request.device(), "\" already sent round ",
                     request.round(), " of job ", request.job_id()));
  }
  if (!request.sat_out() && round.result.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "round ", request.round(), " of job ", request.job_id(),
        " already averaged its ", round.participants,
        " participants; device \"", request.device(), "\" was not one"));
  }
  const int64_t bytes =
      request.sat_out() ? 0 : static_cast<int64_t>(request.ByteSizeLong());
  if (bytes > 0 && bytes > max_bytes_ - held_bytes_) {
    if (created) rounds_.erase(it);  // A refused first leaves no round.
    return absl::ResourceExhaustedError(absl::StrCat(
        "round ", request.round(), " of job ", request.job_id(), ": ", bytes,
        " more bytes of adapters would exceed the controller's ", limit_name_,
        " (", max_bytes_, " bytes, ", held_bytes_, " held)"));
  }
  job.reports[request.device()] = {request.noise_std(),
                                   request.seconds_per_window()};
  round.answered.insert(request.device());
  if (round.result.has_value()) {  // Sat out, and the average is there.
    ready->push_back(std::move(*done));
    *done = nullptr;
    *result = *round.result;
  } else if (request.sat_out()) {
    // Its own deadline: it came at the round's start, not its end.
    round.waiting.push_back({std::move(*done), deadline, request.device()});
    *done = nullptr;
  } else {
    round.deadline = std::min(round.deadline, deadline);
    round.waiting.push_back({std::move(*done), absl::InfiniteFuture(), ""});
    *done = nullptr;
    round.by_device[request.device()] = request;
    round.bytes += bytes;
    held_bytes_ += bytes;
    if (round.by_device.size() == round.participants) {
      CompleteLocked(job, round, ready, result);
    }
  }
  if (round.result.has_value() && round.answered.size() >= round.devices) {
    held_bytes_ -= round.bytes;
    rounds_.erase(key);
  }
  return absl::OkStatus();
}

void FedAverager::CompleteLocked(
    Job& job, Round& round, std::vector<Done>* ready,
    absl::StatusOr<v1::AverageAdaptersResponse>* result) {
  std::vector<std::string> chosen;
  if (selection_.per_round > 0 &&
      static_cast<uint32_t>(selection_.per_round) < round.devices &&
      job.reports.size() == round.devices) {
    chosen = SelectDevices(selection_, job.reports);
  }
  // A round every device trained averages only the selection already (its
  // reports are in): the first round's noisiest upload stays out too.
  std::vector<const v1::AverageAdaptersRequest*> averaged;
  for (const auto& [name, r] : round.by_device) {
    if (round.participants < round.devices || chosen.empty() ||
        std::binary_search(chosen.begin(), chosen.end(), name)) {
      averaged.push_back(&r);
    }
  }
  *result = AverageFactors(averaged);
  for (Waiter& w : round.waiting) ready->push_back(std::move(w.done));
  round.waiting.clear();
  held_bytes_ -= round.bytes;
  if (!result->ok()) {
    // Everyone waiting hears why and the round is gone: devices still to
    // come start it again and wait out its deadline.
    round.by_device.clear();
    round.result.emplace();
    round.bytes = 0;
    round.answered.clear();
    round.devices = 0;
    return;
  }
  job.next = std::move(chosen);
  for (const auto* r : averaged) (*result)->add_averaged(r->device());
  for (const std::string& d : job.next) (*result)->add_selected_next(d);
  round.by_device.clear();
  // Kept for the devices that sat the round out and come later.
  round.result = **result;
  round.bytes = static_cast<int64_t>(round.result->ByteSizeLong());
  held_bytes_ += round.bytes;
}

FedAverager::Job& FedAverager::JobLocked(const std::string& id) {
  constexpr size_t kMaxJobs = 4096;  // Reports are small; jobs come and go.
  auto it = jobs_.find(id);
  if (it == jobs_.end()) {
    if (jobs_.size() >= kMaxJobs) {
      auto oldest = jobs_.begin();
      for (auto j = jobs_.begin(); j != jobs_.end(); ++j) {
        if (j->second.used < oldest->second.used) oldest = j;
      }
      jobs_.erase(oldest);
    }
    it = jobs_.emplace(id, Job{}).first;
  }
  it->second.used = absl::Now();
  return it->second;
}

std::vector<std::string> SelectDevices(
    const FedSelection& selection,
    const std::map<std::string, std::pair<double, double>>& reports) {
  double noise = 0, seconds = 0;
  for (const auto& [name, r] : reports) {
    noise += r.first / reports.size();
    seconds += r.second / reports.size();
  }
  std::vector<std::pair<double, std::string>> costs;
  for (const auto& [name, r] : reports) {
    double cost = 0;
    if (noise > 0) cost += selection.noise_weight * r.first / noise;
    if (seconds > 0) cost += selection.link_weight * r.second / seconds;
    costs.emplace_back(cost, name);
  }
  std::sort(costs.begin(), costs.end());
  std::vector<std::string> out;
  for (size_t i = 0; i < costs.size() &&
                     i < static_cast<size_t>(std::max(selection.per_round, 0));
       ++i) {
    out.push_back(costs[i].second);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<FedSelection> ParseFedSelection(const YamlReader& r,
                                               const YAML::Node& root) {
  FedSelection s;
  ES_ASSIGN_OR_RETURN(YAML::Node section, r.Field(root, "fed_selection"));
  if (!section.IsDefined() || section.IsNull()) return s;
  if (!section.IsMap()) {
    return r.Error(section, "fed_selection", "expected a map");
  }
  ES_ASSIGN_OR_RETURN(int64_t k, r.Int(section, "per_round", 0));
  if (k < 0 || k > kMaxDevices) {
    return r.Error(
        section["per_round"], "fed_selection.per_round",
        absl::StrCat(k, ": expected 0 (every device) to ", kMaxDevices));
  }
  s.per_round = static_cast<int>(k);
  for (auto [field, out] :
       {std::pair<const char*, double*>{"noise_weight", &s.noise_weight},
        {"link_weight", &s.link_weight}}) {
    ES_ASSIGN_OR_RETURN(std::string text, r.String(section, field, false));
    if (text.empty()) continue;
    double v = 0;
    if (!absl::SimpleAtod(text, &v) || !std::isfinite(v) || v < 0 || v > 1e6) {
      return r.Error(
          section[field], absl::StrCat("fed_selection.", field),
          absl::StrCat("\"", text, "\": expected a number in [0, 1e6]"));
    }
    *out = v;
  }
  return s;
}

void FedAverager::Expire(absl::Time now) {
  std::vector<Done> expired;
  {
    absl::MutexLock lock(&mu_);
    ExpireLocked(now, &expired);
  }
  Fail(expired);
}

void FedAverager::ExpireLocked(absl::Time now, std::vector<Done>* out) {
  for (auto it = rounds_.begin(); it != rounds_.end();) {
    Round& round = it->second;
    if (round.deadline > now) {
      // Devices sitting the round out wait until their own deadline; they
      // may send again.
      for (auto w = round.waiting.begin(); w != round.waiting.end();) {
        if (w->deadline > now) {
          ++w;
          continue;
        }
        round.answered.erase(w->device);
        out->push_back(std::move(w->done));
        w = round.waiting.erase(w);
      }
      if (round.answered.empty()) {  // Nobody left: nothing to keep.
        held_bytes_ -= round.bytes;
        it = rounds_.erase(it);
      } else {
        ++it;
      }
      continue;
    }
    for (Waiter& w : round.waiting) out->push_back(std::move(w.done));
    held_bytes_ -= round.bytes;
    it = rounds_.erase(it);
  }
}

}  // namespace edgesplit
