// CUDA kernels on the host, for the tests: the built-ins the kernels of cuda/*.cu use, and a
// launcher that runs every thread of a block as a fiber on one OS thread, so the kernels run
// unchanged (g++, -ffp-contract=off) where there is no GPU. tests/host_cuda.py compiles a
// family's source after this header and calls host_cuda::launch.
//
// What it checks beyond the results: a __syncthreads some threads of the block never reach, a
// warp shuffle some lanes of the warp never reach (both raise instead of hanging), a fiber stack
// overflow (a guard page), and dynamic shared memory read before it is written (it starts as
// NaN bytes). Blocks run one after another and a thread runs until it waits at a barrier, so a
// read of another thread's write with no barrier between them sees one fixed order: forward in
// one launch, reversed in the next, which exposes it in one of the two. Other races, and
// anything about timing, need a GPU.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if !defined(__x86_64__)
#error "host_cuda switches fibers with x86-64 assembly"
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // one instance per kernel instantiation: blocks run one at a time
#define __restrict__ __restrict
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace host_cuda {

enum class Wait { none, block, warp };

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;
  void* fake_stack = nullptr;  // AddressSanitizer's, kept while the fiber is suspended
  dim3 thread_idx;
  bool done = false;
  Wait wait = Wait::none;
  unsigned long long shuffled = 0;  // the value this lane offers to a warp shuffle
};

// Saves the callee-saved registers on the running stack, stores its pointer in *save and resumes
// the stack at `load` (the System V ABI leaves everything else to the caller).
extern "C" void host_cuda_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .type host_cuda_switch, @function
host_cuda_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size host_cuda_switch, .-host_cuda_switch
)");

constexpr size_t kStackBytes = 256 * 1024, kGuardBytes = 4096;

struct Launch {
  dim3 grid, block, block_idx;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  const void* scheduler_stack = nullptr;  // its bounds, for AddressSanitizer
  size_t scheduler_stack_bytes = 0;
  void (*body)(void*) = nullptr;  // runs the kernel with its arguments for the current thread
  void* body_state = nullptr;
  std::vector<unsigned char> dynamic_shared;
  std::string error;
  unsigned long long launches = 0;
};

inline Launch launch_state;
inline std::vector<char*> stacks;  // mmap'ed once, reused by every launch

inline void fail(const std::string& message) {
  if (launch_state.error.empty()) launch_state.error = message;
}

// Under AddressSanitizer (HOST_CUDA_SANITIZE=address) every switch says which stack comes next.
#if defined(__SANITIZE_ADDRESS__)
inline void switch_to_scheduler(Fiber* self, bool finished) {
  Launch& L = launch_state;
  __sanitizer_start_switch_fiber(finished ? nullptr : &self->fake_stack, L.scheduler_stack, L.scheduler_stack_bytes);
  host_cuda_switch(&self->sp, L.scheduler_sp);
  __sanitizer_finish_switch_fiber(self->fake_stack, &L.scheduler_stack, &L.scheduler_stack_bytes);
}
inline void switch_to_fiber(Fiber& fiber) {
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, fiber.stack, kStackBytes);
  host_cuda_switch(&launch_state.scheduler_sp, fiber.sp);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
}
inline void fiber_started() {
  __sanitizer_finish_switch_fiber(nullptr, &launch_state.scheduler_stack, &launch_state.scheduler_stack_bytes);
}
#else
inline void switch_to_scheduler(Fiber* self, bool) { host_cuda_switch(&self->sp, launch_state.scheduler_sp); }
inline void switch_to_fiber(Fiber& fiber) { host_cuda_switch(&launch_state.scheduler_sp, fiber.sp); }
inline void fiber_started() {}
#endif

[[noreturn]] inline void fiber_main() {
  fiber_started();
  Fiber* self = launch_state.current;
  try {
    launch_state.body(launch_state.body_state);
  } catch (const std::exception& exc) {
    fail(exc.what());
  }
  self->done = true;
  switch_to_scheduler(self, true);
  __builtin_unreachable();
}

