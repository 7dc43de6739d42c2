/* fuzz_cifar: the CIFAR binary readers. Input: train.bin and test.bin of CIFAR-100, or with 6
 * parts data_batch_1..5.bin and test_batch.bin of CIFAR-10, separated by FUZZ_SEP. */
#include "fuzz_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const c10[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                       "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
    static const char *const c100[2] = {"train.bin", "test.bin"};
    struct fuzz_part part[6];
    int np = fuzz_split(data, size, part, 6);
    bool ten = np == 6;
    for (int i = 0; i < (ten ? 6 : 2); i++) {
        const char *name = ten ? c10[i] : c100[i];
        char *p = xasprintf("%s/%s", fuzz_dir(), name);
        remove(p);
        free(p);
        if (i < np)
            free(fuzz_write(name, part[i].p, part[i].n));
    }
    char *yaml = xasprintf("name: %s\ndir: '%s'\n", ten ? "cifar10" : "cifar100", fuzz_dir());
    fuzz_data(yaml);
    free(yaml);
    return 0;
}
