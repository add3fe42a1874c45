;; Preprocessing kernels with WebAssembly SIMD: Pillow 9.4's 8-bit resample passes
;; (ImagingResampleHorizontal_8bpc / Vertical_8bpc), its RGBA premultiply, and PNG row
;; unfiltering. The resample uses the same fixed-point coefficients, taps, `acc >> 22` and clip8 as
;; the TypeScript reference in ../resample.ts: the sums are integers, so evaluating them several
;; lanes at a time (with wrapping i32 adds, whose end result is the true sum because it fits in
;; i32) gives the same bits in any order. Compiled by `npm run build:wasm` into kernels-wasm.ts.
;;
;; Memory is owned by the caller (instance.ts Arena): every pointer is a byte offset it reserved,
;; with at least 16 bytes of slack after each buffer for the wide loads and stores below.
(module
  (memory (export "memory") 1)

  ;; Horizontal pass over `rows` rows of `stride` bytes from `src`, `ch` = 3 or 4 interleaved
  ;; bands, written as rows of outW*ch bytes at dst. Output pixel x of a row reads its taps from
  ;; column start[x] in pairs: pair j of x is two i32 words at k + (x*maxPairs + j)*8, each holding
  ;; two i16 weights (taps 2j, 2j+1): first the high parts h = w >> 11, then the low parts
  ;; l = w & 2047 of Pillow's fixed-point weights w = h*2048 + l (a missing odd tap has w = 0).
  ;; i32x4.dot_i16x8_s multiplies both taps of a band at once, so
  ;; acc = 2^21 + 2048*sum(p*h) + sum(p*l) = 2^21 + sum(p*w) exactly: the wrapping i32 arithmetic
  ;; ends on the true sum because that fits in i32 (Pillow relies on it too). The two pixels
  ;; (8 bytes) are spread to i16 lanes [b0 b0' b1 b1' b2 b2' b3 b3'] by a swizzle whose indices
  ;; above 15 give zeros (lane 3 is junk for ch = 3 and not stored). Two rows go together, sharing
  ;; the weights; with one row left, both halves compute it. pairs[x] = number of pairs of x.
  (func (export "h8")
    (param $src i32) (param $stride i32) (param $rows i32) (param $ch i32)
    (param $dst i32) (param $outW i32)
    (param $start i32) (param $pairs i32) (param $k i32) (param $maxPairs i32)
    (local $y i32) (local $x i32) (local $row i32) (local $row2 i32) (local $s i32) (local $s2 i32)
    (local $kp i32) (local $kEnd i32) (local $o i32) (local $o2 i32) (local $outRow i32) (local $off i32)
    (local $hi v128) (local $lo v128) (local $hi2 v128) (local $lo2 v128)
    (local $px v128) (local $px2 v128) (local $wh v128) (local $wl v128) (local $spread v128)
    (local.set $spread
      (if (result v128) (i32.eq (local.get $ch) (i32.const 3))
        (then (v128.const i8x16 0 0x80 3 0x80 1 0x80 4 0x80 2 0x80 5 0x80 3 0x80 6 0x80))
        (else (v128.const i8x16 0 0x80 4 0x80 1 0x80 5 0x80 2 0x80 6 0x80 3 0x80 7 0x80))))
    (local.set $outRow (i32.mul (local.get $outW) (local.get $ch)))
    (local.set $y (i32.const 0))
    (block $rowsDone
      (loop $rowLoop
        (br_if $rowsDone (i32.ge_u (local.get $y) (local.get $rows)))
        (local.set $row (i32.add (local.get $src) (i32.mul (local.get $y) (local.get $stride))))
        (local.set $o (i32.add (local.get $dst) (i32.mul (local.get $y) (local.get $outRow))))
        (if (i32.lt_u (i32.add (local.get $y) (i32.const 1)) (local.get $rows))
          (then
            (local.set $row2 (i32.add (local.get $row) (local.get $stride)))
            (local.set $o2 (i32.add (local.get $o) (local.get $outRow))))
          (else
            (local.set $row2 (local.get $row))
            (local.set $o2 (local.get $o))))
        (local.set $x (i32.const 0))
        (block $colsDone
          (loop $colLoop
            (br_if $colsDone (i32.ge_u (local.get $x) (local.get $outW)))
            (local.set $off (i32.mul (i32.load (i32.add (local.get $start) (i32.shl (local.get $x) (i32.const 2)))) (local.get $ch)))
            (local.set $s (i32.add (local.get $row) (local.get $off)))
            (local.set $s2 (i32.add (local.get $row2) (local.get $off)))
            (local.set $kp (i32.add (local.get $k) (i32.shl (i32.mul (local.get $x) (local.get $maxPairs)) (i32.const 3))))
            (local.set $kEnd (i32.add (local.get $kp)
              (i32.shl (i32.load (i32.add (local.get $pairs) (i32.shl (local.get $x) (i32.const 2)))) (i32.const 3))))
            (local.set $hi (v128.const i32x4 0 0 0 0))
            (local.set $lo (v128.const i32x4 0 0 0 0))
            (local.set $hi2 (v128.const i32x4 0 0 0 0))
            (local.set $lo2 (v128.const i32x4 0 0 0 0))
            (block $pairsDone
              (loop $pairLoop
                (br_if $pairsDone (i32.ge_u (local.get $kp) (local.get $kEnd)))
                (local.set $wh (v128.load32_splat (local.get $kp)))
                (local.set $wl (v128.load32_splat offset=4 (local.get $kp)))
                (local.set $px (i8x16.swizzle (v128.load64_zero (local.get $s)) (local.get $spread)))
                (local.set $px2 (i8x16.swizzle (v128.load64_zero (local.get $s2)) (local.get $spread)))
                (local.set $hi (i32x4.add (local.get $hi) (i32x4.dot_i16x8_s (local.get $px) (local.get $wh))))
                (local.set $lo (i32x4.add (local.get $lo) (i32x4.dot_i16x8_s (local.get $px) (local.get $wl))))
                (local.set $hi2 (i32x4.add (local.get $hi2) (i32x4.dot_i16x8_s (local.get $px2) (local.get $wh))))
                (local.set $lo2 (i32x4.add (local.get $lo2) (i32x4.dot_i16x8_s (local.get $px2) (local.get $wl))))
                (local.set $s (i32.add (local.get $s) (i32.shl (local.get $ch) (i32.const 1))))
                (local.set $s2 (i32.add (local.get $s2) (i32.shl (local.get $ch) (i32.const 1))))
                (local.set $kp (i32.add (local.get $kp) (i32.const 8)))
                (br $pairLoop)))
            (local.set $hi (i16x8.narrow_i32x4_s (i32x4.shr_s (i32x4.add (i32x4.add (i32x4.shl (local.get $hi) (i32.const 11)) (local.get $lo)) (i32x4.splat (i32.const 0x200000))) (i32.const 22)) (i32x4.shr_s (i32x4.add (i32x4.add (i32x4.shl (local.get $hi2) (i32.const 11)) (local.get $lo2)) (i32x4.splat (i32.const 0x200000))) (i32.const 22))))
            (local.set $hi (i8x16.narrow_i16x8_u (local.get $hi) (local.get $hi)))
            ;; row 1 in bytes 0..3, row 2 in bytes 4..7; exact-width stores for ch = 3
            (if (i32.eq (local.get $ch) (i32.const 4))
              (then
                (v128.store32_lane 0 (local.get $o) (local.get $hi))
                (v128.store32_lane 1 (local.get $o2) (local.get $hi)))
              (else
                (v128.store16_lane 0 (local.get $o) (local.get $hi))
                (v128.store8_lane offset=2 2 (local.get $o) (local.get $hi))
                (v128.store16_lane 2 (local.get $o2) (local.get $hi))
                (v128.store8_lane offset=2 6 (local.get $o2) (local.get $hi))))
            (local.set $o (i32.add (local.get $o) (local.get $ch)))
            (local.set $o2 (i32.add (local.get $o2) (local.get $ch)))
            (local.set $x (i32.add (local.get $x) (i32.const 1)))
            (br $colLoop)))
        (local.set $y (i32.add (local.get $y) (i32.const 2)))
        (br $rowLoop))))

  ;; Vertical pass: `src` holds rows of rowLen bytes; output row y (rowLen bytes at dst + y*rowLen)
  ;; sums taps[y] rows from row start[y] with weights k[y*ksize ..]. 16 samples per step; the last
  ;; step of a row may run past rowLen: it reads the next row (or the slack) and its extra bytes
  ;; are overwritten by the next output row (or land in the slack).
  (func (export "v8")
    (param $src i32) (param $rowLen i32) (param $dst i32) (param $outRows i32)
    (param $start i32) (param $taps i32) (param $k i32) (param $ksize i32)
    (local $y i32) (local $x i32) (local $base i32) (local $p i32) (local $kp i32) (local $kEnd i32)
    (local $v v128) (local $lo v128) (local $hi v128) (local $w v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $out i32)
    (local.set $y (i32.const 0))
    (block $rowsDone
      (loop $rowLoop
        (br_if $rowsDone (i32.ge_u (local.get $y) (local.get $outRows)))
        (local.set $base (i32.add (local.get $src)
          (i32.mul (i32.load (i32.add (local.get $start) (i32.shl (local.get $y) (i32.const 2)))) (local.get $rowLen))))
        (local.set $out (i32.add (local.get $dst) (i32.mul (local.get $y) (local.get $rowLen))))
        (local.set $x (i32.const 0))
        (block $colsDone
          (loop $colLoop
            (br_if $colsDone (i32.ge_u (local.get $x) (local.get $rowLen)))
            (local.set $a0 (i32x4.splat (i32.const 0x200000)))
            (local.set $a1 (local.get $a0))
            (local.set $a2 (local.get $a0))
            (local.set $a3 (local.get $a0))
            (local.set $p (i32.add (local.get $base) (local.get $x)))
            (local.set $kp (i32.add (local.get $k) (i32.mul (local.get $y) (i32.shl (local.get $ksize) (i32.const 2)))))
            (local.set $kEnd (i32.add (local.get $kp)
              (i32.shl (i32.load (i32.add (local.get $taps) (i32.shl (local.get $y) (i32.const 2)))) (i32.const 2))))
            (block $tapsDone
              (loop $tapLoop
                (br_if $tapsDone (i32.ge_u (local.get $kp) (local.get $kEnd)))
                (local.set $v (v128.load (local.get $p)))
                (local.set $w (v128.load32_splat (local.get $kp)))
                (local.set $lo (i16x8.extend_low_i8x16_u (local.get $v)))
                (local.set $hi (i16x8.extend_high_i8x16_u (local.get $v)))
                (local.set $a0 (i32x4.add (local.get $a0) (i32x4.mul (i32x4.extend_low_i16x8_u (local.get $lo)) (local.get $w))))
                (local.set $a1 (i32x4.add (local.get $a1) (i32x4.mul (i32x4.extend_high_i16x8_u (local.get $lo)) (local.get $w))))
                (local.set $a2 (i32x4.add (local.get $a2) (i32x4.mul (i32x4.extend_low_i16x8_u (local.get $hi)) (local.get $w))))
                (local.set $a3 (i32x4.add (local.get $a3) (i32x4.mul (i32x4.extend_high_i16x8_u (local.get $hi)) (local.get $w))))
                (local.set $p (i32.add (local.get $p) (local.get $rowLen)))
                (local.set $kp (i32.add (local.get $kp) (i32.const 4)))
                (br $tapLoop)))
            (v128.store (i32.add (local.get $out) (local.get $x))
              (i8x16.narrow_i16x8_u
                (i16x8.narrow_i32x4_s (i32x4.shr_s (local.get $a0) (i32.const 22)) (i32x4.shr_s (local.get $a1) (i32.const 22)))
                (i16x8.narrow_i32x4_s (i32x4.shr_s (local.get $a2) (i32.const 22)) (i32x4.shr_s (local.get $a3) (i32.const 22)))))
            (local.set $x (i32.add (local.get $x) (i32.const 16)))
            (br $colLoop)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $rowLoop))))

  ;; RGBA → RGBa in place over `len` bytes (a multiple of 4) at `p`, four pixels per step, with
  ;; Pillow's MULDIV255 premultiply: t = c*a + 128; c' = ((t >> 8) + t) >> 8 (all within u16).
  ;; Alpha lanes keep their value. The last step may run up to 12 bytes past `len` (slack).
  (func (export "premultiply4") (param $p i32) (param $len i32)
    (local $end i32) (local $v v128) (local $lo v128) (local $hi v128)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $step
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $lo (i16x8.extend_low_i8x16_u (local.get $v)))
        (local.set $hi (i16x8.extend_high_i8x16_u (local.get $v)))
        (local.set $lo (call $muldiv255 (local.get $lo)
          (i8x16.shuffle 6 7 6 7 6 7 6 7 14 15 14 15 14 15 14 15 (local.get $lo) (local.get $lo))))
        (local.set $hi (call $muldiv255 (local.get $hi)
          (i8x16.shuffle 6 7 6 7 6 7 6 7 14 15 14 15 14 15 14 15 (local.get $hi) (local.get $hi))))
        (v128.store (local.get $p)
          (v128.bitselect (local.get $v) (i8x16.narrow_i16x8_u (local.get $lo) (local.get $hi))
            (v128.const i32x4 0xff000000 0xff000000 0xff000000 0xff000000)))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $step))))

  (func $muldiv255 (param $c v128) (param $a v128) (result v128)
    (local $t v128)
    (local.set $t (i16x8.add (i16x8.mul (local.get $c) (local.get $a)) (v128.const i16x8 128 128 128 128 128 128 128 128)))
    (i16x8.shr_u (i16x8.add (i16x8.shr_u (local.get $t) (i32.const 8)) (local.get $t)) (i32.const 8)))

  ;; PNG unfiltering (spec §9) for 3 or 4 bytes per pixel: `raw` holds `height` rows of
  ;; [filter type, rowBytes bytes], `out` receives the packed rows; the rowBytes + 16 bytes before
  ;; `out` must be zero: they are the row above the first (spec: "treated as zeros"). A pixel is handled as 4 lanes
  ;; (for bpp = 3 the 4th lane is the next pixel's first byte: written, then overwritten when that
  ;; pixel is done; the last one lands in the slack). Returns 0, or 1 for a filter type above 4.
  ;; The Paeth predictor is computed branch-free as in libpng's SSE2 code:
  ;;   pa = |b - c|, pb = |a - c|, pc = |a + b - 2c|; pa <= pb && pa <= pc ? a : pb <= pc ? b : c.
  (func (export "unfilter") (param $raw i32) (param $out i32) (param $height i32) (param $rowBytes i32) (param $bpp i32) (result i32)
    (local $y i32) (local $s i32) (local $o i32) (local $end i32) (local $up i32) (local $ftype i32)
    (local $a v128) (local $b v128) (local $c v128) (local $x v128)
    (local $pa v128) (local $pb v128) (local $pc v128)
    (local.set $y (i32.const 0))
    (block $rowsDone
      (loop $rowLoop
        (br_if $rowsDone (i32.ge_u (local.get $y) (local.get $height)))
        (local.set $s (i32.add (local.get $raw) (i32.add (i32.mul (local.get $y) (i32.add (local.get $rowBytes) (i32.const 1))) (i32.const 1))))
        (local.set $o (i32.add (local.get $out) (i32.mul (local.get $y) (local.get $rowBytes))))
        (local.set $end (i32.add (local.get $o) (local.get $rowBytes)))
        (local.set $up (i32.sub (local.get $o) (local.get $rowBytes)))
        (local.set $ftype (i32.load8_u (i32.sub (local.get $s) (i32.const 1))))
        (if (i32.gt_u (local.get $ftype) (i32.const 4)) (then (return (i32.const 1))))
        (block $filterDone
          ;; None and Up: 16 bytes per step (the last step may write past the row, see above).
          (if (i32.or (i32.eqz (local.get $ftype)) (i32.eq (local.get $ftype) (i32.const 2)))
            (then
              (block $done
                (loop $step
                  (br_if $done (i32.ge_u (local.get $o) (local.get $end)))
                  (local.set $x (v128.load (local.get $s)))
                  (if (local.get $ftype) (then (local.set $x (i8x16.add (local.get $x) (v128.load (local.get $up))))))
                  (v128.store (local.get $o) (local.get $x))
                  (local.set $s (i32.add (local.get $s) (i32.const 16)))
                  (local.set $o (i32.add (local.get $o) (i32.const 16)))
                  (local.set $up (i32.add (local.get $up) (i32.const 16)))
                  (br $step)))
              (br $filterDone)))
          ;; Sub, Average, Paeth: one pixel per step, a = the pixel just decoded (zero at the start).
          (local.set $a (v128.const i32x4 0 0 0 0))
          (local.set $c (v128.const i32x4 0 0 0 0))
          (block $done
            (loop $step
              (br_if $done (i32.ge_u (local.get $o) (local.get $end)))
              (local.set $x (v128.load32_zero (local.get $s)))
              (if (i32.eq (local.get $ftype) (i32.const 1))
                (then (local.set $x (i8x16.add (local.get $x) (local.get $a))))
                (else
                  (local.set $b (i16x8.extend_low_i8x16_u (v128.load32_zero (local.get $up))))
                  (if (i32.eq (local.get $ftype) (i32.const 3))
                    (then
                      (local.set $x (i8x16.add (local.get $x)
                        (i8x16.narrow_i16x8_u
                          (i16x8.shr_u (i16x8.add (i16x8.extend_low_i8x16_u (local.get $a)) (local.get $b)) (i32.const 1))
                          (local.get $b)))))
                    (else
                      (local.set $pa (i16x8.extend_low_i8x16_u (local.get $a)))
                      (local.set $pc (i16x8.sub (local.get $b) (local.get $c)))       ;; b - c
                      (local.set $pb (i16x8.sub (local.get $pa) (local.get $c)))      ;; a - c
                      (local.set $x (i8x16.add (local.get $x)
                        (i8x16.narrow_i16x8_u
                          (call $paeth (local.get $pa) (local.get $b) (local.get $c)
                            (i16x8.abs (local.get $pc)) (i16x8.abs (local.get $pb))
                            (i16x8.abs (i16x8.add (local.get $pc) (local.get $pb))))
                          (local.get $b))))
                      (local.set $c (local.get $b))))))
              (v128.store32_lane 0 (local.get $o) (local.get $x))
              (local.set $a (local.get $x))
              (local.set $s (i32.add (local.get $s) (local.get $bpp)))
              (local.set $o (i32.add (local.get $o) (local.get $bpp)))
              (local.set $up (i32.add (local.get $up) (local.get $bpp)))
              (br $step))))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $rowLoop)))
    (i32.const 0))

  ;; The Paeth choice, lane-wise on i16 lanes: pa <= pb && pa <= pc ? a : pb <= pc ? b : c.
  (func $paeth (param $a v128) (param $b v128) (param $c v128) (param $pa v128) (param $pb v128) (param $pc v128) (result v128)
    (v128.bitselect (local.get $a)
      (v128.bitselect (local.get $b) (local.get $c) (i16x8.le_s (local.get $pb) (local.get $pc)))
      (v128.and (i16x8.le_s (local.get $pa) (local.get $pb)) (i16x8.le_s (local.get $pa) (local.get $pc)))))
)
