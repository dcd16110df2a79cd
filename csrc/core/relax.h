/* cpu_relax(): the spin-wait hint (PAUSE on x86, YIELD on arm64), defined
 * once for the core, the classifier and the tests. */
#ifndef OSVRT_RELAX_H
#define OSVRT_RELAX_H

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
