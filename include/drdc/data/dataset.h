/* dataset.h: the index of an anomaly-detection dataset (paths, labels, masks; no pixels).
 *
 * Layouts (DESIGN.md section 5):
 *   "mvtec", "mpdd"  <root>/<category>/train/good/<files>, test/good/<files>, test/<defect>/<files>,
 *                    ground_truth/<defect>/<stem>_mask.png (also <stem>.png, any image extension)
 *   "btad"           <root>/NN/train/ok/<files>, NN/test/ok/<files>, NN/test/ko/<files>, NN/ground_truth/ko/<stem>.png|bmp
 *                    (defect type "ko"; "ok" becomes "good")
 *   "visa"           <root>/split_csv/1cls.csv, columns object,split,label,image[,mask] (any order,
 *                    paths relative to root, label normal|anomaly; defect type "anomaly")
 *   "folder"         <root>/good/<files> (train), optional <root>/test/good/<files>, <root>/test/<defect>/<files>,
 *                    optional <root>/ground_truth/<defect>/<stem>_mask.png. One category named
 *                    after the root's base name. When <root>/good is absent, every subfolder of
 *                    root holding a good/ folder is a category in this layout. Without a
 *                    ground_truth folder the category's has_masks is 0: pixel metrics unavailable.
 *
 * Categories: every category folder under root (sorted by name; for mvtec/mpdd/btad a subfolder
 * counts when it holds train/, test/ or ground_truth/) or a chosen list (an unknown name is an
 * error listing the available ones). Files in every list are sorted by name (byte order).
 *
 * Image files: extensions png, jpg, jpeg, bmp, case-insensitive. Inside a dataset folder, hidden
 * files (leading '.'), sub-folders, .tif/.tiff files (stb cannot decode them) and any other file
 * are skipped, never an error: the dataset counts them (n_skipped, of which n_skipped_tif) and
 * keeps the first one's path, so a command can warn ("skipped 3 files, e.g. ..."). Skipped
 * entries of a ground_truth folder are not counted (masks are looked up by stem).
 *
 * Labels: a defect image is label 1 and must have a mask (an error naming the image otherwise,
 * unless the category has no ground_truth folder at all in the "folder" layout); a good image is
 * label 0 with mask_path NULL (its mask is all zero). Any non-zero mask pixel is anomalous.
 *
 * Errors (all name the path): missing root, missing category folder, missing or empty train
 * folder, defect image without mask. A category without test images is NOT an error: n_test
 * is 0 and eval decides (train does not need test images). */
#ifndef DRDC_DATASET_H
#define DRDC_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include "drdc/core/config.h"
#include "drdc/core/error.h"
#include "drdc/formats/csv.h"   /* the VisA split file's reader (it used to be declared here) */

#ifdef __cplusplus
extern "C" {
#endif

/* One image of a dataset. Strings are owned by the drdc_dataset they come from (sample lists
 * made from a dataset borrow them: keep the dataset alive while using the list). */
typedef struct drdc_sample {
    const char *image_path;  /* full path (root joined) */
    const char *mask_path;   /* ground-truth mask; NULL for good images (all-zero mask) and for
                                defect images of a category without masks (has_masks == 0) */
    const char *defect;      /* "good" for normal images, else the defect type */
    int label;               /* 0 normal, 1 anomalous */
    int category;            /* index into drdc_dataset.categories */
} drdc_sample;

typedef struct drdc_category {
    char *name;              /* category name (folder name, VisA object) */
    char *dir;               /* category folder (root for visa) */
    drdc_sample *train;      /* (n_train) train/good images, label 0 */
    int n_train;
    drdc_sample *test;       /* (n_test) test images: good first, then defect types in name order */
    int n_test;
    int n_test_good, n_test_defect;
    char **defect_types;     /* (n_defect_types) sorted names, "good" excluded */
    int n_defect_types;
    int has_masks;           /* 1 when every defect test image has a mask (pixel metrics possible) */
} drdc_category;

typedef struct drdc_dataset {
    char layout[DRDC_NAME_CAP];   /* "mvtec" | "mpdd" | "btad" | "visa" | "folder" */
    char *root;
    drdc_category *categories;    /* (n_categories) in name order, or in the chosen order */
    int n_categories;
    int n_skipped;                /* hidden / non-image / tif files skipped in dataset folders */
    int n_skipped_tif;            /* of which .tif/.tiff */
    char *first_skipped;          /* path of the first skipped entry, NULL if none */
} drdc_dataset;

/* Indexes a dataset. `layout` as in the header comment; `categories` may be NULL / n 0 for all.
 * On failure *ds is left zeroed (nothing to free). */
drdc_status drdc_dataset_open(drdc_dataset *ds, const char *layout, const char *root,
                              int n_categories, const char *const *categories);

/* Same, from the data section of a config (dataset, root, categories). */
drdc_status drdc_dataset_open_config(drdc_dataset *ds, const drdc_data_config *cfg);

void drdc_dataset_free(drdc_dataset *ds);   /* safe on a zeroed struct; leaves it zeroed */

/* Keeps only test images 0, k, 2k, ... of each category (in dataset order: good first, then each
 * defect type, so both shares are kept about evenly); updates the counts. k >= 1 (1: no change). */
void drdc_dataset_keep_every(drdc_dataset *ds, int k);

/* Index of the category called `name`, or -1. */
int drdc_dataset_find_category(const drdc_dataset *ds, const char *name);

/* Lists the category names found under root for a layout (what drdc_dataset_open would take
 * with no chosen list). *names is an array of n strings; free with drdc_string_list_free. */
drdc_status drdc_dataset_available(const char *layout, const char *root, char ***names, int *n);
void drdc_string_list_free(char **names, int n);

/* A list of samples borrowing the dataset's strings. */
typedef struct drdc_sample_list {
    drdc_sample *items;   /* (n) owned by the list */
    int n;
} drdc_sample_list;

void drdc_sample_list_free(drdc_sample_list *list);   /* safe on a zeroed struct */

/* Multi-class training and validation sets. For each category, a deterministic (seed) share
 * val_fraction of train/good is held out: n_val = round(val_fraction * n_train), at least 1
 * when val_fraction > 0 and n_train >= 2, at most n_train - 1. The choice for one category
 * depends only on the seed, the category name and its file list (not on which other
 * categories are chosen). Both lists hold every category's images, each tagged with its
 * category, in category order then file-name order. val_fraction in [0, 1); 0 gives the plain
 * multi-class training set (the union of every category's train/good) and an empty val. */
drdc_status drdc_dataset_split(const drdc_dataset *ds, double val_fraction, uint64_t seed,
                               drdc_sample_list *train, drdc_sample_list *val);

/* Test images of one category (category >= 0) or of all (category = -1), in dataset order. */
drdc_status drdc_dataset_test_list(const drdc_dataset *ds, int category, drdc_sample_list *out);

/* ---- helpers shared with the loader and the commands ---------------------------------------- */

/* 1 when path's extension is png, jpg, jpeg or bmp (any case). */
int drdc_is_image_file(const char *path);


#ifdef __cplusplus
}
#endif
#endif
