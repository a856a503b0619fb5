#include "kernels/cpu/gemv.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv_internal.h"
#include "kernels/scalar_codecs.h"
#include "testing/random_floats.h"

namespace edgesplit::kernels {
namespace {

struct Matrix {
  WeightType type;
  int64_t out, in;
  std::vector<uint8_t> bytes;
  WeightView view() const { return {type, bytes.data(), out, in}; }
};

Matrix Make(WeightType type, const std::vector<float>& w, int64_t out,
            int64_t in) {
  Matrix m{type, out, in, {}};
  const int64_t rb = RowBytes(type, in);
  m.bytes.resize(static_cast<size_t>(rb * out));
  for (int64_t o = 0; o < out; ++o) {
    QuantizeRow(type, w.data() + o * in, in, m.bytes.data() + o * rb);
  }
  return m;
}

// The matrix in WeightLayout::kInterleaved16 (its own bytes; `rows` keeps the
// row layout's, for the references).
struct Grouped {
  std::vector<uint8_t> bytes;
  WeightView view(const Matrix& rows) const {
    return {rows.type, bytes.data(), rows.out, rows.in,
            WeightLayout::kInterleaved16};
  }
};

Grouped Group(const Matrix& m) {
  Grouped g{std::vector<uint8_t>(m.bytes.size())};
  ToLayout(WeightLayout::kInterleaved16, m.type, m.bytes.data(), m.out, m.in,
           g.bytes.data());
  return g;
}

std::vector<float> Random(int64_t n, uint32_t seed) {
  return testing::RandomNormal(n, seed);
}

bool IsK(WeightType type) { return BlockWeights(type) == kSuperBlockSize; }

// The exact product in double of what the kernels compute: the weights as
// stored, and for quantized weights x's rows as Q8_0 blocks. Also returns
// the sum of |terms| (the scale of the rounding error); Q4_K's kernels sum
// d * sc * q and dmin * m separately, each at most the sub-block's largest
// |w| more than w, so its terms count 2 * max|w| more.
void Reference(const Matrix& m, const std::vector<float>& x, int64_t rows,
               std::vector<double>* y, std::vector<double>* mag) {
  y->assign(static_cast<size_t>(rows * m.out), 0.0);
  mag->assign(y->size(), 0.0);
  std::vector<float> w(static_cast<size_t>(m.in)), xr(w.size());
  const int64_t rb = RowBytes(m.type, m.in);
  for (int64_t o = 0; o < m.out; ++o) {
    DequantizeRow(m.type, m.bytes.data() + o * rb, m.in, w.data());
    std::vector<double> extra(w.size(), 0.0);
    if (IsK(m.type)) {
      for (int64_t i = 0; i < m.in; i += 32) {
        double amax = 0;
        for (int j = 0; j < 32; ++j)
          amax = std::max<double>(amax, std::fabs(w[i + j]));
        for (int j = 0; j < 32; ++j) extra[i + j] = 2 * amax;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      if (!IsBlockType(m.type)) {
        std::memcpy(xr.data(), x.data() + r * m.in, m.in * 4);
      } else {
        std::vector<BlockQ8_0> q(static_cast<size_t>(m.in / 32));
        QuantizeRowQ8_0(x.data() + r * m.in, m.in, q.data());
        DequantizeRowQ8_0(q.data(), m.in, xr.data());
      }
      for (int64_t i = 0; i < m.in; ++i) {
        const double t = static_cast<double>(w[i]) * xr[i];
        (*y)[r * m.out + o] += t;
        (*mag)[r * m.out + o] += std::fabs(t) + extra[i] * std::fabs(xr[i]);
      }
    }
  }
}

struct Shape {
  int64_t out, in, rows;
};

class GemvTest : public ::testing::TestWithParam<WeightType> {};

// Every variant this CPU has, on odd shapes, against the exact product:
// float summation over n terms errs by at most n * eps * sum|terms|
// (recursive summation, Higham's gamma_n); quantized types sum per-block
// products in float (one term per block).
TEST_P(GemvTest, EveryVariantMatchesTheExactProduct) {
  const WeightType type = GetParam();
  std::vector<Shape> shapes = {{1, 32, 1},     {7, 64, 3},  {37, 96, 5},
                               {64, 1024, 16}, {9, 320, 4}, {130, 256, 2}};
  if (IsK(type)) {
    shapes = {{1, 256, 1},    {7, 512, 3}, {37, 768, 5},
              {64, 1024, 16}, {9, 256, 4}, {130, 256, 2}};
  }
  if (!IsBlockType(type)) {
    shapes.push_back({13, 33, 2});
    shapes.push_back({5, 7, 9});
    shapes.push_back({17, 100, 1});
  }
  for (const Shape& s : shapes) {
    Matrix m = Make(type, Random(s.out * s.in, 1), s.out, s.in);
    std::vector<float> x = Random(s.rows * s.in, 2);
    std::vector<double> want, mag;
    Reference(m, x, s.rows, &want, &mag);
    const double terms = !IsBlockType(type) ? s.in
                         : IsK(type)        ? s.in / 16 + 1
                                            : s.in / 32 + 1;
    for (Isa isa : SupportedIsas()) {
      std::vector<float> y(static_cast<size_t>(s.rows * s.out), NAN);
      GemvOn(isa, m.view(), x.data(), s.rows, y.data(), 0, s.out);
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_LE(std::fabs(y[i] - want[i]), 2 * terms * FLT_EPSILON * mag[i])
            << IsaName(isa) << " " << s.out << "x" << s.in << " rows " << s.rows
            << " at " << i;
      }
    }
  }
}

// With every scale exactly 1 and small integer values, all products and
// partial sums are exact in float, so each variant's integer dot products
// must agree with the exact integer result bit for bit (Q8_0 or Q4_0 in
// either layout; float weights too).
void ExpectExactIntegerProducts(WeightType type, bool interleaved) {
  const int64_t out = 32, in = 256, rows = 6;  // Two groups of 16.
  std::mt19937 rng(3);
  const int wmax = type == WeightType::kQ4_0 ? 8 : 127;
  std::uniform_int_distribution<int> wd(-wmax + 1, wmax - 1), xd(-127, 127);
  std::vector<float> w(out * in), x(rows * in);
  for (float& v : w) v = static_cast<float>(wd(rng));
  for (float& v : x) v = static_cast<float>(xd(rng));
  // One extreme per block pins the scale to 1: +-127 for Q8_0, -8 for Q4_0.
  for (int64_t i = 0; i < out * in; i += 32) {
    w[i] = type == WeightType::kQ4_0 ? -8.0f : 127.0f;
  }
  for (int64_t i = 0; i < rows * in; i += 32) x[i] = -127.0f;
  Matrix m = Make(type, w, out, in);
  const Grouped g = interleaved ? Group(m) : Grouped{};
  for (Isa isa : SupportedIsas()) {
    std::vector<float> y(rows * out);
    GemvOn(isa, interleaved ? g.view(m) : m.view(), x.data(), rows, y.data(), 0,
           out);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < out; ++o) {
        int64_t exact = 0;
        for (int64_t i = 0; i < in; ++i) {
          exact += static_cast<int64_t>(w[o * in + i]) *
                   static_cast<int64_t>(x[r * in + i]);
        }
        ASSERT_EQ(y[r * out + o], static_cast<float>(exact))
            << IsaName(isa) << " r" << r << " o" << o;
      }
    }
  }
}

