// rANS coder, bit-compatible with CompressAI's rans_interface.cpp (ryg's rans64: 64-bit
// state, L = 2^31, 32-bit words emitted backwards, 16-bit CDFs, escape symbol followed by
// 4-bit bypass chunks). Written for untrusted input on the decode side: every word read is
// bounds-checked and every table lookup is range-checked.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "lic/entropy_coding.h"
#include "lic/error.h"

namespace lic::ec {
namespace {

constexpr uint64_t kRansL = uint64_t{1} << 31;  // lower bound of the normalized state interval
constexpr uint32_t kMaxBypassVal = (1u << kBypassPrecision) - 1;  // 15
// A 32-bit raw value needs at most 8 chunks of 4 bits.
constexpr int kMaxBypassChunks = 32 / kBypassPrecision;

// Encoder: emits words from the end of the stream towards its start. Words are collected in
// emission order and reversed when the stream is assembled.
class Rans64Encoder {
 public:
  explicit Rans64Encoder(size_t reserve_words) { words_.reserve(reserve_words); }

  void put(uint32_t start, uint32_t freq, int scale_bits) {
    uint64_t x = x_;
    const uint64_t x_max = ((kRansL >> scale_bits) << 32) * freq;
    if (x >= x_max) {
      words_.push_back(static_cast<uint32_t>(x));
      x >>= 32;
    }
    x_ = ((x / freq) << scale_bits) + (x % freq) + start;
  }

  // CompressAI's Rans64EncPutBits: x_max = ((L >> 16) << 32) * (1 << (16 - nbits)),
  // i.e. (L >> nbits) << 32.
  void put_bits(uint32_t val, int nbits) {
    uint64_t x = x_;
    const uint64_t x_max = ((kRansL >> 16) << 32) * (uint64_t{1} << (16 - nbits));
    if (x >= x_max) {
      words_.push_back(static_cast<uint32_t>(x));
      x >>= 32;
    }
    x_ = (x << nbits) | val;
  }

  // Flush (two words: low then high) followed by the emitted words, last emitted first;
  // each word little-endian.
  std::vector<uint8_t> finish() const {
    std::vector<uint8_t> out;
    out.reserve((words_.size() + 2) * 4);
    auto put_word = [&out](uint32_t w) {
      out.push_back(static_cast<uint8_t>(w));
      out.push_back(static_cast<uint8_t>(w >> 8));
      out.push_back(static_cast<uint8_t>(w >> 16));
      out.push_back(static_cast<uint8_t>(w >> 24));
    };
    put_word(static_cast<uint32_t>(x_));
    put_word(static_cast<uint32_t>(x_ >> 32));
    for (auto it = words_.rbegin(); it != words_.rend(); ++it) put_word(*it);
    return out;
  }

 private:
  uint64_t x_ = kRansL;
  std::vector<uint32_t> words_;
};

class Rans64Decoder {
 public:
  Rans64Decoder(const uint8_t* data, size_t size) : p_(data), end_(data + size) {
    const uint64_t lo = next_word();
    const uint64_t hi = next_word();
    x_ = lo | (hi << 32);
  }

  uint32_t get(int scale_bits) const { return static_cast<uint32_t>(x_ & ((uint64_t{1} << scale_bits) - 1)); }

  void advance(uint32_t start, uint32_t freq, int scale_bits) {
    const uint64_t mask = (uint64_t{1} << scale_bits) - 1;
    // start <= (x & mask) < start + freq holds because `start` was found from `get`.
    x_ = freq * (x_ >> scale_bits) + (x_ & mask) - start;
    if (x_ < kRansL) x_ = (x_ << 32) | next_word();
  }

  uint32_t get_bits(int nbits) {
    const uint32_t val = static_cast<uint32_t>(x_ & ((uint64_t{1} << nbits) - 1));
    x_ >>= nbits;
    if (x_ < kRansL) x_ = (x_ << 32) | next_word();
    return val;
  }

  uint64_t state() const { return x_; }
  bool at_end() const { return p_ == end_; }