inline void start_fiber(Fiber& fiber, size_t t) {
  while (stacks.size() <= t) {
    void* base = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::bad_alloc();
    mprotect(base, kGuardBytes, PROT_NONE);  // an overflow faults instead of corrupting a neighbour
    stacks.push_back(static_cast<char*>(base));
  }
  fiber.stack = stacks[t] + kGuardBytes;
#if defined(__SANITIZE_ADDRESS__)
  // A fiber of an earlier launch may have stopped with its frames' redzones still poisoned.
  __asan_unpoison_memory_region(fiber.stack, kStackBytes);
#endif
  // host_cuda_switch pops six registers and returns into fiber_main, which then sees the stack
  // as a called function does (16-byte aligned before the return address).
  auto* sp = reinterpret_cast<uintptr_t*>(fiber.stack + kStackBytes);
  *--sp = 0;
  *--sp = reinterpret_cast<uintptr_t>(&fiber_main);
  for (int r = 0; r < 6; ++r) *--sp = 0;
  fiber.sp = sp;
}

inline void suspend(Wait wait) {
  Fiber* self = launch_state.current;
  self->wait = wait;
  switch_to_scheduler(self, false);
}

inline void resume(Fiber& fiber) {
  launch_state.current = &fiber;
  switch_to_fiber(fiber);
}

// Runs every thread of the current block until all are done; false (with launch_state.error)
// when a barrier can never be passed.
inline bool run_block() {
  Launch& L = launch_state;
  const unsigned threads = L.block.x;
  for (unsigned t = 0; t < threads; ++t) {
    L.fibers[t] = Fiber{};
    L.fibers[t].thread_idx.x = t;
    start_fiber(L.fibers[t], t);
  }
  // Every other launch runs its blocks, and the threads of each block, in reverse order: a
  // kernel that reads what another thread writes without a barrier between them, or what
  // another block writes at all, then fails in one of the two orders.
  const bool reverse = L.launches % 2 == 1;
  for (;;) {
    for (unsigned s = 0; s < threads; ++s) {
      Fiber& fiber = L.fibers[reverse ? threads - 1 - s : s];
      if (!fiber.done && fiber.wait == Wait::none) resume(fiber);
    }
    if (!L.error.empty()) return false;
    unsigned done = 0, at_block = 0;
    for (const Fiber& fiber : L.fibers) {
      done += fiber.done;
      at_block += fiber.wait == Wait::block;
    }
    if (done == threads) return true;
    bool released = false;
    for (unsigned w = 0; w * 32 < threads; ++w) {
      unsigned at_warp = 0;
      for (unsigned t = w * 32; t < threads && t < w * 32 + 32; ++t) at_warp += L.fibers[t].wait == Wait::warp;
      if (at_warp == 0) continue;
      if (at_warp != 32) {
        L.error = "a warp shuffle that " + std::to_string(32 - at_warp) + " lanes of warp " + std::to_string(w) +
                  " never reach (block " + std::to_string(L.block_idx.x) + ")";
        return false;
      }
      for (unsigned t = w * 32; t < w * 32 + 32; ++t) L.fibers[t].wait = Wait::none;
      released = true;
    }
    if (released) continue;
    if (at_block + done == threads && done == 0) {
      for (Fiber& fiber : L.fibers) fiber.wait = Wait::none;
      continue;
    }
    L.error = "__syncthreads reached by " + std::to_string(at_block) + " of " + std::to_string(threads) +
              " threads (" + std::to_string(done) + " returned) in block " + std::to_string(L.block_idx.x);
    return false;
  }
}

// ---- kernel parameters: described for the Python side, unpacked from CuPy-style argument buffers

template <class T>
char category() {
  return std::is_floating_point_v<T> ? 'f' : std::is_signed_v<T> ? 'i' : 'u';
}

template <class A>
std::string describe() {
  if constexpr (std::is_pointer_v<A>) {
    using Pointee = std::remove_cv_t<std::remove_pointer_t<A>>;
    return std::string("p") + category<Pointee>() + std::to_string(sizeof(Pointee));
  } else {
    return std::string(1, category<A>()) + std::to_string(sizeof(A));
  }
}

template <class... A>
std::string signature(void (*)(A...)) {
  std::string out;
  ((out += describe<A>() + ","), ...);
  return out;
}

