// Run-time CPU dispatch for the CPU kernels. Each kernel family is compiled
// once per instruction set (scalar C++, AVX2+FMA+F16C, AVX-512F/BW/VL + VNNI)
// in its own translation unit with that unit's -m flags; the dispatcher
// picks the best the CPU supports at first use. Tests and benchmarks may
// force a lower level to compare every variant on the same machine.
//
// Thread-safety: ActiveIsa() may be called from any thread. ForceIsa() is
// for tests and benchmarks and must not race with running kernels.
#ifndef EDGESPLIT_KERNELS_CPU_ISA_H_
#define EDGESPLIT_KERNELS_CPU_ISA_H_

#include <vector>

#include "absl/status/status.h"

namespace edgesplit::kernels {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* IsaName(Isa isa);

// The best level this CPU (and this build) supports.
Isa BestIsa();
// Every level this CPU supports, lowest first (always includes kScalar).
std::vector<Isa> SupportedIsas();
// The level kernels use now: BestIsa() unless forced.
Isa ActiveIsa();
// Makes kernels use `isa`; FAILED_PRECONDITION when the CPU lacks it.
absl::Status ForceIsa(Isa isa);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_ISA_H_
