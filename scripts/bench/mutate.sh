#!/bin/bash
# mutate.sh: puts known bugs into the source one at a time, rebuilds build/, runs the tests that
# guard each and restores the source: every mutation must make its tests fail (a line per mutation
# with the failing tests and ctest's summary; a mutation whose site moved says so).
#
#   bash scripts/bench/mutate.sh wiring       # issue 11: refiner input in [0,1], maps swapped before
#                                             # eq. 17, EMA never updated
#   bash scripts/bench/mutate.sh failclosed   # issue 14: no finiteness check on loading, one noise
#                                             # stream per run, no regular-file check, no run lock
#   bash scripts/bench/mutate.sh kernels      # issue 16: the fused GroupNorm/SiLU kernel without its
#                                             # shift term, turning NaN into 0 (float32 and bf16, both
#                                             # versions), without the AVX-512 Newton step, with a SiLU
#                                             # after the attention blocks' norm (both versions),
#                                             # writing in place over a skip input the decoder reads;
#                                             # the fused attention without its mask or its last
#                                             # query rows; the U-Net's heads reading k from q's
#                                             # channels; the prepared copies (convolutions, norms,
#                                             # embedding projections) used after their weights
#                                             # changed, or never used; the C
#                                             # concatenation, upsampling and bf16 add wrong; the
#                                             # norm's merge of its chunks without their counts or
#                                             # their means' spread; the bf16 pair kernels with the
#                                             # coefficients or the channels out of order, the odd
#                                             # channels' statistics about the even ones' first
#                                             # pixel, NaN turned into 0; a float32 input cast to
#                                             # bf16 without autocast, packed with x_t and cond
#                                             # mixed, or embedded with a wrong prepared frequency;
#                                             # the decoder's split input read at the wrong
#                                             # channels by the norm or the 1x1 convolution; the AMX convolutions
#                                             # without their bias, with the taps transposed,
#                                             # stride 2 read as 1, two accumulators stored in
#                                             # one place, or never used; the bf16 AMX attention
#                                             # unscaled, blind to NaN, with keys or values packed
#                                             # wrong, without its mask or its staged query rows
#   bash scripts/bench/mutate.sh threads      # issue 16: tasks without the caller's thread-local
#                                             # state, every split part starting at run 0
#   bash scripts/bench/mutate.sh all
cd "$(dirname "$0")/../.." || exit 2
cur=""
trap '[ -n "$cur" ] && cp /tmp/mut_backup "$cur"' EXIT   # an interrupted run restores the source

mutate() {   # mutate NAME FILE OLD NEW TESTS: OLD (found exactly once) replaced by NEW
    local name="$1" file="$2" old="$3" new="$4" tests="$5"
    cp "$file" /tmp/mut_backup
    cur="$file"
    if ! python3 - "$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:]
s = open(p).read()
if s.count(old) != 1:
    sys.exit(1)
open(p, "w").write(s.replace(old, new))
PY
    then
        echo "$name: the mutation site is not in $file exactly once (the source moved: update this script)"
    elif ! cmake --build build -j2 >/tmp/mut_build.log 2>&1; then
        echo "$name: build failed (/tmp/mut_build.log)"
    else
        (cd build && ctest -R "$tests" --output-on-failure >"/tmp/mut_$name.log" 2>&1)
        echo "$name: $(grep -E '^[0-9]+: FAIL|^FAIL|tests passed' "/tmp/mut_$name.log" | tr '\n' ' ')"
    fi
    cp /tmp/mut_backup "$file"
    cur=""
}

wiring() {
    mutate input01 src/model/model.c 'TRY(drdc_model_refiner_range(&x, img_r));' 'TRY(dt_clone(&x, img_r));' \
        'test_wiring|test_drdc$'
    mutate swapped src/stages/fusion.c 'TRY(drdc_fusion_blend(&h, h_diff_f, h_base,' \
        'TRY(drdc_fusion_blend(&h, h_base, h_diff_f,' 'test_wiring|test_fusion'
    mutate ema src/model/train_refiner.c \
        'TRY(ema_update(&m->refiner, &live, drdc_ema_decay_at(rc, m->refiner_steps)));' \
        'if (0) TRY(ema_update(&m->refiner, &live, drdc_ema_decay_at(rc, m->refiner_steps)));' 'test_drdc$'
}

failclosed() {
    mutate finite src/formats/params.c 'if (!isfinite(buf[i])) {' 'if (0) {' test_failclosed
    mutate seed src/model/model.c 'return drdc_splitmix64(&state);' \
        'static uint64_t calls; (void)state; return drdc_seed(m->cfg.train.seed, DRDC_SEED_INFER) + calls++;' \
        test_failclosed
    mutate isreg src/core/fsutil.c $'\n    if (!S_ISREG(sb.st_mode)) {' $'\n    if (0) {' test_failclosed
    mutate lock src/model/train.c 'flock(*fd, LOCK_EX | LOCK_NB) != 0' '0' test_failclosed
}

