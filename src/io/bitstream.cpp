// The .lic container (see docs/FORMAT.md): little-endian header, length-prefixed streams and
// a CRC32 trailer. parse() treats its input as hostile: every read is bounds-checked and the
// sizes are checked against DecodeLimits before anything is allocated.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "lic/bitstream.h"
#include "lic/error.h"

namespace lic {
namespace {

constexpr size_t kMaxModelName = 64;
constexpr size_t kMaxStreams = 4;
constexpr size_t kCrcBytes = 4;
// magic(4) version(1) header_length(2) name_length(1) | N(4) M(4) fingerprint(8) height(4)
// width(4) channels(1) stream_count(1): header size = kFixedHeader + name length.
constexpr size_t kFixedHeader = 4 + 1 + 2 + 1 + 4 + 4 + 8 + 4 + 4 + 1 + 1;  // 34

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

bool valid_model_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxModelName) return false;
  for (unsigned char c : name)
    if (c < 0x20 || c > 0x7E) return false;
  return true;
}

bool valid_channels(uint8_t c) { return c == 1 || c == 3 || c == 4; }

class Writer {
 public:
  explicit Writer(size_t reserve) { buf_.reserve(reserve); }
  void u8(uint8_t v) { buf_.push_back(v); }
  void u16(uint16_t v) { le(v, 2); }
  void u32(uint32_t v) { le(v, 4); }
  void u64(uint64_t v) { le(v, 8); }
  void bytes(const uint8_t* p, size_t n) { buf_.insert(buf_.end(), p, p + n); }
  std::vector<uint8_t>& buf() { return buf_; }

 private:
  void le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> buf_;
};

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  const uint8_t* pos() const { return p_; }
  uint8_t u8() { return static_cast<uint8_t>(le(1)); }
  uint16_t u16() { return static_cast<uint16_t>(le(2)); }
  uint32_t u32() { return static_cast<uint32_t>(le(4)); }
  uint64_t u64() { return le(8); }
  void skip(size_t n) {
    need(n);
    p_ += n;
  }

 private:
  void need(size_t n) const {
    if (remaining() < n) throw Error("truncated .lic file: header ends early");
  }
  uint64_t le(size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p_[i]) << (8 * i);
    p_ += n;
    return v;
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

