// The per-window losses of a run's final whole-set evaluation, kept beside metrics.jsonl
// as <run>/final_eval_windows.safetensors so that two runs evaluated on the same windows
// can be compared window by window (paired differences) without re-evaluating them.
// Tensors: "window_loss" (F64, mean loss per token of each window, in reading order) and
// "window" (I64, the validation window numbers). Metadata: step, data (the validation
// glob), seq_len, tokenizer, val_windows (windows in the whole set).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mhc {

struct WindowLosses {
  std::vector<double> loss;
  std::vector<int64_t> window;
  int64_t step = 0;
  std::string data, tokenizer;
  int64_t seq_len = 0, val_windows = 0;
};

inline constexpr const char* kWindowLossesFile = "final_eval_windows.safetensors";

void write_window_losses(const std::string& path, const WindowLosses& w);
WindowLosses read_window_losses(const std::string& path);

}  // namespace mhc
