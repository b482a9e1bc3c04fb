/* test_regions.c: the defect regions infer reports (drdc_mask_regions) on hand-made masks: areas,
 * bounding boxes and peaks counted by hand, 8-connectivity (a diagonal joins), the order (largest
 * first), and the verdict rule (score >= threshold; a non-finite score is an error, never normal). */
#include "drdc/model/infer.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A 10 x 8 mask with three blobs:
 *   A: a 3 x 2 rectangle at x 1..3, y 1..2 (area 6), peak 5 at (2,2)
 *   B: two pixels touching only at a corner, (7,1) and (8,2): one region by 8-connectivity (area 2)
 *   C: one pixel at (0,7) (area 1) */
static void test_regions_by_hand(void) {
    enum { W = 10, H = 8 };
    uint8_t mask[W * H] = {0};
    float map[W * H];
    for (int i = 0; i < W * H; i++) map[i] = 0.1f * (float)(i % 7);
    for (int y = 1; y <= 2; y++)
        for (int x = 1; x <= 3; x++) mask[y * W + x] = 1;
    map[2 * W + 2] = 5.0f;
    mask[1 * W + 7] = mask[2 * W + 8] = 1;
    map[1 * W + 7] = 3.0f;
    mask[7 * W + 0] = 1;
    map[7 * W + 0] = 2.5f;
    drdc_region *r = NULL;
    int n = 0;
    CHECK_OK(drdc_mask_regions(mask, map, W, H, &r, &n));
    CHECK(n == 3);
    if (n == 3) {
        CHECK(r[0].area == 6 && r[0].x0 == 1 && r[0].y0 == 1 && r[0].x1 == 3 && r[0].y1 == 2 && r[0].peak == 5.0f);
        CHECK(r[1].area == 2 && r[1].x0 == 7 && r[1].y0 == 1 && r[1].x1 == 8 && r[1].y1 == 2 && r[1].peak == 3.0f);
        CHECK(r[2].area == 1 && r[2].x0 == 0 && r[2].y0 == 7 && r[2].x1 == 0 && r[2].y1 == 7 && r[2].peak == 2.5f);
    }
    free(r);
    /* an empty mask has no regions */
    memset(mask, 0, sizeof mask);
    CHECK_OK(drdc_mask_regions(mask, map, W, H, &r, &n));
    CHECK(n == 0 && r == NULL);
    /* a full mask is one region covering everything */
    memset(mask, 1, sizeof mask);
    CHECK_OK(drdc_mask_regions(mask, map, W, H, &r, &n));
    CHECK(n == 1 && r && r[0].area == W * H && r[0].x1 == W - 1 && r[0].y1 == H - 1);
    free(r);
}

static void test_verdicts_fail_closed(void) {
    CHECK(drdc_verdict_of(1.0, 1.0) == DRDC_VERDICT_ANOMALOUS);   /* at the threshold: anomalous */
    CHECK(drdc_verdict_of(0.999, 1.0) == DRDC_VERDICT_NORMAL);
    CHECK(drdc_verdict_of(NAN, 1.0) == DRDC_VERDICT_ERROR);
    CHECK(drdc_verdict_of(INFINITY, 1.0) == DRDC_VERDICT_ERROR);
    CHECK(drdc_verdict_of(-INFINITY, 1.0) == DRDC_VERDICT_ERROR);
    CHECK(drdc_verdict_of(0.5, NAN) == DRDC_VERDICT_ERROR);       /* no usable threshold: cannot tell */
    CHECK(strcmp(drdc_verdict_name(DRDC_VERDICT_ERROR), "error") == 0);
}

int main(void) {
    RUN(test_regions_by_hand);
    RUN(test_verdicts_fail_closed);
    return test_summary();
}
