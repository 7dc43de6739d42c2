/* fuzz_safetensors: the safetensors reader on a file of the input's bytes: st_open_header and
 * st_open, then every tensor read back and the metadata looked up. Errors are one line. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = fuzz_write("model.safetensors", data, size);
    struct st_file f;
    struct err e = {0};
    int rc = st_open_header(&f, path, &e);
    fuzz_check_err(rc, &e);
    if (rc == 0)
        st_close(&f);
    struct err e2 = {0};
    rc = st_open(&f, path, &e2);
    fuzz_check_err(rc, &e2);
    if (rc == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, f.hdr)
        {
            if (!strcmp(it->string, "__metadata__"))
                continue;
            const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
            const cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
            size_t nb = (size_t)(cJSON_GetArrayItem(of, 1)->valuedouble -
                                 cJSON_GetArrayItem(of, 0)->valuedouble);
            void *dst = malloc(nb ? nb : 1);
            struct err e3 = {0};
            fuzz_check_err(st_read_raw(&f, it->string, dt->valuestring, dst, nb, &e3), &e3);
            free(dst);
        }
        (void)st_meta(&f, "config_sha256");
        st_close(&f);
    }
    free(path);
    return 0;
}
