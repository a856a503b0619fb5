#include "kernels/cpu/lora_sgmv.h"

#include <algorithm>
#include <cassert>
#include <vector>

#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/isa.h"

namespace edgesplit::kernels {
namespace {

// A block of output rows of one segment's shrink or expand.
struct Task {
  int64_t segment;
  int64_t o0, o1;
};

// Splits each segment's `n(segment)` output rows into blocks of about
// `block` rows: enough tasks for the pool, each still long enough that the
// GEMV's inner loops dominate.
template <typename RowsOf>
void Tasks(int64_t count, int64_t block, RowsOf n, std::vector<Task>& tasks) {
  tasks.clear();
  for (int64_t s = 0; s < count; ++s) {
    const int64_t rows = n(s);
    for (int64_t o = 0; o < rows; o += block) {
      tasks.push_back({s, o, std::min(rows, o + block)});
    }
  }
}

}  // namespace

void LoraSgmv(const LoraSegment* segments, int64_t count, const float* x,
              int64_t in, int64_t out, float* y) {
  if (count <= 0 || in <= 0 || out <= 0) return;
  // Scratch: each segment's low-rank rows and its delta, at offsets
  // computed up front, and the task lists. Per-thread and reused (this runs
  // for every linear layer of every decode step); the workers reach the
  // caller's buffers only through the raw pointers below (a thread_local
  // named inside the lambdas would be the worker's own).
  thread_local std::vector<float> low_buf, delta_buf;
  thread_local std::vector<int64_t> offsets;  // low | delta, per segment
  thread_local std::vector<Task> shrink_buf, expand_buf;
  offsets.resize(static_cast<size_t>(2 * count));
  int64_t* low_at = offsets.data();
  int64_t* delta_at = low_at + count;
  int64_t low_size = 0, delta_size = 0;
  for (int64_t s = 0; s < count; ++s) {
    assert(segments[s].rows >= 0 && segments[s].rank > 0);
    low_at[s] = low_size;
    delta_at[s] = delta_size;
    low_size += segments[s].rows * segments[s].rank;
    delta_size += segments[s].rows * out;
  }
  if (delta_size == 0) return;
  low_buf.resize(static_cast<size_t>(low_size));
  delta_buf.resize(static_cast<size_t>(delta_size));
  float* low = low_buf.data();
  float* delta = delta_buf.data();
  const Isa isa = ActiveIsa();

  // Shrink: low [rows, rank] = x[rows] A^T, a block of A's rows per task.
  Tasks(
      count, 8, [&](int64_t s) { return segments[s].rank; }, shrink_buf);
  const Task* shrink = shrink_buf.data();
  ParallelFor(
      static_cast<int64_t>(shrink_buf.size()), 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const LoraSegment& g = segments[shrink[t].segment];
          if (g.rows == 0) continue;
          GemvOn(isa, {WeightType::kF32, g.a, g.rank, in}, x + g.row_begin * in,
                 g.rows, low + low_at[shrink[t].segment], shrink[t].o0,
                 shrink[t].o1);
        }
      });
  // Expand: delta [rows, out] = low B^T, then y += scaling * delta, a
  // block of B's rows (columns of y) per task.
  Tasks(
      count, 256, [&](int64_t) { return out; }, expand_buf);
  const Task* expand = expand_buf.data();
  ParallelFor(static_cast<int64_t>(expand_buf.size()), 1,
              [&](int64_t t0, int64_t t1) {
                for (int64_t t = t0; t < t1; ++t) {
                  const int64_t s = expand[t].segment;
                  const LoraSegment& g = segments[s];
                  if (g.rows == 0) continue;
                  const int64_t o0 = expand[t].o0, o1 = expand[t].o1;
                  float* d = delta + delta_at[s];
                  GemvOn(isa, {WeightType::kF32, g.b, out, g.rank},
                         low + low_at[s], g.rows, d, o0, o1);
                  for (int64_t r = 0; r < g.rows; ++r) {
                    float* yr = y + (g.row_begin + r) * out;
                    const float* dr = d + r * out;
                    for (int64_t o = o0; o < o1; ++o)
                      yr[o] += g.scaling * dr[o];
                  }
                }
              });
}

}  // namespace edgesplit::kernels
