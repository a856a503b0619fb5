// The Clock seam's fake for tests: time moves only when told to.
#ifndef EDGESPLIT_CONTROLLER_FAKE_CLOCK_H_
#define EDGESPLIT_CONTROLLER_FAKE_CLOCK_H_

#include "controller/controller.h"

namespace edgesplit {

// Not thread-safe: tests advance it between calls.
class ManualClock : public Clock {
 public:
  absl::Time Now() override { return now_; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_FAKE_CLOCK_H_
