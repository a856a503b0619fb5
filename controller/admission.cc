// Controller: who may open what. Route grants (signing what OpenSession
// chose), training jobs' members, and the rate limit on suspect reports.
#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "controller/controller.h"

namespace edgesplit {

absl::Status ParseDeviceAccess(const YamlReader& r, const YAML::Node& root,
                               ControllerConfig* config) {
  const YAML::Node revoked = root["revoked_tokens"];
  if (revoked.IsDefined() && !revoked.IsNull()) {
    if (!revoked.IsSequence()) {
      return r.Error(revoked, "revoked_tokens", "expected a list of token ids");
    }
    for (size_t k = 0; k < revoked.size(); ++k) {
      if (!revoked[k].IsScalar() || revoked[k].Scalar().empty()) {
        return r.Error(revoked[k], absl::StrCat("revoked_tokens[", k, "]"),
                       "expected a token id");
      }
      config->revoked_tokens.insert(revoked[k].Scalar());
    }
  }
  const YAML::Node devices = root["devices"];
  if (!devices.IsDefined() || devices.IsNull()) return absl::OkStatus();
  if (!devices.IsSequence())
    return r.Error(devices, "devices", "expected a list");
  std::set<std::string> seen;
  for (size_t i = 0; i < devices.size(); ++i) {
    const std::string at = absl::StrCat("devices[", i, "]");
    DeviceAccess d;
    ES_ASSIGN_OR_RETURN(d.name, r.String(devices[i], "name"));
    if (!seen.insert(d.name).second) {
      return r.Error(devices[i], at + ".name", "\"" + d.name + "\" twice");
    }
    for (const char* field : {"models", "adapters"}) {
      const YAML::Node list = devices[i][field];
      std::set<std::string>& out =
          std::string(field) == "models" ? d.models : d.adapters;
      if (!list.IsDefined()) {
        if (std::string(field) == "models") {
          return r.Error(devices[i], at + ".models",
                         "missing (a list of model ids, or [\"*\"])");
        }
        out.insert("*");  // Adapters: any, unless listed.
        continue;
      }
      if (!list.IsSequence()) {
        return r.Error(list, at + "." + field, "expected a list");
      }
      for (size_t k = 0; k < list.size(); ++k) {
        if (!list[k].IsScalar()) {
          return r.Error(list[k], absl::StrCat(at, ".", field, "[", k, "]"),
                         "expected a string");
        }
        out.insert(list[k].Scalar());
      }
    }
    config->devices.push_back(std::move(d));
  }
  return absl::OkStatus();
}

absl::Status Controller::AuthorizeDevice(
    const v1::OpenSessionRequest& request) const {
  if (config_.devices.empty()) return absl::OkStatus();
  for (const DeviceAccess& d : config_.devices) {
    if (d.name != request.device()) continue;
    auto allows = [](const std::set<std::string>& s, const std::string& v) {
      return s.count("*") > 0 || s.count(v) > 0;
    };
    if (!allows(d.models, request.model_id())) {
      return absl::PermissionDeniedError(absl::StrCat(
          "device \"", d.name, "\" may not use model \"", request.model_id(),
          "\" (", config_.source, ": devices)"));
    }
    if (!request.adapter().empty() && !allows(d.adapters, request.adapter())) {
      return absl::PermissionDeniedError(absl::StrCat(
          "device \"", d.name, "\" may not use adapter \"", request.adapter(),
          "\" (", config_.source, ": devices)"));
    }
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "device \"", request.device(),
      "\" is not in the controller's devices list (", config_.source, ")"));
}

absl::Status Controller::CheckToken(const Peer& peer) const {
  if (peer.token_id.empty() || config_.revoked_tokens.count(peer.token_id) == 0)
    return absl::OkStatus();
  return absl::UnauthenticatedError(absl::StrCat(
      "device token ", peer.token_id, " of ", peer.identity.ToString(),
      " is revoked (", config_.source, ": revoked_tokens)"));
}

std::string Controller::grant_public_key() const {
  return signer_ ? signer_->public_key() : std::string();
}

absl::Status Controller::LoadGrantKey() {
  if (config_.grant_key_file.empty()) return absl::OkStatus();
  ES_ASSIGN_OR_RETURN(signer_,
                      GrantSigner::FromPemFile(config_.grant_key_file));
  return absl::OkStatus();
}

absl::Status Controller::SignGrant(const v1::OpenSessionRequest& request,
                                   v1::OpenSessionResponse* response) const {
  // What was allowed, signed: every hop checks its OpenSession against it.
  if (response->route_size() > config_.max_route_hops) {
    return absl::FailedPreconditionError(
        absl::StrCat("the route of model ", request.model_id(), " has ",
                     response->route_size(), " hops, over max_route_hops ",
                     config_.max_route_hops));
  }
  v1::RouteGrant grant;
  grant.set_version(1);
  grant.set_session_id(response->session_id());
  grant.set_device(request.device());
  grant.set_model_id(request.model_id());
  grant.set_adapter(request.adapter());
  grant.set_codec(request.codec());
  *grant.mutable_route() = response->route();
  grant.set_return_hidden(response->plan().u_shaped() ||
                          request.return_hidden());
  grant.set_training_job(request.training_job());
  grant.set_expires_unix_ms(
      absl::ToUnixMillis(clock_->Now() + config_.grant_ttl));
  ES_ASSIGN_OR_RETURN(*response->mutable_grant(), signer_->Sign(grant));
  return absl::OkStatus();
}

