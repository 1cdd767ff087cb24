#include "window_losses.h"

#include "error.h"
#include "safetensors.h"

namespace mhc {

void write_window_losses(const std::string& path, const WindowLosses& w) {
  MHC_CHECK(w.loss.size() == w.window.size());
  SafetensorsWriter out;
  out.add("window_loss", {static_cast<int64_t>(w.loss.size())}, w.loss.data(), StDType::F64);
  out.add_i64("window", w.window);
  out.set_metadata("step", std::to_string(w.step));
  out.set_metadata("data", w.data);
  out.set_metadata("tokenizer", w.tokenizer);
  out.set_metadata("seq_len", std::to_string(w.seq_len));
  out.set_metadata("val_windows", std::to_string(w.val_windows));
  out.write(path);
}

WindowLosses read_window_losses(const std::string& path) {
  const SafetensorsFile f(path);
  WindowLosses w;
  w.loss = f.read("window_loss");
  w.window = f.read_i64("window");
  if (w.loss.size() != w.window.size())
    fail("{}: window_loss has {} values but window has {}", path, w.loss.size(), w.window.size());
  w.data = f.metadata("data");
  w.tokenizer = f.metadata("tokenizer");
  try {
    w.step = std::stoll(f.metadata("step"));
    w.seq_len = std::stoll(f.metadata("seq_len"));
    w.val_windows = std::stoll(f.metadata("val_windows"));
  } catch (const std::exception&) {
    fail("{}: metadata step/seq_len/val_windows missing or not integers", path);
  }
  return w;
}

}  // namespace mhc
