// rANS entropy coding with CompressAI-compatible streams (ryg rans64: 64-bit state,
// 32-bit output words, 16-bit CDF precision, escape symbol + 4-bit bypass chunks).
// Torch-free on purpose: the fuzzer and the codec core link it without LibTorch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lic::ec {

constexpr int kPrecision = 16;       // CDF precision in bits
constexpr int kBypassPrecision = 4;  // raw chunk width for escaped values

// PMF (probabilities, last entry = tail mass) -> quantized CDF of size pmf.size()+1,
// cdf[0]=0, cdf.back()=2^precision, every symbol with non-zero frequency.
// Same algorithm as CompressAI's pmf_to_quantized_cdf (bit-exact tables).
// Throws lic::Error on negative / non-finite entries or an all-zero pmf.
std::vector<uint32_t> pmf_to_quantized_cdf(const std::vector<float>& pmf, int precision = kPrecision);

// A set of quantized CDFs as the coder uses them. Row i has lengths[i] valid entries
// (including the escape symbol); offsets[i] is the value of symbol 0.
struct CdfTables {
  std::vector<std::vector<int32_t>> cdfs;
  std::vector<int32_t> lengths;
  std::vector<int32_t> offsets;

  size_t size() const { return cdfs.size(); }
  // Throws lic::Error unless every table is a valid, strictly increasing 16-bit CDF.
  void validate() const;
};

// Encodes values with per-symbol table indexes. Values outside a table's range are
// escaped and coded losslessly with the bypass.
std::vector<uint8_t> rans_encode(const std::vector<int32_t>& values, const std::vector<int32_t>& indexes,
                                 const CdfTables& tables);

// Decodes indexes.size() values. Never reads past [data, data+size); a stream that ends
// early, an index out of range or a corrupt state throws lic::Error.
std::vector<int32_t> rans_decode(const uint8_t* data, size_t size, const std::vector<int32_t>& indexes,
                                 const CdfTables& tables);

// Ideal code length in bits of `values` under `tables` (-sum log2 p, escapes counted as the
// escape symbol's probability plus bypass bits). Used by tests and the rate accounting.
double ideal_bits(const std::vector<int32_t>& values, const std::vector<int32_t>& indexes,
                  const CdfTables& tables);

}  // namespace lic::ec
