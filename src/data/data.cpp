#include "lic/data.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "lic/error.h"
#include "lic/image.h"

namespace lic {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t sample_seed(uint64_t seed, int64_t position, uint64_t stream) {
  return mix64(mix64(seed) ^ mix64(static_cast<uint64_t>(position) * 0x2545F4914F6CDD1Dull + stream));
}

// ---------------------------------------------------------------------------------------

ImageFolder::ImageFolder(const std::string& dir, int64_t cache_bytes) : cache_bytes_(cache_bytes) {
  files_ = list_images(dir, true);
  check(!files_.empty(), "no image files in " + dir + " (looked for png, jpg, webp, bmp, tiff, ppm)");
  cache_.resize(files_.size());
}

torch::Tensor ImageFolder::get(size_t i) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (bad_.count(i)) return {};
    if (cache_[i].defined()) return cache_[i];
  }
  torch::Tensor u8;
  try {
    auto img = load_image(files_[i]);
    u8 = torch::round(img.x[0] * 255).to(torch::kUInt8).contiguous();
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lk(mu_);
    if (bad_.insert(i).second) spdlog::warn("skipping unreadable training file: {}", e.what());
    return {};
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (cached_ + u8.numel() <= cache_bytes_) {
    cache_[i] = u8;
    cached_ += u8.numel();
  }
  return u8;
}

int64_t ImageFolder::bad_count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int64_t>(bad_.size());
}

// ---------------------------------------------------------------------------------------

BatchLoader::BatchLoader(std::shared_ptr<ImageFolder> data, LoaderOptions o, int64_t start_batch)
    : data_(std::move(data)), o_(o), next_batch_(start_batch) {
  check(o_.batch_size > 0 && o_.patch > 0, "batch size and patch must be positive");
  check(o_.world_size >= 1 && o_.rank >= 0 && o_.rank < o_.world_size, "bad rank / world size");
  thread_ = std::thread([this] { run(); });
}

BatchLoader::~BatchLoader() {
  stop_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

torch::Tensor BatchLoader::sample(int64_t position) {
  const int64_t n = static_cast<int64_t>(data_->size());
  const int64_t epoch = position / n;
  std::unique_lock<std::mutex> plk(perm_mu_);
  if (epoch != perm_epoch_) {
    perm_.resize(n);
    for (int64_t i = 0; i < n; ++i) perm_[i] = i;
    std::mt19937_64 rng(sample_seed(o_.seed, epoch, 0x5045524d));  // "PERM"
    std::shuffle(perm_.begin(), perm_.end(), rng);
    perm_epoch_ = epoch;
  }
  // Unreadable files are replaced by the next readable one in the permutation.
  torch::Tensor img;
  for (int64_t k = 0; k < n && !img.defined(); ++k) img = data_->get(perm_[(position + k) % n]);
 plk.unlock();
  check(img.defined(), "none of the " + std::to_string(n) + " files in the training folder can be read");

  std::mt19937_64 rng(sample_seed(o_.seed, position, 0x43524f50));  // "CROP"
  const int64_t H = img.size(1), W = img.size(2), P = o_.patch;
  const int64_t top = H > P ? static_cast<int64_t>(rng() % static_cast<uint64_t>(H - P + 1)) : 0;
  const int64_t left = W > P ? static_cast<int64_t>(rng() % static_cast<uint64_t>(W - P + 1)) : 0;
  using torch::indexing::Slice;
  auto crop = img.index({Slice(), Slice(top, top + std::min(H, P)), Slice(left, left + std::min(W, P))})
                  .to(torch::kFloat32)
                  .div_(255.0f);
  if (H < P || W < P)  // smaller than the patch: replicate the border
    crop = torch::nn::functional::pad(crop.unsqueeze(0), torch::nn::functional::PadFuncOptions(
                                                             {0, std::max<int64_t>(0, P - W), 0, std::max<int64_t>(0, P - H)})
                                                             .mode(torch::kReplicate))
               .squeeze(0);
  if (rng() & 1) crop = crop.flip({2});
  return crop.contiguous();
}

void BatchLoader::run() {
  try {
    while (!stop_) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [this] { return stop_ || static_cast<int>(queue_.size()) < o_.prefetch; });
        if (stop_) return;
      }
      Batch b;
      std::vector<torch::Tensor> xs;
      for (int64_t j = 0; j < o_.batch_size; ++j) {
        const int64_t k = next_batch_ * o_.batch_size + j;  // rank-local sample counter
        const int64_t pos = k * o_.world_size + o_.rank;
        b.positions.push_back(pos);
        xs.push_back(sample(pos));
      }
      b.x = torch::stack(xs);
      ++next_batch_;
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(std::move(b));
      cv_.notify_all();
    }
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lk(mu_);
    error_ = e.what();
    cv_.notify_all();
  }
}

BatchLoader::Batch BatchLoader::next() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [this] { return !queue_.empty() || !error_.empty(); });
  if (queue_.empty()) throw Error(error_);
  auto b = std::move(queue_.front());
  queue_.pop_front();
  cv_.notify_all();
  return b;
}

torch::Tensor sample_noise(at::IntArrayRef shape, const std::vector<int64_t>& positions, uint64_t seed,
                           uint64_t stream) {
  check(shape.size() >= 1 && shape[0] == static_cast<int64_t>(positions.size()), "sample_noise: batch mismatch");
  std::vector<int64_t> one(shape.begin() + 1, shape.end());
  std::vector<torch::Tensor> parts;
  for (auto p : positions) {
    auto gen = at::detail::createCPUGenerator(sample_seed(seed, p, stream));
    parts.push_back(torch::rand(one, gen) - 0.5);
  }
  return torch::stack(parts);
}

}  // namespace lic
