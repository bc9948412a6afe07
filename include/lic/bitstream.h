// The .lic container: header, coded streams, CRC32. Byte layout in docs/FORMAT.md.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lic {

constexpr std::array<uint8_t, 4> kLicMagic = {'L', 'I', 'C', '1'};
constexpr uint8_t kFormatVersion = 1;

struct DecodeLimits {
  // 67 Mpx (8192 x 8192): refuse larger headers before allocating anything; the synthesis
  // transform needs ~N x 4 bytes per pixel at half resolution, so this bounds decoder memory.
  uint64_t max_pixels = 1ull << 26;
  uint64_t max_stream_bytes = 1ull << 30;
};

struct LicHeader {
  std::string model;        // registry name, e.g. "hyperprior" (<= 64 bytes)
  uint32_t N = 0, M = 0;    // transform width, latent channels
  uint64_t fingerprint = 0; // hash of weights and CDF tables (see model_fingerprint)
  uint32_t height = 0, width = 0;
  uint8_t channels = 3;     // channels of the original image (1, 3 or 4); decode gives RGB
};

struct LicFile {
  LicHeader header;
  // Coded streams in model order: hyperprior models write {y, z}; factorized writes {y}.
  std::vector<std::vector<uint8_t>> streams;
};

std::vector<uint8_t> serialize(const LicFile& file);
// Parses and validates (magic, version, sizes against limits, lengths, CRC32). Throws
// lic::Error with one clear message for foreign, truncated or corrupt input.
LicFile parse(const uint8_t* data, size_t size, const DecodeLimits& limits = {});
inline LicFile parse(const std::vector<uint8_t>& bytes, const DecodeLimits& limits = {}) {
  return parse(bytes.data(), bytes.size(), limits);
}

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);
// Size in bytes of everything but the streams' payload (header + length fields + CRC).
size_t header_overhead(const LicFile& file);

}  // namespace lic
