// Data-parallel training across processes on loopback (127.0.0.1): nordf-basic launched as ranks,
// by --nproc and by the environment variables a launcher sets.
#include <libnordf/dist/distributed.h>
#include <libnordf/experiment/config.h>
#include <libnordf/train/trainer.h>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "test_util.h"

extern char** environ;

namespace fs = std::filesystem;

namespace {

#ifdef NORDF_BASIC_EXE

/// A tiny Fashion-MNIST run: 16 training images per class (80 pairs), GroupNorm, no dropout and
/// no stochastic depth, so that the only randomness is the seeded pairs and augmentation.
std::vector<std::string> tiny_run(const std::string& out, int64_t batch, int64_t epochs = 1, int64_t per_class = 16) {
  return {NORDF_BASIC_EXE,   "--train-per-class", std::to_string(per_class), "--val-per-class", "4",   "--test-per-class", "4",
          "--ood-limit",     "10", "--epochs",  std::to_string(epochs), "--batch-size", std::to_string(batch),
          "--dropout",       "0",  "--channels", "16", "--decoder-width", "16", "--ood-methods", "msp",
          "--embedding-points", "0", "--threads", "1", "--workers", "1", "--out", out};
}

struct Child {
  pid_t pid = -1;
  std::string log;
};

/// Starts `args` with extra environment variables, stdout and stderr to `log`.
Child start(std::vector<std::string> args, const std::vector<std::string>& env, const std::string& log) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    bool replaced = false;
    for (const auto& mine : env) replaced = replaced || kv.substr(0, kv.find('=')) == mine.substr(0, mine.find('='));
    if (!replaced) envs.push_back(kv);
  }
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  Child c;
  c.log = log;
  REQUIRE(posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), envp.data()) == 0);
  posix_spawn_file_actions_destroy(&fa);
  return c;
}