uint32_t read_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
  uint32_t c = crc ^ 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = kCrcTable[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

size_t header_overhead(const LicFile& file) {
  return kFixedHeader + file.header.model.size() + 4 * file.streams.size() + kCrcBytes;
}

std::vector<uint8_t> serialize(const LicFile& file) {
  const LicHeader& h = file.header;
  check(valid_model_name(h.model), "cannot write .lic: model name must be 1.." + std::to_string(kMaxModelName) +
                                       " printable ASCII characters, got \"" + h.model + "\"");
  check(h.height > 0 && h.width > 0, "cannot write .lic: image size " + std::to_string(h.height) + "x" +
                                         std::to_string(h.width) + " is empty");
  check(valid_channels(h.channels),
        "cannot write .lic: channels must be 1, 3 or 4, got " + std::to_string(h.channels));
  check(!file.streams.empty() && file.streams.size() <= kMaxStreams,
        "cannot write .lic: stream count must be 1.." + std::to_string(kMaxStreams) + ", got " +
            std::to_string(file.streams.size()));
  size_t payload = 0;
  for (const auto& s : file.streams) {
    check(s.size() <= std::numeric_limits<uint32_t>::max(), "cannot write .lic: stream larger than 4 GiB");
    payload += s.size();
  }

  const size_t header_len = kFixedHeader + h.model.size();
  Writer w(header_overhead(file) + payload);
  w.bytes(kLicMagic.data(), kLicMagic.size());
  w.u8(kFormatVersion);
  w.u16(static_cast<uint16_t>(header_len));
  w.u8(static_cast<uint8_t>(h.model.size()));
  w.bytes(reinterpret_cast<const uint8_t*>(h.model.data()), h.model.size());
  w.u32(h.N);
  w.u32(h.M);
  w.u64(h.fingerprint);
  w.u32(h.height);
  w.u32(h.width);
  w.u8(h.channels);
  w.u8(static_cast<uint8_t>(file.streams.size()));
  for (const auto& s : file.streams) {
    w.u32(static_cast<uint32_t>(s.size()));
    w.bytes(s.data(), s.size());
  }
  auto& buf = w.buf();
  const uint32_t crc = crc32(buf.data(), buf.size());
  w.u32(crc);
  return std::move(buf);
}

LicFile parse(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  check(data != nullptr || size == 0, "not a .lic file");
  // Magic: a short prefix of it is a truncated file, anything else is foreign.
  const size_t probe = size < kLicMagic.size() ? size : kLicMagic.size();
  const bool magic_prefix = size > 0 && std::memcmp(data, kLicMagic.data(), probe) == 0;
  if (!magic_prefix) throw Error("not a .lic file");
  if (size < kLicMagic.size()) throw Error("truncated .lic file: header ends early");

  Reader r(data, size);
  r.skip(kLicMagic.size());
  const uint8_t version = r.u8();
  if (version != kFormatVersion)
    throw Error("unsupported .lic version " + std::to_string(version) + " (this build reads version " +
                std::to_string(kFormatVersion) + ")");
  const uint16_t header_len = r.u16();
  const uint8_t name_len = r.u8();
  if (name_len == 0 || name_len > kMaxModelName)
    throw Error("corrupt .lic header: model name length " + std::to_string(name_len) + " not in 1.." +
                std::to_string(kMaxModelName));
  if (header_len != kFixedHeader + name_len)
    throw Error("corrupt .lic header: header length " + std::to_string(header_len) + ", expected " +
                std::to_string(kFixedHeader + name_len));
  if (size < header_len) throw Error("truncated .lic file: header ends early");

  LicFile file;
  LicHeader& h = file.header;
  const uint8_t* name = r.pos();
  r.skip(name_len);
  h.model.assign(reinterpret_cast<const char*>(name), name_len);
  if (!valid_model_name(h.model)) throw Error("corrupt .lic header: model name is not printable ASCII");
  h.N = r.u32();
  h.M = r.u32();
  h.fingerprint = r.u64();
  h.height = r.u32();
  h.width = r.u32();
  h.channels = r.u8();
  const uint8_t n_streams = r.u8();

  // Sizes are checked before anything proportional to them is allocated.
  if (h.height == 0 || h.width == 0)
    throw Error("corrupt .lic header: image size " + std::to_string(h.height) + "x" + std::to_string(h.width) +
                " is empty");
  const uint64_t pixels = static_cast<uint64_t>(h.height) * h.width;
  if (pixels > limits.max_pixels)
    throw Error("image too large: " + std::to_string(h.height) + "x" + std::to_string(h.width) + " exceeds the limit of " +
                std::to_string(limits.max_pixels) + " pixels");
  // The codec decodes at the size padded to a multiple of 64 (kCodecPadMultiple, codec.h), so
  // a 1 x 2^26 header would cost as much as a 64 x 2^26 image: bound that size as well (one
  // 64 x 64 block is always allowed).
  constexpr unsigned __int128 kPad = 64;
  const unsigned __int128 padded = (h.height + kPad - 1) / kPad * kPad * ((h.width + kPad - 1) / kPad * kPad);
  if (padded > std::max<unsigned __int128>(limits.max_pixels, kPad * kPad))
    throw Error("image too large: " + std::to_string(h.height) + "x" + std::to_string(h.width) + " is decoded at " +
                std::to_string((h.height + 63ull) / 64 * 64) + "x" + std::to_string((h.width + 63ull) / 64 * 64) +
                " (multiples of 64), which exceeds the limit of " + std::to_string(limits.max_pixels) + " pixels");
  if (!valid_channels(h.channels))
    throw Error("corrupt .lic header: channels must be 1, 3 or 4, got " + std::to_string(h.channels));
  if (n_streams == 0 || n_streams > kMaxStreams)
    throw Error("corrupt .lic header: stream count " + std::to_string(n_streams) + " not in 1.." +
                std::to_string(kMaxStreams));

  // Walk the length-prefixed streams without copying them.
  std::array<const uint8_t*, kMaxStreams> starts{};
  std::array<uint32_t, kMaxStreams> lengths{};
  for (size_t i = 0; i < n_streams; ++i) {
    if (r.remaining() < 4 + kCrcBytes) throw Error("truncated .lic file: stream " + std::to_string(i) + " missing");
    lengths[i] = r.u32();
    if (lengths[i] > limits.max_stream_bytes)
      throw Error("corrupt .lic file: stream " + std::to_string(i) + " length " + std::to_string(lengths[i]) +
                  " exceeds the limit of " + std::to_string(limits.max_stream_bytes) + " bytes");
    if (lengths[i] > r.remaining() - kCrcBytes)
      throw Error("truncated .lic file: stream " + std::to_string(i) + " length " + std::to_string(lengths[i]) +
                  " exceeds the " + std::to_string(r.remaining() - kCrcBytes) + " remaining bytes");
    starts[i] = r.pos();
    r.skip(lengths[i]);
  }
  if (r.remaining() < kCrcBytes) throw Error("truncated .lic file: CRC missing");
  if (r.remaining() > kCrcBytes)
    throw Error("corrupt .lic file: " + std::to_string(r.remaining() - kCrcBytes) + " bytes of trailing garbage");

  const size_t body = size - kCrcBytes;
  if (crc32(data, body) != read_le32(data + body)) throw Error("corrupt file: CRC mismatch");

  file.streams.resize(n_streams);
  for (size_t i = 0; i < n_streams; ++i) file.streams[i].assign(starts[i], starts[i] + lengths[i]);
  return file;
}

}  // namespace lic
