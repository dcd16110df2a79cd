/* test_probes: the probe macros of probes.h (csrc/core/sdt.h by default) compile,
 * and the notes they leave in this very executable are what perf reads: the
 * provider and name, argument sizes with their signs, a nop at the recorded
 * address, and the semaphore's address for the tracepoints of trace.c.
 *
 * Exits 77 (skipped) where probes are compiled out (-DOSVRT_NO_SDT, or an
 * architecture sdt.h does not know), after checking no note was written. */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "probes.h"
#include "trace.h"

struct note {
    uint64_t pc, base, sem;
    char provider[32], name[32], args[128];
};

static unsigned char *read_self(size_t *len)
{
    FILE *f = fopen("/proc/self/exe", "rb");
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    CHECK(n > 0);
    rewind(f);
    unsigned char *buf = malloc((size_t)n);
    CHECK(buf != NULL);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static const Elf64_Shdr *section(const unsigned char *elf, const char *want)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)elf;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(elf + eh->e_shoff);
    const char *names = (const char *)elf + sh[eh->e_shstrndx].sh_offset;
    for (unsigned i = 0; i < eh->e_shnum; i++)
        if (strcmp(names + sh[i].sh_name, want) == 0)
            return &sh[i];
    return NULL;
}

/* The osvrt notes of the file; returns how many. */
static int read_notes(const unsigned char *elf, struct note *out, int max)
{
    const Elf64_Shdr *sh = section(elf, ".note.stapsdt");
    if (!sh)
        return 0;
    int n = 0;
    size_t off = sh->sh_offset, end = sh->sh_offset + sh->sh_size;
    while (off < end) {
        const Elf64_Nhdr *nh = (const Elf64_Nhdr *)(elf + off);
        const char *owner = (const char *)(nh + 1);
        const unsigned char *desc = (const unsigned char *)owner + ((nh->n_namesz + 3) & ~3u);
        off = (size_t)(desc - elf) + ((nh->n_descsz + 3) & ~3u);
        CHECK_EQ(nh->n_type, 3);                      /* NT_STAPSDT */
        CHECK(strcmp(owner, "stapsdt") == 0);
        CHECK(n < max);
        struct note *no = &out[n];
        memcpy(&no->pc, desc, 8);
        memcpy(&no->base, desc + 8, 8);
        memcpy(&no->sem, desc + 16, 8);
        const char *s = (const char *)desc + 24;
        const char *limit = (const char *)desc + nh->n_descsz;
        char *dst[3] = {no->provider, no->name, no->args};
        size_t cap[3] = {sizeof no->provider, sizeof no->name, sizeof no->args};
        for (int i = 0; i < 3; i++) {
            size_t len = strnlen(s, (size_t)(limit - s));
            CHECK_MSG(s + len < limit, "note string %d not terminated inside the note", i);
            CHECK(len < cap[i]);
            memcpy(dst[i], s, len + 1);
            s += len + 1;
        }
        CHECK_MSG(s == limit, "descsz counts %td bytes past the strings", limit - s);
        if (strcmp(no->provider, "osvrt") == 0)
            n++;
    }
    return n;
}

static const struct note *find(const struct note *notes, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(notes[i].name, name) == 0)
            return &notes[i];
    return NULL;
}

static int first_object(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(uintptr_t *)data = (uintptr_t)info->dlpi_addr;
    return 1;                         /* the first object is the executable */
}

/* The sizes of a note's arguments ("-4@%edi 8@%rsi" -> -4, 8); returns how many. */
static int arg_sizes(const char *args, int *out, int max)
{
    int n = 0;
    const char *p = args;
    while (*p) {
        char *at;
        long v = strtol(p, &at, 10);
        CHECK_MSG(at != p && *at == '@', "malformed argument in \"%s\"", args);
        CHECK(n < max);
        out[n++] = (int)v;
        p = strchr(at, ' ');
        if (!p)
            break;
        p++;
    }
    return n;
}

static int probe_sites(int8_t s8, uint16_t u16, void *ptr, int64_t s64, bool flag)
{
    /* Each type's sign and size must reach the note: perf reads the register
     * with that width and sign-extends only what the note calls signed. */
    OSVRT_PROBE3(test_signed, s8, u16, ptr);
    OSVRT_PROBE2(test_wide, s64, flag);
    return s8 + u16;
}

int main(int argc, char **argv)
{
    (void)argv;
    /* argc keeps the arguments out of the constant folder: the probes see
     * registers or memory, as real sites do. */
    CHECK_EQ(probe_sites((int8_t)-argc, (uint16_t)(argc + 1), &argc, -(int64_t)argc, argc > 0), 1);
    osvrt_trace_switch(0, 1, 2);      /* links trace.c, with its semaphores */

    size_t len;
    unsigned char *elf = read_self(&len);
    struct note notes[256];
    int n = read_notes(elf, notes, 256);
    if (!OSVRT_HAVE_SDT) {
        CHECK_EQ(n, 0);
        printf("probes are compiled out in this build: skipped\n");
        free(elf);
        return 77;
    }

    const struct note *sig = find(notes, n, "test_signed");
    const struct note *wide = find(notes, n, "test_wide");
    const struct note *sw = find(notes, n, "switch");
    CHECK(sig && wide && sw);
    int sizes[8];
    CHECK_EQ(arg_sizes(sig->args, sizes, 8), 3);
    CHECK_MSG(sizes[0] == -1 && sizes[1] == 2 && sizes[2] == 8, "test_signed: %s", sig->args);
    CHECK_EQ(arg_sizes(wide->args, sizes, 8), 2);
    CHECK_MSG(sizes[0] == -8 && sizes[1] == 1, "test_wide: %s", wide->args);
    CHECK_EQ(arg_sizes(sw->args, sizes, 8), 3);
    CHECK_MSG(sizes[0] == 4 && sizes[1] == 8 && sizes[2] == 8, "switch: %s", sw->args);

    uintptr_t bias = 0;
    dl_iterate_phdr(first_object, &bias);
    const Elf64_Shdr *base = section(elf, ".stapsdt.base");
    CHECK(base != NULL);
    for (int i = 0; i < n; i++) {
        CHECK_EQ(notes[i].base, base->sh_addr);
        const unsigned char *site = (const unsigned char *)(uintptr_t)(notes[i].pc + bias);
#if defined(__x86_64__)
        CHECK_MSG(site[0] == 0x90, "%s: no nop at the probe site", notes[i].name);
#elif defined(__aarch64__)
        uint32_t insn;
        memcpy(&insn, site, 4);
        CHECK_MSG(insn == 0xd503201fu, "%s: no nop at the probe site", notes[i].name);
#endif
    }
    /* The kernel raises the word the note names; Python reads the symbol. */
    CHECK_EQ(sw->sem + bias, (uintptr_t)&osvrt_switch_semaphore);
    CHECK_EQ(sig->sem, 0);
    CHECK_EQ(osvrt_switch_semaphore, 0);   /* nobody traces a test run */

    printf("%d osvrt probe notes, e.g. switch(%s) test_signed(%s)\n", n, sw->args, sig->args);
    free(elf);
    return 0;
}
