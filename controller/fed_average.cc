#include "controller/fed_average.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

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
  if (!std::isfinite(r.samples()) || r.samples() <= 0) {
    return Bad(r, absl::StrCat("samples: ", r.samples(), " (positive)"));
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
  std::vector<std::vector<Done>> expired;
  std::vector<Done> ready;
  absl::StatusOr<v1::AverageAdaptersResponse> result;
  {
    absl::MutexLock lock(&mu_);
    ExpireLocked(absl::Now(), &expired);
    const int64_t bytes = static_cast<int64_t>(request.ByteSizeLong());
    const Key key{request.job_id(), request.round()};
    if (bytes > max_bytes_ - held_bytes_) {
      result = absl::ResourceExhaustedError(absl::StrCat(
          "round ", request.round(), " of job ", request.job_id(), ": ", bytes,
          " more bytes of adapters would exceed the controller's ", limit_name_,
          " (", max_bytes_, " bytes, ", held_bytes_, " held)"));
    } else if (Round& round = rounds_[key];
               round.devices != 0 && round.devices != request.devices()) {
      result = Bad(request, absl::StrCat("devices: ", request.devices(),
                                         " but the round has ", round.devices));
    } else if (!round.by_device.emplace(request.device(), request).second) {
      result = absl::AlreadyExistsError(
          absl::StrCat("device \"", request.device(), "\" already sent round ",
                       request.round(), " of job ", request.job_id()));
    } else {
      round.devices = request.devices();
      round.deadline = std::min(round.deadline, deadline);
      round.waiting.push_back(std::move(done));
      round.bytes += bytes;
      held_bytes_ += bytes;
      if (round.by_device.size() < round.devices) {
        done = nullptr;
      } else {
        std::vector<const v1::AverageAdaptersRequest*> all;
        for (const auto& [name, r] : round.by_device) all.push_back(&r);
        result = AverageFactors(all);
        ready = std::move(round.waiting);
        held_bytes_ -= round.bytes;
        rounds_.erase(key);
        done = nullptr;
      }
    }
  }
  for (auto& callbacks : expired) {
    for (auto& d : callbacks) {
      d(absl::DeadlineExceededError(
          "averaging round expired: not every device of the job sent its "
          "adapter in time"));
    }
  }
  if (done) return done(result.status());  // Refused submission.
  for (auto& d : ready) d(result);
}

void FedAverager::Expire(absl::Time now) {
  std::vector<std::vector<Done>> expired;
  {
    absl::MutexLock lock(&mu_);
    ExpireLocked(now, &expired);
  }
  for (auto& callbacks : expired) {
    for (auto& d : callbacks) {
      d(absl::DeadlineExceededError(
          "averaging round expired: not every device of the job sent its "
          "adapter in time"));
    }
  }
}

void FedAverager::ExpireLocked(absl::Time now,
                               std::vector<std::vector<Done>>* out) {
  for (auto it = rounds_.begin(); it != rounds_.end();) {
    if (it->second.deadline <= now) {
      out->push_back(std::move(it->second.waiting));
      held_bytes_ -= it->second.bytes;
      it = rounds_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace edgesplit
