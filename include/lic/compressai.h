// CompressAI state-dict interoperability: key names (current `matrices.0` and legacy
// `_matrix0`), wrapper/prefix handling, size inference.
#pragma once
#include <string>

#include "lic/models.h"
#include "lic/tensor_io.h"

namespace lic {

// Normalises a CompressAI state dict to lic's (= CompressAI >= 1.2.7) names: unwraps
// "state_dict." / "model." nesting (dropping a checkpoint's other entries, such as "loss"),
// strips "module." (DataParallel), maps the legacy entropy_bottleneck._matrix{i} / _bias{i} /
// _factor{i} names.
TensorDict normalize_compressai_keys(const TensorDict& d);
// lic model -> CompressAI state dict (tables current). legacy: v1.2.4-style names.
TensorDict to_compressai(CompressionModel& model, bool legacy_names = false);
// N and M from g_a.0.weight [N,3,5,5] and g_a.6.weight [M,N,5,5].
std::pair<int64_t, int64_t> infer_sizes(const TensorDict& normalized);
// Builds a lic model from a CompressAI state dict. N/M <= 0: inferred. Mismatched or
// missing keys are listed in one lic::Error.
ModelPtr model_from_compressai(const TensorDict& d, const std::string& arch, int64_t N = 0, int64_t M = 0);

}  // namespace lic
