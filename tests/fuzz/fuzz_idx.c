/* fuzz_idx: the IDX reader (mnist). Input: the four files train-images, train-labels,
 * t10k-images, t10k-labels, separated by FUZZ_SEP; a part starting with the gzip magic is
 * written as NAME.gz. */
#include <string.h>

#include "fuzz_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    struct fuzz_part part[4];
    int np = fuzz_split(data, size, part, 4);
    for (int i = 0; i < 4; i++) {
        char gz[64];
        snprintf(gz, sizeof gz, "%s.gz", names[i]);
        char *a = xasprintf("%s/%s", fuzz_dir(), names[i]), *b = xasprintf("%s/%s", fuzz_dir(), gz);
        remove(a);
        remove(b);
        free(a);
        free(b);
        if (i < np) {
            bool is_gz = part[i].n >= 2 && part[i].p[0] == 0x1f && part[i].p[1] == 0x8b;
            free(fuzz_write(is_gz ? gz : names[i], part[i].p, part[i].n));
        }
    }
    char *yaml = xasprintf("name: mnist\ndir: '%s'\nval_split: 0.25\n", fuzz_dir());
    fuzz_data(yaml);
    free(yaml);
    return 0;
}
