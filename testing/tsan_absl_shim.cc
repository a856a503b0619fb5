// Makes Debian's Abseil synchronization visible to ThreadSanitizer.
//
// Debian ships libabsl built without -fsanitize=thread, so absl::Mutex's
// lock word and futex waits are invisible to TSan: every ABSL_GUARDED_BY
// field would be reported as a race. No TSan build of Abseil is packaged,
// so this file (linked only into EDGESPLIT_TSAN test binaries) interposes
// the library's exported lock functions — the executable's definitions win
// over the shared library's, also for Abseil's own internal calls — runs the
// real function found with dlsym(RTLD_NEXT) and tells TSan about the
// happens-before edge: release on the mutex's address before it is let go,
// acquire after it is (re)taken. Notification gets the same treatment on its
// own address. Not compiled into anything users run.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

#define ES_STR2(x) #x
#define ES_STR(x) ES_STR2(x)

// "_ZN4absl<len><inline-namespace>" + rest: the mangled name of an absl
// member function in this build's inline namespace.
template <typename Fn>
Fn Real(const char* prefix, const char* rest) {
  // No heap: the first call may come from any thread, inside a lock.
  const char* ns = ES_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  char name[256];
  std::snprintf(name, sizeof(name), "%s4absl%zu%s%s", prefix, std::strlen(ns),
                ns, rest);
  void* f = dlsym(RTLD_NEXT, name);
  if (f == nullptr) {
    std::fprintf(stderr, "tsan_absl_shim: %s not found\n", name);
    std::abort();
  }
  return reinterpret_cast<Fn>(f);
}

#define ES_REAL(type, prefix, rest) \
  static const auto real = Real<type>(prefix, rest)

// Abseil evaluates a waiter's Condition inside the library, with the mutex
// held but before the shim's acquire (sometimes on the unlocking thread):
// the condition is wrapped so the evaluation itself acquires first.
struct Guarded {
  const absl::Condition* cond;
  void* mu;
};

bool EvalAfterAcquire(Guarded* g) {
  __tsan_acquire(g);  // The waiter filled *g (and the Condition) first.
  __tsan_acquire(g->mu);
  const bool result = g->cond->Eval();
  // What the evaluation read happens before the next holder's writes: the
  // library may let the mutex go without passing through the shim.
  __tsan_release(g->mu);
  return result;
}

// Abseil's deadlock detector (on in Debian's build) keeps its lock graph
// under an internal SpinLock the interposed functions above do not cover,
// so TSan saw writes in GraphCycles::InsertEdge from two threads as a race
// (intermittently, in edge_server_test). Lock-order bugs are TSan's own
// deadlock detector's job in these binaries: switch Abseil's off.
[[maybe_unused]] const bool kAbslDeadlockGraphOff = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  ES_REAL(void (*)(Mutex*), "_ZN", "5Mutex4LockEv");
  real(this);
  __tsan_acquire(this);
}

void Mutex::ReaderLock() {
  ES_REAL(void (*)(Mutex*), "_ZN", "5Mutex10ReaderLockEv");
  real(this);
  __tsan_acquire(this);
}

bool Mutex::TryLock() {
  ES_REAL(bool (*)(Mutex*), "_ZN", "5Mutex7TryLockEv");
  const bool ok = real(this);
  if (ok) __tsan_acquire(this);
  return ok;
}

bool Mutex::ReaderTryLock() {
  ES_REAL(bool (*)(Mutex*), "_ZN", "5Mutex13ReaderTryLockEv");
  const bool ok = real(this);
  if (ok) __tsan_acquire(this);
  return ok;
}

