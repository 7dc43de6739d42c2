/* rng.h: seeded, named, counter-addressed random streams.
 *
 * Every random choice in samx comes from a stream identified by (seed, name, counter), e.g.
 * (seed, "shuffle", epoch) or (seed, "init", 0). A stream's state is derived by hashing those
 * three values with splitmix64, then drawn from with xoshiro256**. Because a stream is a pure
 * function of its address, nothing random needs to be saved to resume a run, and switching one
 * feature on (say a measurement) never shifts the numbers another feature draws.
 * No rand(), no global state.
 */
#ifndef SAMX_RNG_H
#define SAMX_RNG_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
};

/* Start the stream (seed, name, counter). */
void rng_init(struct rng *r, uint64_t seed, const char *name, uint64_t counter);
uint64_t rng_u64(struct rng *r);
/* Advance r by k draws of rng_u64 (k steps of the generator). */
void rng_skip(struct rng *r, uint64_t k);
/* Uniform double in [0, 1) with 53 random bits. */
double rng_uniform(struct rng *r);
/* Uniform integer in [0, n), unbiased (n > 0). */
uint64_t rng_below(struct rng *r, uint64_t n);
/* Standard normal (Box-Muller, no cached second value: the stream position stays simple). */
double rng_normal(struct rng *r);
/* +1 or -1 with equal probability. */
float rng_rademacher(struct rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void rng_shuffle(struct rng *r, int *idx, int n);

#endif
