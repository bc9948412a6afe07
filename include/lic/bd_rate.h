// Bjøntegaard delta metrics (VCEG-M33) between two rate-distortion curves. Torch-free.
#pragma once
#include <vector>

namespace lic {

struct RdPoint {
  double bpp;   // rate, > 0 (any unit works as long as both curves use the same one)
  double psnr;  // quality in dB (PSNR, or MS-SSIM in dB, ...)
};

// BD-rate in percent: the average rate difference of `test` relative to `anchor` at equal
// quality over the overlapping quality interval; negative = test needs fewer bits.
// As in the common Python implementations: least-squares polynomial fit of ln(rate) as a
// function of PSNR, integrated over [max of the minima, min of the maxima], average
// difference d -> (exp(d) - 1) * 100. The polynomial degree is min(3, k - 1), k = number of
// distinct PSNR values of a curve, so 2 or 3 points per curve also work (linear / quadratic
// fit); with >= 4 points it is the classic cubic. Points need not be sorted.
// lic::Error on: fewer than 2 distinct points in a curve, a rate <= 0 or a non-finite value,
// or curves that do not overlap in PSNR.
double bd_rate(std::vector<RdPoint> anchor, std::vector<RdPoint> test);

// BD-PSNR in dB: the average PSNR difference (test - anchor) at equal rate, fitting PSNR as
// a polynomial of ln(rate) over the overlapping ln(rate) interval. Same rules as bd_rate.
double bd_psnr(std::vector<RdPoint> anchor, std::vector<RdPoint> test);

}  // namespace lic
