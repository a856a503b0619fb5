#include "runtime/linear_weight.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv.h"

namespace edgesplit {
namespace {

kernels::WeightView View(const LinearWeight& w) { return w.View(); }

// Rows [o, o + n) of `w` as floats, on the calling thread: between two
// GEMMs, waking the kernel pool would leave its workers spinning on the
// cores OpenBLAS is about to use.
void DequantizeSlice(const LinearWeight& w, int64_t o, int64_t n, float* out) {
  kernels::DequantizeRowsHere(w.View(), o, o + n, out);
}

// Rows of dequantized weights per GEMM slice (the ATen path and the
// backward of quantized weights): large enough
// for GEMM to run at speed, small enough that the float copy stays far
// below the quantized matrix itself.
constexpr int64_t kSliceRows = 256;

at::Tensor QuantizedGemm(const LinearWeight& w, const at::Tensor& x) {
  const int64_t rows = x.size(0);
  at::Tensor y = at::empty({rows, w.out}, at::kFloat);
  at::Tensor slice = at::empty({std::min(kSliceRows, w.out), w.in}, at::kFloat);
  for (int64_t o = 0; o < w.out; o += kSliceRows) {
    const int64_t n = std::min(kSliceRows, w.out - o);
    at::Tensor s = slice.narrow(0, 0, n);
    DequantizeSlice(w, o, n, s.data_ptr<float>());
    y.narrow(1, o, n).copy_(at::mm(x, s.t()));
  }
  return y;
}

}  // namespace

kernels::WeightView LinearWeight::View() const {
  const void* data = type == kernels::WeightType::kF32
                         ? dense.data_ptr()
                         : static_cast<const void*>(blocks.data_ptr());
  return {type, data, out, in, layout};
}

void PackForDecode(LinearWeight* w) {
  if (w->type == kernels::WeightType::kF32 ||
      w->layout != kernels::WeightLayout::kRows) {
    return;
  }
  const kernels::WeightLayout layout =
      kernels::PreferredLayout(w->type, w->out);
  if (layout == kernels::WeightLayout::kRows) return;
  at::Tensor packed = at::empty_like(w->blocks, at::MemoryFormat::Contiguous);
  kernels::ToLayout(layout, w->type, w->blocks.data_ptr<uint8_t>(), w->out,
                    w->in, packed.data_ptr<uint8_t>());
  w->blocks = std::move(packed);
  w->layout = layout;
}

int64_t LinearWeight::Bytes() const {
  return dense.defined() ? dense.nbytes() : blocks.nbytes();
}

at::Tensor LinearWeight::Dense() const {
  if (type == kernels::WeightType::kF32) return dense.to(at::kFloat);
  at::Tensor out_t = at::empty({out, in}, at::kFloat);
  kernels::DequantizeRows(View(), 0, out, out_t.data_ptr<float>());
  return out_t;
}

absl::StatusOr<LinearWeight> MakeLinearWeight(const at::Tensor& w,
                                              kernels::WeightType type,
                                              const std::string& name) {
  LinearWeight lw;
  lw.type = type;
  lw.out = w.size(0);
  lw.in = w.size(1);
  // K formats need rows of 256; narrower ones fall back as llama.cpp does
  // (to the 32-weight type of about the same size).
  if (!kernels::CheckCols(type, lw.in)) {
    if (type == kernels::WeightType::kQ4_K) type = kernels::WeightType::kQ4_0;
    if (type == kernels::WeightType::kQ6_K) type = kernels::WeightType::kQ8_0;
    lw.type = type;
  }
  if (type == kernels::WeightType::kF32 || !kernels::CheckCols(type, lw.in)) {
    // A width the blocks do not divide stays exact (as llama.cpp falls back
    // to another type for such tensors); Bytes() shows what it costs.
    lw.type = kernels::WeightType::kF32;
    lw.dense = w.contiguous();
    return lw;
  }
  at::Tensor wf = w.to(at::kFloat).contiguous();
  if (!at::isfinite(wf).all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight \"", name, "\" holds inf or NaN: cannot quantize it"));
  }
  const int64_t row_bytes = kernels::RowBytes(type, lw.in);
  lw.blocks = at::empty({lw.out * row_bytes}, at::kByte);
  const float* src = wf.data_ptr<float>();
  uint8_t* dst = lw.blocks.data_ptr<uint8_t>();
  kernels::ParallelFor(lw.out, 64, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      kernels::QuantizeRow(type, src + o * lw.in, lw.in, dst + o * row_bytes);
    }
  });
  return lw;
}