absl::Status Controller::AdmitToJobLocked(
    const v1::OpenSessionRequest& request) {
  const std::string& id = request.training_job();
  auto it = jobs_.find(id);
  if (it == jobs_.end()) {
    if (plans_.count(request.model_id()) == 0) {
      return absl::NotFoundError(
          absl::StrCat("no plan for model \"", request.model_id(), "\""));
    }
    if (jobs_.size() >= 100000 || request.job_members_size() > 1024) {
      return absl::ResourceExhaustedError("too many training jobs or members");
    }
    Job& job = jobs_[id];
    job.model_id = request.model_id();
    job.members.insert(request.device());
    job.members.insert(request.job_members().begin(),
                       request.job_members().end());
    // A job whose owners are not on disk could be claimed by anyone after
    // a restart: no job without them.
    if (absl::Status saved = SaveJobsLocked(); !saved.ok()) {
      jobs_.erase(id);
      return absl::UnavailableError(absl::StrCat("cannot keep training job \"",
                                                 id, "\": ", saved.message()));
    }
    return absl::OkStatus();
  }
  if (it->second.model_id != request.model_id()) {
    return absl::PermissionDeniedError(
        absl::StrCat("training job \"", id, "\" is of model ",
                     it->second.model_id, ", not ", request.model_id()));
  }
  if (it->second.members.count(request.device()) == 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "training job \"", id, "\" belongs to other devices; device \"",
        request.device(), "\" was not named a member when it was created"));
  }
  return absl::OkStatus();
}

absl::Status Controller::SaveJobsLocked() const {
  if (config_.state_dir.empty()) return absl::OkStatus();
  nlohmann::json jobs = nlohmann::json::object();
  for (const auto& [id, job] : jobs_) {
    jobs[id] = {{"model", job.model_id}, {"members", job.members}};
  }
  std::error_code ec;
  std::filesystem::create_directories(config_.state_dir, ec);
  const nlohmann::json state = {{"version", 1}, {"jobs", jobs}};
  return WriteFileAtomically(config_.state_dir + "/jobs.json", state.dump(1),
                             0600);
}

absl::Status Controller::LoadState() {
  if (config_.state_dir.empty()) return absl::OkStatus();
  const std::string path = config_.state_dir + "/jobs.json";
  if (!std::filesystem::exists(path)) return absl::OkStatus();
  ES_ASSIGN_OR_RETURN(nlohmann::json state, ReadUntrustedJson(path));
  auto bad = [&](const std::string& field, const std::string& what) {
    return absl::DataLossError(
        absl::StrCat(path, ": field \"", field, "\": ", what));
  };
  if (!state.is_object() || state.value("version", 0) != 1) {
    return bad("version", "missing or not 1");
  }
  const nlohmann::json& jobs = state["jobs"];
  if (!jobs.is_object()) return bad("jobs", "expected an object");
  std::map<std::string, Job> loaded;
  for (const auto& [id, j] : jobs.items()) {
    const std::string at = "jobs." + id;
    if (!j.is_object() || !j.contains("model") || !j["model"].is_string() ||
        !j.contains("members") || !j["members"].is_array()) {
      return bad(at, "expected {model, members}");
    }
    Job job;
    job.model_id = j["model"].get<std::string>();
    for (const nlohmann::json& m : j["members"]) {
      if (!m.is_string()) return bad(at + ".members", "expected names");
      job.members.insert(m.get<std::string>());
    }
    loaded[id] = std::move(job);
  }
  absl::MutexLock lock(&mu_);
  jobs_ = std::move(loaded);
  return absl::OkStatus();
}

absl::Status Controller::CheckJobMember(const std::string& job_id,
                                        const std::string& device) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no training job \"", job_id, "\" was opened here"));
  }
  if (it->second.members.count(device) == 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("device \"", device,
                     "\" is not a member of training job \"", job_id, "\""));
  }
  return absl::OkStatus();
}

bool Controller::CountSuspectReportLocked(const std::string& device) {
  const absl::Time now = clock_->Now();
  if (suspect_reports_.size() > 4096) {  // Forget devices quiet for a minute.
    for (auto it = suspect_reports_.begin(); it != suspect_reports_.end();) {
      const bool quiet =
          it->second.empty() || now - it->second.back() >= absl::Minutes(1);
      it = quiet ? suspect_reports_.erase(it) : std::next(it);
    }
  }
  std::deque<absl::Time>& times = suspect_reports_[device];
  while (!times.empty() && now - times.front() >= absl::Minutes(1)) {
    times.pop_front();
  }
  if (static_cast<int>(times.size()) >= config_.suspect_reports_per_minute) {
    return false;
  }
  times.push_back(now);
  return true;
}

}  // namespace edgesplit