int wait_for(const Child& c) {
  int status = 0;
  waitpid(c.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int run(std::vector<std::string> args, const std::string& log, const std::vector<std::string>& env = {}) {
  return wait_for(start(std::move(args), env, log));
}

/// The model weights of a run's checkpoint, by name.
std::map<std::string, torch::Tensor> weights(const std::string& checkpoint) {
  const auto config = nordf::checkpoint_config(checkpoint);
  auto model = nordf::experiment::make_model(config, 5);
  nordf::load_checkpoint_model(model, checkpoint);
  std::map<std::string, torch::Tensor> out;
  for (auto& kv : model->named_parameters()) out[kv.key()] = kv.value().detach().clone();
  return out;
}

/// The initial weights of a run (its configuration, seeded), by name.
std::map<std::string, torch::Tensor> initial_weights(const std::string& checkpoint) {
  auto model = nordf::experiment::make_model(nordf::checkpoint_config(checkpoint), 5);
  std::map<std::string, torch::Tensor> out;
  for (auto& kv : model->named_parameters()) out[kv.key()] = kv.value().detach().clone();
  return out;
}

/// ‖a − b‖ over all weights, relative to how far training moved them from `start`: ‖a − start‖.
double relative_difference(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b,
                           const std::map<std::string, torch::Tensor>& start) {
  double diff = 0, moved = 0;
  for (const auto& [k, v] : a) {
    diff += (v - b.at(k)).pow(2).sum().item<double>();
    moved += (v - start.at(k)).pow(2).sum().item<double>();
  }
  return std::sqrt(diff / moved);
}

/// steps.csv as rows of numbers.
std::vector<std::vector<double>> steps_of(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  std::vector<std::vector<double>> rows;
  while (std::getline(in, line)) {
    std::vector<double> r;
    std::stringstream ss(line);
    std::string f;
    while (std::getline(ss, f, ',')) r.push_back(std::stod(f));
    rows.push_back(r);
  }
  return rows;
}

std::vector<std::string> rank_env(int64_t rank, int64_t world, int port) {
  return {"RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world), "LOCAL_RANK=" + std::to_string(rank),
          "LOCAL_WORLD_SIZE=" + std::to_string(world), "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
}

int test_port(int offset) { return 29600 + (static_cast<int>(::getpid()) % 200) * 10 + offset; }

std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

#endif

}  // namespace

TEST_CASE("the launcher's environment variables describe the job", "[dist]") {
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"})
    ::unsetenv(v);
  CHECK_FALSE(nordf::dist::environment().distributed());
  ::setenv("SLURM_PROCID", "3", 1);
  ::setenv("SLURM_NTASKS", "8", 1);
  ::setenv("SLURM_NTASKS_PER_NODE", "4", 1);
  ::setenv("MASTER_ADDR", "node17", 1);
  auto e = nordf::dist::environment();
  CHECK(e.rank == 3);
  CHECK(e.world_size == 8);
  CHECK(e.local_world_size == 4);
  CHECK(e.master_addr == "node17");
  CHECK(e.master_port == 29500);
  ::setenv("RANK", "1", 1);  // torchrun's names win
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("MASTER_PORT", "1234", 1);
  e = nordf::dist::environment();
  CHECK(e.rank == 1);
  CHECK(e.world_size == 2);
  CHECK(e.master_port == 1234);
  ::setenv("RANK", "2", 1);
  REQUIRE_THROWS_WITH(nordf::dist::environment(), Catch::Contains("rank 2 is not below the world size 2"));
  ::setenv("WORLD_SIZE", "two", 1);
  REQUIRE_THROWS_WITH(nordf::dist::environment(), Catch::Contains("WORLD_SIZE='two' is not a number"));
  for (const char* v : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS",
                        "SLURM_NTASKS_PER_NODE"})
    ::unsetenv(v);
}

TEST_CASE("sharded pair batches are disjoint and together form the global batch", "[dist][data]") {
  auto data = nordf_test::toy_dataset(48, 3, 3, 8, 1);
  nordf::LoaderOptions lo;
  lo.batch_size = 4;
  lo.workers = 1;
  lo.drop_last = true;
  lo.transform.image_size = 32;
  lo.transform.recon_size = 16;
  lo.seed = 5;
  nordf::LoaderOptions whole = lo;
  whole.batch_size = 8;
  nordf::PairLoader one(data, 0.5, whole);
  lo.shards = 2;
  lo.shard = 0;
  nordf::PairLoader r0(data, 0.5, lo);
  lo.shard = 1;
  nordf::PairLoader r1(data, 0.5, lo);
  CHECK(r0.num_batches() == one.num_batches());
  CHECK(r0.global_batch() == 8);
  auto e = one.epoch(2), e0 = r0.epoch(2), e1 = r1.epoch(2);
  for (int64_t b = 0; b < one.num_batches(); ++b) {
    auto all = *e.next(), a = *e0.next(), c = *e1.next();
    CHECK(torch::equal(torch::cat({a.x1, c.x1}), all.x1));
    CHECK(torch::equal(torch::cat({a.labels2, c.labels2}), all.labels2));
  }
  lo.shard = 2;
  REQUIRE_THROWS_WITH(nordf::PairLoader(data, 0.5, lo), Catch::Contains("shard 2 of 2 does not exist"));
}

#ifdef NORDF_BASIC_EXE

TEST_CASE("2 ranks with batch B/2 train the same weights as 1 process with batch B", "[dist][slow]") {
  // Gloo averages the two half-batch gradients; one process takes the mean over the whole batch.
  // The sums run in another order, so float32 rounding (~1e-7 relative) differs. The first step
  // starts from the same weights and batch: its loss and gradient norm agree to 1e-5. Later steps
  // drift apart by rounding, which Adam amplifies where a gradient entry is near 0 (its update is
  // about lr·sign(g) whatever |g|), so the weights after 10 steps are compared relative to how far
  // training moved them: within 1 %. A shard, average or broadcast error moves them by O(1).
  const auto dir = nordf_test::work_dir("dist_equivalence");
  REQUIRE(run(tiny_run(dir + "/one", 8), dir + "/one.log") == 0);
  auto args = tiny_run(dir + "/two", 4);
  args.insert(args.begin() + 1, {"--nproc", "2"});
  REQUIRE(run(args, dir + "/two.log") == 0);
  const auto log = read(dir + "/two.log");
  CHECK_THAT(log, Catch::Contains("data parallel over 2 ranks: 4 pairs per rank and step, a global batch of 8"));
  CHECK_THAT(log, Catch::Contains("communication:"));
  CHECK_FALSE(fs::exists(dir + "/two-rank1"));
  const auto one = steps_of(dir + "/one/steps.csv"), two = steps_of(dir + "/two/steps.csv");
  REQUIRE(one.size() == 10);
  REQUIRE(two.size() == 10);
  CHECK(two[0][2] == Approx(one[0][2]).epsilon(1e-5));  // loss
  CHECK(two[0][6] == Approx(one[0][6]).epsilon(1e-5));  // gradient norm before clipping
  const auto start = initial_weights(dir + "/one/checkpoints/latest.pt");
  const double d = relative_difference(weights(dir + "/one/checkpoints/latest.pt"), weights(dir + "/two/checkpoints/latest.pt"), start);
  INFO("relative difference " << d);
  CHECK(d < 1e-2);
}

TEST_CASE("a 2-rank run stopped mid-epoch resumes exactly, launched by environment variables", "[dist][slow]") {
  const auto dir = nordf_test::work_dir("dist_resume");
  auto straight = tiny_run(dir + "/straight", 4);
  straight.insert(straight.begin() + 1, {"--nproc", "2"});
  REQUIRE(run(straight, dir + "/straight.log") == 0);
  // The same run, paused after 4 of its 10 steps (mid-epoch, as Ctrl-C would stop it), ...
  auto stopped = tiny_run(dir + "/resumed", 4);
  stopped.insert(stopped.begin() + 1, {"--nproc", "2", "--max-steps", "4"});
  REQUIRE(run(stopped, dir + "/stopped.log") == 0);
  REQUIRE(fs::exists(dir + "/resumed/checkpoints/latest.pt"));
  CHECK(read(dir + "/resumed/run.json").find("\"paused\"") != std::string::npos);
  // ... then resumed by two processes started as a launcher starts them.
  const int port = test_port(1);
  std::vector<std::string> resume{NORDF_BASIC_EXE, "--resume", dir + "/resumed", "--max-steps", "0"};
  auto r0 = start(resume, rank_env(0, 2, port), dir + "/rank0.log");
  auto r1 = start(resume, rank_env(1, 2, port), dir + "/rank1.log");
  CHECK(wait_for(r0) == 0);
  CHECK(wait_for(r1) == 0);
  INFO(read(dir + "/rank0.log") << read(dir + "/rank1.log"));
  CHECK(read(dir + "/rank1.log").empty());  // rank 0 reports for the job
  // The same computation in the same order: the weights are identical.
  const auto a = weights(dir + "/straight/checkpoints/latest.pt"), b = weights(dir + "/resumed/checkpoints/latest.pt");
  for (const auto& [k, v] : a) CHECK(torch::equal(v, b.at(k)));
  // Stopped with 2 ranks, resumed by one process with the same global batch.
  auto again = tiny_run(dir + "/again", 4);
  again.insert(again.begin() + 1, {"--nproc", "2", "--max-steps", "4"});
  REQUIRE(run(again, dir + "/again.log") == 0);
  auto single = tiny_run(dir + "/again", 8);
  single.insert(single.begin() + 1, {"--resume", dir + "/again", "--max-steps", "0"});
  REQUIRE(run(single, dir + "/single.log") == 0);
  const auto start = initial_weights(dir + "/straight/checkpoints/latest.pt");
  CHECK(relative_difference(a, weights(dir + "/again/checkpoints/latest.pt"), start) < 1e-2);
}

TEST_CASE("when a rank dies, the other ends with an error naming it, and Ctrl-C stops every rank", "[dist][slow]") {
  const auto dir = nordf_test::work_dir("dist_fault");
  const int port = test_port(2);
  auto args = tiny_run(dir + "/run", 2, 20, 60);
  auto r0 = start(args, rank_env(0, 2, port), dir + "/rank0.log");
  auto r1 = start(args, rank_env(1, 2, port), dir + "/rank1.log");
  // Once training has run for a while, kill rank 1 without warning. (Under a loaded CI machine
  // the two ranks may take long to start: the kill must not land before training does.)
  auto training = [&](const std::string& log) {
    for (int i = 0; i < 3000; ++i) {
      if (read(log).find("train epoch 1/20") != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  const bool started = training(dir + "/rank0.log");
  if (!started) ::kill(r1.pid, SIGKILL), ::kill(r0.pid, SIGKILL), wait_for(r1), wait_for(r0);
  INFO(read(dir + "/rank0.log"));
  REQUIRE(started);
  ::kill(r1.pid, SIGKILL);
  wait_for(r1);
  const auto t0 = std::chrono::steady_clock::now();
  const int code = wait_for(r0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto log = read(dir + "/rank0.log");
  INFO(log);
  CHECK(code == 1);
  CHECK(seconds < 60);
  CHECK_THAT(log, Catch::Contains("rank 0: an allreduce failed: lost contact with rank 1"));
  CHECK(log.find("terminate called") == std::string::npos);

  // Ctrl-C to --nproc reaches both ranks; they stop after the same step with a checkpoint.
  auto nproc = tiny_run(dir + "/interrupted", 2, 20, 60);
  nproc.insert(nproc.begin() + 1, {"--nproc", "2"});
  auto parent = start(nproc, {}, dir + "/interrupted.log");
  const bool launched = training(dir + "/interrupted.log");
  if (!launched) ::kill(parent.pid, SIGINT), wait_for(parent);
  INFO(read(dir + "/interrupted.log"));
  REQUIRE(launched);
  ::kill(parent.pid, SIGINT);
  const auto t1 = std::chrono::steady_clock::now();
  CHECK(wait_for(parent) == 130);
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() < 60);
  CHECK(fs::exists(dir + "/interrupted/checkpoints/latest.pt"));
  CHECK_THAT(read(dir + "/interrupted.log"), Catch::Contains("interrupted: checkpoint written"));
}

TEST_CASE("SIGTERM stops nordf-basic after a step with a checkpoint, as Ctrl-C does", "[apps][slow]") {
  // Schedulers stop jobs with SIGTERM (preemption, time limits); the run must be resumable.
  const auto dir = nordf_test::work_dir("sigterm");
  auto p = start(tiny_run(dir + "/run", 2, 20, 60), {}, dir + "/run.log");
  bool training = false;
  for (int i = 0; i < 3000 && !training; ++i) {
    training = read(dir + "/run.log").find("train epoch 1/20") != std::string::npos;
    if (!training) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!training) ::kill(p.pid, SIGKILL), wait_for(p);
  INFO(read(dir + "/run.log"));
  REQUIRE(training);
  ::kill(p.pid, SIGTERM);
  CHECK(wait_for(p) == 130);
  CHECK(fs::exists(dir + "/run/checkpoints/latest.pt"));
  CHECK(read(dir + "/run/run.json").find("\"interrupted\"") != std::string::npos);
  CHECK_THAT(read(dir + "/run.log"), Catch::Contains("interrupted: checkpoint written"));
}

#ifdef NORDF_PLOT_EXE
TEST_CASE("SIGTERM stops a nordf-plot study after a step with a checkpoint, and the study resumes", "[apps][slow]") {
  const auto dir = nordf_test::work_dir("sigterm_plot");
  {
    std::ofstream grid(dir + "/grid.json");
    grid << R"({"name": "sigterm", "base": {
      "data": {"train_per_class": 60, "val_per_class": 4, "test_per_class": 4, "ood_limit": 10, "workers": 1},
      "model": {"channels": 16, "decoder_width": 16, "dropout": 0},
      "train": {"batch_size": 2, "epochs": 2}, "ood": {"methods": ["msp"], "embedding_points": 0},
      "saliency": {"images": 0}, "run": {"threads": 1}},
      "points": [{"name": "only"}], "seeds": [1]})";
  }
  auto p = start({NORDF_PLOT_EXE, "--grid", dir + "/grid.json", "--out", dir + "/study"}, {}, dir + "/plot.log");
  // The study logs per run; the run's steps.csv shows that it is training.
  const auto run_dir = dir + "/study/runs/default/only/seed-1";
  bool training = false;
  for (int i = 0; i < 3000 && !training; ++i) {
    const auto steps = read(run_dir + "/steps.csv");
    training = std::count(steps.begin(), steps.end(), '\n') >= 3;
    if (!training) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!training) ::kill(p.pid, SIGKILL), wait_for(p);
  INFO(read(dir + "/plot.log"));
  REQUIRE(training);
  ::kill(p.pid, SIGTERM);
  CHECK(wait_for(p) == 130);
  CHECK(fs::exists(run_dir + "/checkpoints/latest.pt"));
  CHECK(read(run_dir + "/run.json").find("\"interrupted\"") != std::string::npos);
  // The same command again picks the run up from its checkpoint and finishes it.
  CHECK(run({NORDF_PLOT_EXE, "--grid", dir + "/grid.json", "--out", dir + "/study"}, dir + "/again.log") == 0);
  INFO(read(dir + "/again.log"));
  CHECK_THAT(read(dir + "/again.log"),
             Catch::Contains("[1/1] default · only · seed 1: resuming the interrupted run from its checkpoint"));
  CHECK(read(run_dir + "/run.json").find("\"finished\"") != std::string::npos);
}
#endif

#endif
