// libFuzzer target for the adapter registry's network handlers: PutBlob
// chunks, RegisterAdapter, ResolveAdapter / ReportHeld lookups,
// BlobService.ReadBlob, model copies (RegisterModelCopy, and splitting a
// file into parts), federated averaging rounds with client selection
// (AverageAdapters) and the adapter placement over what the registry then
// holds (demand and storage from the input). Each is fed a request parsed
// from the input, against one registry (on a temporary state_dir) that is
// reopened from disk now and then (the persisted files are read back and
// re-validated). Errors are fine; crashes (ASan, UBSan) and escaping
// exceptions are not.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

#include "controller/adapter_placement.h"
#include "controller/adapter_registry.h"
#include "controller/fed_average.h"
#include "controller/model_copies.h"
#include "delivery/blob_service.h"
#include "delivery/model_pack.h"

namespace {

std::string StateDir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/registry_fuzz_XXXXXX";
    const char* d = mkdtemp(tmpl);
    if (d == nullptr) std::abort();
    return std::string(d);
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<edgesplit::AdapterRegistry> registry;
  static std::unique_ptr<edgesplit::ModelCopyRegistry> copies;
  // Small: rounds fill it; selection of 2 once a job's devices reported.
  static edgesplit::FedAverager averager(1 << 16, "fed_memory_mb",
                                         edgesplit::FedSelection{2, 1.0, 1.0});
  if (size < 1 || size > (64 << 10)) return 0;
  try {
    if (registry == nullptr || data[0] == 0xff) {
      registry.reset();
      auto r = edgesplit::AdapterRegistry::Open(StateDir());
      if (!r.ok()) {
        // A persisted file the registry itself wrote must read back.
        std::abort();
      }
      registry = std::move(*r);
      auto m = edgesplit::ModelCopyRegistry::Open(StateDir());
      if (!m.ok()) std::abort();  // Its own file must read back too.
      copies = std::move(*m);
    }
    const uint8_t op = data[0] % 9;
    const void* body = data + 1;
    const int n = static_cast<int>(size - 1);
    switch (op) {
      case 0: {
        edgesplit::v1::PutBlobRequest req;
        if (req.ParseFromArray(body, n)) (void)registry->PutBlob(req);
        break;
      }
      case 1: {
        edgesplit::v1::RegisteredAdapter req;
        if (req.ParseFromArray(body, n)) (void)registry->Register(req);
        break;
      }
      case 2: {
        edgesplit::v1::ResolveAdapterRequest req;
        if (req.ParseFromArray(body, n)) {
          (void)registry->Find(req.model_id(), req.name());
          (void)registry->AddHolder(req.model_id(), req.name(), req.node());
        }
        break;
      }
      case 3: {
        edgesplit::v1::ReadBlobRequest req;
        if (req.ParseFromArray(body, n)) {
          (void)edgesplit::ServeReadBlob(*registry->store(), req);
        }
        break;
      }
      case 4: {
        // Placement of the registered adapters on a two-hop route, with
        // demand and storage from the input (a GetPlacementRequest's node
        // picks the per-server storage).
        edgesplit::AdapterPlacementInput in;
        const auto listed = registry->List("");
        in.adapters.assign(listed.adapters().begin(), listed.adapters().end());
        in.config.server_storage_bytes = int64_t{1} << (size % 40);
        for (const auto& a : in.adapters) {
          in.model_servers[a.model_id()] = {"a", "b"};
          in.demand[{a.model_id(), a.name()}] =
              static_cast<double>(data[(a.name().size() + 1) % size]);
        }
        (void)edgesplit::PlaceAdapters(in);
        break;
      }
      case 5: {
        edgesplit::v1::ModelCopy req;
        if (req.ParseFromArray(body, n)) {
          (void)copies->Register(req);
          (void)copies->Find(req.model_id(), req.name());
        }
        break;
      }
      case 6: {
        // A file being split into parts (safetensors: header and tensors).
        const absl::string_view bytes(reinterpret_cast<const char*>(body),
                                      static_cast<size_t>(n));
        size_t total = 0;
        for (absl::string_view part :
             edgesplit::SplitModelFile("x.safetensors", bytes)) {
          total += part.size();
        }
        if (total != bytes.size()) std::abort();  // Parts must tile it.
        break;
      }
      case 7: {
        // A device's round: few jobs and devices, so rounds complete and
        // selections form; some expire at once.
        edgesplit::v1::AverageAdaptersRequest req;
        if (req.ParseFromArray(body, n)) {
          req.set_devices(req.devices() % 4);
          req.set_round(req.round() % 3);
          const bool expire = (data[0] & 0x80) != 0;
          averager.Submit(
              req, absl::Now() + absl::Milliseconds(expire ? 0 : 60000),
              [](absl::StatusOr<edgesplit::v1::AverageAdaptersResponse>) {});
          if (expire) averager.Expire(absl::Now());
          if (averager.held_bytes() < 0) std::abort();
          // Now and then every round ends: nothing may stay held.
          if (data[size - 1] == 0x5a) {
            averager.Expire(absl::InfiniteFuture());
            if (averager.held_bytes() != 0) std::abort();
          }
        }
        break;
      }
      default:
        (void)registry->List(std::string(reinterpret_cast<const char*>(body),
                                         static_cast<size_t>(n)));
    }
  } catch (const std::exception& e) {
    std::abort();
  }
  return 0;
}
