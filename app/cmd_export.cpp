// mhc export: a checkpoint's weights as one safetensors file with the documented names.
#include <cstdio>

#include "checkpoint.h"
#include "commands.h"
#include "inference.h"

namespace mhc::app {
namespace {

struct ExportArgs {
  std::string checkpoint, output, dtype = "f32";
};

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand("export", "write a checkpoint's weights as safetensors");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint or run directory")->required();
  cmd->add_option("--output", a->output, "output .safetensors file")->required();
  cmd->add_option("--dtype", a->dtype, "f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
  cmd->callback([a]() {
    LoadedModel lm = load_trained_model(a->checkpoint, "cpu", 1, 1);
    write_weights(a->output, *lm.model, lm.cfg, lm.cfg.data.tokenizer, a->dtype == "bf16");
    std::printf("exported %zu tensors (%lld parameters) from %s to %s\n", lm.layout->params.size(),
                static_cast<long long>(parameter_count(*lm.layout, lm.shape)), lm.checkpoint_dir.c_str(), a->output.c_str());
  });
}

}  // namespace mhc::app
