// Quantized CDFs: PMF -> 16-bit CDF (bit-exact with CompressAI's pmf_to_quantized_cdf) and
// validation of the tables handed to the rANS coder.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "lic/entropy_coding.h"
#include "lic/error.h"

namespace lic::ec {

std::vector<uint32_t> pmf_to_quantized_cdf(const std::vector<float>& pmf, int precision) {
  check(precision >= 1 && precision <= 30,
        "pmf_to_quantized_cdf: precision must be in [1, 30], got " + std::to_string(precision));
  check(!pmf.empty(), "pmf_to_quantized_cdf: empty pmf");
  check(pmf.size() <= (size_t{1} << precision),
        "pmf_to_quantized_cdf: " + std::to_string(pmf.size()) + " symbols do not fit in " +
            std::to_string(precision) + "-bit precision");
  for (size_t i = 0; i < pmf.size(); ++i) {
    const float p = pmf[i];
    check(std::isfinite(p) && p >= 0.0f,
          "pmf_to_quantized_cdf: invalid probability " + std::to_string(p) + " at index " + std::to_string(i));
  }

  const uint32_t one = uint32_t{1} << precision;
  const float scale = static_cast<float>(one);  // exact power of two
  std::vector<uint32_t> cdf(pmf.size() + 1, 0);

  // Quantize in float exactly like CompressAI (float product, std::round on float).
  uint64_t total = 0;
  for (size_t i = 0; i < pmf.size(); ++i) {
    const float q = std::round(pmf[i] * scale);
    check(q < 4294967296.0f, "pmf_to_quantized_cdf: probability too large at index " + std::to_string(i));
    cdf[i + 1] = static_cast<uint32_t>(q);
    total += cdf[i + 1];
  }
  check(total != 0, "pmf_to_quantized_cdf: all probabilities are zero");
  check(total <= std::numeric_limits<uint32_t>::max(), "pmf_to_quantized_cdf: probabilities sum too large");

  // Rescale to the precision (integer division), then accumulate.
  for (auto& c : cdf) c = static_cast<uint32_t>((static_cast<uint64_t>(one) * c) / total);
  for (size_t i = 1; i < cdf.size(); ++i) cdf[i] += cdf[i - 1];
  cdf.back() = one;

  // Give every zero-frequency symbol one unit, stolen from the smallest frequency > 1
  // (first such symbol on ties).
  const int n = static_cast<int>(cdf.size()) - 1;
  for (int i = 0; i < n; ++i) {
    if (cdf[i] != cdf[i + 1]) continue;
    uint32_t best_freq = std::numeric_limits<uint32_t>::max();
    int best = -1;
    for (int j = 0; j < n; ++j) {
      const uint32_t f = cdf[j + 1] - cdf[j];
      if (f > 1 && f < best_freq) {
        best_freq = f;
        best = j;
      }
    }
    check(best >= 0, "pmf_to_quantized_cdf: cannot give every symbol a non-zero frequency");
    if (best < i) {
      for (int j = best + 1; j <= i; ++j) --cdf[j];
    } else {
      for (int j = i + 1; j <= best; ++j) ++cdf[j];
    }
  }
  return cdf;
}

void CdfTables::validate() const {
  check(lengths.size() == cdfs.size() && offsets.size() == cdfs.size(),
        "CDF tables: " + std::to_string(cdfs.size()) + " cdfs but " + std::to_string(lengths.size()) +
            " lengths and " + std::to_string(offsets.size()) + " offsets");
  const int32_t one = int32_t{1} << kPrecision;
  for (size_t i = 0; i < cdfs.size(); ++i) {
    const auto& cdf = cdfs[i];
    const int32_t len = lengths[i];
    const std::string where = "CDF table " + std::to_string(i) + ": ";
    check(len >= 2, where + "length " + std::to_string(len) + " < 2");
    check(static_cast<size_t>(len) <= cdf.size(),
          where + "length " + std::to_string(len) + " exceeds " + std::to_string(cdf.size()) + " entries");
    check(cdf[0] == 0, where + "does not start at 0");
    check(cdf[len - 1] == one, where + "does not end at " + std::to_string(one));
    for (int32_t j = 0; j + 1 < len; ++j)
      check(cdf[j + 1] > cdf[j], where + "not strictly increasing at entry " + std::to_string(j + 1));
  }
}

}  // namespace lic::ec
