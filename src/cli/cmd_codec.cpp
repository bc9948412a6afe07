// lic compress / lic decompress: one image <-> one .lic file, like cwebp / dwebp.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.h"
#include "lic/atomic_file.h"
#include "lic/bitstream.h"
#include "lic/checkpoint.h"
#include "lic/codec.h"
#include "lic/error.h"
#include "lic/image.h"

namespace lic::cli {

namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) {
    const bool eq = fs::equivalent(a, b, ec);
    if (!ec) return eq;
  }
  return fs::weakly_canonical(fs::absolute(a), ec) == fs::weakly_canonical(fs::absolute(b), ec);
}

// The input, the output (default: the input with `ext`), refusing to clobber the input or,
// without --force, an existing file.
std::pair<std::string, std::string> in_out_paths(const cxxopts::ParseResult& r, const char* ext) {
  check(r.count("input") == 1, "no input file given (one is needed)");
  const auto in = r["input"].as<std::string>();
  check(!in.empty(), "empty input path");
  std::string out = r.count("output") ? r["output"].as<std::string>() : fs::path(in).replace_extension(ext).string();
  check(!out.empty(), "empty output path (-o)");
  std::error_code ec;
  check(fs::exists(in, ec), "cannot read " + in + ": no such file");
  check(!fs::is_directory(in, ec), "cannot read " + in + ": is a directory");
  check(!same_file(in, out), "output " + out + " is the input file: choose another -o");
  check(!fs::is_directory(out, ec), "output " + out + " is a directory");
  check(r.count("force") || !fs::exists(out, ec), "output " + out + " exists (use --force to overwrite it)");
  return {in, out};
}

void add_model_option(cxxopts::Options& o) {
  o.add_options()("m,model", "model file (lic export) or training checkpoint", cxxopts::value<std::string>())(
      "o,output", "output file", cxxopts::value<std::string>())("f,force", "overwrite an existing output")(
      "input", "input file", cxxopts::value<std::string>());
  o.parse_positional({"input"});
}

std::string model_path(const cxxopts::ParseResult& r) {
  check(r.count("model") == 1, "--model MODEL is required");
  return r["model"].as<std::string>();
}

}  // namespace

int cmd_compress(int argc, char** argv) {
  cxxopts::Options o("lic compress", "Encode an image (PNG, JPEG, WebP, ...) to a .lic file.\n"
                                     "Images are coded as 8-bit RGB: gray is expanded, alpha dropped, 16-bit rounded.");
  o.positional_help("IN.png");
  add_model_option(o);
  add_runtime_options(o);
  cxxopts::ParseResult r;
  if (!parse_or_help(o, argc, argv, r)) return 0;
  const auto [in, out] = in_out_paths(r, ".lic");
  const auto mpath = model_path(r);
  const auto device = setup_runtime(r);

  Image img = load_image(in);
  ModelMeta meta;
  auto model = load_model(mpath, &meta);
  model->to(device);

  const auto t0 = std::chrono::steady_clock::now();
  LicFile f = encode_image(*model, img, meta);
  const auto bytes = serialize(f);
  const double secs = seconds_since(t0);
  write_file_atomic(out, bytes);

  const int64_t H = img.x.size(2), W = img.x.size(3);
  if (!img.note.empty()) std::fprintf(stderr, "note: %s: %s\n", in.c_str(), img.note.c_str());
  std::printf("%s (%lldx%lld) -> %s: %zu bytes, %.3f bpp, %.2f s\n", in.c_str(), static_cast<long long>(W),
              static_cast<long long>(H), out.c_str(), bytes.size(), double(bytes.size()) * 8.0 / double(H * W),
              secs);
  return 0;
}

int cmd_decompress(int argc, char** argv) {
  cxxopts::Options o("lic decompress", "Decode a .lic file to an image; the format follows the output extension "
                                       "(default: IN with .png). The model must be the one the file was coded with.");
  o.positional_help("IN.lic");
  add_model_option(o);
  o.add_options()("max-pixels", "refuse files whose image is larger than this many pixels",
                  cxxopts::value<uint64_t>()->default_value(std::to_string(DecodeLimits{}.max_pixels)));
  add_runtime_options(o);
  cxxopts::ParseResult r;
  if (!parse_or_help(o, argc, argv, r)) return 0;
  const auto [in, out] = in_out_paths(r, ".png");
  const auto mpath = model_path(r);
  const auto device = setup_runtime(r);

  DecodeLimits limits;
  limits.max_pixels = r["max-pixels"].as<uint64_t>();
  check(limits.max_pixels > 0, "--max-pixels must be positive");

  const auto bytes = read_file(in);
  LicFile f;
  try {
    f = parse(bytes, limits);
  } catch (const Error& e) {
    throw Error(in + ": " + e.what());
  }
  auto model = load_model(mpath);
  model->to(device);

  const auto t0 = std::chrono::steady_clock::now();
  torch::Tensor x_hat;
  try {
    x_hat = decode_image(*model, f).to(torch::kCPU);
  } catch (const Error& e) {
    throw Error(in + ": " + e.what());
  }
  const double secs = seconds_since(t0);
  save_image(out, x_hat);
  std::printf("%s -> %s (%ux%u), %.2f s\n", in.c_str(), out.c_str(), f.header.width, f.header.height, secs);
  return 0;
}

}  // namespace lic::cli
