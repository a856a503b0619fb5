// A deliberate data race: under EDGESPLIT_TSAN this must make TSan fail the
// process (ctest expects it to fail), proving the sanitizer is watching.
#include <thread>

namespace {
int counter = 0;
}  // namespace

int main() {
  std::thread t([] { ++counter; });
  ++counter;
  t.join();
  return 0;
}
