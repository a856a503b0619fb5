// libFuzzer target for the adapter registry's network handlers: PutBlob
// chunks, RegisterAdapter, ResolveAdapter / ReportHeld lookups and
// BlobService.ReadBlob, each fed a request parsed from the input, against
// one registry (on a temporary state_dir) that is reopened from disk now
// and then (the persisted file is read back and re-validated). Errors are
// fine; crashes (ASan, UBSan) and escaping exceptions are not.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

#include "controller/adapter_registry.h"
#include "delivery/blob_service.h"

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
    }
    const uint8_t op = data[0] % 5;
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
      default:
        (void)registry->List(std::string(reinterpret_cast<const char*>(body),
                                         static_cast<size_t>(n)));
    }
  } catch (const std::exception& e) {
    std::abort();
  }
  return 0;
}
