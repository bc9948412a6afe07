#include "lic/metrics.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

#include "lic/error.h"

namespace lic {
namespace {

namespace F = torch::nn::functional;

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

void check_same_shape(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
  check(a.defined() && b.defined(), std::string(what) + ": undefined tensor");
  if (a.sizes() != b.sizes())
    throw Error(std::string(what) + ": shape mismatch " + shape_str(a) + " vs " + shape_str(b));
}

constexpr int kWinSize = 11;
constexpr double kWinSigma = 1.5;
constexpr double kK1 = 0.01, kK2 = 0.03;
constexpr double kWeights[5] = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};

// 1-D Gaussian, computed in float32 exactly like pytorch_msssim._fspecial_gauss_1d.
torch::Tensor gauss_1d(int size, double sigma) {
  auto coords = torch::arange(size, torch::kFloat) - float(size / 2);
  auto g = torch::exp(-(coords * coords) / float(2 * sigma * sigma));
  return g / g.sum();
}

// "Valid" separable filtering of every channel of x [N,C,H,W] with win [K] (H, then W).
torch::Tensor gaussian_filter(const torch::Tensor& x, const torch::Tensor& win) {
  const int64_t c = x.size(1), k = win.size(0);
  auto wh = win.view({1, 1, k, 1}).expand({c, 1, k, 1}).contiguous();
  auto ww = win.view({1, 1, 1, k}).expand({c, 1, 1, k}).contiguous();
  auto opts = F::Conv2dFuncOptions().stride(1).padding(0).groups(c);
  auto out = F::conv2d(x, wh, opts);
  return F::conv2d(out, ww, opts);
}

// Per-channel mean SSIM and contrast-structure terms, each [N,C].
std::pair<torch::Tensor, torch::Tensor> ssim_cs(const torch::Tensor& x, const torch::Tensor& y,
                                                const torch::Tensor& win, double data_range) {
  const int64_t c = x.size(1);
  const double c1 = (kK1 * data_range) * (kK1 * data_range);
  const double c2 = (kK2 * data_range) * (kK2 * data_range);
  // The five blurs in one grouped convolution.
  auto f = gaussian_filter(torch::cat({x, y, x * x, y * y, x * y}, 1), win);
  auto parts = f.split(c, 1);
  auto mu1 = parts[0], mu2 = parts[1];
  auto mu1_sq = mu1.pow(2), mu2_sq = mu2.pow(2), mu1_mu2 = mu1 * mu2;
  auto sigma1_sq = parts[2] - mu1_sq;
  auto sigma2_sq = parts[3] - mu2_sq;
  auto sigma12 = parts[4] - mu1_mu2;
  auto cs_map = (2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2);
  auto ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map;
  return {ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)};
}

}  // namespace

double mse(const torch::Tensor& a, const torch::Tensor& b) {
  check_same_shape(a, b, "mse");
  check(a.numel() > 0, "mse: empty tensors");
  torch::NoGradGuard ng;
  auto d = a.detach().to(torch::kDouble) - b.detach().to(a.device(), torch::kDouble);
  return d.pow(2).mean().item<double>();
}

double psnr_from_mse(double m, double data_range) {
  if (!(m > 0)) return m == 0 ? kPsnrCap : std::nan("");
  return std::min(kPsnrCap, 10.0 * std::log10(data_range * data_range / m));
}

double psnr(const torch::Tensor& a, const torch::Tensor& b, double data_range) {
  return psnr_from_mse(mse(a, b), data_range);
}

int ms_ssim_levels(int64_t h, int64_t w) {
  int64_t side = std::min(h, w);
  int levels = 0;
  while (levels < 5 && side >= kWinSize) {
    ++levels;
    side = (side + 1) / 2;  // avg_pool2d(2) with padding side % 2
  }
  return std::max(levels, 1);
}

torch::Tensor ms_ssim(const torch::Tensor& x, const torch::Tensor& y, double data_range) {
  check_same_shape(x, y, "ms_ssim");
  check(x.dim() == 4, "ms_ssim: expected [N,C,H,W] tensors, got " + shape_str(x));
  check(x.numel() > 0, "ms_ssim: empty tensors");
  check(x.is_floating_point() && y.scalar_type() == x.scalar_type(),
        "ms_ssim: inputs must have the same floating-point dtype");
  check(y.device() == x.device(), "ms_ssim: inputs must be on the same device");

  const int64_t side = std::min(x.size(2), x.size(3));
  int win_size = kWinSize;
  double sigma = kWinSigma;
  if (side < kWinSize) {  // tiny image: one scale, shrunken window
    win_size = int(side % 2 == 1 ? side : side - 1);
    sigma = kWinSigma * win_size / kWinSize;
  }
  const int levels = ms_ssim_levels(x.size(2), x.size(3));
  auto win = gauss_1d(win_size, sigma).to(x.device(), x.scalar_type());

  std::vector<double> w(kWeights, kWeights + levels);
  if (levels < 5) {
    double s = 0;
    for (double v : w) s += v;
    for (double& v : w) v /= s;
  }

  torch::Tensor X = x, Y = y, ssim_pc;
  std::vector<torch::Tensor> terms;
  for (int i = 0; i < levels; ++i) {
    auto [s, cs] = ssim_cs(X, Y, win, data_range);
    if (i < levels - 1) {
      terms.push_back(torch::relu(cs));
      std::vector<int64_t> pad{X.size(2) % 2, X.size(3) % 2};
      X = torch::avg_pool2d(X, {2, 2}, {2, 2}, pad);
      Y = torch::avg_pool2d(Y, {2, 2}, {2, 2}, pad);
    } else {
      ssim_pc = torch::relu(s);
    }
  }
  terms.push_back(ssim_pc);
  auto stacked = torch::stack(terms, 0);  // [L,N,C]
  auto wt = torch::tensor(w, torch::TensorOptions().dtype(torch::kDouble))
                .to(x.device(), x.scalar_type())
                .view({-1, 1, 1});
  auto val = torch::prod(stacked.pow(wt), 0);  // [N,C]
  return val.mean();
}

double ms_ssim_db(double v) {
  if (!(v < 1.0)) return v >= 1.0 ? kPsnrCap : std::nan("");
  return std::min(kPsnrCap, -10.0 * std::log10(1.0 - v));
}

}  // namespace lic
