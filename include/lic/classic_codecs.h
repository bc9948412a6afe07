// Classic codecs (JPEG, WebP, JPEG 2000) through OpenCV, in memory, for RD comparisons.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lic {

struct ClassicCoded {
  std::vector<uint8_t> bytes;  // the complete encoded file
  torch::Tensor x_hat;         // decoded image, [1,3,H,W] float32 in [0,1], on x's device
  double encode_s = 0;         // wall time of the encoder call only (seconds)
  double decode_s = 0;         // wall time of the decoder call only (seconds)
};

// Codec names accepted by classic_roundtrip.
std::vector<std::string> classic_codec_names();  // {"jpeg", "webp", "jpeg2000"}
// True when this OpenCV build has an encoder for `codec` (false for unknown names).
bool classic_codec_available(const std::string& codec);

// Encodes x ([1,3,H,W] or [3,H,W] in [0,1], RGB; quantized to 8 bits first) and decodes it
// again. quality 1..100:
//   jpeg     -> IMWRITE_JPEG_QUALITY = quality
//   webp     -> IMWRITE_WEBP_QUALITY = quality (always lossy, also at 100)
//   jpeg2000 -> IMWRITE_JPEG2000_COMPRESSION_X1000 = quality * 10. With OpenCV's OpenJPEG
//               backend this is a target size of quality% of the raw 24-bit image
//               (~0.24 * quality bpp), never lossless; smooth images saturate early, so
//               useful RD sweeps use small qualities (about 1..20).
// Unknown codec, quality out of range, an OpenCV without that encoder or a codec failure
// -> lic::Error.
ClassicCoded classic_roundtrip(const std::string& codec, const torch::Tensor& x, int quality);

}  // namespace lic
