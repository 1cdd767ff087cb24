#include "trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>

#include "backend_factory.h"
#include "checkpoint.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "diagnostics.h"
#include "evaluate.h"
#include "dist/agree.h"
#include "dist/grad_reducer.h"
#include "error.h"
#include "metrics.h"
#include "model.h"
#include "optimizer.h"
#include "schedule.h"
#include "text_util.h"
#include "tokenizer.h"
#include "window_losses.h"

namespace mhc {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Micro-steps per optimizer step for this world size (train.grad_accum, or derived from
// train.batch_size); MhcError when the global batch does not split evenly.
int64_t resolve_grad_accum(const Config::Train& t, int world) {
  const int64_t per_micro = t.micro_batch * world;
  if (t.batch_size > 0) {
    if (t.batch_size % per_micro != 0)
      fail("train.batch_size={} is not divisible by train.micro_batch={} x {} ranks", t.batch_size,
           t.micro_batch, world);
    const int64_t accum = t.batch_size / per_micro;
    if (t.grad_accum > 0 && t.grad_accum != accum)
      fail("train.grad_accum={} contradicts train.batch_size={} (micro_batch {} x {} ranks "
           "needs grad_accum {})", t.grad_accum, t.batch_size, t.micro_batch, world, accum);
    return accum;
  }
  return t.grad_accum > 0 ? t.grad_accum : 1;
}

std::string environment_text(const std::string& backend_name, const Communicator& comm) {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::string out;
  out += fmt::format("mhc_version: {}\n", MHC_VERSION);
#ifdef MHC_GIT_SHA
  out += fmt::format("git_sha: {}\n", MHC_GIT_SHA);
#endif
  out += fmt::format("date: {}\nhost: {}\nbackend: {}\ncuda_built: {}\n", date, host, backend_name,
                     built_with_cuda() ? "yes" : "no");
  out += fmt::format("world_size: {}\ncomm: {}\n", comm.size(), comm.name());
  return out;
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

// Keeps only metrics lines of steps <= `step` (a resumed run rewrites what follows).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const int64_t s = metrics_line_step(line);
    if (s >= 0 && s <= step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

// Keys whose change would silently make a resumed run something else: the learning-rate
// schedule, the optimizer's constants, the data order and the tokenizer. (model.* and
// residual.* are refused by validate_checkpoint.)
const std::vector<std::string> kFixedOnResume = {
    "train.lr", "train.min_lr", "train.warmup", "train.schedule", "train.decay_frac",
    "train.step_ratios", "train.step_factors", "train.beta1", "train.beta2", "train.eps",
    "train.weight_decay", "train.grad_clip", "run.seed", "data.tokenizer"};

// Refuses a changed fixed key; returns the other changed keys ("key: old vs new"), which a
// resume accepts (e.g. more train.steps) and announces.
std::vector<std::string> check_resume_config(const Config& saved, const Config& now) {
  const auto fixed = config_differences(saved, now, kFixedOnResume);
  if (!fixed.empty())
    fail("cannot resume with a changed {} [checkpoint vs now]; these keys must stay as the run "
         "started (start a new run, or --overwrite)", fixed.front());
  std::vector<std::string> changed;
  for (const auto& d : config_differences(saved, now, {"run.", "data.", "train.", "dist."}))
    if (!starts_with(d, "run.name:") && !starts_with(d, "run.dir:")) changed.push_back(d);
  return changed;
}

class TrainLoop {
 public:
  TrainLoop(const Config& cfg, const TrainOptions& opts, Communicator& comm,
            std::shared_ptr<spdlog::logger> log)
      : cfg_(cfg), opts_(opts), comm_(comm), log_(std::move(log)),
        shape_(model_shape_from_config(cfg)), layout_(ParamLayout::build(shape_, cfg)) {}

  TrainResult run();

 private:
  void setup_run_dir();
  void fill_train_batch(int64_t step, int64_t micro);
  // Evaluates the given validation windows; fills diagnostics from the first batch.
  EvalResult run_eval(const std::vector<int64_t>& windows, nlohmann::ordered_json* diagnostics);
  std::map<std::string, double> grad_sum_squares();
  // ZeRO-1: each rank reduces and updates only its shard (decided by the reducer, so that
  // every rank agrees even when a shard is empty or the whole buffer).
  bool sharded() const { return reducer_ && reducer_->zero(); }
  void log_eval(int64_t step, const char* split, const EvalResult& r,
                const nlohmann::ordered_json& diagnostics);
  // A metrics record of `type` with its UNIX time stamp and the run's elapsed seconds.
  nlohmann::ordered_json record(const char* type, int64_t step) const;
  std::string save_checkpoint(int64_t step);
  // A run whose loss went non-finite or above the threshold: one `diverged` record and
  // an error line; the step's update is not applied and nothing is saved.
  void record_divergence(int64_t step, double lr, double loss, double grad_norm,
                         double threshold, TrainResult& result);
  void write_final_window_losses(int64_t step, const EvalResult& r);

  const Config& cfg_;
  const TrainOptions& opts_;
  Communicator& comm_;
  std::shared_ptr<spdlog::logger> log_;
  ModelShape shape_;
  ParamLayout layout_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<ShardSet> train_shards_, val_shards_;
  std::unique_ptr<SequenceSampler> train_sampler_, val_sampler_;
  std::unique_ptr<Tokenizer> tokenizer_;       // null when it cannot be loaded (no bytes/token)
  std::vector<int64_t> periodic_windows_, final_windows_;
  Clock::time_point run_start_ = Clock::now();
  double elapsed_before_ = 0;                  // seconds of the run before a resume
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<CheckpointManager> ckpt_;
  std::unique_ptr<dist::GradReducer> reducer_;  // absent in a single process
  std::vector<int32_t> inputs_, targets_;
  TrainState state_;
  std::string run_dir_;
  int64_t accum_ = 1, global_batch_ = 0;
  int64_t saved_step_ = -1;  // step of the newest checkpoint of this run
  std::vector<std::string> resume_changes_;  // accepted config changes since the checkpoint
  int B_ = 0, T_ = 0;
};

void TrainLoop::setup_run_dir() {
  if (comm_.rank() != 0) return;
  std::error_code ec;
  fs::create_directories(run_dir_, ec);
  if (!fs::is_directory(run_dir_)) fail("cannot create run directory '{}'", run_dir_);
  write_file_atomic(run_dir_ + "/config.yaml", config_to_yaml(cfg_));
  write_file_atomic(run_dir_ + "/cmdline.txt", opts_.command_line + "\n");
  write_file_atomic(run_dir_ + "/env.txt", environment_text(backend_->name(), comm_));
}

void TrainLoop::fill_train_batch(int64_t step, int64_t micro) {
  // Global sample index: the same samples make up a step whatever the world size.
  const int64_t base = step * global_batch_ + (micro * comm_.size() + comm_.rank()) * B_;
  for (int b = 0; b < B_; ++b)
    train_sampler_->train_sample(base + b, inputs_.data() + static_cast<size_t>(b) * T_,
                                 targets_.data() + static_cast<size_t>(b) * T_);
}

// The last step's gradient sums of squares by group. Under ZeRO-1 only each rank's shard
// of the gradient buffer holds the reduced sum, so every rank sums its shard and the
// ranks add them up (collective: every rank calls it).
std::map<std::string, double> TrainLoop::grad_sum_squares() {
  if (!sharded()) return grad_sum_squares_by_group(*model_, 0, model_->grads().numel);
  std::map<std::string, double> ss =
      grad_sum_squares_by_group(*model_, opt_->shard_begin(), opt_->shard_end());
  std::vector<double> sums;  // std::map order: the same on every rank
  for (const auto& [group, v] : ss) sums.push_back(v);
  comm_.all_reduce_sum_host(sums.data(), static_cast<int>(sums.size()));
  size_t i = 0;
  for (auto& [group, v] : ss) v = sums[i++];
  return ss;
}

EvalResult TrainLoop::run_eval(const std::vector<int64_t>& windows,
                               nlohmann::ordered_json* diagnostics) {
  std::map<std::string, double> grad_ss;
  if (diagnostics) grad_ss = grad_sum_squares();
  // Diagnostics come from each rank's first batch (rank 0's is batch 0, the one logged).
  EvalResult r = evaluate(*model_, *val_sampler_, windows, B_, tokenizer_.get(), &comm_,
                          [&](int64_t batch) {
                            if (diagnostics && batch == comm_.rank())
                              *diagnostics = eval_diagnostics(*model_, &grad_ss);
                          });
  return r;
}

nlohmann::ordered_json TrainLoop::record(const char* type, int64_t step) const {
  nlohmann::ordered_json js;
  js["type"] = type;
  js["time"] = unix_time_s();
  js["elapsed_s"] = elapsed_before_ + seconds_since(run_start_);
  js["step"] = step;
  js["tokens"] = state_.tokens_seen;
  return js;
}

void TrainLoop::log_eval(int64_t step, const char* split, const EvalResult& r,
                         const nlohmann::ordered_json& diagnostics) {
  std::string amax;
  if (diagnostics.contains("amax")) {
    const auto& g = diagnostics["amax"];
    amax = fmt::format(" | amax fwd {:.3f}/{:.3f} bwd {:.3f}/{:.3f} (mean/max)",
                       g["fwd_mean"].get<double>(), g["fwd_max"].get<double>(),
                       g["bwd_mean"].get<double>(), g["bwd_max"].get<double>());
  }
  const double bpb = r.bits_per_byte();
  log_->info("{} step {}/{} | val loss {:.4f} ± {:.4f} over {} tokens | val bpt {:.4f}{}{}",
             std::string(split) == "full" ? "final eval (whole validation set)" : "eval", step,
             cfg_.train.steps, r.loss, r.se, r.tokens, r.bits_per_token(),
             std::isfinite(bpb) ? fmt::format(" | bpb {:.4f}", bpb) : std::string(), amax);
  if (comm_.rank() != 0) return;
  nlohmann::ordered_json js = record("eval", step);
  js["split"] = split;
  js["val_loss"] = r.loss;
  js["val_loss_se"] = std::isfinite(r.se) ? nlohmann::ordered_json(r.se) : nlohmann::ordered_json();
  js["val_loss_se_blocks"] = r.se_blocks;
  js["val_tokens"] = r.tokens;
  js["val_sequences"] = r.sequences;
  js["bits_per_token"] = r.bits_per_token();
  js["bits_per_byte"] = std::isfinite(bpb) ? nlohmann::ordered_json(bpb) : nlohmann::ordered_json();
  js["diagnostics"] = diagnostics;
  metrics_->write(js);
}

void TrainLoop::record_divergence(int64_t step, double lr, double loss, double grad_norm,
                                  double threshold, TrainResult& result) {
  const std::string what =
      !std::isfinite(loss) ? fmt::format("non-finite loss ({})", loss)
      : !std::isfinite(grad_norm)
          ? fmt::format("non-finite gradient norm ({}) at loss {:.4f}", grad_norm, loss)
          : fmt::format("loss {:.4f} above train.diverge_loss {:.4f}", loss, threshold);
  const std::string last = ckpt_->latest();
  result.diverged = true;
  result.diverged_reason = fmt::format("diverged at step {} (lr {:.3g}): {}", step, lr, what);
  log_->error("{}; stopping without updating or saving. {}", result.diverged_reason,
              last.empty() ? std::string("No checkpoint was written yet.")
                           : "The last good checkpoint is " + last);
  if (comm_.rank() != 0) return;
  nlohmann::ordered_json js = record("diverged", step);
  auto finite_or_null = [](double v) {
    return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json();
  };
  js["reason"] = !std::isfinite(loss) ? "nonfinite_loss"
                 : !std::isfinite(grad_norm) ? "nonfinite_grad_norm" : "loss_above_threshold";
  js["loss"] = finite_or_null(loss);
  js["grad_norm"] = finite_or_null(grad_norm);
  js["lr"] = lr;
  js["threshold"] = threshold;
  metrics_->write(js);
}

void TrainLoop::write_final_window_losses(int64_t step, const EvalResult& r) {
  if (comm_.rank() != 0) return;
  WindowLosses w;
  w.loss = r.window_losses;
  w.window = final_windows_;
  w.step = step;
  w.data = cfg_.data.val;
  w.tokenizer = cfg_.data.tokenizer;
  w.seq_len = T_;
  w.val_windows = val_sampler_->val_windows();
  write_window_losses(run_dir_ + "/" + kWindowLossesFile, w);
}

std::string TrainLoop::save_checkpoint(int64_t step) {
  state_.step = step;
  state_.next_sample = step * global_batch_;
  saved_step_ = step;
  // Collective: rank 0 writes the weights, every rank its optimizer shard under ZeRO.
  const std::string dir = ckpt_->save(*model_, *opt_, state_, cfg_, cfg_.data.tokenizer, comm_);
  log_->info("checkpoint {}", dir);
  return dir;
}

TrainResult TrainLoop::run() {
  const Config::Train& t = cfg_.train;
  // Every rank must train the same thing: compare the resolved configs first.
  dist::check_same_config(comm_, config_to_yaml(cfg_), config_hash(cfg_));
  // Everything that can reject the user's input comes first, before any output. Each
  // phase is agreed: a failure on any rank is the same clear error on every rank.
  std::string resume_from;
  bool had_checkpoints = false;
  dist::agree(comm_, [&] {
    accum_ = resolve_grad_accum(t, comm_.size());
    B_ = static_cast<int>(t.micro_batch);
    T_ = shape_.T;
    global_batch_ = t.micro_batch * accum_ * comm_.size();
    train_shards_ = std::make_unique<ShardSet>(cfg_.data.train, shape_.V, "data.train");
    val_shards_ = std::make_unique<ShardSet>(cfg_.data.val, shape_.V, "data.val");
    train_shards_->check_tokenizer(cfg_.data.tokenizer, "data.tokenizer");
    val_shards_->check_tokenizer(cfg_.data.tokenizer, "data.tokenizer");
    train_sampler_ = std::make_unique<SequenceSampler>(*train_shards_, T_, cfg_.run.seed);
    val_sampler_ = std::make_unique<SequenceSampler>(*val_shards_, T_, cfg_.run.seed);
    // Periodic evaluations read a fixed, evenly spread subset; the final one the whole
    // set (or train.final_eval_batches micro-batches of it).
    const int64_t val_total = val_sampler_->val_windows();
    periodic_windows_ = eval_windows(val_total, t.eval_batches * B_);
    final_windows_ = eval_windows(val_total, t.final_eval_batches > 0 ? t.final_eval_batches * B_
                                                                       : val_total);
    run_dir_ = opts_.run_dir.empty() ? default_run_dir(cfg_) : opts_.run_dir;
    ckpt_ = std::make_unique<CheckpointManager>(run_dir_, static_cast<int>(t.keep_last));
    if (comm_.rank() != 0) return;
    // Rank 0 decides what to resume from (the others follow, below).
    if (opts_.resume == "auto") {
      // A damaged newest checkpoint (a bit flip, a truncated copy) is passed over for the
      // newest intact one, loudly; none intact at all is an error, not a fresh start.
      std::vector<std::string> skipped;
      resume_from = ckpt_->latest_intact(skipped);
      if (resume_from.empty() && !skipped.empty())
        fail("--resume auto: no intact checkpoint in '{}/checkpoints' ({} damaged; the newest: "
             "{}); use --overwrite to start over", run_dir_, skipped.size(), skipped.front());
      for (const auto& why : skipped) log_->warn("--resume auto: skipping {}", why);
      if (!skipped.empty()) log_->warn("--resume auto: resuming from {} instead", resume_from);
    } else if (!opts_.resume.empty()) {
      resume_from = resolve_checkpoint(opts_.resume);
    }
    if (!resume_from.empty()) {
      validate_checkpoint(resume_from, cfg_);
      resume_changes_ = check_resume_config(checkpoint_config(resume_from), cfg_);
      // Fewer steps than already done would "finish" without a final eval or checkpoint.
      const int64_t done = read_train_state(resume_from).step;
      if (t.steps < done)
        fail("cannot resume with train.steps={}: checkpoint '{}' is already at step {} (allowed: "
             "train.steps >= {}; or --overwrite to start over)", t.steps, resume_from, done, done);
    }
    had_checkpoints = ckpt_->has_any();
    if (resume_from.empty() && had_checkpoints && !opts_.overwrite)
      fail("run directory '{}' already has checkpoints{}; use --resume auto to continue it, "
           "--overwrite to start over, or another --run-dir or run.name",
           run_dir_, ckpt_->latest().empty() ? "" : " (latest " + ckpt_->latest() + ")");
  });
  dist::broadcast_string(comm_, resume_from, 0);
  {
    uint8_t flag = had_checkpoints ? 1 : 0;
    comm_.broadcast_host(&flag, 1, 0);
    had_checkpoints = flag != 0;
  }
  const int64_t tokens_per_step = global_batch_ * T_;

  dist::agree(comm_, [&] {
    BackendChoice choice = make_backend(t, comm_.device_index());
    backend_ = std::move(choice.backend);
    log_->info("{}", choice.reason);
    if (auto* source = dynamic_cast<ComputeStreamSource*>(backend_.get()))
      comm_.bind_compute_stream(source->compute_stream());
    model_ = std::make_unique<Model>(*backend_, shape_, layout_, B_,
                                     model_options_for_training(cfg_, shape_, B_));
    model_->init_weights(static_cast<uint64_t>(cfg_.run.seed));
    OptimizerSettings os{t.beta1, t.beta2, t.eps, t.weight_decay, t.grad_clip};
    if (!comm_.trivial()) {
      dist::ReducerOptions ro;
      ro.bucket_bytes = dist::default_bucket_bytes(model_->grads().bytes());
      ro.wire = cfg_.dist.reduce_dtype == "bf16" ? DType::BF16 : model_->grads().dtype;
      ro.zero = cfg_.dist.zero == 1;
      reducer_ = std::make_unique<dist::GradReducer>(comm_, *model_, ro);
    } else if (cfg_.dist.zero == 1 || cfg_.dist.reduce_dtype != "fp32") {
      log_->info("single process: dist.zero and dist.reduce_dtype have nothing to do");
    }
    if (reducer_ && reducer_->zero())
      opt_ = std::make_unique<AdamW>(*model_, os, reducer_->shard().begin, reducer_->shard().end);
    else
      opt_ = std::make_unique<AdamW>(*model_, os);
    inputs_.resize(static_cast<size_t>(B_) * T_);
    targets_.resize(static_cast<size_t>(B_) * T_);
    setup_run_dir();
  });
  state_.seed = static_cast<uint64_t>(cfg_.run.seed);
  state_.world_size = comm_.size();

  try {
    tokenizer_ = make_tokenizer(cfg_.data.tokenizer);
  } catch (const MhcError& e) {
    log_->warn("no bits per byte in evaluations: {}", e.what());
  }
  TrainResult result;
  result.run_dir = run_dir_;
  result.initial_val_loss = std::numeric_limits<double>::quiet_NaN();
  if (opts_.resume == "auto" && resume_from.empty())
    log_->info("--resume auto: no checkpoint in {}, starting fresh", run_dir_);
  if (!resume_from.empty()) {
    // Every rank reads the checkpoint (a shared filesystem across nodes).
    dist::agree(comm_, [&] { state_ = restore_checkpoint(resume_from, cfg_, *model_, *opt_); });
    if (state_.world_size != comm_.size())
      log_->warn("resuming a run saved with {} ranks on {} ranks", state_.world_size, comm_.size());
    if (state_.next_sample != state_.step * global_batch_)
      log_->warn("the global batch changed since the checkpoint ({} samples per step now): the "
                 "sample order differs from an uninterrupted run", global_batch_);
    state_.world_size = comm_.size();
    result.last_checkpoint = resume_from;
    saved_step_ = state_.step;
    log_->info("resumed from {} at step {}", resume_from, state_.step);
    for (const auto& c : resume_changes_)
      log_->info("resume: config changed since the checkpoint: {} [checkpoint vs now]", c);
  } else if (had_checkpoints) {
    comm_.barrier();
    if (comm_.rank() == 0) fs::remove_all(run_dir_ + "/checkpoints");
    comm_.barrier();
    log_->info("--overwrite: removed the previous checkpoints of {}", run_dir_);
  }
  const std::string metrics_path = run_dir_ + "/metrics.jsonl";
  if (comm_.rank() == 0) {
    if (resume_from.empty()) {
      std::error_code ec;
      fs::remove(metrics_path, ec);
    } else {
      truncate_metrics(metrics_path, state_.step);
    }
    metrics_ = std::make_unique<MetricsWriter>(metrics_path);
    if (!resume_changes_.empty()) {
      elapsed_before_ = state_.elapsed_s;  // the record's elapsed_s: where the run resumes
      run_start_ = Clock::now();
      nlohmann::ordered_json js = record("resume", state_.step);
      js["config_changes"] = resume_changes_;
      metrics_->write(js);
    }
  }

  const int64_t params = parameter_count(layout_, shape_);
  log_->info("model: {} mode, n={}, {} layers, d={}, {} heads, T={}, {:.2f}M parameters "
             "({} in connections)", residual_mode_name(shape_.mode), shape_.n, shape_.L, shape_.C,
             shape_.n_head, shape_.T, params / 1e6, parameter_count(layout_, shape_, true));
  log_->info("batch: {} x {} tokens per micro-step, {} micro-steps x {} ranks = {} tokens per "
             "step; {} steps", B_, T_, accum_, comm_.size(), tokens_per_step, t.steps);
  log_->info("data: {} train tokens in {} shards, {} val tokens", train_shards_->total_tokens(),
             train_shards_->shards().size(), val_shards_->total_tokens());
  log_->info("run directory: {}", run_dir_);
  if (reducer_) log_->info("gradients: {}", reducer_->describe());

  // One forward and backward before anything is timed or communicated: the backend's
  // workspaces (on a GPU the scratch buffer, cuDNN plans and their workspaces) reach
  // their final size here instead of inside the first step's backward, which overlaps
  // the gradient collectives. No state changes: the data order is a pure function of the
  // sample index and the gradients are zeroed again.
  fill_train_batch(state_.step, 0);
  model_->forward(inputs_.data(), targets_.data(), B_, T_, 1.0f);
  model_->backward();
  model_->zero_grads();
  backend_->synchronize();

  run_start_ = Clock::now();
  elapsed_before_ = state_.elapsed_s;
  log_->info("evaluation: {} validation windows every {} steps, all {} of {} at the end",
             periodic_windows_.size(), t.eval_every, final_windows_.size(),
             val_sampler_->val_windows());
  nlohmann::ordered_json diagnostics;
  if (state_.step == 0) {
    const EvalResult r = run_eval(periodic_windows_, &diagnostics);
    result.initial_val_loss = r.loss;
    log_eval(0, "subset", r, diagnostics);
  }

  double window_time = 0, window_loss = 0;
  int64_t window_steps = 0;
  const auto& run_start = run_start_;
  const double elapsed_before = elapsed_before_;
  int64_t step = state_.step;
  double last_loss = 0;
  bool stop_agreed = false;  // a stop request seen by any rank, agreed at the last step
  double window_comm = 0;
  const bool sharded = this->sharded();
  const double diverge_loss = divergence_threshold(cfg_);
  while (step < t.steps) {
    if (stop_agreed || (comm_.size() == 1 && opts_.stop_requested && opts_.stop_requested->load())) {
      log_->warn("stop requested (Ctrl-C, SIGTERM, SIGUSR1 or SIGHUP): checkpointing at step {} and "
                 "exiting; a second signal aborts at once", step);
      result.stopped_early = true;
      break;
    }
    if (opts_.stop_at_step > 0 && step >= opts_.stop_at_step) {
      log_->info("--stop-at-step {} reached: checkpointing and exiting", opts_.stop_at_step);
      result.stopped_early = true;
      break;
    }
    const auto t0 = Clock::now();
    const double lr = learning_rate(t, step);
    model_->zero_grads();
    double loss = 0;
    const float grad_scale = 1.0f / static_cast<float>(accum_ * comm_.size());
    for (int64_t micro = 0; micro < accum_; ++micro) {
      fill_train_batch(step, micro);
      loss += model_->forward(inputs_.data(), targets_.data(), B_, T_, grad_scale);
      // The last micro-step's backward finishes the gradients: its buckets are reduced
      // while it runs.
      if (reducer_ && micro == accum_ - 1) reducer_->arm();
      model_->backward();
    }
    if (reducer_) {
      const auto tc = Clock::now();
      reducer_->finish();
      window_comm += seconds_since(tc);
    }
    // One small host all-reduce per step: the loss, the stop flag (SIGTERM/SIGUSR1 on any
    // rank stops every rank after this step) and, sharded, the gradient norm's pieces.
    const bool stop_here = opts_.stop_requested && opts_.stop_requested->load();
    double acc[3] = {loss, stop_here ? 1.0 : 0.0, sharded ? opt_->shard_grad_sum_squares() : 0.0};
    comm_.all_reduce_sum_host(acc, sharded ? 3 : 2);
    loss = acc[0] / static_cast<double>(accum_ * comm_.size());
    stop_agreed = acc[1] > 0;
    const double norm = sharded ? std::sqrt(acc[2]) : opt_->grad_norm();
    // Every rank sees the same reduced values, so every rank stops here together.
    if (!std::isfinite(loss) || !std::isfinite(norm) || loss > diverge_loss) {
      record_divergence(step + 1, lr, loss, norm, diverge_loss, result);
      break;
    }
    opt_->step(lr, norm);
    if (sharded) {
      reducer_->all_gather_params();  // every rank's updated shard to every rank
      model_->sync_working_weights();
    }
    backend_->synchronize();
    ++step;
    state_.tokens_seen += tokens_per_step;
    last_loss = loss;
    const double dt = seconds_since(t0);
    window_time += dt;
    window_loss += loss;
    ++window_steps;

    if (step % t.log_every == 0 || step == t.steps) {
      const double ms = 1000.0 * window_time / window_steps;
      const double tps = tokens_per_step * window_steps / window_time;
      const double eta = (t.steps - step) * window_time / window_steps;
      log_->info("step {}/{} | loss {:.4f} | lr {:.2e} | grad norm {:.3f} | {:.1f}k tok/s | "
                 "{:.1f} ms/step | ETA {}", step, t.steps, window_loss / window_steps, lr, norm,
                 tps / 1e3, ms, format_duration(eta));
      if (comm_.rank() == 0) {
        nlohmann::ordered_json js = record("train", step);
        js["loss"] = window_loss / window_steps;  // mean since the previous log line (console)
        js["loss_step"] = loss;  // this step's loss (exact, so resumed runs compare bit for bit)
        js["lr"] = lr;
        js["grad_norm"] = norm;
        js["tokens_per_s"] = tps;
        js["ms_per_step"] = ms;
        js["peak_bytes"] = backend_->peak_bytes();
        // Host time waiting for the buckets (MPI/TCP); over NCCL only the time to queue
        // the compute stream's waits on them.
        if (reducer_) js["comm_wait_ms"] = 1000.0 * window_comm / window_steps;
        metrics_->write(js);
      }
      window_time = window_loss = window_comm = 0;
      window_steps = 0;
    }
    const bool last_step = step == t.steps;
    if ((t.eval_every > 0 && step % t.eval_every == 0) || last_step) {
      const EvalResult r = run_eval(periodic_windows_, &diagnostics);
      state_.last_val_loss = r.loss;
      result.final_val_loss = r.loss;
      log_eval(step, "subset", r, diagnostics);
    }
    if (last_step) {
      // The run's result: the whole validation set (or its capped part), read once.
      const EvalResult r = run_eval(final_windows_, &diagnostics);
      state_.last_val_loss = r.loss;
      result.final_val_loss = r.loss;
      log_eval(step, "full", r, diagnostics);
      write_final_window_losses(step, r);
    }
    state_.elapsed_s = elapsed_before + seconds_since(run_start);
    if ((t.checkpoint_every > 0 && step % t.checkpoint_every == 0) || last_step)
      result.last_checkpoint = save_checkpoint(step);
  }
  if (result.stopped_early && saved_step_ != step) {
    state_.elapsed_s = elapsed_before + seconds_since(run_start);
    result.last_checkpoint = save_checkpoint(step);
  }
  comm_.barrier();
  result.steps_done = step;
  result.final_train_loss = last_loss;
  log_->info("done: step {}/{} in {} | peak memory {:.1f} MiB | run {}", step, t.steps,
             format_duration(seconds_since(run_start)), backend_->peak_bytes() / 1048576.0, run_dir_);
  return result;
}

}  // namespace

double divergence_threshold(const Config& cfg) {
  return cfg.train.diverge_loss > 0 ? cfg.train.diverge_loss
                                    : 1.5 * std::log(static_cast<double>(cfg.model.vocab_size));
}

std::string default_run_dir(const Config& cfg) { return cfg.run.dir + "/" + cfg.run.name; }

TrainResult train(const Config& cfg, const TrainOptions& options, Communicator& comm,
                  std::shared_ptr<spdlog::logger> log) {
  TrainLoop loop(cfg, options, comm, std::move(log));
  return loop.run();
}

}  // namespace mhc
