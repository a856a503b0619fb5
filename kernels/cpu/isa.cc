#include "kernels/cpu/isa.h"

#include <atomic>

#if EDGESPLIT_X86_KERNELS
#include <cpuid.h>
#endif

#include "absl/strings/str_cat.h"

namespace edgesplit::kernels {
namespace {

#if EDGESPLIT_X86_KERNELS
// CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports has no "f16c").
bool HasF16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & (1u << 29)) != 0;
}
#endif

Isa DetectIsa() {
#if EDGESPLIT_X86_KERNELS
  __builtin_cpu_init();
  // The AVX-512 kernels use F (arithmetic), BW (byte shuffles), VL (the
  // 256-bit forms of VNNI) and VNNI (int8 dot products): all present on
  // Ice Lake and later and on Zen 4; requiring the set keeps one variant.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni") && HasF16c()) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      HasF16c()) {
    return Isa::kAvx2;
  }
#endif
  return Isa::kScalar;
}

std::atomic<int> forced{-1};

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

Isa BestIsa() {
  static const Isa best = DetectIsa();
  return best;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (int i = 0; i <= static_cast<int>(BestIsa()); ++i) {
    out.push_back(static_cast<Isa>(i));
  }
  return out;
}

Isa ActiveIsa() {
  const int f = forced.load(std::memory_order_relaxed);
  return f < 0 ? BestIsa() : static_cast<Isa>(f);
}

absl::Status ForceIsa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(BestIsa())) {
    return absl::FailedPreconditionError(
        absl::StrCat("this CPU does not support ", IsaName(isa), " (best is ",
                     IsaName(BestIsa()), ")"));
  }
  forced.store(static_cast<int>(isa), std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace edgesplit::kernels
