#include "privacy/row_noise.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace edgesplit::privacy {
namespace {

constexpr size_t kBufferWords = 512;  // 4 KiB of key stream per refill.

}  // namespace

struct NoiseSource::Cipher {
  EVP_CIPHER_CTX* ctx = nullptr;
  ~Cipher() { EVP_CIPHER_CTX_free(ctx); }
};

NoiseSource::NoiseSource(const uint8_t key[32])
    : cipher_(std::make_unique<Cipher>()), buffer_(kBufferWords) {
  // ChaCha20 with a 16-byte IV (32-bit block counter, 96-bit nonce): the key
  // is fresh per source, so a zero IV is safe.
  uint8_t iv[16] = {};
  cipher_->ctx = EVP_CIPHER_CTX_new();
  if (cipher_->ctx == nullptr ||
      EVP_EncryptInit_ex(cipher_->ctx, EVP_chacha20(), nullptr, key, iv) != 1) {
    // Out of memory or a broken libcrypto: no safe way to go on.
    std::abort();
  }
  used_ = buffer_.size();
}

NoiseSource::~NoiseSource() = default;

absl::StatusOr<std::unique_ptr<NoiseSource>> NoiseSource::Secure() {
  uint8_t key[32];
  if (RAND_bytes(key, sizeof(key)) != 1) {
    return absl::InternalError("the system random generator failed");
  }
  auto source = std::unique_ptr<NoiseSource>(new NoiseSource(key));
  OPENSSL_cleanse(key, sizeof(key));
  return source;
}

std::unique_ptr<NoiseSource> NoiseSource::Seeded(uint64_t seed) {
  uint8_t key[32] = {};
  std::memcpy(key, &seed, sizeof(seed));
  key[31] = 0x5e;  // Never the same key as a Secure() one by accident.
  return std::unique_ptr<NoiseSource>(new NoiseSource(key));
}

void NoiseSource::Refill() {
  const int bytes = static_cast<int>(buffer_.size() * sizeof(uint64_t));
  std::vector<uint8_t> zeros(bytes, 0);
  int out = 0;
  if (EVP_EncryptUpdate(cipher_->ctx,
                        reinterpret_cast<uint8_t*>(buffer_.data()), &out,
                        zeros.data(), bytes) != 1 ||
      out != bytes) {
    std::abort();  // ChaCha20 cannot fail on a valid context.
  }
  used_ = 0;
}

uint64_t NoiseSource::Next64() {
  if (used_ == buffer_.size()) Refill();
  return buffer_[used_++];
}

double NoiseSource::Uniform() {
  return static_cast<double>((Next64() >> 11) + 1) * 0x1.0p-53;
}

double NoiseSource::Gaussian() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  const double r = std::sqrt(-2.0 * std::log(Uniform()));
  const double theta = 2.0 * M_PI * Uniform();
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

int64_t ClipRows(float* data, int64_t rows, int64_t cols, double clip) {
  int64_t clipped = 0;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = data + r * cols;
    double sq = 0;
    for (int64_t c = 0; c < cols; ++c) sq += double{row[c]} * row[c];
    const double norm = std::sqrt(sq);
    if (norm <= clip) continue;
    // Rounding to float may leave the norm a hair above clip; scaling by a
    // factor a few ulps smaller keeps the bound exact.
    const double scale = clip / norm * (1.0 - 1e-6);
    for (int64_t c = 0; c < cols; ++c) {
      row[c] = static_cast<float>(row[c] * scale);
    }
    ++clipped;
  }
  return clipped;
}

void AddGaussianNoise(float* data, int64_t n, double stddev,
                      NoiseSource& noise) {
  for (int64_t i = 0; i < n; ++i) {
    data[i] = static_cast<float>(data[i] + stddev * noise.Gaussian());
  }
}

absl::StatusOr<std::vector<double>> RowsRdp(int64_t rows, double sigma,
                                            const std::vector<double>& orders) {
  if (rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat("rows ", rows, " < 0"));
  }
  std::vector<double> rdp;
  for (double a : orders) {
    // Sensitivity 2·clip against noise σ·clip: multiplier σ/2.
    ES_ASSIGN_OR_RETURN(double one, SampledGaussianRdp(1.0, sigma / 2, a));
    rdp.push_back(rows * one);
  }
  return rdp;
}

absl::StatusOr<double> RowsEpsilon(int64_t rows, double sigma, double delta) {
  if (rows == 0) return 0.0;
  RdpAccountant spent;
  ES_ASSIGN_OR_RETURN(std::vector<double> rdp,
                      RowsRdp(rows, sigma, spent.orders()));
  ES_RETURN_IF_ERROR(spent.Add(rdp));
  ES_ASSIGN_OR_RETURN(EpsilonAt e, spent.Epsilon(delta));
  return e.epsilon;
}

absl::StatusOr<double> RowNoiseForEpsilon(double epsilon, double delta,
                                          int64_t rows) {
  if (rows < 1) {
    return absl::InvalidArgumentError(absl::StrCat("rows ", rows, " < 1"));
  }
  ES_ASSIGN_OR_RETURN(double half, NoiseForEpsilon(epsilon, delta, 1.0, rows));
  return 2 * half;
}

SequencePrivatizer::SequencePrivatizer(int64_t cols, double clip, double sigma,
                                       int64_t max_rows,
                                       std::unique_ptr<NoiseSource> noise)
    : cols_(cols),
      clip_(clip),
      sigma_(sigma),
      max_rows_(max_rows),
      noise_(std::move(noise)) {}

absl::Status SequencePrivatizer::Privatize(int64_t first,
                                           absl::Span<const int32_t> tokens,
                                           float* data) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t released = released_rows();
  if (first < 0 || first > released) {
    return absl::FailedPreconditionError(
        absl::StrCat("rows from position ", first, " but ", released,
                     " positions were released"));
  }
  for (int64_t i = 0; i < n && first + i < released; ++i) {
    if (tokens_[first + i] != tokens[i]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "position ", first + i, " was released for token ",
          tokens_[first + i], "; releasing it again for token ", tokens[i],
          " would spend privacy the generation was not calibrated for"));
    }
  }
  if (first + n > max_rows_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the noise was calibrated for ", max_rows_, " rows; releasing rows ",
        first, "..", first + n - 1, " would exceed the privacy budget"));
  }
  for (int64_t i = 0; i < n; ++i) {
    float* row = data + i * cols_;
    const int64_t pos = first + i;
    if (pos < released) {
      std::memcpy(row, rows_.data() + pos * cols_, cols_ * sizeof(float));
      continue;
    }
    clipped_ += ClipRows(row, 1, cols_, clip_);
    AddGaussianNoise(row, cols_, sigma_ * clip_, *noise_);
    tokens_.push_back(tokens[i]);
    rows_.insert(rows_.end(), row, row + cols_);
  }
  return absl::OkStatus();
}

}  // namespace edgesplit::privacy