TEST_P(GemvTest, IntegerDotProductsAreExactOnEveryVariant) {
  const WeightType type = GetParam();
  if (IsK(type)) GTEST_SKIP() << "KBlocksIntegerDotProductsAreExact covers it";
  ExpectExactIntegerProducts(type, /*interleaved=*/false);
}

// The threaded entry point computes each output exactly as the active
// variant does on one thread (chunking never splits a dot product).
TEST_P(GemvTest, ThreadedEqualsSingleThreadBitForBit) {
  const WeightType type = GetParam();
  const int64_t out = 1000, in = 512, rows = 5;
  Matrix m = Make(type, Random(out * in, 4), out, in);
  std::vector<float> x = Random(rows * in, 5);
  std::vector<float> one(rows * out), many(rows * out);
  GemvOn(ActiveIsa(), m.view(), x.data(), rows, one.data(), 0, out);
  SetKernelThreads(3);
  Gemv(m.view(), x.data(), rows, many.data());
  SetKernelThreads(1);
  EXPECT_EQ(0, std::memcmp(one.data(), many.data(), one.size() * 4));
}

// Prefill-sized products (x's rows quantized on the pool too): equal to
// one thread's, in each layout. The pooled call comes first, so the
// calling thread's buffers hold nothing it could reuse by mistake.
TEST_P(GemvTest, ManyRowsOnThePoolEqualOneThreadBitForBit) {
  const WeightType type = GetParam();
  const int64_t out = 48, in = 1024, rows = 70;  // rows * in > 2^16.
  Matrix m = Make(type, Random(out * in, 31), out, in);
  const Grouped g = IsBlockType(type) ? Group(m) : Grouped{};
  std::vector<float> x = Random(rows * in, 32);
  for (bool grouped : {false, true}) {
    if (grouped && !IsBlockType(type)) continue;
    const WeightView view = grouped ? g.view(m) : m.view();
    std::vector<float> one(rows * out), many(rows * out), other(out);
    std::vector<float> y = Random(in, 33);  // Overwrites those buffers.
    GemvOn(ActiveIsa(), view, y.data(), 1, other.data(), 0, out);
    SetKernelThreads(3);
    Gemv(view, x.data(), rows, many.data());
    SetKernelThreads(1);
    GemvOn(ActiveIsa(), view, x.data(), rows, one.data(), 0, out);
    EXPECT_EQ(0, std::memcmp(one.data(), many.data(), one.size() * 4))
        << (grouped ? "interleaved" : "rows");
  }
}