void Mutex::Unlock() {
  ES_REAL(void (*)(Mutex*), "_ZN", "5Mutex6UnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  ES_REAL(void (*)(Mutex*), "_ZN", "5Mutex12ReaderUnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::LockWhen(const Condition& c) {
  ES_REAL(void (*)(Mutex*, const Condition&), "_ZN",
          "5Mutex8LockWhenERKNS0_9ConditionE");
  Guarded g{&c, this};
  const Condition wrapped(EvalAfterAcquire, &g);
  __tsan_release(&g);
  real(this, wrapped);
  __tsan_acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& c) {
  ES_REAL(void (*)(Mutex*, const Condition&), "_ZN",
          "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Guarded g{&c, this};
  const Condition wrapped(EvalAfterAcquire, &g);
  __tsan_release(&g);
  real(this, wrapped);
  __tsan_acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& c, absl::Duration t) {
  ES_REAL(bool (*)(Mutex*, const Condition&, absl::Duration), "_ZN",
          "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Guarded g{&c, this};
  const Condition wrapped(EvalAfterAcquire, &g);
  __tsan_release(&g);
  const bool ok = real(this, wrapped, t);
  __tsan_acquire(this);  // Held on return either way.
  return ok;
}

bool Mutex::LockWhenWithDeadline(const Condition& c, absl::Time t) {
  ES_REAL(bool (*)(Mutex*, const Condition&, absl::Time), "_ZN",
          "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Guarded g{&c, this};
  const Condition wrapped(EvalAfterAcquire, &g);
  __tsan_release(&g);
  const bool ok = real(this, wrapped, t);
  __tsan_acquire(this);
  return ok;
}

// Await and CondVar::Wait let the mutex go while they wait and hold it again
// on return.
void Mutex::Await(const Condition& c) {
  ES_REAL(void (*)(Mutex*, const Condition&), "_ZN",
          "5Mutex5AwaitERKNS0_9ConditionE");
  Guarded g{&c, this};
  const Condition wrapped(EvalAfterAcquire, &g);
  __tsan_release(&g);
  __tsan_release(this);
  real(this, wrapped);
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& c, absl::Duration t) {
  ES_REAL(bool (*)(Mutex*, const Condition&, absl::Duration), "_ZN",
          "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Guarded g{&c, this};
  const Condition wrapped(EvalAfterAcquire, &g);
  __tsan_release(&g);
  __tsan_release(this);
  const bool ok = real(this, wrapped, t);
  __tsan_acquire(this);
  return ok;
}

bool Mutex::AwaitWithDeadline(const Condition& c, absl::Time t) {
  ES_REAL(bool (*)(Mutex*, const Condition&, absl::Time), "_ZN",
          "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Guarded g{&c, this};
  const Condition wrapped(EvalAfterAcquire, &g);
  __tsan_release(&g);
  __tsan_release(this);
  const bool ok = real(this, wrapped, t);
  __tsan_acquire(this);
  return ok;
}

void CondVar::Wait(Mutex* mu) {
  ES_REAL(void (*)(CondVar*, Mutex*), "_ZN", "7CondVar4WaitEPNS0_5MutexE");
  __tsan_release(mu);
  real(this, mu);
  __tsan_acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration t) {
  ES_REAL(bool (*)(CondVar*, Mutex*, absl::Duration), "_ZN",
          "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  __tsan_release(mu);
  const bool ok = real(this, mu, t);
  __tsan_acquire(mu);
  return ok;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time t) {
  ES_REAL(bool (*)(CondVar*, Mutex*, absl::Time), "_ZN",
          "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  __tsan_release(mu);
  const bool ok = real(this, mu, t);
  __tsan_acquire(mu);
  return ok;
}

void Notification::Notify() {
  ES_REAL(void (*)(Notification*), "_ZN", "12Notification6NotifyEv");
  __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  ES_REAL(void (*)(const Notification*), "_ZNK",
          "12Notification19WaitForNotificationEv");
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(
    absl::Duration timeout) const {
  ES_REAL(bool (*)(const Notification*, absl::Duration), "_ZNK",
          "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool ok = real(this, timeout);
  if (ok) __tsan_acquire(const_cast<Notification*>(this));
  return ok;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  ES_REAL(bool (*)(const Notification*, absl::Time), "_ZNK",
          "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool ok = real(this, deadline);
  if (ok) __tsan_acquire(const_cast<Notification*>(this));
  return ok;
}

ABSL_NAMESPACE_END
}  // namespace absl