namespace {

// Whether y = x W^T goes through the GEMV kernels (with or without
// autograd: one decision, so both give the same numbers): at any row count
// where the kernels say they beat GEMM (quantized weights with AVX-512
// VNNI; perplexity +0.04% -> +0.07% for q8_0, quantized_stage_test, and a
// prompt's row equals the row decoded alone), else up to kGemvMaxRows.
bool OnGemv(const LinearWeight& w, const at::Tensor& x, bool use_kernels) {
  if (!use_kernels || x.scalar_type() != at::kFloat) return false;
  if (kernels::GemvForAnyRows(w.type)) return true;
  return (w.type != kernels::WeightType::kF32 ||
          w.dense.scalar_type() == at::kFloat) &&
         x.size(0) <= kGemvMaxRows;
}

// y = x W^T (+ bias) without autograd, by the fastest path for the shape.
at::Tensor ForwardNoGrad(const LinearWeight& w, const at::Tensor& x,
                         const at::Tensor& bias, bool use_kernels) {
  const int64_t rows = x.size(0);
  if (OnGemv(w, x, use_kernels)) {
    at::Tensor xc = x.contiguous();
    at::Tensor y = at::empty({rows, w.out}, at::kFloat);
    kernels::Gemv(View(w), xc.data_ptr<float>(), rows, y.data_ptr<float>());
    return bias.defined() ? y.add_(bias) : y;
  }
  if (w.type != kernels::WeightType::kF32) {
    at::Tensor y = QuantizedGemm(w, x.to(at::kFloat).contiguous());
    return bias.defined() ? y.add_(bias) : y;
  }
  return at::linear(x, w.dense, bias);
}

// The same product under autograd: the forward takes the same path as
// without it (so a forward gives the same numbers whether or not a
// backward follows: recomputation and evaluation agree with training),
// and the backward is grad_x = grad_y W, with quantized weights
// dequantized slice by slice (QLoRA: the frozen base costs its blocks,
// never a float copy).
struct LinearFunction : torch::autograd::Function<LinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x, int64_t weight_address,
                            bool gemv) {
    ctx->saved_data["w"] = weight_address;
    at::AutoDispatchBelowADInplaceOrView guard;
    return ForwardNoGrad(*Weight(weight_address), x, at::Tensor(), gemv);
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad) {
    const LinearWeight& w = *Weight(ctx->saved_data["w"].toInt());
    const at::Tensor& gy = grad[0];
    at::Tensor gx;
    if (w.type == kernels::WeightType::kF32) {
      gx = at::mm(gy, w.dense.to(gy.scalar_type()));
    } else {
      gx = at::zeros({gy.size(0), w.in}, at::kFloat);
      at::Tensor slice =
          at::empty({std::min(kSliceRows, w.out), w.in}, at::kFloat);
      at::Tensor gyf = gy.to(at::kFloat);
      for (int64_t o = 0; o < w.out; o += kSliceRows) {
        const int64_t n = std::min(kSliceRows, w.out - o);
        at::Tensor s = slice.narrow(0, 0, n);
        DequantizeSlice(w, o, n, s.data_ptr<float>());
        gx.addmm_(gyf.narrow(1, o, n), s);
      }
    }
    return {gx, at::Tensor(), at::Tensor()};
  }
  // The weight lives in its StageModel, which outlives every graph built
  // through it (trainers hold the stage); autograd's saved state holds
  // only IValues, hence the address.
  static const LinearWeight* Weight(int64_t address) {
    return reinterpret_cast<const LinearWeight*>(address);
  }
};

}  // namespace

at::Tensor LinearForward(const LinearWeight& w, const at::Tensor& x,
                         const at::Tensor& bias, bool use_kernels) {
  if (x.requires_grad() && at::GradMode::is_enabled()) {
    // Float weights off the kernels: at::linear differentiates itself.
    if (w.type == kernels::WeightType::kF32 && !OnGemv(w, x, use_kernels)) {
      return at::linear(x, w.dense, bias);
    }
    at::Tensor y =
        LinearFunction::apply(x, reinterpret_cast<int64_t>(&w), use_kernels);
    return bias.defined() ? y + bias : y;
  }
  return ForwardNoGrad(w, x, bias, use_kernels);
}

}  // namespace edgesplit
