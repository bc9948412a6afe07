// The image codec on top of a CompressionModel: image -> .lic container and back.
//
// Encoding pads the image on the right / bottom to a multiple of 64 by replicating the
// last row / column (the hyper-latent downsamples by 64), compresses it with the model and
// records the original size, the model name / N / M and the model fingerprint in the
// header. Decoding refuses a file whose model does not match (name, N, M, fingerprint)
// before touching the streams, then decompresses at the padded size and crops.
//
// Everything runs without autograd and with the model in eval mode (the model's previous
// train/eval mode is restored afterwards).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "lic/bitstream.h"
#include "lic/checkpoint.h"
#include "lic/image.h"
#include "lic/models.h"

namespace lic {

// Total downsampling of the hyperprior path: images are coded at a multiple of this.
constexpr int64_t kCodecPadMultiple = 64;

// x: (1, 3, H, W) -> (1, 3, ceil(H/64)*64, ceil(W/64)*64), replicate padding on the
// right and bottom. Returns x itself when nothing needs padding.
torch::Tensor pad_for_codec(const torch::Tensor& x, int64_t multiple = kCodecPadMultiple);

// Encodes img.x (values in [0, 1]) with the model. The header's channels field is the
// source's channel count (1 gray, 3 RGB, 4 RGBA; gray+alpha is recorded as 1); the pixels
// coded are always RGB. `meta` only has to describe the model (name / N / M when set).
LicFile encode_image(CompressionModel& m, const Image& img, const ModelMeta& meta);
// Same, for a bare (1, 3, H, W) tensor; `channels` is what the header records.
LicFile encode_image(CompressionModel& m, const torch::Tensor& x, uint8_t channels = 3);

// lic::Error unless the header names this model (name, N, M) with this fingerprint. The
// message names both fingerprints in hex: "file was encoded with model ... , this model is
// ...: decode with the same model".
void check_model_matches(CompressionModel& m, const LicHeader& header);

// Decodes a parsed file: (1, 3, height, width) float32 in [0, 1] on the model's device.
// Model mismatch, wrong stream count and corrupt rANS streams -> lic::Error.
torch::Tensor decode_image(CompressionModel& m, const LicFile& f);

// Exactly the image decode_image produces for x (bit for bit), computed with an eval-mode
// forward pass on the padded x: clamp to [0, 1], crop to x's size. x: (1, 3, H, W).
torch::Tensor reconstruct(CompressionModel& m, const torch::Tensor& x);

// Eval-mode forward of the padded x (no autograd, model mode restored): what reconstruct()
// and the rate estimates of the evaluator are computed from. `x_hat` is NOT cropped or
// clamped here; use crop_to / clamp.
ForwardOutput forward_eval(CompressionModel& m, const torch::Tensor& x_padded);

// (.., H', W') -> (.., h, w) top-left crop, contiguous.
torch::Tensor crop_to(const torch::Tensor& x, int64_t h, int64_t w);

// "1a2b3c4d5e6f7081": 16 lowercase hex digits.
std::string fingerprint_hex(uint64_t fp);

}  // namespace lic
