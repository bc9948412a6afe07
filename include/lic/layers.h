// Building blocks of the transforms (REFERENCE.md §2): LowerBound, the non-negative
// reparametrisation, GDN / IGDN, and the conv / deconv helpers with CompressAI's padding.
// Module and buffer names follow CompressAI so state dicts map one to one.
#pragma once
#include <torch/torch.h>

namespace lic {

// max(x, bound) whose gradient passes where x >= bound or where the gradient is negative
// (pushes x back up towards the feasible region), as in Ballé's GDN.
torch::Tensor lower_bound(const torch::Tensor& x, const torch::Tensor& bound);

struct LowerBoundImpl : torch::nn::Module {
  explicit LowerBoundImpl(double bound);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor bound;  // buffer "bound", shape [1]
};
TORCH_MODULE(LowerBound);

// Keeps a parameter non-negative: stores p = sqrt(max(v + pedestal, pedestal)) and
// returns lower_bound(p, sqrt(minimum + pedestal))^2 - pedestal.
struct NonNegativeParametrizerImpl : torch::nn::Module {
  explicit NonNegativeParametrizerImpl(double minimum = 0.0, double reparam_offset = 1.0 / (1 << 18));
  torch::Tensor init(const torch::Tensor& x) const;
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor pedestal;  // buffer, [1]
  LowerBound lower_bound{nullptr};
};
TORCH_MODULE(NonNegativeParametrizer);

// Generalized divisive normalization: y = x / sqrt(beta + gamma * x^2) (inverse: times).
struct GDNImpl : torch::nn::Module {
  GDNImpl(int64_t channels, bool inverse = false, double beta_min = 1e-6, double gamma_init = 0.1);
  torch::Tensor forward(const torch::Tensor& x);
  bool inverse;
  torch::Tensor beta, gamma;  // reparametrised parameters
  NonNegativeParametrizer beta_reparam{nullptr}, gamma_reparam{nullptr};
};
TORCH_MODULE(GDN);

// conv(k, s): padding k/2. deconv(k, s): padding k/2, output_padding s-1 (exact 2x upsampling).
torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel = 5, int64_t stride = 2);
torch::nn::ConvTranspose2d deconv(int64_t in, int64_t out, int64_t kernel = 5, int64_t stride = 2);

}  // namespace lic
