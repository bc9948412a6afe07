// Weak placeholders for commands not built yet: a real definition in another file wins.
#include "commands.h"
#include "lic/error.h"
namespace lic::cli {
__attribute__((weak)) int cmd_train(int, char**) { throw Error("not implemented yet"); }
__attribute__((weak)) int cmd_compress(int, char**) { throw Error("not implemented yet"); }
__attribute__((weak)) int cmd_decompress(int, char**) { throw Error("not implemented yet"); }
__attribute__((weak)) int cmd_eval(int, char**) { throw Error("not implemented yet"); }
__attribute__((weak)) int cmd_bd_rate(int, char**) { throw Error("not implemented yet"); }
__attribute__((weak)) int cmd_export(int, char**) { throw Error("not implemented yet"); }
__attribute__((weak)) int cmd_import(int, char**) { throw Error("not implemented yet"); }
__attribute__((weak)) int cmd_bench(int, char**) { throw Error("not implemented yet"); }
__attribute__((weak)) int cmd_info(int, char**) { throw Error("not implemented yet"); }
}  // namespace lic::cli