// A long prompt's quantized rows are not kept for the decode steps after
// it.
TEST(GemvBuffersTest, APromptsRowsAreLetGoAtTheNextStep) {
  const int64_t out = 16, in = 4096, rows = 2048;  // x: 8.5 MiB as Q8_0.
  Matrix m = Make(WeightType::kQ8_0, Random(out * in, 34), out, in);
  std::vector<float> x = Random(rows * in, 35), y(rows * out);
  GemvOn(ActiveIsa(), m.view(), x.data(), rows, y.data(), 0, out);
  EXPECT_GT(internal::PreparedInputBytes(), size_t{8} << 20);
  GemvOn(ActiveIsa(), m.view(), x.data(), 1, y.data(), 0, out);
  // The blocks are let go; the scales and sums (1 MiB each) may stay.
  EXPECT_LT(internal::PreparedInputBytes(), size_t{4} << 20);
}

// A row of a batch is computed exactly as that row alone, on every
// variant: batched decode gives each session the tokens it would get alone.
// Shapes with an odd number of blocks, weight rows past a whole tile and
// row counts past a whole group of the register tiles; long rows (67
// blocks) take the paired-weight-row tiles of the quantized types.
TEST_P(GemvTest, BatchedRowEqualsTheRowAloneBitForBit) {
  const WeightType type = GetParam();
  const int64_t unit = IsK(type) ? 256 : 32;
  for (const Shape& s : {Shape{13, 5 * unit, 7}, Shape{10, 4 * unit, 6},
                         Shape{13, 67 * unit, 9}}) {
    Matrix m = Make(type, Random(s.out * s.in, 9), s.out, s.in);
    std::vector<float> x = Random(s.rows * s.in, 10);
    for (Isa isa : SupportedIsas()) {
      std::vector<float> batch(static_cast<size_t>(s.rows * s.out));
      GemvOn(isa, m.view(), x.data(), s.rows, batch.data(), 0, s.out);
      for (int64_t r = 0; r < s.rows; ++r) {
        std::vector<float> alone(static_cast<size_t>(s.out));
        GemvOn(isa, m.view(), x.data() + r * s.in, 1, alone.data(), 0, s.out);
        ASSERT_EQ(0, std::memcmp(alone.data(), batch.data() + r * s.out,
                                 alone.size() * sizeof(float)))
            << IsaName(isa) << " " << s.out << "x" << s.in << " row " << r;
      }
    }
  }
}