 private:
  uint32_t next_word() {
    if (end_ - p_ < 4) throw Error("truncated rANS stream");
    const uint32_t w = static_cast<uint32_t>(p_[0]) | (static_cast<uint32_t>(p_[1]) << 8) |
                       (static_cast<uint32_t>(p_[2]) << 16) | (static_cast<uint32_t>(p_[3]) << 24);
    p_ += 4;
    return w;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  uint64_t x_ = 0;
};

// Splits a value (already relative to the table offset) into the coded symbol and, for an
// escape, the raw bypass value. Returns true for an escape.
bool split_value(int64_t value, int32_t max_value, int32_t* symbol, uint64_t* raw) {
  if (value < 0) {
    *raw = static_cast<uint64_t>(-2 * value - 1);
  } else if (value >= max_value) {
    *raw = static_cast<uint64_t>(2 * (value - max_value));
  } else {
    *symbol = static_cast<int32_t>(value);
    *raw = 0;
    return false;
  }
  check(*raw <= std::numeric_limits<uint32_t>::max(),
        "rANS encode: value " + std::to_string(value) + " is outside the codable range");
  *symbol = max_value;
  return true;
}

int bypass_chunks(uint64_t raw) {
  int n = 0;
  while ((raw >> (n * kBypassPrecision)) != 0) ++n;
  return n;
}

int32_t checked_index(int32_t idx, const CdfTables& tables) {
  check(idx >= 0 && static_cast<size_t>(idx) < tables.size(),
        "rANS: CDF index " + std::to_string(idx) + " out of range [0, " + std::to_string(tables.size()) + ")");
  return idx;
}

}  // namespace

std::vector<uint8_t> rans_encode(const std::vector<int32_t>& values, const std::vector<int32_t>& indexes,
                                 const CdfTables& tables) {
  check(values.size() == indexes.size(), "rans_encode: " + std::to_string(values.size()) + " values but " +
                                             std::to_string(indexes.size()) + " indexes");
  tables.validate();
  Rans64Encoder enc(values.size() / 2 + 16);

  // CompressAI buffers the symbols in decode order and encodes the buffer backwards. We walk
  // the values backwards and emit each value's pieces in reverse decode order directly:
  // raw chunks (most significant first), chunk count (remainder, then the 15s), symbol.
  for (size_t k = values.size(); k-- > 0;) {
    const int32_t idx = checked_index(indexes[k], tables);
    const auto& cdf = tables.cdfs[idx];
    const int32_t max_value = tables.lengths[idx] - 2;
    const int64_t value = static_cast<int64_t>(values[k]) - tables.offsets[idx];

    int32_t symbol = 0;
    uint64_t raw = 0;
    if (split_value(value, max_value, &symbol, &raw)) {
      const int n_bypass = bypass_chunks(raw);
      for (int j = n_bypass - 1; j >= 0; --j)
        enc.put_bits(static_cast<uint32_t>((raw >> (j * kBypassPrecision)) & kMaxBypassVal), kBypassPrecision);
      // Decode order of the count: 15, 15, ..., remainder. Reverse it here.
      const uint32_t n = static_cast<uint32_t>(n_bypass);
      enc.put_bits(n % kMaxBypassVal, kBypassPrecision);
      for (uint32_t r = 0; r < n / kMaxBypassVal; ++r) enc.put_bits(kMaxBypassVal, kBypassPrecision);
    }
    const uint32_t start = static_cast<uint32_t>(cdf[symbol]);
    const uint32_t freq = static_cast<uint32_t>(cdf[symbol + 1] - cdf[symbol]);
    enc.put(start, freq, kPrecision);
  }
  return enc.finish();
}

std::vector<int32_t> rans_decode(const uint8_t* data, size_t size, const std::vector<int32_t>& indexes,
                                 const CdfTables& tables) {
  std::vector<int32_t> out;
  if (indexes.empty()) return out;
  tables.validate();
  check(data != nullptr || size == 0, "rans_decode: null data");
  check(size >= 8, "truncated rANS stream: " + std::to_string(size) + " bytes");
  check(size % 4 == 0, "corrupt rANS stream: size " + std::to_string(size) + " is not a multiple of 4");
  for (int32_t idx : indexes) checked_index(idx, tables);

  out.resize(indexes.size());
  Rans64Decoder dec(data, size);
  for (size_t i = 0; i < indexes.size(); ++i) {
    const int32_t idx = indexes[i];
    const auto& cdf = tables.cdfs[idx];
    const int32_t len = tables.lengths[idx];
    const int32_t max_value = len - 2;

    const int32_t cum = static_cast<int32_t>(dec.get(kPrecision));
    // First entry > cum; the tables are strictly increasing (validated).
    const auto first = cdf.begin();
    const auto last = cdf.begin() + len;
    const auto it = std::upper_bound(first, last, cum);
    if (it == first || it == last) throw Error("corrupt rANS stream: no symbol for state");
    const int32_t s = static_cast<int32_t>(it - first) - 1;
    dec.advance(static_cast<uint32_t>(cdf[s]), static_cast<uint32_t>(cdf[s + 1] - cdf[s]), kPrecision);

    int64_t value = s;
    if (s == max_value) {
      // Chunk count: 4-bit chunks summed while a chunk equals 15. A 32-bit raw value needs
      // at most 8 chunks, so a valid count is a single chunk <= 8.
      uint32_t chunk = dec.get_bits(kBypassPrecision);
      uint32_t n_bypass = chunk;
      while (chunk == kMaxBypassVal && n_bypass <= static_cast<uint32_t>(kMaxBypassChunks)) {
        chunk = dec.get_bits(kBypassPrecision);
        n_bypass += chunk;
      }
      if (n_bypass > static_cast<uint32_t>(kMaxBypassChunks))
        throw Error("corrupt rANS stream: bypass chunk count " + std::to_string(n_bypass) + " too large");
      uint64_t raw = 0;
      for (uint32_t j = 0; j < n_bypass; ++j)
        raw |= static_cast<uint64_t>(dec.get_bits(kBypassPrecision)) << (j * kBypassPrecision);
      value = static_cast<int64_t>(raw >> 1);
      if (raw & 1)
        value = -value - 1;
      else
        value += max_value;
    }
    const int64_t v = value + tables.offsets[idx];
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
      throw Error("corrupt rANS stream: decoded value out of range");
    out[i] = static_cast<int32_t>(v);
  }
  // The encoder starts from state L and every step is exactly inverted, so a stream decoded
  // with the right tables ends in state L with every word consumed.
  if (dec.state() != kRansL || !dec.at_end()) throw Error("corrupt rANS stream: inconsistent final state");
  return out;
}

double ideal_bits(const std::vector<int32_t>& values, const std::vector<int32_t>& indexes,
                  const CdfTables& tables) {
  check(values.size() == indexes.size(), "ideal_bits: " + std::to_string(values.size()) + " values but " +
                                             std::to_string(indexes.size()) + " indexes");
  tables.validate();
  double bits = 0.0;
  const double one = static_cast<double>(uint32_t{1} << kPrecision);
  for (size_t k = 0; k < values.size(); ++k) {
    const int32_t idx = checked_index(indexes[k], tables);
    const auto& cdf = tables.cdfs[idx];
    const int32_t max_value = tables.lengths[idx] - 2;
    int32_t symbol = 0;
    uint64_t raw = 0;
    if (split_value(static_cast<int64_t>(values[k]) - tables.offsets[idx], max_value, &symbol, &raw)) {
      const int n_bypass = bypass_chunks(raw);
      const int count_chunks = n_bypass / static_cast<int>(kMaxBypassVal) + 1;
      bits += kBypassPrecision * static_cast<double>(n_bypass + count_chunks);
    }
    const double freq = static_cast<double>(cdf[symbol + 1] - cdf[symbol]);
    bits -= std::log2(freq / one);
  }
  return bits;
}

}  // namespace lic::ec
