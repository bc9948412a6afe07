// Precompiled header: the heavy, stable third-party headers only.
#pragma once
#ifdef __cplusplus
#include <torch/torch.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
#endif
