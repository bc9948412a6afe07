#include "lic/metrics.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "lic/classic_codecs.h"
#include "lic/error.h"

namespace {

// Smooth deterministic test pair (same formula as the Python port of pytorch_msssim used to
// compute the reference values below).
std::pair<torch::Tensor, torch::Tensor> test_pair(int64_t n, int64_t h, int64_t w) {
  auto o = torch::TensorOptions().dtype(torch::kDouble);
  auto hh = torch::arange(h, o).view({1, 1, h, 1});
  auto ww = torch::arange(w, o).view({1, 1, 1, w});
  auto c = torch::arange(3, o).view({1, 3, 1, 1});
  auto b = torch::arange(n, o).view({n, 1, 1, 1});
  auto x = 0.5 + 0.4 * torch::sin(0.1 * hh * (c + 1) + 0.07 * ww + b);
  auto y = x + 0.05 * torch::cos(0.3 * hh + 0.2 * ww + c) + 0.03 * torch::sin(1.7 * hh * ww + 0.5 * c);
  return {x.to(torch::kFloat), y.to(torch::kFloat)};
}

TEST(Metrics, MseAndPsnrOfKnownError) {
  auto a = torch::zeros({1, 3, 8, 8});
  auto b = torch::full({1, 3, 8, 8}, 0.1);
  EXPECT_NEAR(lic::mse(a, b), 0.01, 1e-8);
  EXPECT_NEAR(lic::psnr(a, b), 20.0, 1e-5);
  EXPECT_NEAR(lic::psnr(a * 255, b * 255, 255.0), 20.0, 1e-5);
  EXPECT_NEAR(lic::psnr_from_mse(1e-4), 40.0, 1e-9);
}

TEST(Metrics, PsnrOfIdenticalImagesIsCapped) {
  auto a = torch::rand({1, 3, 8, 8});
  EXPECT_EQ(lic::mse(a, a), 0.0);
  EXPECT_EQ(lic::psnr(a, a), lic::kPsnrCap);
  EXPECT_TRUE(std::isfinite(lic::psnr(a, a)));
}

TEST(Metrics, ShapeMismatchThrows) {
  EXPECT_THROW(lic::mse(torch::zeros({1, 3, 8, 8}), torch::zeros({1, 3, 8, 9})), lic::Error);
  EXPECT_THROW(lic::ms_ssim(torch::zeros({1, 3, 32, 32}), torch::zeros({1, 3, 32, 31})), lic::Error);
  EXPECT_THROW(lic::ms_ssim(torch::zeros({3, 32, 32}), torch::zeros({3, 32, 32})), lic::Error);
}

TEST(Metrics, MsSsimOfIdenticalImagesIsOne) {
  for (auto hw : {std::pair<int, int>{180, 200}, {64, 48}, {5, 7}}) {
    auto x = torch::rand({2, 3, hw.first, hw.second});
    EXPECT_NEAR(lic::ms_ssim(x, x).item<double>(), 1.0, 1e-5) << hw.first << "x" << hw.second;
  }
}

TEST(Metrics, MsSsimMatchesPytorchMsssim) {
  // Reference values: pytorch_msssim.ms_ssim(x, y, data_range=1.0), float32.
  auto [x, y] = test_pair(2, 180, 200);  // odd sizes appear at coarser scales
  EXPECT_NEAR(lic::ms_ssim(x, y).item<double>(), 0.9796792, 2e-6);
  auto [x2, y2] = test_pair(1, 256, 256);
  EXPECT_NEAR(lic::ms_ssim(x2, y2).item<double>(), 0.9775064, 2e-6);
  EXPECT_NEAR(lic::ms_ssim(x2.to(torch::kDouble), y2.to(torch::kDouble)).item<double>(), 0.977506290, 1e-6);
  // data_range scales consistently.
  EXPECT_NEAR(lic::ms_ssim(x2 * 255, y2 * 255, 255.0).item<double>(), 0.9775064, 1e-5);
}

TEST(Metrics, MsSsimDecreasesWithNoise) {
  torch::manual_seed(0);
  auto x = std::get<0>(test_pair(1, 96, 80));
  auto noise = torch::randn_like(x);
  double prev = 1.0;
  for (double s : {0.01, 0.03, 0.1, 0.3}) {
    double v = lic::ms_ssim(x, (x + s * noise).clamp(0, 1)).item<double>();
    EXPECT_LT(v, prev) << "sigma " << s;
    EXPECT_GE(v, 0.0);
    prev = v;
  }
}

TEST(Metrics, MsSsimIsDifferentiable) {
  auto [x, y0] = test_pair(2, 180, 200);
  auto y = y0.clone().requires_grad_(true);
  auto loss = 1.0 - lic::ms_ssim(x, y);
  EXPECT_EQ(loss.dim(), 0);
  loss.backward();
  ASSERT_TRUE(y.grad().defined());
  EXPECT_TRUE(torch::isfinite(y.grad()).all().item<bool>());
  // pytorch_msssim: sum |d ms_ssim / d y| = 0.9068312 for this pair.
  EXPECT_NEAR(y.grad().abs().sum().item<double>(), 0.9068312, 1e-4);
  // Small images (fallback path) are differentiable too.
  auto a = torch::rand({1, 3, 40, 40});
  auto b = (a + 0.05 * torch::randn_like(a)).clamp(0, 1).requires_grad_(true);
  lic::ms_ssim(a, b).backward();
  EXPECT_TRUE(torch::isfinite(b.grad()).all().item<bool>());
  EXPECT_GT(b.grad().abs().sum().item<double>(), 0.0);
}

TEST(Metrics, MsSsimLevelsForSmallImages) {
  EXPECT_EQ(lic::ms_ssim_levels(161, 1000), 5);  // pytorch_msssim's minimum
  EXPECT_EQ(lic::ms_ssim_levels(160, 160), 4);
  EXPECT_EQ(lic::ms_ssim_levels(64, 64), 3);
  EXPECT_EQ(lic::ms_ssim_levels(11, 11), 1);
  EXPECT_EQ(lic::ms_ssim_levels(4, 4), 1);
  auto x = torch::rand({1, 3, 3, 4});
  auto v = lic::ms_ssim(x, (x + 0.1).clamp(0, 1)).item<double>();
  EXPECT_TRUE(std::isfinite(v));
  EXPECT_LT(v, 1.0);
}

TEST(Metrics, MsSsimDb) {
  EXPECT_NEAR(lic::ms_ssim_db(0.99), 20.0, 1e-9);
  EXPECT_NEAR(lic::ms_ssim_db(0.9), 10.0, 1e-9);
  EXPECT_EQ(lic::ms_ssim_db(1.0), lic::kPsnrCap);
}

// Smooth 64x64 RGB image in [0,1].
torch::Tensor smooth_image() {
  auto hh = torch::linspace(0, 1, 64).view({1, 1, 64, 1});
  auto ww = torch::linspace(0, 1, 64).view({1, 1, 1, 64});
  auto c = torch::arange(3).to(torch::kFloat).view({1, 3, 1, 1});
  return (0.5 + 0.3 * torch::sin(3.0 * hh + 2.0 * ww + c) * torch::cos(2.0 * ww - hh)).contiguous();
}

void check_codec(const std::string& codec) {
  auto x = smooth_image();
  auto hi = lic::classic_roundtrip(codec, x, 90);
  EXPECT_FALSE(hi.bytes.empty());
  ASSERT_EQ(hi.x_hat.sizes(), x.sizes());
  EXPECT_EQ(hi.x_hat.scalar_type(), torch::kFloat);
  EXPECT_GE(hi.encode_s, 0.0);
  EXPECT_GE(hi.decode_s, 0.0);
  double p_hi = lic::psnr(x, hi.x_hat);
  EXPECT_GT(p_hi, 25.0) << codec;
  auto lo = lic::classic_roundtrip(codec, x, 5);
  EXPECT_LT(lo.bytes.size(), hi.bytes.size()) << codec;
  EXPECT_LE(lic::psnr(x, lo.x_hat), p_hi) << codec;
  // [3,H,W] input is accepted too.
  EXPECT_EQ(lic::classic_roundtrip(codec, x[0], 50).x_hat.sizes(), x.sizes());
}

TEST(ClassicCodecs, Jpeg) { check_codec("jpeg"); }
TEST(ClassicCodecs, Webp) {
  if (!lic::classic_codec_available("webp")) GTEST_SKIP() << "this OpenCV build has no WebP encoder";
  check_codec("webp");
}
TEST(ClassicCodecs, Jpeg2000) {
  if (!lic::classic_codec_available("jpeg2000"))
    GTEST_SKIP() << "this OpenCV build has no JPEG 2000 encoder";
  check_codec("jpeg2000");
}

TEST(ClassicCodecs, Errors) {
  auto x = smooth_image();
  EXPECT_THROW(lic::classic_roundtrip("png", x, 50), lic::Error);
  EXPECT_THROW(lic::classic_roundtrip("jpeg", x, 0), lic::Error);
  EXPECT_THROW(lic::classic_roundtrip("jpeg", x, 101), lic::Error);
  EXPECT_THROW(lic::classic_roundtrip("jpeg", torch::zeros({2, 3, 8, 8}), 50), lic::Error);
  EXPECT_FALSE(lic::classic_codec_available("png"));
  EXPECT_EQ(lic::classic_codec_names(), (std::vector<std::string>{"jpeg", "webp", "jpeg2000"}));
}

}  // namespace
