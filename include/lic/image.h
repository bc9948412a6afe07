// Image file I/O: loading any common format into a [1,3,H,W] float RGB tensor and saving
// tensors back to disk. Every user-facing failure throws lic::Error with one clear message.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lic {

// Largest image accepted by load_image (width * height).
constexpr int64_t kMaxImagePixels = int64_t(1) << 28;

struct Image {
  torch::Tensor x;          // [1,3,H,W] float32 in [0,1], RGB order, CPU, contiguous
  int orig_channels = 0;    // channels stored in the file (1 gray, 2 gray+alpha, 3, 4)
  int orig_depth_bits = 0;  // bits per sample stored in the file (8 or 16)
  std::string note;         // what was converted, e.g. "gray converted to RGB"; empty if nothing
};

// Loads an image with OpenCV (IMREAD_UNCHANGED, so EXIF orientation is NOT applied: the
// stored pixels are what gets compressed). Conversions, each recorded in `note`
// (joined with ", "): gray -> RGB ("gray converted to RGB"), alpha channel dropped without
// compositing ("alpha dropped"), 16-bit -> 8-bit by rounding v/257 ("16-bit reduced to
// 8-bit"). Floating-point and signed images are rejected. Images above kMaxImagePixels are
// rejected after decoding. Errors: lic::Error("cannot read image <path>: <reason>").
Image load_image(const std::string& path);

// [1,3,H,W] or [3,H,W] (any float dtype, any device) -> CPU uint8 [H,W,3] contiguous, RGB,
// via round(clamp(x, 0, 1) * 255). NaN maps to 0.
torch::Tensor to_uint8_hwc(const torch::Tensor& x);

// Inverse of to_uint8_hwc: uint8 [H,W,3] -> float32 [1,3,H,W] in [0,1] (CPU).
torch::Tensor from_uint8_hwc(const torch::Tensor& hwc);

// Saves x ([1,3,H,W] or [3,H,W], values in [0,1], RGB) quantized to 8 bits; the format
// follows the extension (png, ppm, bmp, jpg/jpeg (quality 95), webp (lossless), tif/tiff,
// jp2 ... whatever this OpenCV build can write). The file is replaced atomically.
// Unknown/unsupported extension or an encoding failure -> lic::Error.
void save_image(const std::string& path, const torch::Tensor& x);

// True when the extension is one of png jpg jpeg webp bmp tif tiff ppm pgm (case-insensitive).
bool is_image_path(const std::string& path);

// Image files (is_image_path) under `dir`, sorted by path. Entries whose name starts with
// '.' (hidden files and folders) are skipped; directory symlinks are not followed.
// Missing or non-directory `dir` -> lic::Error. An empty result is not an error.
std::vector<std::string> list_images(const std::string& dir, bool recursive = true);

}  // namespace lic
