; fp16 bits -> fp32 through LLVM's own half type, so that LLVM emits x86 F16C's
; vcvtph2ps; Halide 14 never does for a Float(16) cast (docs/halide14.md §7).
; Linked into a pipeline's module (generators/half_widening.cpp); Halide calls the
; widest version whose lane count fits a vector (name + "x" + lanes) and inlines it.
; weak_odr: Halide 14 finds linked functions of no other linkage. The names are
; algo::kHalfWideningFunction's.
target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-f80:128-n8:16:32:64-S128"
target triple = "x86_64-unknown-linux-gnu"

define weak_odr float @gqa_widen_half(i16 %bits) alwaysinline {
  %half = bitcast i16 %bits to half
  %wide = fpext half %half to float
  ret float %wide
}

define weak_odr <8 x float> @gqa_widen_halfx8(<8 x i16> %bits) alwaysinline {
  %half = bitcast <8 x i16> %bits to <8 x half>
  %wide = fpext <8 x half> %half to <8 x float>
  ret <8 x float> %wide
}

define weak_odr <16 x float> @gqa_widen_halfx16(<16 x i16> %bits) alwaysinline {
  %half = bitcast <16 x i16> %bits to <16 x half>
  %wide = fpext <16 x half> %half to <16 x float>
  ret <16 x float> %wide
}
