// Trainer::AverageDeviceAdapter: one federated averaging round through the
// controller (SFL), with client selection and private uploads.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "device_agent/training_impl.h"

namespace edgesplit {

absl::StatusOr<bool> Trainer::AverageDeviceAdapter(double samples,
                                                   double seconds_per_window) {
  if (!impl_->trainer) {
    return absl::FailedPreconditionError("the trainer failed: call Resume");
  }
  v1::AverageAdaptersRequest req;
  req.set_job_id(impl_->spec.job_id());
  req.set_round(impl_->trainer->step());
  req.set_devices(static_cast<uint32_t>(impl_->options.devices));
  req.set_device(impl_->agent->options.device_name);
  req.set_samples(samples);
  req.set_seconds_per_window(seconds_per_window);
  const bool left_out = impl_->LeftOut();
  req.set_participants(impl_->Participants());
  req.set_sat_out(left_out);
  if (left_out) req.set_samples(0);
  AdapterTensors factors;
  if (!left_out) factors = impl_->trainer->DeviceFactors();
  if (impl_->options.averaging_privacy.epsilon > 0) {
    if (!impl_->in_private_run) return training_internal::PrivateOutsideRun();
    req.set_noise_std(impl_->average_sigma *
                      impl_->options.averaging_privacy.clip);
    if (!left_out) {
      ES_ASSIGN_OR_RETURN(factors, impl_->NoisyUpload(factors));
    }
  }
  for (const auto& [name, t] : factors) {
    v1::NamedTensor* nt = req.add_factors();
    nt->set_name(name);
    ES_RETURN_IF_ERROR(wire::Encode(t, v1::CODEC_FP32, nt->mutable_tensor()));
  }
  v1::AverageAdaptersResponse resp;
  // Sitting out, it asks at the round's start: when its wait runs out
  // before the others' updates are done, it asks again (a few times).
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(
        ToChrono(absl::Now() + impl_->agent->options.generation_timeout));
    absl::Status s = FromGrpcStatus(
        impl_->agent->controller->AverageAdapters(&ctx, req, &resp),
        absl::StrCat("controller ", impl_->agent->options.controller));
    if (s.ok()) break;
    if (!left_out || !absl::IsDeadlineExceeded(s) || attempt == 5) return s;
  }
  AdapterTensors averaged;
  for (const v1::NamedTensor& t : resp.factors()) {
    ES_ASSIGN_OR_RETURN(averaged[t.name()],
                        wire::Decode(t.tensor(), 0, t.name()));
  }
  ES_RETURN_IF_ERROR(impl_->trainer->SetDeviceFactors(averaged));
  if (impl_->average_sigma > 0) impl_->average_reference = averaged;
  impl_->selected_next.assign(resp.selected_next().begin(),
                              resp.selected_next().end());
  impl_->trainer->set_participants(impl_->Participants());
  return std::find(resp.averaged().begin(), resp.averaged().end(),
                   req.device()) != resp.averaged().end();
}

}  // namespace edgesplit