kernels() {
    mutate noshift src/stages/unet.c 'bb[l] = (float)((bh[c] - mean * wr) * s1 + (e ? e[C + c] : 0.0f));' \
        'bb[l] = (float)((bh[c] - mean * wr) * s1);' test_unet
    mutate mergecount src/stages/unet.c 'for (int64_t c = g * cg; c < (g + 1) * cg; c++) sum += nb * cm[k * C + c];' \
        'for (int64_t c = g * cg; c < (g + 1) * cg; c++) sum += GN_CHUNK * cm[k * C + c];' test_unet
    mutate mergebetween src/stages/unet.c 'm2 += cq[k * C + c] + nb * d * d;' 'm2 += cq[k * C + c];' test_unet
    mutate pairlane src/stages/unet.c 'n * C + (pairs ? gn_lane(c) : c);' 'n * C + c;' test_unet
    mutate pairorder src/stages/unet.c '_mm512_storeu_si512(y + c, _mm512_permutexvar_epi16(order, packed));' \
        '_mm512_storeu_si512(y + c, packed);' test_unet
    mutate pairstatsk src/stages/unet.c '_mm512_sub_ps(GN_ODD(v), ko);' '_mm512_sub_ps(GN_ODD(v), ke);' test_unet
    mutate pairnan0 src/stages/unet.c '    return _mm512_mul_ps(v, _mm512_rcp14_ps(d));' \
        '    return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v, _mm512_rcp14_ps(d));' test_unet
    mutate amxbias src/stages/amx_conv.c '_mm512_loadu_ps(pw->bias + nb * 16 + q * 16));' '_mm512_setzero_ps());' \
        'test_amx|test_unet'
    mutate amxtap src/stages/amx_conv.c 'const int dy = (int)(tap / pw->k), dx = (int)(tap % pw->k);' \
        'const int dy = (int)(tap % pw->k), dx = (int)(tap / pw->k);' 'test_amx|test_unet'
    mutate amxstride src/stages/amx_conv.c '*stride = j->stride * j->pw->in * 2;' '*stride = j->pw->in * 2;' \
        'test_amx|test_unet'
    mutate amxpair src/stages/amx_conv.c '_tile_stored(1, acc[1], 64);' '_tile_stored(2, acc[1], 64);' \
        'test_amx|test_unet'
    mutate attn16scale src/stages/attention.c 'NULL, a->scale, &inv) : 1;' 'NULL, 1.0f, &inv) : 1;' test_amx
    mutate attn16dead src/stages/attention.c 'if (nan || m == -INFINITY || m == INFINITY) return 1;' \
        'if (m == -INFINITY) return 1;' 'test_amx|test_base'
    mutate attn16v src/stages/attention.c '(s % 32 / 2) * 32 + s % 2;' '(s % 32 / 2) * 32 + (s + 1) % 2;' test_amx
    mutate attn16k src/stages/attention.c 'memcpy(tile + r * 32 + n * 2, key + 2 * r, 4);' \
        'memcpy(tile + n * 32 + r * 2, key + 2 * r, 4);' test_amx
    mutate attn16mask src/stages/attention.c 'softmax_exp(row, S, Sp, a->mask ? a->mask + (i0 + r) * S : NULL, a->scale, &inv)' \
        'softmax_exp(row, S, Sp, NULL, a->scale, &inv)' 'test_amx|test_base'
    mutate attn16stage src/stages/attention.c '            q = qst, qrow = D;' '            qrow = D;' 'test_amx|test_base'
    mutate amxunused src/stages/unet.c 'if (cv->amx.w && dt_dtype_of(x) == DT_BF16' 'if (0 && cv->amx.w && dt_dtype_of(x) == DT_BF16' \
        test_unet
    mutate packswap src/stages/unet.c 'o[0] = a[p], o[1] = a[P + p], o[2] = a[2 * P + p], o[3] = b[p],' \
        'o[0] = b[p], o[1] = a[P + p], o[2] = a[2 * P + p], o[3] = a[p],' test_unet
    mutate tembfreq src/stages/unet.c 'st = unet->temb_freqs ? timestep_freqs(unet->temb_freqs, half)' \
        'st = unet->temb_freqs ? (timestep_freqs(unet->temb_freqs, half) || (unet->temb_freqs[0] = 0.5f, 0))' test_unet
    mutate splitnorm src/stages/unet.c 'return (const uint16_t *)j->xb + pix * (j->C - j->ca) + (c - j->ca);' \
        'return (const uint16_t *)j->xb + pix * (j->C - j->ca);' test_unet
    mutate splitconv src/stages/amx_conv.c 'return j->x2 + p * in2 + (c - j->in1);' 'return j->x2 + p * in2;' \
        'test_amx|test_unet'
    mutate castalways src/stages/unet.c 'dt_dtype_of(cv->run_w) == DT_BF16 && dt_cpu_autocast_enabled()' \
        'dt_dtype_of(cv->run_w) == DT_BF16' test_unet
    mutate nan0 src/stages/unet.c '    return v * r;' '    return v == v ? v * r : 0.0f;' test_unet
    mutate bf16nan0 include/drdc/stages/simd.h '0x7fc0u : r' '0u : r' test_unet
    mutate avxnan0 src/stages/unet.c '    return _mm512_mul_ps(v, r);' \
        '    return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v, r);' test_unet
    mutate avxnewton src/stages/unet.c \
        '    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));' '' test_unet
    mutate avxsiluattn src/stages/unet.c 'STORE16(y + c, j->silu ? SILU16(v) : v);' \
        'STORE16(y + c, SILU16(v));' test_unet
    mutate spentin src/stages/unet.c 'TRY(block_forward(&hs[i], &c, &unet->in[i], h, NULL, 0));' \
        'TRY(block_forward(&hs[i], &c, &unet->in[i], h, NULL, 1));' test_unet
    mutate attnmask src/stages/attention.c 'if (mask) x = _mm512_add_ps(' 'if (0) x = _mm512_add_ps(' test_base
    mutate attntail src/stages/attention.c 'for (; i < L; i++) attn_rows(j, b, h, kt, vt, rows, i, 1);' '' test_base
    mutate siluattn src/stages/unet.c 'y[c] = STORE(a[c] * LOAD(x[c]) + b[c]);' \
        'y[c] = STORE(gn_silu(a[c] * LOAD(x[c]) + b[c]));' test_unet
    mutate unetkhead src/stages/unet.c 'const drdc_attention a = {.q = base, .k = base + ch,' \
        'const drdc_attention a = {.q = base, .k = base,' test_unet
    mutate unetkhead16 src/stages/unet.c 'const drdc_attention16 a = {.q = base, .k = base + ch,' \
        'const drdc_attention16 a = {.q = base, .k = base,' test_unet
    mutate stalecopy src/stages/unet.c 'copy_current(cv->w, cv->b, cv->w_ver, cv->b_ver))' '1)' test_unet
    mutate nocopy src/stages/unet.c 'if (c->channels_last && cv->run_w &&' 'if (0 && cv->run_w &&' test_unet
    mutate stalenorm src/stages/unet.c 'if (nm->host && copy_current(nm->w, nm->b, nm->w_ver, nm->b_ver)) {' \
        'if (nm->host) {' test_unet
    mutate staleemb src/stages/unet.c 'if (!copy_current(rb->emb_w, rb->emb_b, rb->emb_w_ver, rb->emb_b_ver)) *(int *)ctx = 0;' \
        '(void)ctx;' test_unet
    mutate catswap src/stages/unet.c 'memcpy(j->y + p * (j->ea + j->eb), j->a + p * j->ea, (size_t)j->ea);' \
        'memcpy(j->y + p * (j->ea + j->eb), j->b + p * j->ea, (size_t)j->ea);' test_unet
    mutate uprow src/stages/unet.c '(r % (2 * j->H)) / 2) * W * e;' '(r % j->H)) * W * e;' test_unet
    mutate addtrunc src/stages/unet.c 'i = i0; i < i1; i++) y[i] = drdc_f32_to_bf16(drdc_bf16_to_f32(a[i]) + drdc_bf16_to_f32(y[i]));' \
        'i = i0; i < i1; i++) y[i] = (uint16_t)(((union { float f; uint32_t u; }){drdc_bf16_to_f32(a[i]) + drdc_bf16_to_f32(y[i])}).u >> 16);' \
        test_unet
    mutate catswapavx src/stages/unet.c 'copy64(j->y + p * (j->ea + j->eb), j->a + p * j->ea, j->ea);' \
        'copy64(j->y + p * (j->ea + j->eb), j->b + p * j->ea, j->ea);' test_unet
    mutate upavx src/stages/unet.c '        copy64(dst + 2 * W * e, dst, 2 * W * e);' '' test_unet
}

threads() {
    mutate nostate src/shim/shim.cpp 'at::ThreadLocalStateGuard guard(*tls);' '(void)tls;' test_shim
    mutate splitoffset src/stages/unet.c 'const int64_t b = j->N * i / j->parts,' 'const int64_t b = 0,' test_unet
}

case "${1:-}" in
wiring | failclosed | kernels | threads) "$1" ;;
all) wiring; failclosed; kernels; threads ;;
*) echo "usage: bash scripts/bench/mutate.sh wiring|failclosed|kernels|threads|all" >&2; exit 2 ;;
esac
cmake --build build -j2 >/tmp/mut_build.log 2>&1
git status --short src
echo "mutations done"
