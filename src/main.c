#include "drdc/error.h"
#include <stdio.h>
int main(void) { printf("drdc\n"); return 0; }
