#include "lic/bd_rate.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

#include "lic/error.h"

namespace lic {
namespace {

struct Sample {
  double x, y;
};

// Least-squares polynomial fit of y(x). The fit is done in t = (x - center) / scale,
// t in [-1, 1], which keeps the Vandermonde matrix well conditioned; the space of
// polynomials is the same, so the fitted curve equals np.polyfit's. Returns the
// coefficients of the polynomial in t (lowest degree first) solved by Householder QR.
struct Fit {
  std::vector<double> c;  // in t, c[0] + c[1] t + ...
  double center = 0, scale = 1;

  // Antiderivative in t, evaluated at x.
  double integral_t(double x) const {
    double t = (x - center) / scale;
    double s = 0, tp = t;
    for (size_t k = 0; k < c.size(); ++k) {
      s += c[k] * tp / double(k + 1);
      tp *= t;
    }
    return s;
  }
  // Average of the fitted y over [a, b] (b > a).
  double mean_over(double a, double b) const {
    double ta = (a - center) / scale, tb = (b - center) / scale;
    return (integral_t(b) - integral_t(a)) / (tb - ta);
  }
};

Fit polyfit(const std::vector<Sample>& s, int degree) {
  const int n = int(s.size()), m = degree + 1;
  double lo = s[0].x, hi = s[0].x;
  for (auto& p : s) lo = std::min(lo, p.x), hi = std::max(hi, p.x);
  Fit f;
  f.center = 0.5 * (lo + hi);
  f.scale = hi > lo ? 0.5 * (hi - lo) : 1.0;
  // A: n x m Vandermonde (row-major), b: n.
  std::vector<double> A(size_t(n) * m), b(n);
  for (int i = 0; i < n; ++i) {
    double t = (s[i].x - f.center) / f.scale, tp = 1;
    for (int j = 0; j < m; ++j) A[size_t(i) * m + j] = tp, tp *= t;
    b[i] = s[i].y;
  }
  // Householder QR, applied to b as we go.
  for (int k = 0; k < m; ++k) {
    double norm = 0;
    for (int i = k; i < n; ++i) norm += A[size_t(i) * m + k] * A[size_t(i) * m + k];
    norm = std::sqrt(norm);
    if (norm == 0) continue;
    double alpha = A[size_t(k) * m + k] > 0 ? -norm : norm;
    std::vector<double> v(n, 0.0);
    for (int i = k; i < n; ++i) v[i] = A[size_t(i) * m + k];
    v[k] -= alpha;
    double vnorm2 = 0;
    for (int i = k; i < n; ++i) vnorm2 += v[i] * v[i];
    if (vnorm2 == 0) continue;
    for (int j = k; j < m; ++j) {
      double dot = 0;
      for (int i = k; i < n; ++i) dot += v[i] * A[size_t(i) * m + j];
      double g = 2 * dot / vnorm2;
      for (int i = k; i < n; ++i) A[size_t(i) * m + j] -= g * v[i];
    }
    double dot = 0;
    for (int i = k; i < n; ++i) dot += v[i] * b[i];
    double g = 2 * dot / vnorm2;
    for (int i = k; i < n; ++i) b[i] -= g * v[i];
  }
  // Back substitution R c = Q^T b.
  f.c.assign(m, 0.0);
  for (int k = m - 1; k >= 0; --k) {
    double r = b[k];
    for (int j = k + 1; j < m; ++j) r -= A[size_t(k) * m + j] * f.c[j];
    double d = A[size_t(k) * m + k];
    check(d != 0 && std::isfinite(d), "BD metric: degenerate RD curve (cannot fit a polynomial)");
    f.c[k] = r / d;
  }
  return f;
}

int distinct_x(std::vector<Sample> s) {
  std::sort(s.begin(), s.end(), [](const Sample& a, const Sample& b) { return a.x < b.x; });
  int k = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (i == 0 || s[i].x != s[i - 1].x) ++k;
  return k;
}

std::vector<Sample> to_samples(const std::vector<RdPoint>& pts, const char* which,
                               bool rate_is_x) {
  std::vector<Sample> out;
  out.reserve(pts.size());
  for (auto& p : pts) {
    if (!std::isfinite(p.bpp) || !std::isfinite(p.psnr) || p.bpp <= 0) {
      std::ostringstream msg;
      msg << "BD metric: invalid point in the " << which << " curve (bpp " << p.bpp << ", psnr "
          << p.psnr << "): rates must be > 0 and values finite";
      throw Error(msg.str());
    }
    double lr = std::log(p.bpp);
    out.push_back(rate_is_x ? Sample{lr, p.psnr} : Sample{p.psnr, lr});
  }
  if (distinct_x(out) < 2)
    throw Error(std::string("BD metric: the ") + which +
                " curve needs at least 2 points with distinct " + (rate_is_x ? "rates" : "PSNR values"));
  return out;
}

// Average of (fit_test - fit_anchor) over the overlapping x interval.
double mean_delta(const std::vector<Sample>& a, const std::vector<Sample>& t, const char* axis) {
  auto range = [](const std::vector<Sample>& s) {
    auto mm = std::minmax_element(s.begin(), s.end(),
                                  [](const Sample& p, const Sample& q) { return p.x < q.x; });
    return std::make_pair(mm.first->x, mm.second->x);
  };
  auto ra = range(a), rt = range(t);
  double lo = std::max(ra.first, rt.first), hi = std::min(ra.second, rt.second);
  if (!(hi > lo))
    throw Error(std::string("BD metric: the two RD curves do not overlap in ") + axis);
  Fit fa = polyfit(a, std::min(3, distinct_x(a) - 1));
  Fit ft = polyfit(t, std::min(3, distinct_x(t) - 1));
  double d = ft.mean_over(lo, hi) - fa.mean_over(lo, hi);
  check(std::isfinite(d), "BD metric: numerical failure (non-finite result)");
  return d;
}

}  // namespace

double bd_rate(std::vector<RdPoint> anchor, std::vector<RdPoint> test) {
  auto a = to_samples(anchor, "anchor", false);
  auto t = to_samples(test, "test", false);
  double d = mean_delta(a, t, "PSNR");
  return (std::exp(d) - 1.0) * 100.0;
}

double bd_psnr(std::vector<RdPoint> anchor, std::vector<RdPoint> test) {
  auto a = to_samples(anchor, "anchor", true);
  auto t = to_samples(test, "test", true);
  return mean_delta(a, t, "rate");
}

}  // namespace lic
