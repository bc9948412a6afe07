#include "lic/layers.h"

#include <cmath>

namespace lic {
namespace {

struct LowerBoundFunction : torch::autograd::Function<LowerBoundFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& bound) {
    ctx->save_for_backward({x, bound});
    return torch::max(x, bound);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& g = grads[0];
    auto pass = (saved[0] >= saved[1]).logical_or(g < 0);
    return {pass.to(g.scalar_type()) * g, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor lower_bound(const torch::Tensor& x, const torch::Tensor& bound) {
  return LowerBoundFunction::apply(x, bound);
}

LowerBoundImpl::LowerBoundImpl(double b) {
  bound = register_buffer("bound", torch::tensor({static_cast<float>(b)}));
}

torch::Tensor LowerBoundImpl::forward(const torch::Tensor& x) { return lower_bound(x, bound); }

NonNegativeParametrizerImpl::NonNegativeParametrizerImpl(double minimum, double reparam_offset) {
  const double ped = reparam_offset * reparam_offset;
  pedestal = register_buffer("pedestal", torch::tensor({static_cast<float>(ped)}));
  lower_bound = register_module("lower_bound", LowerBound(std::sqrt(minimum + ped)));
}

torch::Tensor NonNegativeParametrizerImpl::init(const torch::Tensor& x) const {
  return torch::sqrt(torch::max(x + pedestal, pedestal));
}

torch::Tensor NonNegativeParametrizerImpl::forward(const torch::Tensor& x) {
  auto out = lower_bound(x);
  return out * out - pedestal;
}

GDNImpl::GDNImpl(int64_t channels, bool inv, double beta_min, double gamma_init) : inverse(inv) {
  beta_reparam = register_module("beta_reparam", NonNegativeParametrizer(beta_min));
  gamma_reparam = register_module("gamma_reparam", NonNegativeParametrizer());
  beta = register_parameter("beta", beta_reparam->init(torch::ones({channels})));
  gamma = register_parameter("gamma", gamma_reparam->init(gamma_init * torch::eye(channels)));
}

torch::Tensor GDNImpl::forward(const torch::Tensor& x) {
  const auto C = x.size(1);
  auto b = beta_reparam(beta);
  auto g = gamma_reparam(gamma).reshape({C, C, 1, 1});
  auto norm = torch::conv2d(x * x, g, b);
  return x * (inverse ? torch::sqrt(norm) : torch::rsqrt(norm));
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2));
}

torch::nn::ConvTranspose2d deconv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(in, out, kernel)
                                        .stride(stride)
                                        .padding(kernel / 2)
                                        .output_padding(stride - 1));
}

}  // namespace lic
