// Atomic file replacement: write a temporary in the target's directory, fsync it, rename it
// over the target, fsync the directory (best effort).
#include "lic/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "lic/error.h"

namespace lic {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void fsync_file(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw Error("cannot open " + path + " to flush it: " + errno_text(errno));
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error("cannot flush " + path + ": " + errno_text(err));
  }
  if (::close(fd) != 0) throw Error("cannot close " + path + ": " + errno_text(errno));
}

void fsync_dir_best_effort(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

void write_all(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error("cannot create " + path + ": " + errno_text(errno));
  const size_t written = size ? std::fwrite(data, 1, size, f) : 0;
  const int write_err = (written == size) ? 0 : (errno ? errno : EIO);
  const int close_rc = std::fclose(f);
  if (write_err != 0) throw Error("cannot write " + path + ": " + errno_text(write_err));
  if (close_rc != 0) throw Error("cannot write " + path + ": " + errno_text(errno));
}

}  // namespace

void write_atomic(const std::string& path, const std::function<void(const std::string& tmp_path)>& write) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(static_cast<long long>(::getpid())) + "." + std::to_string(counter++);
  try {
    write(tmp);
    fsync_file(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error("cannot rename " + tmp + " to " + path + ": " + errno_text(errno));
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": " + e.what());
  } catch (...) {
    std::remove(tmp.c_str());
    throw Error("cannot write " + path + ": unknown error");
  }
  fsync_dir_best_effort(parent_dir(path));
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_atomic(path, [&](const std::string& tmp) { write_all(tmp, bytes.data(), bytes.size()); });
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_atomic(path, [&](const std::string& tmp) {
    write_all(tmp, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  });
}

std::vector<uint8_t> read_file(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw Error("cannot read " + path + ": " + errno_text(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error("cannot read " + path + ": " + errno_text(errno));
  if (S_ISDIR(st.st_mode)) throw Error("cannot read " + path + ": " + errno_text(EISDIR));

  std::vector<uint8_t> out;
  if (S_ISREG(st.st_mode) && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  uint8_t chunk[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot read " + path + ": " + errno_text(errno));
    }
    if (n == 0) break;
    out.insert(out.end(), chunk, chunk + n);
  }
  return out;
}

}  // namespace lic
