// A driver for fuzz targets when the compiler has no libFuzzer (g++): runs
// each file given on the command line, or `--random=N` pseudo-random inputs
// from a fixed seed, through LLVMFuzzerTestOneInput. Lets every build compile
// and smoke-run the targets; real fuzzing uses clang (see docs/testing.md).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  int random_runs = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--random=", 9) == 0) {
      random_runs = std::atoi(argv[i] + 9);
      continue;
    }
    std::ifstream in(argv[i], std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::mt19937_64 rng(20261122);
  for (int run = 0; run < random_runs; ++run) {
    std::vector<uint8_t> bytes(rng() % 512);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::printf("ran %d random inputs\n", random_runs);
  return 0;
}
