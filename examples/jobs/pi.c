/* pi: estimate pi by Monte Carlo. `pi SAMPLES [SEED]` draws SAMPLES points in the unit
 * square from a xoshiro256** generator seeded with SEED (a decimal integer) through
 * splitmix64; without SEED the seed comes from WASI random_get (getentropy), which the
 * Nuclux deterministic profile derives from the job's seed, so replicas still agree.
 * Prints `pi=<estimate> samples=<n> inside=<k>`.
 *
 * A Nuclux example job: plain C and WASI preview 1, built by scripts/build-examples. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static uint64_t s[4];

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t next(void) { /* xoshiro256** */
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return result;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: pi SAMPLES [SEED]\n");
        return 2;
    }
    uint64_t samples = strtoull(argv[1], NULL, 10), seed;
    if (argc == 3) {
        seed = strtoull(argv[2], NULL, 10);
    } else if (getentropy(&seed, sizeof seed) != 0) {
        perror("getentropy");
        return 2;
    }
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&seed);
    uint64_t inside = 0;
    for (uint64_t i = 0; i < samples; i++) {
        /* two 26-bit coordinates: x^2 + y^2 < 2^52 exactly in 64-bit integers */
        uint64_t r = next(), x = r >> 38, y = (r >> 12) & ((1u << 26) - 1);
        inside += x * x + y * y < (1ULL << 52);
    }
    double pi = samples ? 4.0 * (double)inside / (double)samples : 0.0;
    printf("pi=%.6f samples=%" PRIu64 " inside=%" PRIu64 "\n", pi, samples, inside);
    return 0;
}
