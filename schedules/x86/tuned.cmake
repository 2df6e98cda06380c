# Tuned schedule knobs, written by tools/gqa-tune; cmake/GqaHalideLibraries.cmake
# passes them to the generators as PARAMS. Rerun the tuner and rebuild to refresh.
# variant: avx512 (x86-64-linux-avx-avx2-avx512-avx512_skylake-f16c-fma-sse41)
# machine: Intel(R) Xeon(R) Processor, 2 CPUs
# tuned: 2026-11-23 19:04 UTC, 27 candidates in 244 s (budget 900 s)
# W1 prefill: target defaults 41.99 ms, tuned 41.99 ms, Adams2019 234.5 ms
# W2 prefill: target defaults 145.1 ms, tuned 145.1 ms, Adams2019 1455 ms
# W1 decode (2048 keys): target defaults 1.236 ms, tuned 1.236 ms, Adams2019 6.117 ms
# W2 decode (2048 keys): target defaults 5.922 ms, tuned 5.922 ms, Adams2019 31.78 ms
set(GQA_KNOB_ISA avx512)
set(GQA_KNOBS_attend_decode "")
set(GQA_KNOBS_attend_prefill "")
set(GQA_KNOBS_output_decode "")
set(GQA_KNOBS_output_prefill "")
set(GQA_KNOBS_project_decode "")
set(GQA_KNOBS_project_prefill "")
