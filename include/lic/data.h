// Training data: a recursive image folder, random crops and flips, loaded in a background
// thread. The sample stream is a pure function of (seed, position): each epoch is a seeded
// permutation, rank r of W takes positions r, r+W, ... (disjoint shards), and each
// position's crop, flip and training noise come from its own generator. So a run is
// repeatable on CPU, resumable mid-epoch, and W ranks x batch B see the same samples as
// one rank x batch W*B.
#pragma once
#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace lic {

uint64_t mix64(uint64_t x);  // splitmix64 finaliser
// Seed for anything drawn for sample `position` ("stream" separates uses).
uint64_t sample_seed(uint64_t seed, int64_t position, uint64_t stream);

class ImageFolder {
 public:
  // Lists images recursively; lic::Error if the folder is missing or has no image file.
  explicit ImageFolder(const std::string& dir, int64_t cache_bytes = int64_t(2) << 30);
  size_t size() const { return files_.size(); }
  const std::string& path(size_t i) const { return files_[i]; }
  // Decoded [3,H,W] uint8, or undefined when the file is unreadable (warned once).
  torch::Tensor get(size_t i);
  int64_t bad_count() const;

 private:
  std::vector<std::string> files_;
  std::vector<torch::Tensor> cache_;
  std::set<size_t> bad_;
  int64_t cache_bytes_, cached_ = 0;
  mutable std::mutex mu_;
};

struct LoaderOptions {
  int64_t batch_size = 8;
  int64_t patch = 256;
  uint64_t seed = 0;
  int rank = 0, world_size = 1;
  int prefetch = 4;  // batches queued ahead
};

class BatchLoader {
 public:
  // Starts producing batches at the rank's batch index `start_batch`.
  BatchLoader(std::shared_ptr<ImageFolder> data, LoaderOptions opts, int64_t start_batch = 0);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  struct Batch {
    torch::Tensor x;                  // [B,3,P,P] float in [0,1]
    std::vector<int64_t> positions;   // global stream positions of the samples
  };
  Batch next();  // lic::Error if no file in the folder can be read

  // The crop of one stream position (used by the producer; exposed for tests).
  torch::Tensor sample(int64_t position);

 private:
  void run();
  std::shared_ptr<ImageFolder> data_;
  LoaderOptions o_;
  int64_t next_batch_;
  std::deque<Batch> queue_;
  std::string error_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex perm_mu_;  // sample() may be called from tests while the producer runs
  int64_t perm_epoch_ = -1;
  std::vector<size_t> perm_;
};

// Uniform U(-1/2, 1/2) noise of `shape` = (B, ...) where sample b's slice is drawn from
// the generator of positions[b]: the same for a sample whatever batch or rank it is in.
torch::Tensor sample_noise(at::IntArrayRef shape, const std::vector<int64_t>& positions, uint64_t seed,
                           uint64_t stream);

}  // namespace lic
