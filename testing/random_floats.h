// Test and benchmark data: n floats drawn from N(0, 1) by a seeded
// mt19937, the same sequence for the same seed on every machine that shares
// the standard library's normal_distribution (tests compare kernels with
// each other on the same draws, never with stored values).
#ifndef EDGESPLIT_TESTING_RANDOM_FLOATS_H_
#define EDGESPLIT_TESTING_RANDOM_FLOATS_H_

#include <cstdint>
#include <random>
#include <vector>

namespace edgesplit::testing {

inline std::vector<float> RandomNormal(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

}  // namespace edgesplit::testing

#endif  // EDGESPLIT_TESTING_RANDOM_FLOATS_H_