template <class... A>
struct Call {
  void (*kernel)(A...);
  void** args;

  template <size_t... I>
  void run(std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);  // a copy per thread, as on the GPU
  }
  static void body(void* self) { static_cast<Call*>(self)->run(std::index_sequence_for<A...>{}); }
};

// Runs kernel<<<grid, block, shared>>>(args...); 0 on success, else 1 with the reason in `error`.
template <class... A>
int launch(void (*kernel)(A...), unsigned grid, unsigned block, size_t shared, void** args, char* error,
           size_t error_bytes) {
  Launch& L = launch_state;
  Call<A...> call{kernel, args};
  L.grid = dim3{grid, 1, 1};
  L.block = dim3{block, 1, 1};
  L.body = &Call<A...>::body;
  L.body_state = &call;
  L.fibers.assign(block, Fiber{});
  L.error.clear();
  bool ok = true;
  ++L.launches;
  try {
    for (unsigned s = 0; s < grid && ok; ++s) {
      L.block_idx = dim3{L.launches % 2 == 1 ? grid - 1 - s : s, 1, 1};
      // Dynamic shared memory starts as garbage on a GPU: NaN bytes here, so a read before a write shows.
      L.dynamic_shared.assign(shared, 0xff);
      ok = run_block();
    }
  } catch (const std::exception& exc) {
    L.error = exc.what();
    ok = false;
  }
  if (!ok) snprintf(error, error_bytes, "%s", L.error.c_str());
  return ok ? 0 : 1;
}

inline void* dynamic_shared() { return launch_state.dynamic_shared.data(); }

inline void syncthreads() { suspend(Wait::block); }

template <class T>
T shuffle_down(unsigned mask, T value, unsigned delta) {
  static_assert(sizeof(T) <= sizeof(unsigned long long));
  Launch& L = launch_state;
  Fiber* self = L.current;
  if (mask != 0xffffffffu || L.block.x % 32 != 0) fail("host_cuda shuffles only full warps");
  memcpy(&self->shuffled, &value, sizeof(T));
  suspend(Wait::warp);  // every lane has offered its value
  const unsigned lane = self->thread_idx.x % 32;
  T out = value;
  if (lane + delta < 32) memcpy(&out, &L.fibers[self->thread_idx.x + delta].shuffled, sizeof(T));
  suspend(Wait::warp);  // every lane has read before any offers its next value
  return out;
}

}  // namespace host_cuda

#define threadIdx (host_cuda::launch_state.current->thread_idx)
#define blockIdx (host_cuda::launch_state.block_idx)
#define blockDim (host_cuda::launch_state.block)
#define gridDim (host_cuda::launch_state.grid)

inline void __syncthreads() { host_cuda::syncthreads(); }
template <class T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta) {
  return host_cuda::shuffle_down(mask, value, delta);
}

// One OS thread runs every fiber and switches only at barriers: plain updates are atomic here.
template <class T, class U>
T atomicAdd(T* address, U value) {
  const T old = *address;
  *address = old + static_cast<T>(value);
  return old;
}
template <class T, class U>
T atomicOr(T* address, U value) {
  const T old = *address;
  *address = old | static_cast<T>(value);
  return old;
}

// Each rounded on its own, never fused into a multiply-add, as the CUDA intrinsics are: the
// empty asm makes the result a value the compiler must produce, whatever -ffp-contract says.
inline double host_cuda_rounded(double x) {
  asm("" : "+x"(x));
  return x;
}
inline double __dadd_rn(double a, double b) { return host_cuda_rounded(a + b); }
inline double __dsub_rn(double a, double b) { return host_cuda_rounded(a - b); }
inline double __dmul_rn(double a, double b) { return host_cuda_rounded(a * b); }

template <class To, class From>
To host_cuda_bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}
inline long long __double_as_longlong(double x) { return host_cuda_bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return host_cuda_bit_cast<double>(x); }
inline unsigned __float_as_uint(float x) { return host_cuda_bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return host_cuda_bit_cast<float>(x); }

inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
template <class T>
T __ldg(const T* address) {
  return *address;
}

// CUDA's min and max take any pair of arithmetic types.
template <class A, class B>
std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B>
std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
