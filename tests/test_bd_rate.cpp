#include "lic/bd_rate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "lic/error.h"

namespace {

using lic::RdPoint;

// A plausible RD curve: PSNR rising logarithmically with rate.
std::vector<RdPoint> anchor_curve() {
  std::vector<RdPoint> c;
  for (double bpp : {0.1, 0.2, 0.4, 0.8, 1.6}) c.push_back({bpp, 28.0 + 4.0 * std::log2(bpp / 0.1)});
  return c;
}

TEST(BdRate, TenPercentFewerBits) {
  auto a = anchor_curve();
  auto t = a;
  for (auto& p : t) p.bpp *= 0.9;
  EXPECT_NEAR(lic::bd_rate(a, t), -10.0, 0.01);
  EXPECT_NEAR(lic::bd_rate(t, a), 100.0 / 9.0, 0.01);  // the reverse needs 1/0.9 the bits
}

TEST(BdRate, IdenticalCurvesGiveZero) {
  auto a = anchor_curve();
  EXPECT_NEAR(lic::bd_rate(a, a), 0.0, 1e-9);
  EXPECT_NEAR(lic::bd_psnr(a, a), 0.0, 1e-9);
}

TEST(BdRate, NonlinearCurveAndUnsortedInput) {
  // A curve that is not a polynomial in PSNR; a constant rate factor still gives an exact
  // result because the fit is linear in the data.
  std::vector<RdPoint> a = {{0.9, 36.1}, {0.12, 27.3}, {0.33, 31.0}, {2.1, 40.2}, {0.05, 24.9}};
  auto t = a;
  for (auto& p : t) p.bpp *= 1.25;
  EXPECT_NEAR(lic::bd_rate(a, t), 25.0, 1e-6);
}

TEST(BdPsnr, HalfDbShift) {
  auto a = anchor_curve();
  auto t = a;
  for (auto& p : t) p.psnr += 0.5;
  EXPECT_NEAR(lic::bd_psnr(a, t), 0.5, 1e-6);
  EXPECT_NEAR(lic::bd_psnr(t, a), -0.5, 1e-6);
  EXPECT_LT(lic::bd_rate(a, t), 0.0);  // better quality at equal rate = fewer bits
}

TEST(BdRate, FewPointsUseLowerDegree) {
  std::vector<RdPoint> a2 = {{0.2, 30.0}, {0.8, 36.0}};
  auto t2 = a2;
  for (auto& p : t2) p.bpp *= 0.9;
  EXPECT_NEAR(lic::bd_rate(a2, t2), -10.0, 1e-6);
  std::vector<RdPoint> a3 = {{0.2, 30.0}, {0.4, 33.5}, {0.8, 36.0}};
  auto t3 = a3;
  for (auto& p : t3) p.psnr += 0.5;
  EXPECT_NEAR(lic::bd_psnr(a3, t3), 0.5, 1e-6);
}

TEST(BdRate, MatchesNumpyPolyfitReference) {
  // Values from the common Python implementation (np.polyfit degree 3 + np.polyint):
  // anchor/test below, computed once with numpy: BD-rate = -13.869787 %, BD-PSNR = 0.607238 dB.
  std::vector<RdPoint> a = {{0.15, 29.1}, {0.30, 31.9}, {0.55, 34.2}, {1.00, 36.8}};
  std::vector<RdPoint> t = {{0.14, 29.3}, {0.28, 32.2}, {0.50, 34.5}, {0.95, 37.2}};
  EXPECT_NEAR(lic::bd_rate(a, t), -13.869787, 1e-3);
  EXPECT_NEAR(lic::bd_psnr(a, t), 0.607238, 1e-3);
}

TEST(BdRate, Errors) {
  auto a = anchor_curve();
  std::vector<RdPoint> far;
  for (auto p : a) far.push_back({p.bpp, p.psnr + 100.0});
  EXPECT_THROW(lic::bd_rate(a, far), lic::Error);
  std::vector<RdPoint> far_rate;
  for (auto p : a) far_rate.push_back({p.bpp * 1000.0, p.psnr});
  EXPECT_THROW(lic::bd_psnr(a, far_rate), lic::Error);
  EXPECT_THROW(lic::bd_rate(a, {{0.5, 30.0}}), lic::Error);
  EXPECT_THROW(lic::bd_rate({}, a), lic::Error);
  EXPECT_THROW(lic::bd_rate(a, {{0.5, 30.0}, {0.7, 30.0}}), lic::Error);  // one distinct PSNR
  EXPECT_THROW(lic::bd_rate(a, {{0.0, 30.0}, {0.7, 33.0}}), lic::Error);  // rate 0
  EXPECT_THROW(lic::bd_rate(a, {{0.5, NAN}, {0.7, 33.0}}), lic::Error);
  try {
    lic::bd_rate(a, far);
  } catch (const lic::Error& e) {
    EXPECT_NE(std::string(e.what()).find("overlap"), std::string::npos) << e.what();
  }
}

}  // namespace
