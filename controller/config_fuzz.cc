// libFuzzer target for the YAML every daemon and the CLI read from
// operators: the controller's config, plan files, what-if cluster files
// and the edge server's config (scripts/fuzz.sh builds and runs it; the
// shipped configs/ are its seeds). Each input goes through every parser and
// Validate: errors are fine, exceptions and crashes (ASan, UBSan) are not.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>

#include "controller/cluster_file.h"
#include "controller/controller.h"
#include "controller/plan.h"
#include "edge_server/server_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return 0;  // Configs are small; keep runs fast.
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    if (auto c = edgesplit::ParseControllerConfig(text, "/c/controller.yaml");
        c.ok()) {
      (void)c->Validate();
    }
    (void)edgesplit::ParsePlanYaml(text, "/c/plan.yaml");
    (void)edgesplit::ParseClusterFile(text, "/c/what-if.yaml");
    if (auto s = edgesplit::ParseServerConfig(text, "/c/server.yaml"); s.ok()) {
      (void)s->Validate();
    }
  } catch (const std::exception& e) {
    std::abort();  // A parser let an exception out.
  }
  return 0;
}
