/* sdt.h - SystemTap-style USDT probes without <sys/sdt.h>.
 *
 * A stock distribution ships no <sys/sdt.h> (Debian: systemtap-sdt-dev), and a
 * build that compiled its probes out is invisible to perf and bpftrace.  This
 * header writes the same ELF records the tools read, so every build has them.
 * The format (https://sourceware.org/systemtap/wiki/UserSpaceProbeImplementation):
 *
 *   - at the probe site, one nop, where a tracer puts its breakpoint;
 *   - in the non-allocated section .note.stapsdt, one ELF note per site:
 *     owner "stapsdt", type 3, and as descriptor three 8-byte addresses
 *     (the nop, the symbol _.stapsdt.base, the semaphore or 0) followed by
 *     three NUL-terminated strings: provider, probe name, and the argument
 *     operands, e.g. "8@%rdi -4@%esi" (size in bytes, negative when signed,
 *     then the operand as the assembler spells it);
 *   - _.stapsdt.base: one byte in an allocated section, so a tool can tell how
 *     far the file was moved after linking (prelink) by comparing the address
 *     recorded in the note with the section's address in the file;
 *   - optional semaphores (2-byte counters, section .probes) that the kernel
 *     increments while a tracer is attached, so costly argument preparation can
 *     be skipped when nobody listens.
 *
 * Supported: x86-64 and aarch64 with GCC or Clang.  Elsewhere OSVRT_SDT_ENABLED
 * is 0 and the probe macros only evaluate their arguments.
 */
#ifndef OSVRT_SDT_H
#define OSVRT_SDT_H

#if defined(__GNUC__) && defined(__ELF__) && (defined(__x86_64__) || defined(__aarch64__))
#  define OSVRT_SDT_ENABLED 1
#else
#  define OSVRT_SDT_ENABLED 0
#endif

#if OSVRT_SDT_ENABLED

/* perf's aarch64 operand parser understands registers and [sp, N] only, so
 * arguments are forced into registers there (at most one mov at the site);
 * x86's parser reads immediates, registers and memory operands alike, which
 * lets the compiler leave a spilled value where it is. */
#  if defined(__x86_64__)
#    define OSVRT_SDT_CONSTRAINT "nor"
#  else
#    define OSVRT_SDT_CONSTRAINT "r"
#  endif

/* The note's size field: sizeof(x), negated for a signed type.  A pointer is
 * read as an unsigned integer: __builtin_choose_expr (type class 5 is a
 * pointer) keeps the cast (T *)-1 out of the comparison.  Written as
 * !(-1 > 0) because -Wtype-limits flags "unsigned < 0" as always false. */
#  define OSVRT_SDT_INTTYPE(x) \
    __typeof__(__builtin_choose_expr(__builtin_classify_type(x) == 5, 0UL, (x)))
#  define OSVRT_SDT_SIGNED(x) (!((OSVRT_SDT_INTTYPE(x))-1 > (OSVRT_SDT_INTTYPE(x))0))
#  define OSVRT_SDT_SIZE(x) (OSVRT_SDT_SIGNED(x) ? -(int)sizeof(x) : (int)sizeof(x))

/* One asm statement per site.  %cN prints a constant bare (no '$' or '#');
 * the operand templates are numbered from the argument list below: size of
 * argument k is operand 2k, its value 2k+1. */
#  define OSVRT_SDT_ASM(provider, name, sem, argfmt)                                  \
    "990:\tnop\n"                                                                   \
    "\t.pushsection .note.stapsdt,\"\",\"note\"\n"                                  \
    "\t.balign 4\n"                                                                 \
    "\t.4byte 992f-991f, 994f-993f, 3\n"                                            \
    "991:\t.asciz \"stapsdt\"\n"                                                    \
    "992:\t.balign 4\n"                                                             \
    "993:\t.8byte 990b\n"                                                           \
    "\t.8byte _.stapsdt.base\n"                                                     \
    "\t.8byte " sem "\n"                                                            \
    "\t.asciz \"" #provider "\"\n"                                                  \
    "\t.asciz \"" #name "\"\n"                                                      \
    "\t.asciz \"" argfmt "\"\n"                                                     \
    "994:\t.balign 4\n"                                                             \
    "\t.popsection\n"                                                               \
    "\t.ifndef _.stapsdt.base\n"                                                    \
    "\t.pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n"       \
    "\t.weak _.stapsdt.base\n"                                                      \
    "\t.hidden _.stapsdt.base\n"                                                    \
    "_.stapsdt.base:\t.space 1\n"                                                   \
    "\t.size _.stapsdt.base, 1\n"                                                   \
    "\t.popsection\n"                                                               \
    "\t.endif\n"

#  define OSVRT_SDT_IN(x) "n"(OSVRT_SDT_SIZE(x)), OSVRT_SDT_CONSTRAINT(x)

/* sem: the semaphore's symbol as a string, or "0". */
#  define OSVRT_SDT_PROBE0(provider, name, sem) \
    __asm__ __volatile__(OSVRT_SDT_ASM(provider, name, sem, ""))
#  define OSVRT_SDT_PROBE1(provider, name, sem, a)                             \
    __asm__ __volatile__(OSVRT_SDT_ASM(provider, name, sem, "%c0@%1")          \
                         :: OSVRT_SDT_IN(a))
#  define OSVRT_SDT_PROBE2(provider, name, sem, a, b)                          \
    __asm__ __volatile__(OSVRT_SDT_ASM(provider, name, sem, "%c0@%1 %c2@%3")   \
                         :: OSVRT_SDT_IN(a), OSVRT_SDT_IN(b))
#  define OSVRT_SDT_PROBE3(provider, name, sem, a, b, c)                              \
    __asm__ __volatile__(OSVRT_SDT_ASM(provider, name, sem, "%c0@%1 %c2@%3 %c4@%5")   \
                         :: OSVRT_SDT_IN(a), OSVRT_SDT_IN(b), OSVRT_SDT_IN(c))

/* The kernel's uprobe reference counter (Linux >= 4.20) is an unsigned short
 * at the address the note records; tools also look for the section name. */
#  define OSVRT_SDT_SEMAPHORE_ATTR __attribute__((section(".probes"), used))

#else  /* no SDT on this target */

#  define OSVRT_SDT_PROBE0(provider, name, sem)             ((void)0)
#  define OSVRT_SDT_PROBE1(provider, name, sem, a)          ((void)(a))
#  define OSVRT_SDT_PROBE2(provider, name, sem, a, b)       ((void)(a), (void)(b))
#  define OSVRT_SDT_PROBE3(provider, name, sem, a, b, c)    ((void)(a), (void)(b), (void)(c))
#  define OSVRT_SDT_SEMAPHORE_ATTR

#endif

#endif
