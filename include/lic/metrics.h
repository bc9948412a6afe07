// Distortion metrics on image tensors in [0, data_range].
#pragma once
#include <torch/torch.h>

namespace lic {

// PSNR of identical images (mse == 0) and the upper bound of every PSNR value, in dB.
constexpr double kPsnrCap = 100.0;

// Mean squared error over all elements, computed in double precision. Shapes must match
// (lic::Error otherwise). No gradient.
double mse(const torch::Tensor& a, const torch::Tensor& b);

// 10*log10(data_range^2 / mse), capped at kPsnrCap (so identical images give 100 dB, never inf).
double psnr(const torch::Tensor& a, const torch::Tensor& b, double data_range = 1.0);
// The same from an MSE value.
double psnr_from_mse(double mse_value, double data_range = 1.0);

// Multi-scale SSIM, differentiable, matching pytorch_msssim.ms_ssim (the reference used by
// CompressAI): Gaussian window 11 / sigma 1.5, K1=0.01, K2=0.03, 5 scales with weights
// [0.0448, 0.2856, 0.3001, 0.2363, 0.1333], 2x2 average pooling between scales (odd sizes
// padded by 1, zero padding counted), "valid" separable filtering, per-channel cs/ssim,
// relu before the weighted product. Returns a 0-dim tensor: the mean over batch and channels.
// x, y: [N,C,H,W] of the same shape and floating dtype.
//
// Small images (pytorch_msssim asserts min(H,W) > 160): instead of failing, only the scales
// whose smaller side is still >= the window size are used (pooling sizes: s -> ceil(s/2)),
// with the first L weights renormalised to sum to 1 (the coarsest used scale contributes
// its full SSIM, the others their cs). For min(H,W) > 160 this is exactly the standard
// 5-scale result. If even the full-resolution image is smaller than 11 px, a single scale
// is used with the window shrunk to the largest odd size <= min(H,W) (sigma scaled by
// size/11).
torch::Tensor ms_ssim(const torch::Tensor& x, const torch::Tensor& y, double data_range = 1.0);

// Number of scales ms_ssim uses for an image of this size (5 when min(h,w) > 160).
int ms_ssim_levels(int64_t h, int64_t w);

// MS-SSIM in dB: -10*log10(1 - v), capped at kPsnrCap for v >= 1.
double ms_ssim_db(double v);

}  // namespace lic
