/* fpu: register state kept live across the checkpoint. An assembly routine loads the vector registers
 * (ymm0-15, or zmm0-31 and k0-7 in the AVX-512 build), three x87 stack values, a changed x87 control
 * word and MXCSR (round toward zero, FTZ, DAZ) and five callee-saved general registers, prints READY
 * itself, then spins in user mode until SIGUSR1 sets a flag; only then does it store the registers,
 * which must hold exactly what was loaded.
 *
 * build: fpu_avx2 -mavx2
 * build: fpu_avx512 -mavx512f
 */
#include "e2e.h"
#include <stddef.h>

struct regs {
    uint8_t vin[32][64];      /*    0 */
    uint8_t vout[32][64];     /* 2048 */
    uint64_t kin[8];          /* 4096 */
    uint64_t kout[8];         /* 4160 */
    uint8_t x87in[3][16];     /* 4224 */
    uint8_t x87out[3][16];    /* 4272 */
    uint32_t mxcsr_in;        /* 4320 */
    uint32_t mxcsr_out;       /* 4324 */
    uint16_t fcw_in;          /* 4328 */
    uint16_t fcw_out;         /* 4330 */
    uint32_t pad;             /* 4332 */
    uint64_t gin[5];          /* 4336 */
    uint64_t gout[5];         /* 4376 */
} __attribute__((aligned(64)));
_Static_assert(offsetof(struct regs, vout) == 2048, "layout");
_Static_assert(offsetof(struct regs, kin) == 4096 && offsetof(struct regs, kout) == 4160, "layout");
_Static_assert(offsetof(struct regs, x87in) == 4224 && offsetof(struct regs, x87out) == 4272, "layout");
_Static_assert(offsetof(struct regs, mxcsr_in) == 4320 && offsetof(struct regs, fcw_in) == 4328, "layout");
_Static_assert(offsetof(struct regs, gin) == 4336 && offsetof(struct regs, gout) == 4376, "layout");

static volatile int fpu_go __attribute__((used));
static void on_usr1(int sig) { (void)sig; fpu_go = 1; }