TEST_P(GemvTest, ForcedVariantIsUsedAndUnsupportedOnesAreRefused) {
  const WeightType type = GetParam();
  const int64_t out = 40, in = 256;
  Matrix m = Make(type, Random(out * in, 6), out, in);
  std::vector<float> x = Random(in, 7), a(out), b(out);
  for (Isa isa : SupportedIsas()) {
    ASSERT_TRUE(ForceIsa(isa).ok());
    EXPECT_EQ(ActiveIsa(), isa);
    Gemv(m.view(), x.data(), 1, a.data());
    GemvOn(isa, m.view(), x.data(), 1, b.data(), 0, out);
    EXPECT_EQ(a, b) << IsaName(isa);
  }
  ASSERT_TRUE(ForceIsa(BestIsa()).ok());
  if (BestIsa() != Isa::kAvx512) {
    EXPECT_FALSE(ForceIsa(Isa::kAvx512).ok());
  }
}

TEST_P(GemvTest, DequantizeRowsMatchesRowByRow) {
  const WeightType type = GetParam();
  Matrix m = Make(type, Random(100 * 256, 8), 100, 256);
  std::vector<float> slice(30 * 256), row(256);
  DequantizeRows(m.view(), 50, 80, slice.data());
  for (int64_t o = 50; o < 80; ++o) {
    DequantizeRow(type, m.bytes.data() + o * RowBytes(type, 256), 256,
                  row.data());
    EXPECT_EQ(0, std::memcmp(row.data(), slice.data() + (o - 50) * 256, 1024));
  }
}

// Every variant's dequantization (prefill's) is DequantizeRow's bit for
// bit, in each layout the type has, for ranges that cut groups; the rows'
// magnitudes run from 2^-28 (zero and subnormal fp16 scales) to 2^8.
TEST_P(GemvTest, DequantizeOnEveryVariantIsDequantizeRowBitForBit) {
  const WeightType type = GetParam();
  const int64_t out = 48, in = 512, rb = RowBytes(type, in);
  std::vector<float> w = Random(out * in, 30);
  for (int64_t o = 0; o < out; ++o) {
    const float s = std::ldexp(1.0f, -28 + static_cast<int>(o * 36 / out));
    for (int64_t i = 0; i < in; ++i) w[o * in + i] *= s;
  }
  Matrix m = Make(type, w, out, in);
  std::vector<float> want(out * in);
  for (int64_t o = 0; o < out; ++o) {
    DequantizeRow(type, m.bytes.data() + o * rb, in, want.data() + o * in);
  }
  const bool interleaves = IsBlockType(type);
  const Grouped g = interleaves ? Group(m) : Grouped{};
  for (Isa isa : SupportedIsas()) {
    for (bool grouped : {false, true}) {
      if (grouped && !interleaves) continue;
      const WeightView view = grouped ? g.view(m) : m.view();
      for (auto [o0, o1] :
           {std::pair<int64_t, int64_t>{0, out}, {5, 35}, {17, 18}}) {
        std::vector<float> got((o1 - o0) * in, -1.0f);
        DequantizeRowsOn(isa, view, o0, o1, got.data());
        ASSERT_EQ(0, std::memcmp(got.data(), want.data() + o0 * in,
                                 got.size() * sizeof(float)))
            << IsaName(isa) << (grouped ? " interleaved" : " rows") << " ["
            << o0 << ", " << o1 << ")";
      }
    }
  }
}

