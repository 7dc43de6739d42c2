/* fuzz_csv: the CSV reader. Input: one option byte (bit 0: regression, bits 1-2: header auto /
 * true / false, bit 3: standardize, bit 4: a test file), then the training file and, with bit 4,
 * FUZZ_SEP and the test file. */
#include "fuzz_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const headers[] = {"auto", "true", "false", "auto"};
    unsigned opt = data[0];
    struct fuzz_part part[2];
    int np = fuzz_split(data + 1, size - 1, part, (opt & 16) ? 2 : 1);
    char *train = fuzz_write("train.csv", part[0].p, part[0].n);
    char *test = np > 1 ? fuzz_write("test.csv", part[1].p, part[1].n) : NULL;
    char *yaml = xasprintf("name: csv\ntrain: '%s'\n%s%s%stask: %s\nheader: %s\nstandardize: %s\n",
                           train, test ? "test: '" : "", test ? test : "", test ? "'\n" : "",
                           (opt & 1) ? "regression" : "classification", headers[(opt >> 1) & 3],
                           (opt & 8) ? "true" : "false");
    fuzz_data(yaml);
    free(yaml);
    free(train);
    free(test);
    return 0;
}