#define S_(x) #x
#define S(x) S_(x)
#ifdef __AVX512F__
#define NVEC 32
#define VLD(n) "vmovdqu64 " S(n) "*64(%r8), %zmm" S(n) "\n\t"
#define VST(n) "vmovdqu64 %zmm" S(n) ", 2048+" S(n) "*64(%r8)\n\t"
#define KLD(n) "kmovw 4096+" S(n) "*8(%r8), %k" S(n) "\n\t"
#define KST(n) "kmovw %k" S(n) ", 4160+" S(n) "*8(%r8)\n\t"
#define VLD16(a) VLD(a##0) VLD(a##1) VLD(a##2) VLD(a##3) VLD(a##4) VLD(a##5) VLD(a##6) VLD(a##7) \
                 VLD(a##8) VLD(a##9)
#define ALL_VLD VLD(0) VLD(1) VLD(2) VLD(3) VLD(4) VLD(5) VLD(6) VLD(7) VLD(8) VLD(9) VLD16(1) VLD16(2) VLD(30) VLD(31) \
    KLD(0) KLD(1) KLD(2) KLD(3) KLD(4) KLD(5) KLD(6) KLD(7)
#define VST16(a) VST(a##0) VST(a##1) VST(a##2) VST(a##3) VST(a##4) VST(a##5) VST(a##6) VST(a##7) \
                 VST(a##8) VST(a##9)
#define ALL_VST VST(0) VST(1) VST(2) VST(3) VST(4) VST(5) VST(6) VST(7) VST(8) VST(9) VST16(1) VST16(2) VST(30) VST(31) \
    KST(0) KST(1) KST(2) KST(3) KST(4) KST(5) KST(6) KST(7)
#define VBYTES 64
#else
#define NVEC 16
#define VLD(n) "vmovdqu " S(n) "*64(%r8), %ymm" S(n) "\n\t"
#define VST(n) "vmovdqu %ymm" S(n) ", 2048+" S(n) "*64(%r8)\n\t"
#define ALL_VLD VLD(0) VLD(1) VLD(2) VLD(3) VLD(4) VLD(5) VLD(6) VLD(7) VLD(8) VLD(9) VLD(10) VLD(11) VLD(12) VLD(13) VLD(14) VLD(15)
#define ALL_VST VST(0) VST(1) VST(2) VST(3) VST(4) VST(5) VST(6) VST(7) VST(8) VST(9) VST(10) VST(11) VST(12) VST(13) VST(14) VST(15)
#define VBYTES 32
#endif

/* void spin_regs(struct regs *p) */
__asm__(
    ".text\n"
    ".p2align 4\n"
    "spin_regs:\n\t"
    "push %rbx\n\t push %r12\n\t push %r13\n\t push %r14\n\t push %r15\n\t"
    "mov %rdi, %r8\n\t"
    "ldmxcsr 4320(%r8)\n\t"
    "fldcw 4328(%r8)\n\t"
    "fldt 4224(%r8)\n\t fldt 4240(%r8)\n\t fldt 4256(%r8)\n\t"
    ALL_VLD
    "mov 4336(%r8), %rbx\n\t mov 4344(%r8), %r12\n\t mov 4352(%r8), %r13\n\t mov 4360(%r8), %r14\n\t mov 4368(%r8), %r15\n\t"
    /* write(1, "READY\n", 6) from here: every register is loaded */
    "mov $1, %eax\n\t mov $1, %edi\n\t lea fpu_ready_msg(%rip), %rsi\n\t mov $6, %edx\n\t syscall\n"
    "1:\n\t pause\n\t cmpl $0, fpu_go(%rip)\n\t je 1b\n\t"
    ALL_VST
    "mov %rbx, 4376(%r8)\n\t mov %r12, 4384(%r8)\n\t mov %r13, 4392(%r8)\n\t mov %r14, 4400(%r8)\n\t mov %r15, 4408(%r8)\n\t"
    "fstpt 4272(%r8)\n\t fstpt 4288(%r8)\n\t fstpt 4304(%r8)\n\t"
    "stmxcsr 4324(%r8)\n\t"
    "fnstcw 4330(%r8)\n\t"
    "vzeroupper\n\t"
    "pop %r15\n\t pop %r14\n\t pop %r13\n\t pop %r12\n\t pop %rbx\n\t"
    "ret\n"
    ".section .rodata\n"
    "fpu_ready_msg: .ascii \"READY\\n\"\n"
    ".text\n");
void spin_regs(struct regs *p);

static struct regs R;

int main(void)
{
    e2e_init();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    MUST(sigaction(SIGUSR1, &sa, NULL) == 0);

    fill(R.vin, sizeof R.vin, 41);
    for (int k = 0; k < 8; k++) R.kin[k] = 0x1111u * (k + 1) + 0x0f0f;
    long double x[3] = { 3.14159265358979323846264338327950288L, -2.5e300L, 1.0L / 3.0L };
    memset(R.x87in, 0, sizeof R.x87in);
    for (int i = 0; i < 3; i++) memcpy(R.x87in[i], &x[i], 10);
    R.mxcsr_in = 0x1f80 | 0x6000 /* round toward zero */ | 0x8000 /* FTZ */ | 0x0040 /* DAZ */;
    R.fcw_in = 0x037f;
    R.fcw_in = (R.fcw_in & ~0x0f00) | 0x0800 /* round up */ | 0x0200 /* double precision */;
    for (int i = 0; i < 5; i++) R.gin[i] = 0xC0FFEE0000000000ull + i * 0x0101010101ull;

    spin_regs(&R);   /* prints READY, spins until SIGUSR1 (checkpoint, kill, restart meanwhile) */

    uint32_t mx_after;
    __asm__ volatile("stmxcsr %0" : "=m"(mx_after));
    volatile float one = 1.0f, three = 3.0f;
    float third = one / three;
    uint32_t bits;
    memcpy(&bits, &third, 4);
    CHECK(bits == 0x3eaaaaaa, "1/3 under round-toward-zero gave 0x%08x (MXCSR rounding lost)", bits);
    uint32_t dflt = 0x1f80;
    __asm__ volatile("ldmxcsr %0" ::"m"(dflt));
    uint16_t fcw_dflt = 0x037f;
    __asm__ volatile("fldcw %0" ::"m"(fcw_dflt));

    for (int n = 0; n < NVEC; n++)
        CHECK(memcmp(R.vout[n], R.vin[n], VBYTES) == 0, "vector register %d changed", n);
#ifdef __AVX512F__
    for (int k = 0; k < 8; k++)
        CHECK((R.kout[k] & 0xffff) == (R.kin[k] & 0xffff), "k%d is 0x%lx, expected 0x%lx", k,
              (unsigned long)(R.kout[k] & 0xffff), (unsigned long)(R.kin[k] & 0xffff));
#endif
    for (int i = 0; i < 3; i++)
        CHECK(memcmp(R.x87out[i], R.x87in[2 - i], 10) == 0, "x87 stack value st(%d) changed", i);
    CHECK((R.mxcsr_out & ~0x3fu) == R.mxcsr_in, "MXCSR 0x%x, expected 0x%x", R.mxcsr_out, R.mxcsr_in);
    CHECK((mx_after & ~0x3fu) == R.mxcsr_in, "MXCSR after return 0x%x", mx_after);
    CHECK(R.fcw_out == R.fcw_in, "x87 control word 0x%x, expected 0x%x", R.fcw_out, R.fcw_in);
    for (int i = 0; i < 5; i++)
        CHECK(R.gout[i] == R.gin[i], "general register %d is 0x%lx, expected 0x%lx", i, (unsigned long)R.gout[i], (unsigned long)R.gin[i]);
    CHECK(fpu_go, "left the loop without SIGUSR1");
    say("checked %d vector registers of %d bytes%s", NVEC, VBYTES, NVEC == 32 ? " and k0-k7" : "");
    return e2e_finish();
}
