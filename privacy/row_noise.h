// The device's privacy mechanism for what it sends: every row (one token's
// activation at the cut, or its gradient) is clipped to L2 norm `clip` and
// gets N(0, (σ·clip)²) noise in every coordinate before it is encoded for
// the wire. Runs on the device only (the servers are the party protected
// against).
//
// Why rows and what ε means: after clipping, any two inputs of the same
// length give rows that differ by at most 2·clip each (the rows after a
// changed token change too, through attention), so releasing n noisy rows
// is n Gaussian mechanisms of sensitivity 2·clip with noise σ·clip, i.e.
// RDP(α) = n · 2α/σ² = n · SampledGaussianRdp(1, σ/2, α). The guarantee
// covers the whole text (prompt and continuation), not one token of it;
// only the length is public.
//
// Noise comes from a ChaCha20 key stream (OpenSSL) keyed from the system's
// CSPRNG (RAND_bytes); Seeded() exists for tests and benchmarks only.
// Gaussians are drawn in double by Box–Muller from 53-bit uniforms and
// added before rounding to float. Known limitation (Mironov 2012; Jin et
// al. 2021): floating-point noise is not an exact Gaussian, and rounding
// can leak low-order bits; the accounting treats it as exact, as Opacus and
// TF Privacy do.
#ifndef EDGESPLIT_PRIVACY_ROW_NOISE_H_
#define EDGESPLIT_PRIVACY_ROW_NOISE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "privacy/rdp_accountant.h"

namespace edgesplit::privacy {

// Not thread-safe: one per sequence (or per thread).
class NoiseSource {
 public:
  // Keyed from RAND_bytes; INTERNAL if the system CSPRNG fails.
  static absl::StatusOr<std::unique_ptr<NoiseSource>> Secure();
  // Reproducible: for tests and benchmarks only (predictable noise gives
  // no privacy).
  static std::unique_ptr<NoiseSource> Seeded(uint64_t seed);
  ~NoiseSource();
  NoiseSource(const NoiseSource&) = delete;
  NoiseSource& operator=(const NoiseSource&) = delete;

  // Uniform in (0, 1] with 53 random bits.
  double Uniform();
  // Standard normal.
  double Gaussian();

 private:
  struct Cipher;
  explicit NoiseSource(const uint8_t key[32]);
  uint64_t Next64();
  void Refill();

  std::unique_ptr<Cipher> cipher_;
  std::vector<uint64_t> buffer_;
  size_t used_ = 0;
  double spare_ = 0;  // Box–Muller's second value.
  bool has_spare_ = false;
};

// Scales each row of `data` (rows × cols, row-major) whose L2 norm exceeds
// `clip` (> 0) down to norm `clip`; the rest are left bit-for-bit. Returns
// how many rows were scaled.
int64_t ClipRows(float* data, int64_t rows, int64_t cols, double clip);

// Adds N(0, stddev²) to each of `n` values.
void AddGaussianNoise(float* data, int64_t n, double stddev,
                      NoiseSource& noise);

// What a generation (or any sequence of released rows) spends: the RDP at
// each of `orders` of `rows` rows released with noise multiplier `sigma`.
absl::StatusOr<std::vector<double>> RowsRdp(
    int64_t rows, double sigma,
    const std::vector<double>& orders = DefaultOrders());

// The epsilon at `delta` of `rows` rows released with multiplier `sigma`
// (0 for no rows).
absl::StatusOr<double> RowsEpsilon(int64_t rows, double sigma, double delta);

// The noise multiplier with which `rows` released rows stay within
// (epsilon, delta).
absl::StatusOr<double> RowNoiseForEpsilon(double epsilon, double delta,
                                          int64_t rows);

// One sequence's released rows, by position. Each position is released
// once: a later request for the same position (a replay after a route
// change rebuilds the servers' KV caches from the start) gets the row
// released before, not a fresh noisy copy, so replays spend nothing. At
// most `max_rows` positions: the number the noise was calibrated for.
// Not thread-safe.
class SequencePrivatizer {
 public:
  SequencePrivatizer(int64_t cols, double clip, double sigma, int64_t max_rows,
                     std::unique_ptr<NoiseSource> noise);

  // Rows of positions [first, first + tokens.size()) in `data` (row-major,
  // `cols` wide), keyed by their token ids: new positions are clipped and
  // noised (and kept), released ones replaced by their release.
  // FAILED_PRECONDITION for a position released with another token (that
  // would be a second release) or beyond max_rows; nothing changes then.
  absl::Status Privatize(int64_t first, absl::Span<const int32_t> tokens,
                         float* data);

  int64_t released_rows() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t clipped_rows() const { return clipped_; }
  double sigma() const { return sigma_; }
  double clip() const { return clip_; }

 private:
  const int64_t cols_;
  const double clip_;
  const double sigma_;
  const int64_t max_rows_;
  std::unique_ptr<NoiseSource> noise_;
  std::vector<int32_t> tokens_;  // Released positions' tokens.
  std::vector<float> rows_;      // Their released rows.
  int64_t clipped_ = 0;
};

}  // namespace edgesplit::privacy

#endif  // EDGESPLIT_PRIVACY_ROW_NOISE_H_
