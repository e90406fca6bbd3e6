#include "cpu_features.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>

static unsigned long long read_xcr0(void)
{
    unsigned int eax, edx;
    /* xgetbv with ecx=0; only valid when CPUID reports OSXSAVE (checked by the caller). */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

int fastfit_cpu_has_avx512(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    /* leaf 7 ebx: F=16, DQ=17, CD=28, BW=30, VL=31 */
    const unsigned int need = (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31);
    return (ebx & need) == need;
}

int fastfit_os_saves_avx512(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    if (!(ecx & (1u << 27))) return 0; /* OSXSAVE */
    /* XCR0: SSE (1), AVX (2), opmask (5), ZMM_Hi256 (6), Hi16_ZMM (7) */
    const unsigned long long need = (1ull << 1) | (1ull << 2) | (1ull << 5) | (1ull << 6) | (1ull << 7);
    return (read_xcr0() & need) == need;
}

#else

int fastfit_cpu_has_avx512(void) { return 0; }
int fastfit_os_saves_avx512(void) { return 0; }

#endif

int fastfit_avx512_usable(void)
{
    return fastfit_cpu_has_avx512() && fastfit_os_saves_avx512();
}

/* The version of the FF_CLONES loops (csrc/clones.h) the loader picks on this
 * machine: GCC's resolver asks the same question of the same CPU. */
const char *fastfit_loop_clone(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && !defined(FASTFIT_NO_CLONES)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return "avx512f";
    if (__builtin_cpu_supports("avx2"))
        return "avx2";
    return "default";
#else
    return "single";
#endif
}