// K blocks built by hand with unit scales (d = dmin = 1, every sub-block
// scale 1, Q4_K's mins 8) and random codes: weights are small integers, so
// every variant's result must equal the exact integer product.
TEST(GemvKTest, KBlocksIntegerDotProductsAreExact) {
  const int64_t out = 32, in = 512, rows = 5;
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> byte(0, 255), xd(-127, 127);
  std::vector<float> x(rows * in);
  for (float& v : x) v = static_cast<float>(xd(rng));
  for (int64_t i = 0; i < rows * in; i += 32) x[i] = -127.0f;  // dx = 1.
  for (WeightType type : {WeightType::kQ4_K, WeightType::kQ6_K}) {
    Matrix m{type, out, in, std::vector<uint8_t>(RowBytes(type, in) * out)};
    for (uint8_t& b : m.bytes) b = static_cast<uint8_t>(byte(rng));
    const uint16_t one = Fp32ToFp16Bits(1.0f);
    for (int64_t s = 0; s < out * in / 256; ++s) {
      if (type == WeightType::kQ4_K) {
        auto* b = reinterpret_cast<BlockQ4_K*>(m.bytes.data()) + s;
        b->d = b->dmin = one;
        // sc = 1, m = 8 for sub-blocks 0..7 (high bits of 4..7 are zero).
        for (int j = 0; j < 4; ++j) {
          b->scales[j] = 1;
          b->scales[j + 4] = 8;
          b->scales[j + 8] = 1 | (8 << 4);
        }
      } else {
        auto* b = reinterpret_cast<BlockQ6_K*>(m.bytes.data()) + s;
        b->d = one;
        for (int8_t& sc : b->scales)
          sc = static_cast<int8_t>(byte(rng) % 5 - 2);
      }
    }
    std::vector<float> w(in);
    const Grouped g = Group(m);
    for (int layout = 0; layout < 2; ++layout)
      for (Isa isa : SupportedIsas()) {
        std::vector<float> y(rows * out);
        GemvOn(isa, layout == 0 ? m.view() : g.view(m), x.data(), rows,
               y.data(), 0, out);
        for (int64_t o = 0; o < out; ++o) {
          DequantizeRow(type, m.bytes.data() + o * RowBytes(type, in), in,
                        w.data());
          for (int64_t r = 0; r < rows; ++r) {
            int64_t exact = 0;
            for (int64_t i = 0; i < in; ++i) {
              exact += static_cast<int64_t>(w[i]) *
                       static_cast<int64_t>(x[r * in + i]);
            }
            ASSERT_EQ(y[r * out + o], static_cast<float>(exact))
                << WeightTypeName(type) << " " << IsaName(isa) << " layout "
                << layout << " r" << r << " o" << o;
          }
        }
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, GemvTest,
                         ::testing::Values(WeightType::kF32, WeightType::kQ8_0,
                                           WeightType::kQ4_0, WeightType::kQ4_K,
                                           WeightType::kQ6_K, WeightType::kF16),
                         [](const auto& info) {
                           return std::string(WeightTypeName(info.param));
                         });

class GemvInterleavedTest : public ::testing::TestWithParam<WeightType> {};

// The interleaved layout holds the same weights: every row dequantizes as
// the row layout's, on the pool and on the calling thread, from ranges
// that cut groups.
TEST_P(GemvInterleavedTest, HoldsTheRowLayoutsWeights) {
  const int64_t out = 48, in = 3 * BlockWeights(GetParam());
  Matrix m = Make(GetParam(), Random(out * in, 20), out, in);
  Grouped g = Group(m);
  std::vector<float> want(out * in), here(out * in), pooled(30 * in);
  DequantizeRows(m.view(), 0, out, want.data());
  DequantizeRowsHere(g.view(m), 0, out, here.data());
  EXPECT_EQ(want, here);
  DequantizeRows(g.view(m), 5, 35, pooled.data());
  EXPECT_EQ(0, std::memcmp(pooled.data(), want.data() + 5 * in,
                           pooled.size() * sizeof(float)));
}

// Every variant on the interleaved layout: within the float-summation bound
// of the exact product (the Q4_0 row layout's bound), bit for bit the
// scalar reference's, for any range of rows (the AVX-512 form stores whole
// groups under a mask), and a row of a batch equals the row alone.
TEST_P(GemvInterleavedTest, EveryVariantComputesTheScalarReferenceBitForBit) {
  const int64_t u = BlockWeights(GetParam());
  for (const Shape& s : {Shape{16, u, 1}, Shape{32, 3 * u, 5},
                         Shape{48, 67 * u, 9}, Shape{64, 1024, 16}}) {
    Matrix m = Make(GetParam(), Random(s.out * s.in, 21), s.out, s.in);
    Grouped g = Group(m);
    std::vector<float> x = Random(s.rows * s.in, 22);
    std::vector<double> want, mag;
    Reference(m, x, s.rows, &want, &mag);
    std::vector<float> ref(static_cast<size_t>(s.rows * s.out), NAN);
    GemvOn(Isa::kScalar, g.view(m), x.data(), s.rows, ref.data(), 0, s.out);
    for (size_t i = 0; i < ref.size(); ++i) {
      const double terms = s.in / (IsK(GetParam()) ? 16 : 32) + 1;
      ASSERT_LE(std::fabs(ref[i] - want[i]), 2 * terms * FLT_EPSILON * mag[i])
          << s.out << "x" << s.in << " at " << i;
    }
    for (Isa isa : SupportedIsas()) {
      std::vector<float> y(ref.size(), NAN);
      GemvOn(isa, g.view(m), x.data(), s.rows, y.data(), 0, s.out);
      ASSERT_EQ(0, std::memcmp(y.data(), ref.data(), y.size() * 4))
          << IsaName(isa) << " " << s.out << "x" << s.in;
      // Rows [3, out - 2): the first and last groups are cut.
      std::vector<float> part(ref.size(), -1.0f);
      GemvOn(isa, g.view(m), x.data(), s.rows, part.data(), 3, s.out - 2);
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t o = 0; o < s.out; ++o) {
          const float expect =
              o >= 3 && o < s.out - 2 ? ref[r * s.out + o] : -1.0f;
          ASSERT_EQ(part[r * s.out + o], expect)
              << IsaName(isa) << " r" << r << " o" << o;
        }
      }
      for (int64_t r = 0; r < s.rows; ++r) {
        std::vector<float> alone(static_cast<size_t>(s.out));
        GemvOn(isa, g.view(m), x.data() + r * s.in, 1, alone.data(), 0, s.out);
        ASSERT_EQ(0, std::memcmp(alone.data(), ref.data() + r * s.out,
                                 alone.size() * 4))
            << IsaName(isa) << " row " << r;
      }
    }
  }
}

