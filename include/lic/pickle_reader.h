// A small, strict reader for Python torch.save files (zip archive + pickle protocol 2).
//
// LibTorch's unpickler (torch::pickle_load) cannot rebuild collections.OrderedDict, which is
// what nn.Module.state_dict() returns, so it fails on the files CompressAI users actually
// have: torch.save(net.state_dict()) and training checkpoints that nest state dicts next to
// optimizer state. This reader interprets only the opcodes torch.save emits, rebuilds
// tensors from their storages, and treats every other Python object (optimizers,
// argparse.Namespace, ...) as an opaque value that is skipped. Every read is bounds-checked
// and limited, so hostile input gives one lic::Error, never a crash.
#pragma once
#include <string>
#include <vector>

#include "lic/tensor_io.h"

namespace lic {

// The tensors of a torch.save file, nested dicts flattened with dotted keys
// ({"state_dict": {"w": t}} -> "state_dict.w"). Only string keys and tensor values are
// kept (an optimizer's int-keyed state is skipped). The top-level object must be a dict.
// Errors are one lic::Error starting with `what` (the file name).
TensorDict read_torch_save(const std::vector<char>& bytes, const std::string& what);

}  // namespace lic
