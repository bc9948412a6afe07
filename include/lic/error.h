// User-facing errors: one clear message, caught by the CLI and turned into a non-zero exit.
#pragma once
#include <stdexcept>
#include <string>

namespace lic {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws lic::Error with `msg` when `cond` is false.
inline void check(bool cond, const std::string& msg) {
  if (!cond) throw Error(msg);
}

}  // namespace lic