// Unit scales and small integers: the interleaved kernels' integer dot
// products (Q4_0's nibbles and Q8_0's flipped codes, their offsets through
// x's code sums) are exact.
TEST_P(GemvInterleavedTest, IntegerDotProductsAreExact) {
  if (IsK(GetParam())) GTEST_SKIP() << "KBlocksIntegerDotProductsAreExact";
  ExpectExactIntegerProducts(GetParam(), /*interleaved=*/true);
}

// On the pool, chunks hold whole groups: threaded equals one thread.
TEST_P(GemvInterleavedTest, ThreadedEqualsSingleThreadBitForBit) {
  const int64_t out = 1008, in = 512, rows = 5;
  Matrix m = Make(GetParam(), Random(out * in, 24), out, in);
  Grouped g = Group(m);
  std::vector<float> x = Random(rows * in, 25);
  std::vector<float> one(rows * out), many(rows * out);
  GemvOn(ActiveIsa(), g.view(m), x.data(), rows, one.data(), 0, out);
  SetKernelThreads(3);
  Gemv(g.view(m), x.data(), rows, many.data());
  SetKernelThreads(1);
  EXPECT_EQ(0, std::memcmp(one.data(), many.data(), one.size() * 4));
}

// Interleaved only where its kernels run: the block types, whole groups,
// AVX-512.
TEST(GemvInterleavedLayoutTest, PreferredWhereItsKernelRuns) {
  const bool avx512 = ActiveIsa() == Isa::kAvx512;
  for (WeightType type : {WeightType::kQ4_0, WeightType::kQ8_0,
                          WeightType::kQ4_K, WeightType::kQ6_K}) {
    EXPECT_EQ(PreferredLayout(type, 2048),
              avx512 ? WeightLayout::kInterleaved16 : WeightLayout::kRows);
    EXPECT_EQ(PreferredLayout(type, 40), WeightLayout::kRows);
  }
  EXPECT_EQ(PreferredLayout(WeightType::kF16, 2048), WeightLayout::kRows);
  EXPECT_EQ(PreferredLayout(WeightType::kF32, 2048), WeightLayout::kRows);
  EXPECT_EQ(GemvForAnyRows(WeightType::kQ4_K), avx512);
  EXPECT_FALSE(GemvForAnyRows(WeightType::kF32));
  EXPECT_FALSE(GemvForAnyRows(WeightType::kF16));
  if (avx512) {
    ASSERT_TRUE(ForceIsa(Isa::kAvx2).ok());
    EXPECT_EQ(PreferredLayout(WeightType::kQ4_0, 2048), WeightLayout::kRows);
    EXPECT_FALSE(GemvForAnyRows(WeightType::kQ4_0));
    ASSERT_TRUE(ForceIsa(BestIsa()).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Types, GemvInterleavedTest,
                         ::testing::Values(WeightType::kQ4_0, WeightType::kQ8_0,
                                           WeightType::kQ4_K,
                                           WeightType::kQ6_K),
                         [](const auto& info) {
                           return std::string(WeightTypeName(info.param));
                         });

}  // namespace
}  // namespace edgesplit::kernels
